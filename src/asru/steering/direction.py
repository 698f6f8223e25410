"""ASRU's refusal steering vector: mean refusal activation (base model, never-seen people, refused answers only)
minus mean forget activation (vanilla model, forget prompts), read after decoder layer L at the last prompt token."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from asru.errors import UserError
from asru.models.chat import ImageInput
from asru.models.generate import generate
from asru.models.layers import check_layer, hidden_size
from asru.refusal import is_refusal
from asru.steering.hooks import last_prompt_hidden

Prompt = tuple[str, ImageInput]


def model_fingerprint(model_dir: str | Path) -> str:
    """A cheap identity for a model directory: its config plus the head of every weight file.

    Hashing whole checkpoints (16 GB for an 8B model) would take minutes; config + shard headers and first MiB
    tell two models apart in practice (different training changes the first tensors' bytes)."""
    root = Path(model_dir)
    digest = hashlib.sha256()
    config = root / "config.json"
    if config.exists():
        digest.update(config.read_bytes())
    for shard in sorted(root.glob("*.safetensors")):
        if shard.name == "steering.safetensors":
            continue
        with shard.open("rb") as f:
            digest.update(f.read(1 << 20))
    return digest.hexdigest()[:16]


@dataclass
class SteeringVector:
    vector: torch.Tensor
    layer: int
    metadata: dict = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        meta = {k: json.dumps(v) for k, v in {**self.metadata, "layer": self.layer}.items()}
        save_file({"vector": self.vector.contiguous().float()}, str(path), metadata=meta)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "SteeringVector":
        path = Path(path)
        if not path.exists():
            raise UserError(f"steering vector {path} does not exist; compute one with `asru steer-vector`")
        with safe_open(str(path), framework="pt") as f:
            meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
            vector = f.get_tensor("vector")
        return cls(vector=vector, layer=int(meta.pop("layer")), metadata=meta)

    def check_compatible(self, model, model_dir: str | Path | None = None) -> None:
        """Refuse a vector made for another model: hidden size, layer range, and (when known) the vanilla hash."""
        size = hidden_size(model)
        if self.vector.shape != (size,):
            raise UserError(f"steering vector has size {tuple(self.vector.shape)} but the model's hidden size is {size}; "
                            "recompute the vector for this model")
        check_layer(model, self.layer)
        expected = self.metadata.get("vanilla_fingerprint")
        if model_dir is not None and expected and model_fingerprint(model_dir) != expected:
            raise UserError(f"steering vector was computed on another model (fingerprint {expected}, "
                            f"{model_dir} is {model_fingerprint(model_dir)}); recompute it or pass the matching model")


def refusal_activations(base_model, processor, prompts: Sequence[Prompt], layer: int, *, max_new_tokens: int = 32,
                        batch_size: int = 64) -> tuple[torch.Tensor, list[str]]:
    """Hidden states of the prompts the base model actually refuses (greedy), and all its replies."""
    replies = generate(base_model, processor, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    kept = [p for p, r in zip(prompts, replies) if is_refusal(r)]
    if not kept:
        raise UserError("the base model refused none of the probe prompts, so there is no refusal side for the "
                        "steering vector; use privacy questions the base model refuses (check its replies)")
    return last_prompt_hidden(base_model, processor, kept, layer, batch_size=batch_size), replies


def compute_steering_vector(base_model, vanilla_model, processor, probe_prompts: Sequence[Prompt],
                            forget_prompts: Sequence[Prompt], layer: int, **kwargs) -> SteeringVector:
    """v = mean(refusal activations of the base) - mean(forget activations of the vanilla); not normalised."""
    if not forget_prompts:
        raise UserError("no forget prompts: the forget split is empty")
    check_layer(vanilla_model, layer)
    if hidden_size(base_model) != hidden_size(vanilla_model):
        raise UserError("base and vanilla models have different hidden sizes; pass the base of this vanilla model")
    positive, replies = refusal_activations(base_model, processor, probe_prompts, layer, **kwargs)
    negative = last_prompt_hidden(vanilla_model, processor, forget_prompts, layer, batch_size=kwargs.get("batch_size", 64))
    vector = positive.mean(0) - negative.mean(0)
    meta = {"positive_samples": len(positive), "probe_prompts": len(probe_prompts),
            "negative_samples": len(negative), "norm": float(vector.norm()),
            "refusal_share": len(positive) / max(1, len(probe_prompts))}
    return SteeringVector(vector=vector, layer=layer, metadata=meta)
