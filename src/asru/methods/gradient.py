"""The shared forget/retain training loop behind every gradient-based baseline (GA, GA-Diff, KL-Min, NPO, SimNPO, IDK,
MMUnlearner, RMU).

Why one parent: the baselines differ only in their losses, so each subclass states `forget_loss` (and, where it
has one, `retain_loss`) and this class does everything else the same way for all of them: load the vanilla
model (optionally under LoRA), encode the data once, pair a forget batch with a retain batch every step,
combine them as `loss = gamma * forget_loss + alpha * retain_loss`, stop on NaN/inf without writing anything,
and save a plain `save_pretrained` directory (LoRA merged) that loads without this project.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from asru.data.corpus import Example, qa_examples
from asru.data.schema import QAItem
from asru.errors import UserError
from asru.methods.base import Method, UnlearnContext
from asru.models import batch as mbatch
from asru.models.generate import eval_mode
from asru.models.lora import add_lora, language_model_linear_names  # noqa: F401 - re-exported
from asru.models.load import load_model, save_model
from asru.trainer import AsruTrainer, ManifestProgress, remove_checkpoints, training_args
from asru.training import collate, encode_examples, first_batches, shifted, token_nll
from asru.training import logits_of as logits

Batch = dict[str, torch.Tensor]


@dataclass
class GradientConfig:
    """Defaults are MLLMU-Bench's baseline settings for real models (lr 2e-5, batch 4, a few epochs, LoRA r=16).

    `steps` None means `epochs` passes over the forget set. `lora` False trains every weight (what the tiny
    presets do); real-model presets set `lora: true` (PEFT LoRA on all linear layers of the language model,
    merged into the weights before saving).
    """

    steps: int | None = None
    epochs: float = 2.0
    batch_size: int = 4
    lr: float = 2e-5
    warmup_steps: int = 0
    weight_decay: float = 0.01
    gamma: float = 1.0  # forget-loss weight
    alpha: float = 1.0  # retain-loss weight (ignored by methods without a retain term)
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    grad_clip: float = 1.0
    seed: int | None = None  # None: the run's seed (UnlearnContext.seed, the CLI's --seed)
    save_steps: int = 50  # a Trainer checkpoint every N steps (what --resume continues from); 0: none

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise UserError(f"steps must be >= 1 (or null to use epochs), got {self.steps}")
        if self.steps is None and self.epochs <= 0:
            raise UserError(f"epochs must be > 0 when steps is null, got {self.epochs}")
        if self.batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.lr <= 0:
            raise UserError(f"lr must be > 0, got {self.lr}")
        for name in ("gamma", "alpha"):  # loss weights: a negative one flips the loss, a non-finite one diverges
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise UserError(f"{name} must be a finite number >= 0, got {value}")
        if self.lora and self.lora_r < 1:
            raise UserError(f"lora_r must be >= 1, got {self.lora_r}")

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------------------ loss helpers

def batch_nll(logits_: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean NLL over all answer tokens of the batch: exactly the cross-entropy loss transformers reports."""
    nll, mask = token_nll(logits_, labels)
    return nll.sum() / mask.sum().clamp(min=1)


def answer_kl(model_logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """KL(reference || model) of the next-token distributions, averaged over answer tokens."""
    pred, _, mask = shifted(model_logits, labels)
    log_p = F.log_softmax(pred[mask].float(), dim=-1)
    log_q = F.log_softmax(ref_logits[:, :-1][mask].float(), dim=-1)
    return F.kl_div(log_p, log_q, log_target=True, reduction="batchmean")


# ------------------------------------------------------------------------------------------- reference model

class Reference:
    """The frozen vanilla model, for losses that compare against it (KL-Min, NPO).

    Full fine-tuning keeps a frozen copy; under LoRA the trained model itself with its adapter disabled *is*
    the vanilla model, so no second copy is loaded (half the memory on a real model).
    """

    def __init__(self, frozen=None, lora_model=None) -> None:
        self.frozen = frozen
        self.lora_model = lora_model

    @torch.no_grad()
    def logits(self, batch: Batch) -> torch.Tensor:
        if self.frozen is not None:
            return logits(self.frozen, batch)
        with self.lora_model.disable_adapter(), eval_mode(self.lora_model):
            return logits(self.lora_model, batch)


# ---------------------------------------------------------------------------------------------- the method

class GradientMethod(Method):
    """Parent of the gradient baselines: subclasses implement `forget_loss` and, if they have one, `retain_loss`."""

    Config: ClassVar[type] = GradientConfig
    needs_reference: ClassVar[bool] = False  # load the frozen vanilla model as `ref`
    uses_retain: ClassVar[bool] = False  # draw a retain batch every step (the retain term is alpha * retain_loss)

    def __init__(self, config: Any = None) -> None:
        super().__init__(config if config is not None else self.Config())
        self.seed = self.config.seed or 0  # replaced by the run's seed in `unlearn` unless the config fixes one

    # --- what subclasses state
    def forget_loss(self, model, batch: Batch, ref: Reference | None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def retain_loss(self, model, batch: Batch, ref: Reference | None) -> torch.Tensor:
        """No retain term by default (GA): the retain set is not even encoded."""
        return torch.zeros((), device=batch["input_ids"].device)

    def forget_examples(self, items: list[QAItem]) -> list[Example]:
        """(prompt, image, target) pairs trained on the forget side; IDK swaps the targets for refusals."""
        return qa_examples(items, seed=self.seed)

    def retain_examples(self, items: list[QAItem]) -> list[Example]:
        return qa_examples(items, seed=self.seed + 1)

    # --- optional hooks (MMUnlearner, RMU use them)
    def on_load(self, model) -> None:
        """Called right after the model is loaded, before any data is encoded: check the options that depend on the
        model (RMU's layer), so a mistake costs seconds, not an encoding pass."""

    def prepare(self, model, forget: list[dict], retain: list[dict], collate_fn) -> dict:
        """Called once before the optimizer is built (freeze parameters, compute masks); returns stats."""
        return {}

    def param_groups(self, params: list[torch.nn.Parameter]) -> list[dict]:
        return [{"params": params, "weight_decay": self.config.weight_decay}]

    def before_step(self, model) -> None:
        """Called after backward, before clipping and the optimizer step (e.g. to mask gradients)."""

    # --- the loop
    def unlearn(self, ctx: UnlearnContext) -> dict[str, Any]:
        cfg = self.config
        start = time.perf_counter()
        self.seed = cfg.seed if cfg.seed is not None else ctx.seed
        torch.manual_seed(self.seed)
        model, processor = load_model(ctx.model_dir, for_training=True)
        self.on_load(model)
        encode, collate_fn = encoder(processor)
        forget = encode(self.forget_examples(ctx.forget_items), "encoding forget set")
        retain = encode(self.retain_examples(ctx.retain_items), "encoding retain set") if self.uses_retain else []
        if self.uses_retain and not retain:
            raise UserError(f"{self.name} needs retain data but the retain split of '{ctx.forget_split}' is empty")
        steps = cfg.steps or max(1, math.ceil(cfg.epochs * len(forget) / cfg.batch_size))
        stats = self.prepare(model, forget, retain, collate_fn)
        if cfg.lora:
            model = add_lora(model, cfg)
        ref = self._reference(ctx, model) if self.needs_reference else None
        history = self._train(model, forget, retain, collate_fn, ref, steps, out_dir=ctx.out_dir, resume=ctx.resume,
                              callbacks=[ManifestProgress(ctx.manifest, ctx.out_dir)] if ctx.manifest else ())
        remove_checkpoints(ctx.out_dir)
        if cfg.lora:
            model = model.merge_and_unload()
        save_model(model, processor, ctx.model_out)
        return {"steps": steps, "seed": self.seed, "forget_examples": len(forget), "retain_examples": len(retain), "lora": cfg.lora,
                **_summary(history), **stats, "seconds": round(time.perf_counter() - start, 2)}

    def _reference(self, ctx: UnlearnContext, model) -> Reference:
        if self.config.lora:
            return Reference(lora_model=model)
        frozen, _ = load_model(ctx.model_dir, device=next(model.parameters()).device)
        frozen.eval().requires_grad_(False)
        return Reference(frozen=frozen)

    def _train(self, model, forget, retain, collate_fn, ref, steps: int, out_dir: Path | None = None,
               resume: bool = False, callbacks=()) -> list[dict]:
        """Train through `UnlearnTrainer`: step k pairs forget batch k with retain batch k of two seeded streams."""
        cfg = self.config
        forget_plan = first_batches([len(e["input_ids"]) for e in forget], cfg.batch_size, self.seed, steps)
        retain_plan = (first_batches([len(e["input_ids"]) for e in retain], cfg.batch_size, self.seed + 1, steps)
                       if retain else None)
        dataset = [("forget", e) for e in forget] + [("retain", e) for e in retain]
        plan = [pair_batch(f, [len(forget) + i for i in r] if retain_plan else None)
                for f, r in zip(forget_plan, retain_plan or [None] * steps)]
        warmup = max(0, cfg.warmup_steps)
        scratch = out_dir is None
        out_dir = Path(tempfile.mkdtemp(prefix="asru-unlearn-")) if scratch else out_dir
        params = [p for p in model.parameters() if p.requires_grad]
        args = training_args(out_dir, steps=steps, lr=cfg.lr, seed=self.seed, grad_clip=max(cfg.grad_clip, 0.0),
                             save_steps=0 if scratch else cfg.save_steps)
        trainer = UnlearnTrainer(model, args, dataset=dataset, batches=plan, collate=lambda b: split_collate(b, collate_fn),
                                 schedule=lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0,
                                 param_groups=self.param_groups(params), label=f"unlearning ({self.name})",
                                 callbacks=callbacks, on_backward=self.before_step, method=self, ref=ref)
        try:
            history = trainer.fit(resume=resume)
        finally:
            if scratch:
                shutil.rmtree(out_dir, ignore_errors=True)
        self.resumed_from = trainer.resumed_from
        return history


def pair_batch(forget: list[int], retain: list[int] | None) -> list[int]:
    """One step's dataset indices, forget and retain interleaved: split over N processes, each gets its share of both."""
    if retain is None:
        return list(forget)
    return [i for pair in zip(forget, retain) for i in pair]


def split_collate(items: list[tuple[str, dict]], collate_fn) -> dict[str, Batch | None]:
    """{"forget": batch, "retain": batch or None} from tagged encoded examples (order kept within each side)."""
    forget = [e for tag, e in items if tag == "forget"]
    retain = [e for tag, e in items if tag == "retain"]
    return {"forget": collate_fn(forget), "retain": collate_fn(retain) if retain else None}


class UnlearnTrainer(AsruTrainer):
    """The forget/retain pairing every gradient method shares: loss = gamma * forget_loss + alpha * retain_loss."""

    several_forwards = True

    def __init__(self, *args, method: "GradientMethod", ref: "Reference | None", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.method, self.ref = method, ref

    def training_loss(self, model, inputs):
        cfg, method = self.method.config, self.method
        forget_loss = method.forget_loss(model, inputs["forget"], self.ref)
        if inputs["retain"] is not None:
            retain_loss = method.retain_loss(model, inputs["retain"], self.ref)
        else:
            retain_loss = torch.zeros((), device=forget_loss.device)
        loss = cfg.gamma * forget_loss + cfg.alpha * retain_loss
        return loss, {"forget": forget_loss.item(), "retain": retain_loss.item()}


def _summary(history: list[dict]) -> dict:
    if not history:  # resumed from a checkpoint at the last step: nothing left to train
        return {}
    first, last = history[0], history[-1]
    return {"loss_first": first["loss"], "loss_last": last["loss"],
            "forget_loss_first": first["forget"], "forget_loss_last": last["forget"],
            "retain_loss_first": first["retain"], "retain_loss_last": last["retain"]}


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device) for k, v in batch.items()}


# --------------------------------------------------------------------------------------- encoding, LoRA, save

def encoder(processor):
    """`(encode(examples, label) -> encoded list, collate(encoded) -> batch)` for any supported processor."""
    pad_id = mbatch.pad_token_id(processor)
    return (lambda examples, label: encode_examples(processor, examples, label=label),
            lambda items: collate(items, pad_id))
