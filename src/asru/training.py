"""Supervised fine-tuning on (prompt, image, answer) examples: the Trainer behind `asru base` and `asru vanilla`.

Examples are encoded once, then batched by padding; the loss
covers only the answer tokens and the closing <|im_end|>, so the model learns what to say and when to stop.
"""

from __future__ import annotations

import math
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Sequence

import torch
from asru.errors import UserError
from asru.models.batch import IGNORE_INDEX as IGNORE
from asru.models.batch import encode_example, pad_features
from asru.models.batch import pad_token_id as _pad_token_id
from asru.progress import progress_bar
from asru.trainer import AsruTrainer, TrainingDiverged, remove_checkpoints, training_args

__all__ = ["TrainConfig", "TrainingDiverged", "sft", "encode_examples", "batches", "batch_indices"]


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    loss: str = "example_mean"  # "example_mean": every example weighs the same; "token_mean": every answer token does
    group_by_length: bool = False  # similar lengths per batch: less padding, but one format per batch (docs/world.md)
    save_steps: int = 500  # a Trainer checkpoint every N steps (what --resume continues from); 0: none
    epochs: float | None = None  # set: train this many passes over the examples instead of `steps` (real presets)

    def __post_init__(self) -> None:
        if self.loss not in ("example_mean", "token_mean"):
            raise UserError(f"train.loss must be example_mean or token_mean, got '{self.loss}'")
        if self.epochs is not None and self.epochs <= 0:
            raise UserError(f"train.epochs must be > 0 (or null to use steps), got {self.epochs}")

    def to_dict(self) -> dict:
        return asdict(self)


def encode_examples(processor, examples: Sequence[tuple[str, bytes | None, str]], label: str = "encoding") -> list[dict]:
    """Tokenize each (question, image, answer) once with the shared encoder (`models.batch.encode_example`);
    the image processor is the slow part on a CPU, so it must not run again at every step."""
    encoded: list[dict] = []
    with progress_bar(label, total=len(examples)) as advance:
        for question, image, answer in examples:
            encoded.append(encode_example(processor, question, image, answer))
            advance(1)
    return encoded


def collate(batch: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad encoded examples into model inputs (images concatenated in batch order)."""
    return pad_features(batch, pad_id, padding_side="right")


def logits_of(model, batch: dict) -> torch.Tensor:
    """The model's logits for a collated batch (labels are not passed, so no loss is computed twice)."""
    return model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits


def shifted(logits_: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits predicting token t+1, its label, and the answer-token mask (labels != IGNORE)."""
    target = labels[:, 1:]
    return logits_[:, :-1], target, target != IGNORE


def token_nll(logits_: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token NLL [B, T-1] of the answer tokens (0 elsewhere) and the answer mask.

    Only answer positions are upcast and soft-maxed: on a real model the prompt (hundreds of image tokens)
    times a 150k vocabulary would otherwise dominate memory.
    """
    pred, target, mask = shifted(logits_, labels)
    nll = torch.zeros(mask.shape, dtype=torch.float32, device=pred.device)
    nll[mask] = torch.nn.functional.cross_entropy(pred[mask].float(), target[mask], reduction="none")
    return nll, mask


def answer_nll(logits_: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """NLL of each sequence's answer [B]: summed over its answer tokens ("sum", = -log p(answer)) or averaged ("mean")."""
    nll, mask = token_nll(logits_, labels)
    total = nll.sum(dim=1)
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / mask.sum(dim=1).clamp(min=1)
    raise ValueError(f"reduction must be 'sum' or 'mean', not {reduction!r}")


def _loss(model, inputs: dict, kind: str) -> torch.Tensor:
    """Answer-token cross-entropy. Averaging per example first keeps one-token answers (an MC letter) from being
    drowned by long sentences: with token averaging the letter is ~5 % of the signal and the tiny model never
    learns to pick options; per example it is as important as any other answer."""
    if kind == "token_mean":
        return model(**inputs).loss
    return answer_nll(logits_of(model, inputs), inputs["labels"], "mean").mean()


def _schedule(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


GROUP_POOL = 64  # batches drawn, sorted by length and re-cut together when grouping by length


def batch_indices(lengths: Sequence[int], batch_size: int, seed: int, group_by_length: bool = False):
    """Endless shuffled index batches over `len(lengths)` examples (a new permutation each epoch).

    With `group_by_length`, GROUP_POOL batches' worth of examples are sorted by length, cut into batches and
    the batches shuffled (as `transformers`' length-grouped sampler does): padding is what a CPU step spends
    most on, and batches stay random in content and order.
    """
    rng = random.Random(seed)
    order: list[int] = []
    queue: list[list[int]] = []
    while True:
        if not queue:
            span = batch_size * (GROUP_POOL if group_by_length else 1)
            while len(order) < span:
                fresh = list(range(len(lengths)))
                rng.shuffle(fresh)
                order += fresh
            pool, order = order[:span], order[span:]
            if group_by_length:
                pool.sort(key=lambda i: lengths[i])
            queue = [pool[i:i + batch_size] for i in range(0, span, batch_size)]
            if group_by_length:
                rng.shuffle(queue)
        yield queue.pop()


def first_batches(lengths: Sequence[int], batch_size: int, seed: int, steps: int, group_by_length: bool = False) -> list[list[int]]:
    """The first `steps` batches of `batch_indices`: the data order of one run, fixed before it starts."""
    return list(islice(batch_indices(lengths, batch_size, seed, group_by_length), steps))


def batches(encoded: list[dict], batch_size: int, seed: int, group_by_length: bool = False):
    """Endless shuffled batches of encoded examples (`batch_indices` resolved)."""
    for idx in batch_indices([len(e["input_ids"]) for e in encoded], batch_size, seed, group_by_length):
        yield [encoded[i] for i in idx]


class SFTTrainer(AsruTrainer):
    """Answer-token cross-entropy (`_loss`) on right-padded batches."""

    def __init__(self, *args, loss_kind: str = "example_mean", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.loss_kind = loss_kind

    def training_loss(self, model, inputs):
        return _loss(model, inputs, self.loss_kind)


def sft(model, processor, encoded: list[dict], cfg: TrainConfig, label: str = "training", out_dir: str | Path | None = None,
        resume: bool = False, callbacks=()) -> dict:
    """Train `model` in place for cfg.steps steps through the Trainer; returns loss statistics for the manifest.

    Checkpoints (every cfg.save_steps) go to out_dir/checkpoints and are removed once training has finished."""
    if not encoded:
        raise UserError(f"{label}: no training examples; check the data directory")
    if cfg.epochs is not None:
        cfg = replace(cfg, steps=max(1, math.ceil(cfg.epochs * len(encoded) / cfg.batch_size)))
    torch.manual_seed(cfg.seed)
    pad_id = _pad_token_id(processor)
    plan = first_batches([len(e["input_ids"]) for e in encoded], cfg.batch_size, cfg.seed, cfg.steps, cfg.group_by_length)
    scratch = None
    if out_dir is None:
        scratch = tempfile.mkdtemp(prefix="asru-sft-")
        out_dir = scratch
    args = training_args(out_dir, steps=cfg.steps, lr=cfg.lr, seed=cfg.seed, grad_clip=cfg.grad_clip,
                         weight_decay=cfg.weight_decay, save_steps=cfg.save_steps if scratch is None else 0)
    trainer = SFTTrainer(model, args, dataset=encoded, batches=plan, collate=lambda b: collate(b, pad_id),
                         schedule=lambda s: _schedule(s, cfg), label=label, callbacks=callbacks, loss_kind=cfg.loss)
    try:
        history = trainer.fit(resume=resume)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    remove_checkpoints(out_dir)
    losses = [h["loss"] for h in history]
    tail = losses[-50:]
    return {"steps": trainer.state.global_step, "first_loss": losses[0] if losses else None,
            "final_loss": sum(tail) / len(tail) if tail else None, "resumed_from": trainer.resumed_from}
