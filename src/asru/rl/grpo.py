"""Stage 2 of ASRU (and of RULE): GRPO on the forget/retain boundary set, on top of TRL's `GRPOTrainer`.

Why TRL: group-normalised advantages, clipped ratio, k3 KL to the starting model, DeepSpeed/vLLM support and
checkpoint/resume come for free; this module only adds what the unlearning recipe needs: the paper's settings,
the boundary dataset in the format TRL expects for VLMs, split-wise reward logging, a NaN guard, a plain
`save_pretrained` output (LoRA merged) and a fix for batches that mix image and text-only prompts (see
docs/trl-notes.md for the TRL quirks this works around).
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset, Features, Image, List, Value
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from trl import GRPOConfig, GRPOTrainer

from asru.data.schema import QAItem
from asru.errors import UserError
from asru.models.chat import to_pil, user_message
from asru.trainer import CHECKPOINTS, RichProgress, checkpoint_to_resume, last_checkpoint
from asru.refusal import is_refusal
from asru.rl.rewards import message_text

LOG_FILE = "grpo_log.jsonl"
# Metric prefixes that carry reward components (TRL's per-function means, our split-wise means, asru_reward's).
COMPONENT_PREFIXES = ("rewards/", "forget/", "retain/", "asru/")


def _default_report_to() -> str:
    """TensorBoard when it is installed, else no logger (TRL would fail on a missing backend)."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return "none"
    return "tensorboard"


VLLM_PROMPT_BUDGET = 4096  # prompt tokens vLLM reserves per sequence: chat template + question + a capped image


@dataclass
class GRPOSettings(GRPOConfig):
    """TRL's GRPOConfig with the paper's defaults (EasyR1 recipe, real models) and asru's few extras.

    Every TRL/Trainer option is accepted as is (a preset's `grpo:` section is this class's keyword arguments);
    only the defaults below differ from TRL's, and the extras are `lora*`, `dtype` and `use_vllm: auto`.
    `per_device_train_batch_size` counts completions, not prompts (TRL's convention): each optimizer step on one
    device sees per_device_train_batch_size / num_generations prompts. TRL needs the global generation batch,
    per_device_train_batch_size * world_size * gradient_accumulation_steps, to be a multiple of num_generations.
    `loss_type` "dapo" is TRL's token-mean (every completion token of the accumulated batch weighs the same),
    which is EasyR1's `token-mean`. `bf16` None: on when CUDA supports it. `dtype` None: float32 weights for full
    fine-tuning (bf16 weights cannot hold lr 1e-6 updates; compute still runs in bf16 autocast), the checkpoint's
    dtype for LoRA (the base is frozen, adapters stay float32). `output_dir` is set by `run_grpo`.
    """

    # the paper's values where TRL's defaults differ
    temperature: float = 1.5
    top_p: float = 0.95
    learning_rate: float = 1e-6
    weight_decay: float = 0.01
    lr_scheduler_type: str = "constant"
    beta: float = 0.1
    use_bias_correction_kl: bool = False  # EasyR1's plain k3 ("low_var_kl") penalty, not DeepSeek-V3.2's IS-weighted one
    epsilon_high: float = 0.3
    loss_type: str = "dapo"
    scale_rewards: str = "group"
    max_steps: int = 100
    per_device_train_batch_size: int = 16
    max_completion_length: int = 32
    gradient_checkpointing: bool = True
    logging_steps: float = 1
    logging_nan_inf_filter: bool = False  # the NaN guard must see the real loss, not a filtered average
    save_strategy: str = "steps"
    save_steps: float = 25
    save_total_limit: int | None = 2
    disable_tqdm: bool = True  # our Rich bar (asru.progress) replaces tqdm and the log printer
    report_to: str | list[str] = field(default_factory=_default_report_to)
    bf16: bool | None = None
    use_vllm: bool | str = False  # true, false or "auto" (when vLLM and a GPU are available)
    # asru's extras
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: str | list[str] = "all-linear"
    dtype: str | None = None

    def __post_init__(self) -> None:
        check_settings(self, _world_size())
        self.use_vllm = _use_vllm(self.use_vllm)
        if self.use_vllm and self.vllm_max_model_length is None:
            # unset, vLLM sizes its KV cache for the model's whole context (262k for Qwen3-VL) and fails at start
            self.vllm_max_model_length = VLLM_PROMPT_BUDGET + self.max_completion_length
        if self.bf16 is None:
            self.bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        if self.data_seed is None:
            self.data_seed = self.seed
        try:
            super().__post_init__()
        except ValueError as err:
            raise UserError(f"invalid grpo settings: {str(err).splitlines()[0]}") from err

    def recorded(self) -> dict:
        """The options this class sets or adds (what a run manifest records), not TRL's ~300 fields."""
        own = GRPOSettings.__annotations__
        return {k: v for k, v in self.to_dict().items() if k in own or k in ("num_generations", "epsilon", "seed",
                                                                                "gradient_accumulation_steps")}


def check_settings(settings: GRPOSettings, world_size: int = 1) -> None:
    """Refuse settings TRL would reject later (or deep inside training) with a one-line fix."""
    if settings.num_generations < 2:
        raise UserError(f"grpo num_generations must be >= 2 (advantages compare rollouts of one prompt), got {settings.num_generations}")
    generation_batch = settings.per_device_train_batch_size * world_size * settings.gradient_accumulation_steps
    if settings.per_device_train_batch_size < 1 or generation_batch % settings.num_generations:
        raise UserError(
            f"grpo per_device_train_batch_size ({settings.per_device_train_batch_size}) x processes ({world_size}) x "
            f"gradient_accumulation_steps ({settings.gradient_accumulation_steps}) = {generation_batch} completions must be "
            f"a positive multiple of num_generations ({settings.num_generations}); e.g. set per_device_train_batch_size "
            f"to {settings.num_generations} or a multiple of it"
        )
    if settings.max_steps < 1 or settings.max_completion_length < 1:
        raise UserError("grpo max_steps and max_completion_length must be >= 1")
    if settings.temperature <= 0 or not 0 < settings.top_p <= 1:
        raise UserError(f"grpo temperature must be > 0 and top_p in (0, 1], got {settings.temperature}, {settings.top_p}")
    if settings.use_vllm and settings.vllm_mode not in ("colocate", "server"):
        raise UserError(f"grpo vllm_mode must be 'colocate' or 'server', got {settings.vllm_mode!r}")


def _world_size() -> int:
    """Processes of this run (set by `accelerate launch` / torchrun), without initialising torch.distributed."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _use_vllm(use_vllm: bool | str) -> bool:
    """`use_vllm`: true (required), false, or "auto" (vLLM rollouts when vLLM and a GPU are there)."""
    from trl.import_utils import is_vllm_available

    if use_vllm == "auto":
        return bool(is_vllm_available() and torch.cuda.is_available())
    if use_vllm and not is_vllm_available():
        raise UserError("grpo use_vllm is on but vLLM is not installed; pip install vllm (a version TRL supports) "
                        "or set use_vllm: auto / false")
    return bool(use_vllm)


def grpo_config(settings: GRPOSettings, out_dir: str | Path) -> GRPOSettings:
    """The settings with checkpoints going to out_dir/checkpoints."""
    settings.output_dir = str(Path(out_dir) / CHECKPOINTS)
    return settings


def boundary_dataset(items: Sequence[QAItem], is_forget: Sequence[bool]) -> Dataset:
    """The boundary set as a TRL conversational dataset.

    Columns: prompt (one user turn, with an {"type": "image"} part first when the item has an image), images
    (a list with that one PIL image, or empty; TRL fills the placeholder from it), and the reward columns
    ground_truth, is_forget, answer_key (QAItem.meta["key"] or ""), split, id.
    """
    if len(items) != len(is_forget):
        raise UserError(f"boundary set: {len(items)} items but {len(is_forget)} forget flags; pass one flag per item")
    if not items:
        raise UserError("boundary set is empty; GRPO needs forget and retain questions")
    rows = [_boundary_row(item, bool(flag)) for item, flag in zip(items, is_forget)]
    columns = {key: [row[key] for row in rows] for key in rows[0]}
    return Dataset.from_dict(columns, features=_BOUNDARY_FEATURES)


_BOUNDARY_FEATURES = Features(
    {
        "prompt": List({"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})}),
        "images": List(Image()),
        "ground_truth": Value("string"),
        "is_forget": Value("bool"),
        "answer_key": Value("string"),
        "split": Value("string"),
        "id": Value("string"),
    }
)


def _boundary_row(item: QAItem, forget: bool) -> dict:
    image = to_pil(item.image)
    return {
        "prompt": user_message(item.question, image is not None),
        "images": [image] if image is not None else [],
        "ground_truth": item.answer,
        "is_forget": forget,
        "answer_key": str(item.meta.get("key") or ""),
        "split": item.split,
        "id": item.id,
    }


def with_split_logging(reward_func: Callable[..., list[float]], log_refusal: bool = False) -> Callable[..., list[float]]:
    """Wrap a TRL reward function so each step also logs its forget and retain means (and refusal rates).

    Uses TRL's `log_metric` hook, so the values are averaged over processes and logged with TRL's own metrics as
    forget/<name>, retain/<name>, forget/refusal_rate, retain/refusal_rate. The wrapper keeps the function's
    name (TRL logs rewards/<name>/mean under it).
    """

    @functools.wraps(reward_func)
    def logged(prompts, completions, **kwargs):
        rewards = reward_func(prompts, completions, **kwargs)
        log_metric, flags = kwargs.get("log_metric"), kwargs.get("is_forget")
        if callable(log_metric) and flags is not None:
            name = getattr(reward_func, "__name__", "reward")
            _log_split_means(log_metric, name, rewards, flags)
            if log_refusal:
                refusals = [float(is_refusal(message_text(c))) for c in completions]
                _log_split_means(log_metric, "refusal_rate", refusals, flags)
        return rewards

    return logged


def _log_split_means(log_metric: Callable[[str, float], None], name: str, values: Sequence, flags: Sequence) -> None:
    for split, flag in (("forget", True), ("retain", False)):
        picked = [float(v) for v, f in zip(values, flags) if bool(f) == flag and v is not None]
        if picked:
            log_metric(f"{split}/{name}", sum(picked) / len(picked))


class NaNGuard(TrainerCallback):
    """Stop training with a UserError as soon as a logged loss or grad norm is NaN/inf.

    Why in on_log: the Trainer logs before it saves, so raising here keeps the last good checkpoint on disk and
    never writes a poisoned one.
    """

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in ("loss", "grad_norm"):
            value = (logs or {}).get(key)
            if isinstance(value, (int, float)) and not math.isfinite(value):
                last = last_checkpoint(args.output_dir)
                kept = f"last good checkpoint kept at {last}" if last else "no checkpoint was saved yet"
                raise UserError(
                    f"GRPO {key} became {value} at step {state.global_step}; training stopped ({kept}); "
                    "lower grpo learning_rate or check the rewards and the starting model"
                )


class BoundaryGRPOTrainer(GRPOTrainer):
    """GRPOTrainer that accepts batches mixing image and text-only prompts (TRL 1.16 fails on them).

    Two small fixes, both documented in docs/trl-notes.md:
    - `_generate` returns images with None for text-only prompts, which the processor call that rebuilds the
      forward inputs rejects; None becomes [] (a prompt with zero images).
    - a log-prob chunk or micro-batch that happens to hold only text prompts still carries empty pixel_values,
      which Qwen-VL's vision tower rejects; a forward pre-hook drops empty image tensors.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._image_hooks = _drop_empty_images_hooks(self.model)
        if self.ref_model is not None:
            self._image_hooks += _drop_empty_images_hooks(self.ref_model)

    def _generate(self, prompts):
        # TRL 1.16's return layout (pyproject pins trl to 1.16.x, the version this is tested on):
        # prompt_ids, completion_ids, tool_mask, completions, logprobs, extra_fields, images, tool_images
        out = super()._generate(prompts)
        if len(out) != len(_GENERATE_FIELDS):
            raise RuntimeError(f"TRL's GRPOTrainer._generate returned {len(out)} values, not {len(_GENERATE_FIELDS)}: "
                               "this TRL version is not supported (pyproject pins trl 1.16.x); see docs/trl-notes.md")
        fields = dict(zip(_GENERATE_FIELDS, out))
        if fields["images"] is not None:
            fields["images"] = [imgs or [] for imgs in fields["images"]]
        return tuple(fields.values())

    def remove_image_hooks(self) -> None:
        for handle in self._image_hooks:
            handle.remove()
        self._image_hooks = []


_GENERATE_FIELDS = ("prompt_ids", "completion_ids", "tool_mask", "completions", "logprobs", "extra_fields", "images",
                    "tool_images")
_IMAGE_KEYS = ("pixel_values", "image_grid_thw", "image_sizes", "pixel_attention_mask", "image_position_ids")


def _drop_empty_images(module, args, kwargs):
    pixel_values = kwargs.get("pixel_values")
    if not isinstance(pixel_values, torch.Tensor) or pixel_values.numel() > 0:
        return None
    return args, {k: (None if k in _IMAGE_KEYS else v) for k, v in kwargs.items()}


def _drop_empty_images_hooks(model: torch.nn.Module) -> list:
    """Hook every module whose forward takes pixel_values (PEFT calls inner forwards directly, so hook them all)."""
    handles = []
    for module in model.modules():
        try:
            params = inspect.signature(module.forward).parameters
        except (TypeError, ValueError):
            continue
        if "pixel_values" in params:
            handles.append(module.register_forward_pre_hook(_drop_empty_images, with_kwargs=True))
    return handles


def _lora_config(settings: GRPOSettings):
    from peft import LoraConfig

    return LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=settings.lora_target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )


def _load_policy(model_dir: str | Path, settings: GRPOSettings, args: GRPOConfig):
    """Model + processor on this process's device, after GRPOConfig exists (so ZeRO-3 can shard at load time)."""
    from asru.models.load import load_model

    dtype = settings.dtype or ("auto" if settings.lora else "float32")
    model, processor = load_model(model_dir, device=args.device, dtype=dtype, for_training=True)
    # TRL's forward inputs come from a processor call padded on the tokenizer's side while its prompt ids are
    # left-padded; both must agree or mm_token_type_ids shift against the tokens.
    processor.tokenizer.padding_side = "left"
    return model, processor


def run_grpo(
    model_dir: str | Path,
    out_dir: str | Path,
    dataset: Dataset,
    reward_funcs: Sequence[Callable[..., list[float]]],
    settings: GRPOSettings,
    *,
    resume: bool = False,
    callbacks: Sequence[TrainerCallback] = (),
) -> dict:
    """Run GRPO from `model_dir` on `dataset`; save the final model (LoRA merged) + processor to `out_dir`.

    Checkpoints go to out_dir/checkpoints; `resume=True` continues from the last one (a fresh start when there is
    none). Returns steps, seconds, mean reward over the first/last logged steps, the last reward components and
    the checkpoint resumed from. A NaN/inf loss raises UserError and keeps the last good checkpoint.
    """
    if not reward_funcs:
        raise UserError("run_grpo needs at least one reward function")
    if "prompt" not in dataset.column_names:
        raise UserError(f"GRPO dataset has no 'prompt' column (columns: {', '.join(dataset.column_names)}); build it with boundary_dataset")
    out = Path(out_dir)
    args = grpo_config(settings, out)
    checkpoint = checkpoint_to_resume(out / CHECKPOINTS, resume)
    model, processor = _load_policy(model_dir, settings, args)
    funcs = [with_split_logging(f, log_refusal=(i == 0)) for i, f in enumerate(reward_funcs)]
    progress = RichProgress("grpo", ("reward", "kl", "loss"))
    trainer = BoundaryGRPOTrainer(
        model=model,
        reward_funcs=funcs,
        args=args,
        train_dataset=dataset,
        processing_class=processor,
        peft_config=_lora_config(settings) if settings.lora else None,
        callbacks=[NaNGuard(), progress, *callbacks],
    )
    for noisy in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(noisy)
    start = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
    finally:
        trainer.remove_image_hooks()
        progress.close()
    seconds = time.perf_counter() - start
    _save_final(trainer, processor, model_dir, out, settings)
    history = [h for h in trainer.state.log_history if "reward" in h]
    if trainer.is_world_process_zero():
        _write_log(out / LOG_FILE, history)
    return {
        "steps": trainer.state.global_step,
        "seconds": round(seconds, 2),
        "resumed_from": checkpoint,
        **reward_summary(history),
        "settings": settings.recorded(),
    }


def reward_summary(history: Sequence[dict], window: int = 5) -> dict:
    """Mean reward over the first and last `window` logged steps (never overlapping) and last-window components."""
    if not history:
        return {"reward_first": None, "reward_last": None, "components": {}}
    k = max(1, min(window, len(history) // 2))
    first, last = history[:k], history[-k:]
    keys = sorted({key for h in last for key in h if key.startswith(COMPONENT_PREFIXES) or key == "kl"})
    return {
        "reward_first": _mean(h["reward"] for h in first),
        "reward_last": _mean(h["reward"] for h in last),
        "components": {key: _mean(h[key] for h in last if key in h) for key in keys},
    }


def _mean(values) -> float:
    values = [float(v) for v in values]
    return sum(values) / len(values) if values else float("nan")


def _write_log(path: Path, history: Sequence[dict]) -> None:
    path.write_text("".join(json.dumps(h) + "\n" for h in history))


def _save_final(trainer: GRPOTrainer, processor, model_dir: str | Path, out: Path, settings: GRPOSettings) -> None:
    """A plain save_pretrained directory at `out`: the trained model, or the base with the LoRA adapter merged."""
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    unwrapped.config.use_cache = True  # load_model(for_training=True) turned it off; generation wants it on
    if not settings.lora:
        trainer.save_model(str(out))  # gathers ZeRO-3 shards, writes on the main process only
        return
    adapter_dir = out / CHECKPOINTS / "final-adapter"
    trainer.save_model(str(adapter_dir))
    if trainer.is_world_process_zero():
        _merge_adapter(model_dir, adapter_dir, out, processor)
    trainer.accelerator.wait_for_everyone()


def _merge_adapter(model_dir: str | Path, adapter_dir: Path, out: Path, processor) -> None:
    """Merge on CPU from the starting weights: works the same whether training ran on 1 GPU, DDP or ZeRO-3."""
    from peft import PeftModel

    from asru.models.load import load_model

    base, _ = load_model(model_dir, device="cpu", dtype="auto")
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.config.use_cache = True
    merged.save_pretrained(out)
    processor.save_pretrained(out)
