"""The one training engine behind every gradient loop in asru: a `transformers.Trainer` with asru's data order,
optimizer and schedule.

Why a Trainer subclass and not a hand loop: data parallelism (torchrun / accelerate launch), DeepSpeed/FSDP
sharding, gradient accumulation, mixed precision, checkpoints and `--resume` come from the library. What asru
fixes on top, so that results do not depend on the engine:
- the batches: a precomputed list of index batches (`FixedBatches`), the same seeded order the project's loops
  always used (`training.batch_indices`), so a run is reproducible step by step;
- the optimizer: torch AdamW over the method's parameter groups (weight decay on every trained tensor, as before;
  the Trainer's default would exempt biases and norms);
- the schedule: a LambdaLR of the caller's function of the step;
- the loss: a subclass states `training_loss(model, inputs)`; a NaN/inf loss raises `TrainingDiverged` before
  its backward pass, so no poisoned step is taken and no checkpoint written after it (the last good one stays).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from asru.errors import UserError
from asru.progress import progress_bar

CHECKPOINTS = "checkpoints"
TRAINER_STATE = "trainer_state.json"


class TrainingDiverged(UserError):
    """The loss became NaN/inf; the caller keeps the last good checkpoint."""


class FixedBatches(Sampler):
    """A batch sampler replaying precomputed index batches (one per optimizer step, in order).

    `batch_size` lets accelerate split each batch over processes (`split_batches`): with N processes every
    optimizer step still sees the whole batch, 1/N of it on each process.
    """

    def __init__(self, batches: Sequence[Sequence[int]]) -> None:
        self.batches = [list(b) for b in batches]
        self.batch_size = len(self.batches[0]) if self.batches else 1

    def __iter__(self):
        return iter([list(b) for b in self.batches])

    def __len__(self) -> int:
        return len(self.batches)


class RichProgress(TrainerCallback):
    """The project's progress bar (asru.progress) in place of tqdm and the log printer, with the logged fields."""

    def __init__(self, label: str, fields: Sequence[str] = ("loss",)) -> None:
        self.label, self.fields = label, tuple(fields)
        self._bar = self._advance = None
        self._shown: dict[str, str] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self._bar = progress_bar(self.label, state.max_steps)
        self._advance = self._bar.__enter__()
        self._advance(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in self.fields:
            if logs and key in logs:
                self._shown[key] = f"{logs[key]:.3g}"

    def on_step_end(self, args, state, control, **kwargs):
        if self._advance is not None:
            self._advance(1, **self._shown)

    def on_train_end(self, args, state, control, **kwargs):
        self.close()

    def close(self) -> None:
        """End the bar; also called when training stops with an exception (no on_train_end then)."""
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = self._advance = None


class ManifestProgress(TrainerCallback):
    """Record the optimizer step of the last checkpoint in the run manifest, so a killed run says where it was."""

    def __init__(self, manifest, out_dir: str | Path) -> None:
        self.manifest, self.out_dir = manifest, Path(out_dir)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.manifest is not None:
            self.manifest.extra["checkpoint"] = {"step": state.global_step, "max_steps": state.max_steps}
            self.manifest.write(self.out_dir)


def training_args(out_dir: str | Path, *, steps: int, lr: float, seed: int, grad_clip: float = 1.0,
                  save_steps: int = 0, split_batches: bool = True, **extra: Any) -> TrainingArguments:
    """TrainingArguments for asru's loops; checkpoints go to `out_dir/checkpoints` every `save_steps` (0: none).

    Logging every step feeds the progress bar and the step history; nothing is reported to a tracker.
    """
    try:
        return TrainingArguments(
            output_dir=str(Path(out_dir) / CHECKPOINTS), max_steps=steps, learning_rate=lr, max_grad_norm=grad_clip,
            seed=seed, data_seed=seed, logging_steps=1, logging_nan_inf_filter=False, report_to="none",
            disable_tqdm=True, save_strategy="steps" if save_steps else "no", save_steps=save_steps or 500,
            save_total_limit=2, remove_unused_columns=False, dataloader_num_workers=0,
            accelerator_config={"split_batches": split_batches}, **_cpu_processes(), **extra)
    except ValueError as err:
        raise UserError(f"invalid training settings: {str(err).splitlines()[0]}") from err


def _cpu_processes() -> dict:
    """Several processes without CUDA (torchrun on CPU): gloo, and `use_cpu` so accelerate runs them as one DDP
    job (without it each process would train alone)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        return {"ddp_backend": "gloo", "use_cpu": True}
    return {}


class AsruTrainer(Trainer):
    """Trainer with a fixed batch order, torch AdamW over `param_groups` and a LambdaLR `schedule`.

    Subclasses implement `training_loss(model, inputs) -> scalar`; `self.history` keeps one dict per step
    (`record` adds to it).
    """

    def __init__(self, model, args: TrainingArguments, *, dataset: Sequence, batches: Sequence[Sequence[int]],
                 collate: Callable, schedule: Callable[[int], float], param_groups: list[dict] | None = None,
                 label: str = "training", callbacks: Sequence[TrainerCallback] = (), progress_fields=("loss",),
                 on_backward: Callable[[torch.nn.Module], None] | None = None) -> None:
        if not batches:
            raise UserError(f"{label}: nothing to train on (no batches)")
        self.progress = RichProgress(label, progress_fields)
        if args.n_gpu > 1:  # no torch DataParallel in one process (hooks find the model's layers): launch one per GPU
            args._n_gpu = 1
        super().__init__(model=model, args=args, data_collator=collate, train_dataset=dataset,
                         callbacks=[self.progress, *callbacks])
        for noisy in (PrinterCallback, ProgressCallback):
            self.remove_callback(noisy)
        self.model_accepts_loss_kwargs = False  # our losses are means already: no token-count rescaling
        self.label, self.batches, self.schedule = label, batches, schedule
        self.groups = param_groups
        self.on_backward = on_backward
        self.history: list[dict] = []

    # --- what subclasses state
    def training_loss(self, model, inputs) -> torch.Tensor | tuple[torch.Tensor, dict]:  # pragma: no cover
        raise NotImplementedError

    # --- the Trainer's hooks
    def get_train_dataloader(self) -> DataLoader:
        loader = DataLoader(self.train_dataset, batch_sampler=FixedBatches(self.batches),
                            collate_fn=self.data_collator, num_workers=0)
        return self.accelerator.prepare(loader)

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            groups = self.groups or [{"params": [p for p in self.model.parameters() if p.requires_grad],
                                      "weight_decay": self.args.weight_decay}]
            self.optimizer = torch.optim.AdamW(groups, lr=self.args.learning_rate)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, self.schedule)
        return self.lr_scheduler

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = self.training_loss(model, inputs)
        loss, parts = out if isinstance(out, tuple) else (out, {})
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"{self.label}: loss became {loss.item()} at step {self.state.global_step}; "
                                   f"{self._kept()}; lower the learning rate")
        self.history.append({"loss": loss.item(), **{k: float(v) for k, v in parts.items()}})
        return (loss, None) if return_outputs else loss

    #: True for losses that run more than one forward pass per step (forget and retain): DDP's reducer accepts one,
    #: so these run on the unwrapped model and their gradients are averaged over processes here (`_average_grads`).
    several_forwards: bool = False

    def training_step(self, model, inputs, num_items_in_batch=None):
        manual = self.several_forwards and self.args.world_size > 1
        loss = super().training_step(self.model if manual else model, inputs, num_items_in_batch)
        if manual:
            self._average_grads()
        if self.on_backward is not None:  # after backward, before clipping and the optimizer step
            self.on_backward(self.model)
        return loss

    def _average_grads(self) -> None:
        import torch.distributed as dist

        for param in self.model.parameters():
            if param.requires_grad:
                if param.grad is None:  # unused this step on this process (e.g. no image): still take part
                    param.grad = torch.zeros_like(param)
                dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
                param.grad /= self.args.world_size

    def _kept(self) -> str:
        last = last_checkpoint(self.args.output_dir)
        return f"last good checkpoint kept at {last}" if last else "nothing was saved"

    def fit(self, resume: bool = False) -> list[dict]:
        """Train (from the last checkpoint when `resume`); the model ends in eval mode; returns the step history."""
        checkpoint = checkpoint_to_resume(Path(self.args.output_dir), resume)
        try:
            self.train(resume_from_checkpoint=checkpoint)
        finally:
            self.progress.close()
        self.model.eval()
        self.resumed_from = checkpoint
        return self.history


def last_checkpoint(ckpt_dir: str | Path) -> str | None:
    """The highest-numbered *complete* checkpoint under `ckpt_dir`: the Trainer writes trainer_state.json last, so a
    run killed while saving leaves a checkpoint without a readable one, which is skipped."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return None
    done = [p for p in ckpt_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit() and _complete(p)]
    return str(max(done, key=lambda p: int(p.name.split("-")[-1]))) if done else None


def _complete(checkpoint: Path) -> bool:
    """trainer_state.json is there and whole (a kill can land in the middle of writing it)."""
    try:
        json.loads((checkpoint / TRAINER_STATE).read_text())
    except (OSError, ValueError):
        return False
    return True


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether any training under `run_dir` (a method's run, its stages) left a complete checkpoint."""
    return any(last_checkpoint(d) for d in Path(run_dir).rglob(CHECKPOINTS) if d.is_dir())


def checkpoint_to_resume(ckpt_dir: Path, resume: bool) -> str | None:
    """The last complete checkpoint when resuming; a fresh run clears checkpoints of an earlier run in the same place.

    Why clear: a later resume would otherwise pick a higher-numbered checkpoint from the earlier run.
    """
    last = last_checkpoint(ckpt_dir)
    if resume:
        return last
    if ckpt_dir.is_dir() and int(os.environ.get("RANK", "0")) == 0:
        shutil.rmtree(ckpt_dir)
    return None


def remove_checkpoints(out_dir: str | Path) -> None:
    """Drop a finished run's checkpoints (optimizer state is several times the model's size)."""
    if int(os.environ.get("RANK", "0")) == 0:
        shutil.rmtree(Path(out_dir) / CHECKPOINTS, ignore_errors=True)
