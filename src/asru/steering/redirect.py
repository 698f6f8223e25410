"""ASRU stage 1, activation redirection: train only layer L's MLP so that forget prompts land on
h_frozen + c * v (the refusal side) while retain prompts keep h_frozen (RMU-style).

Both losses are taken at the last prompt token, the position where v was measured; prompts are left padded so
that position is the same for every row (the authors' script used right padding, which reads a pad token there).
The frozen targets are computed once before training, so no frozen copy of the model is kept in memory.

`retain_positions: all` (off by default) adds a second retain term over every token of the retain question *and
its answer*, as RMU's original retain loss does: the MLP also runs at the answer tokens a retain answer is
generated through, and the last-prompt-token loss leaves those free to drift.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from asru.errors import UserError
from asru.models.batch import IGNORE_INDEX, encode_batch, encode_prompts, move_batch
from asru.models.chat import ImageInput
from asru.models.generate import eval_mode
from asru.models.layers import check_layer, layer_mlp
from asru.steering.direction import Prompt, SteeringVector
from asru.steering.hooks import last_prompt_hidden, layer_last_state, layer_states
from asru.trainer import AsruTrainer, training_args


RetainExample = tuple[str, ImageInput, str]  # (question, image, answer)


@dataclass
class RedirectConfig:
    coeff: float = 3.0  # c: how far along v forget activations are pushed
    alpha: float = 1.0  # weight of the retain (stay-put) loss
    lr: float = 1e-4
    epochs: int = 3
    batch_size: int = 2
    trainable: str = "down_proj"  # "down_proj" (the authors' choice) or "mlp" (the whole MLP of layer L)
    retain_positions: str = "last"  # "last" (the paper: last prompt token) or "all" (every question + answer token)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.retain_positions not in ("last", "all"):
            raise UserError(f"redirect.retain_positions must be 'last' or 'all', got '{self.retain_positions}'")


def mlp_parameters(model, layer: int, which: str) -> list[torch.nn.Parameter]:
    """The chosen part of layer L's MLP: its output projection ("down_proj") or all of it ("mlp")."""
    mlp = layer_mlp(model, layer)
    if which == "mlp":
        return list(mlp.parameters())
    if which == "down_proj":
        down = getattr(mlp, "down_proj", None) or getattr(mlp, "fc2", None)
        if down is None:
            raise UserError(f"layer {layer}'s MLP has no down_proj/fc2; use trainable: mlp")
        return list(down.parameters())
    raise UserError(f"redirect.trainable must be 'down_proj' or 'mlp', got '{which}'")


def train_only(model, params: list[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    """Freeze every parameter of the model except `params` (returned)."""
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    return params


def trainable_parameters(model, layer: int, which: str) -> list[torch.nn.Parameter]:
    """Freeze everything, then unfreeze the chosen part of layer L's MLP."""
    return train_only(model, mlp_parameters(model, layer, which))


def _batches(indices: list[int], size: int, rng: random.Random) -> list[list[int]]:
    order = indices[:]
    rng.shuffle(order)
    return [order[i:i + size] for i in range(0, len(order), size)]


def _whole_answer_batches(model, processor, retain: Sequence[RetainExample], layer: int, size: int,
                          rng: random.Random) -> list[tuple[dict, torch.Tensor, torch.Tensor]]:
    """Fixed retain batches of question + answer (left padded), the frozen layer-L states at every position and
    each row's last prompt token (the position before its first answer label)."""
    order = list(range(len(retain)))
    rng.shuffle(order)
    out = []
    for start in range(0, len(order), size):
        batch = encode_batch(processor, [retain[i] for i in order[start:start + size]], padding_side="left")
        last_prompt = (batch.pop("labels") != IGNORE_INDEX).int().argmax(dim=1) - 1
        batch = move_batch(batch, model)
        with torch.no_grad(), eval_mode(model):
            out.append((batch, layer_states(model, layer, batch).float(), last_prompt.to(batch["input_ids"].device)))
    return out


def _whole_answer_loss(model, layer: int, batch: dict, frozen: torch.Tensor, last_prompt: torch.Tensor) -> torch.Tensor:
    """MSE to the frozen states at each row's last prompt token (the paper's term) + at every real token."""
    h, real = layer_states(model, layer, batch).float(), batch["attention_mask"].bool()
    rows = torch.arange(len(last_prompt), device=h.device)
    mse = torch.nn.functional.mse_loss
    return mse(h[rows, last_prompt], frozen[rows, last_prompt]) + mse(h[real], frozen[real])


def _plan(n_forget: int, n_retain: int, cfg: RedirectConfig, per_example_retain: bool, whole_batches: int) -> list[tuple]:
    """Every step's (forget indices, retain indices or whole-answer batch number or None), drawn from one seeded
    RNG in the order the steps consume it: each epoch shuffles the forget prompts, each step samples retain ones."""
    rng = random.Random(cfg.seed)
    plan = []
    for _ in range(cfg.epochs):
        for idx in _batches(list(range(n_forget)), cfg.batch_size, rng):
            if per_example_retain:
                retain = rng.sample(range(n_retain), min(cfg.batch_size, n_retain))
            elif whole_batches:
                retain = len(plan) % whole_batches
            else:
                retain = None
            plan.append((idx, retain))
    return plan


class RedirectTrainer(AsruTrainer):
    """MSE of layer L's last-prompt-token state to h_frozen + c*v on forget prompts, + alpha * the retain term."""

    def __init__(self, *args, layer: int, alpha: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.layer, self.alpha = layer, alpha

    def training_loss(self, model, inputs):
        mse = torch.nn.functional.mse_loss
        loss_f = mse(layer_last_state(model, self.layer, inputs["forget"]).float(), inputs["forget_target"])
        loss, parts = loss_f, {"forget": loss_f.item()}
        if inputs.get("retain") is not None:
            loss_r = mse(layer_last_state(model, self.layer, inputs["retain"]).float(), inputs["retain_target"])
        elif inputs.get("whole") is not None:
            loss_r = _whole_answer_loss(model, self.layer, *inputs["whole"])
        else:
            loss_r = None
        if loss_r is not None:
            loss = loss + self.alpha * loss_r
            parts["retain"] = loss_r.item()
        return loss, parts


def redirect(model, processor, steering: SteeringVector, forget: Sequence[Prompt], retain: Sequence[RetainExample],
             cfg: RedirectConfig, out_dir=None) -> dict:
    """Train layer L's MLP in place; alternate one forget batch and one retain batch per step.

    `retain` holds (question, image, answer) triples; the answer is read only with `retain_positions: all`.
    Runs through the Trainer with AdamW (no weight decay), a constant rate and no clipping, as the authors do."""
    layer = check_layer(model, steering.layer)
    if not forget:
        raise UserError("no forget prompts for activation redirection: the forget split is empty")
    frozen_forget = last_prompt_hidden(model, processor, forget, layer)
    retain_prompts = [r[:2] for r in retain]
    whole = cfg.retain_positions == "all" and bool(retain)
    frozen_retain = last_prompt_hidden(model, processor, retain_prompts, layer) if retain and not whole else None
    retain_batches = (_whole_answer_batches(model, processor, retain, layer, cfg.batch_size,
                                            random.Random(cfg.seed + 1)) if whole else [])
    params = trainable_parameters(model, layer, cfg.trainable)
    target_shift = cfg.coeff * steering.vector.float()
    forget_targets = frozen_forget + target_shift
    plan = _plan(len(forget), len(retain), cfg, frozen_retain is not None, len(retain_batches))

    def collate(steps: list[tuple]) -> dict:
        (idx, r), = steps
        inputs = {"forget": encode_prompts(processor, [forget[i] for i in idx], padding_side="left"),
                  "forget_target": forget_targets[idx]}
        if frozen_retain is not None:
            inputs.update(retain=encode_prompts(processor, [retain_prompts[i] for i in r], padding_side="left"),
                          retain_target=frozen_retain[r])
        elif retain_batches:
            inputs["whole"] = retain_batches[r]
        return inputs

    scratch = out_dir is None
    out_dir = Path(tempfile.mkdtemp(prefix="asru-redirect-")) if scratch else Path(out_dir)
    # one step = one whole forget batch (+ its retain batch): several processes each take their own steps
    args = training_args(out_dir, steps=len(plan), lr=cfg.lr, seed=cfg.seed, grad_clip=0.0, weight_decay=0.0,
                         split_batches=False)
    trainer = RedirectTrainer(model, args, dataset=plan, batches=[[k] for k in range(len(plan))], collate=collate,
                              schedule=lambda s: 1.0, param_groups=[{"params": params, "weight_decay": 0.0}],
                              label="activation redirection", progress_fields=("forget",), layer=layer, alpha=cfg.alpha)
    try:
        history = trainer.fit()
    finally:
        if scratch:
            shutil.rmtree(out_dir, ignore_errors=True)
    for p in model.parameters():
        p.requires_grad_(True)
    forget_losses = [h["forget"] for h in history]
    retain_losses = [h["retain"] for h in history if "retain" in h]
    first = lambda xs: xs[0] if xs else None  # noqa: E731
    last = lambda xs: sum(xs[-10:]) / len(xs[-10:]) if xs else None  # noqa: E731
    return {"steps": len(forget_losses), "forget_loss_first": first(forget_losses),
            "forget_loss_last": last(forget_losses), "retain_loss_first": first(retain_losses),
            "retain_loss_last": last(retain_losses), "target_norm": float(target_shift.norm())}
