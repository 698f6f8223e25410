"""Test-time steering saved next to a model (`<model dir>/steering.safetensors`), re-applied after loading.

Why a file beside the weights: a training-free method (MLLMEraser) leaves the weights as they are; its whole
effect is a gated vector added to one layer's residual stream. Storing it in the model directory keeps the
"a model is a directory" contract: `apply_saved_steering(model, dir)` right after `load_model(dir)` gives the
unlearned behaviour, and a directory without the file behaves exactly as before.

The gate (input-aware, after MLLMEraser's null-space idea): U_r is the retain basis (orthonormal columns, the
top principal directions of retain activations at the layer) and U_f the forget basis (the top principal
directions of the forget activations after projecting out U_r, so U_f is orthogonal to U_r). Then
    s(h)    = |U_f^T h| / |h|        (= |U_f^T (I - U_r U_r^T) h| / |h|)
    gate(h) = sigmoid((s(h) - center) / temperature)
s is the share of the input's state that lies outside the retain subspace *and* in the directions where forget
inputs leave it: retain-like inputs score ~0 and get no steering, forget inputs get ~the full vector. A
subspace rather than one mean direction, because forget prompts (different people, images, question types)
leave the retain subspace in different directions. h is the layer output at the forward pass's last position
(the last prompt token under left padding); single-token forwards (generation steps) reuse the gate of the
prefill that preceded them, so a whole answer is steered, or not, by its prompt.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from asru.errors import UserError
from asru.models.layers import hidden_size, num_layers
from asru.steering.hooks import add_to_layer

STEERING_FILE = "steering.safetensors"
FORMAT = "asru.gated_steering.v1"


@dataclass
class GatedSteering:
    """Everything needed to re-create the steering hook; `vector` is added as `scale * gate(h) * vector`."""

    vector: torch.Tensor  # [H] erasure direction (unscaled)
    layer: int
    scale: float
    retain_basis: torch.Tensor  # [H, k_r] orthonormal columns (kept for provenance; U_f is already orthogonal to it)
    forget_basis: torch.Tensor  # [H, k_f] orthonormal columns, orthogonal to retain_basis
    center: float
    temperature: float
    metadata: dict[str, str] = field(default_factory=dict)

    def gate_score(self, hidden: torch.Tensor) -> torch.Tensor:
        """s(h) = |U_f^T h| / |h| for hidden states [..., H] (see the module docstring)."""
        h = hidden.float()
        basis = self.forget_basis.to(h.device, torch.float32)
        return (h @ basis).norm(dim=-1) / h.norm(dim=-1).clamp(min=1e-12)

    def gate_value(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid((self.gate_score(hidden) - self.center) / self.temperature)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        tensors = {
            "vector": self.vector.float().contiguous(),
            "retain_basis": self.retain_basis.float().contiguous(),
            "forget_basis": self.forget_basis.float().contiguous(),
            "layer": torch.tensor(self.layer, dtype=torch.int64),
            "scale": torch.tensor(self.scale, dtype=torch.float32),
            "gate_center": torch.tensor(self.center, dtype=torch.float32),
            "gate_temperature": torch.tensor(self.temperature, dtype=torch.float32),
        }
        meta = {"format": FORMAT, "layer": str(self.layer), "scale": repr(self.scale),
                "gate": "sigmoid((|forget_basis^T h| / |h| - center) / temperature)", **self.metadata}
        save_file(tensors, str(path), metadata={k: str(v) for k, v in meta.items()})
        return path

    @classmethod
    def load(cls, path: str | Path) -> GatedSteering:
        path = Path(path)
        try:
            tensors = load_file(str(path))
            with safe_open(str(path), framework="pt") as f:
                metadata = dict(f.metadata() or {})
        except Exception as err:  # safetensors raises several types for a damaged file
            raise UserError(f"cannot read steering file {path}: {str(err).splitlines()[0] if str(err) else err}") from err
        missing = {"vector", "retain_basis", "forget_basis", "layer", "scale", "gate_center", "gate_temperature"} - set(tensors)
        if missing:
            raise UserError(f"steering file {path} lacks {', '.join(sorted(missing))}; re-run the method that wrote it")
        return cls(vector=tensors["vector"], layer=int(tensors["layer"]), scale=float(tensors["scale"]),
                   retain_basis=tensors["retain_basis"], forget_basis=tensors["forget_basis"],
                   center=float(tensors["gate_center"]), temperature=float(tensors["gate_temperature"]),
                   metadata=metadata)


class HeldGate:
    """gate(hidden [B, T, H]) -> [B, 1, 1]: read at the last position of a multi-token forward, held for the
    single-token generation steps that follow it (same batch size)."""

    def __init__(self, steering: GatedSteering) -> None:
        self.steering = steering
        self.held: torch.Tensor | None = None

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        if hidden.shape[1] == 1 and self.held is not None and self.held.shape[0] == hidden.shape[0]:
            return self.held.to(hidden.device)
        value = self.steering.gate_value(hidden[:, -1, :]).view(-1, 1, 1)
        if hidden.shape[1] > 1:
            self.held = value.detach()
        return value


def load_saved_steering(model_dir: str | Path) -> GatedSteering | None:
    """The steering saved in `model_dir`, or None when the directory has none."""
    path = Path(model_dir) / STEERING_FILE
    return GatedSteering.load(path) if path.is_file() else None


def apply_saved_steering(model, model_dir: str | Path) -> contextlib.ExitStack | None:
    """Activate `model_dir`'s saved steering on `model`; returns a handle whose `close()` removes it, or None.

    Call right after loading the model from the same directory. Checks that the layer and the vector size
    fit the model, so a steering file copied next to the wrong model fails with one clear line.
    """
    steering = load_saved_steering(model_dir)
    if steering is None:
        return None
    if steering.layer >= num_layers(model) or steering.vector.shape[0] != hidden_size(model):
        raise UserError(f"{Path(model_dir) / STEERING_FILE} was made for another model (layer {steering.layer}, "
                        f"width {steering.vector.shape[0]}); this model has {num_layers(model)} layers of width "
                        f"{hidden_size(model)}")
    stack = contextlib.ExitStack()
    stack.enter_context(add_to_layer(model, steering.layer, steering.scale * steering.vector, gate=HeldGate(steering)))
    return stack


__all__ = ["STEERING_FILE", "GatedSteering", "HeldGate", "apply_saved_steering", "load_saved_steering"]
