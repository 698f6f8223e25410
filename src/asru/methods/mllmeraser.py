"""MLLMEraser: training-free, test-time unlearning by input-gated activation steering (weights untouched).

Why: it is the baseline that, like ASRU's stage 1, works in activation space, but without any training;
comparing them separates what the steering direction does from what training does.

Construction (all on the vanilla model, layer L output at the last prompt token, `last_prompt_hidden`):
- prompts: every forget (question, image), asked plainly and with the generation instruction;
- erasure direction v = mean h(forget prompt + REFUSAL_CUE) - mean h(forget prompt): the shift from
  "recalling the person" to "asked to withhold it", measured on the very inputs to be forgotten;
- retain basis U_r = top `retain_rank` right singular vectors of the (uncentered) retain activations, the
  subspace retain inputs live in; forget basis U_f = top `forget_rank` right singular vectors of the forget
  activations with U_r projected out (the directions in which forget inputs leave the retain subspace);
- gate(h) = sigmoid((|U_f^T h|/|h| - center) / temperature), center = midpoint of the forget and retain
  mean scores, temperature such that those two means map to sigmoid(+-gate_sharpness); so retain inputs
  get ~0 steering and forget inputs ~the full `scale * v` (see asru.steering.runtime). Calibration uses the
  same prompts the bases come from; keep retain_rank well below the number of retain prompts so retain
  inputs keep a realistic residual.
The output directory is a copy of the vanilla model plus `steering.safetensors`; `asru eval` re-applies it
with `apply_saved_steering`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch

from asru.data.prompts import gen_prompt
from asru.data.schema import QAItem
from asru.errors import UserError
from asru.manifest import is_main_process
from asru.methods.base import Method, UnlearnContext
from asru.models.load import save_model
from asru.models.layers import check_layer, num_layers
from asru.models.load import load_model
from asru.steering.hooks import last_prompt_hidden
from asru.steering.runtime import STEERING_FILE, GatedSteering

REFUSAL_CUE = ("This question is about a private individual. Do not reveal anything about them; "
               "politely say that you do not know.")


@dataclass
class MLLMEraserConfig:
    layer: int | None = None  # decoder layer to steer; None = the middle layer (num_layers // 2)
    scale: float = 1.0  # multiplies the erasure direction
    retain_rank: int = 32  # principal directions of retain activations kept as the retain subspace
    forget_rank: int = 8  # principal directions of the forget activations' non-retain part (the gate's subspace)
    gate_sharpness: float = 5.0  # the forget / retain mean scores map to sigmoid(+-gate_sharpness)
    max_items: int = 512  # forget and retain items used (each asked two ways); the first ones are taken
    cue: str = REFUSAL_CUE
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.retain_rank < 1 or self.forget_rank < 1:
            raise UserError(f"mllmeraser retain_rank and forget_rank must be >= 1, got {self.retain_rank}, {self.forget_rank}")
        if self.gate_sharpness <= 0:
            raise UserError(f"mllmeraser gate_sharpness must be > 0, got {self.gate_sharpness}")
        if self.max_items < 1 or self.batch_size < 1:
            raise UserError("mllmeraser max_items and batch_size must be >= 1")

    def to_dict(self) -> dict:
        return asdict(self)


def prompts(items: list[QAItem], suffix: str = "") -> list[tuple[str, bytes | None]]:
    """Each item asked plainly and with the generation instruction (the evaluator uses both forms)."""
    out = []
    for item in items:
        for text in (item.question, gen_prompt(item.question)):
            out.append((f"{text}\n{suffix}" if suffix else text, item.image))
    return out


def principal_basis(acts: torch.Tensor, rank: int) -> torch.Tensor:
    """[H, k] orthonormal basis: the top-k right singular vectors of activations [N, H] (uncentered)."""
    _, s, vh = torch.linalg.svd(acts.double(), full_matrices=False)
    keep = int((s > s[0] * 1e-6).sum()) if s.numel() else 0
    return vh[: min(rank, keep)].T.float()


def build_steering(forget: torch.Tensor, refusing: torch.Tensor, retain: torch.Tensor, layer: int,
                   cfg: MLLMEraserConfig) -> GatedSteering:
    """Direction, bases and a calibrated gate from activations [N, H] (see the module docstring)."""
    retain_basis = principal_basis(retain, cfg.retain_rank)
    outside = forget - (forget @ retain_basis) @ retain_basis.T
    if outside.norm() <= 1e-6 * forget.norm().clamp(min=1e-12):
        raise UserError(f"at layer {layer} the forget activations lie inside the retain subspace; lower "
                        f"retain_rank (now {cfg.retain_rank}) or pick another layer")
    steering = GatedSteering(vector=refusing.mean(0) - forget.mean(0), layer=layer, scale=cfg.scale,
                             retain_basis=retain_basis, forget_basis=principal_basis(outside, cfg.forget_rank),
                             center=0.5, temperature=1.0)
    s_forget, s_retain = steering.gate_score(forget).mean().item(), steering.gate_score(retain).mean().item()
    if s_forget - s_retain <= 1e-6:
        raise UserError(f"the gate cannot tell forget from retain inputs at layer {layer} (mean scores "
                        f"{s_forget:.3f} vs {s_retain:.3f}); pick another layer or change retain_rank")
    steering.center = (s_forget + s_retain) / 2
    steering.temperature = (s_forget - s_retain) / (2 * cfg.gate_sharpness)
    return steering


class MLLMEraser(Method):
    name = "mllmeraser"
    description = "Training-free test-time steering with an input-aware gate built from retain activations"
    Config: ClassVar[type] = MLLMEraserConfig

    def __init__(self, config: Any = None) -> None:
        super().__init__(config if config is not None else MLLMEraserConfig())

    def unlearn(self, ctx: UnlearnContext) -> dict[str, Any]:
        cfg = self.config
        start = time.perf_counter()
        model, processor = load_model(ctx.model_dir)
        layer = check_layer(model, cfg.layer if cfg.layer is not None else num_layers(model) // 2)
        forget_items, retain_items = ctx.forget_items[: cfg.max_items], ctx.retain_items[: cfg.max_items]
        if not retain_items:
            raise UserError(f"mllmeraser needs retain data but the retain split of '{ctx.forget_split}' is empty")

        def hidden(prompt_list):
            return last_prompt_hidden(model, processor, prompt_list, layer, batch_size=cfg.batch_size)

        forget, retain = hidden(prompts(forget_items)), hidden(prompts(retain_items))
        refusing = hidden(prompts(forget_items, suffix=cfg.cue))
        steering = build_steering(forget, refusing, retain, layer, cfg)
        steering.metadata = {"method": self.name, "source_model": str(ctx.model_dir), "cue": cfg.cue,
                             "forget_split": ctx.forget_split, "forget_prompts": str(len(forget)),
                             "retain_prompts": str(len(retain)), "retain_rank": str(steering.retain_basis.shape[1]),
                             "forget_rank": str(steering.forget_basis.shape[1])}
        save_model(model, processor, ctx.model_out)
        if is_main_process():  # training-free: every process built the same steering; rank 0 writes it
            steering.save(ctx.model_out / STEERING_FILE)
        return {"layer": layer, "retain_rank": steering.retain_basis.shape[1],
                "forget_rank": steering.forget_basis.shape[1], "vector_norm": steering.vector.norm().item(),
                "gate_forget_mean": steering.gate_value(forget).mean().item(),
                "gate_retain_mean": steering.gate_value(retain).mean().item(),
                "forget_prompts": len(forget), "retain_prompts": len(retain),
                "seconds": round(time.perf_counter() - start, 2)}
