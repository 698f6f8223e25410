"""What every attack shares: the model under attack (a directory plus the steering it ships) and the environment
(data, held-out facts, decoding settings). An attack never learns how a model was unlearned."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from asru.attacks.facts import FactSplit
from asru.attacks.measure import Settings
from asru.data.schema import QAItem
from asru.errors import UserError
from asru.manifest import read_manifest

RUN_STEERING = "steering.safetensors"  # ASRU writes its refusal vector into the run directory, beside model/


@dataclass
class AttackEnv:
    data_dir: Path
    forget_split: str
    facts: FactSplit
    held_out: list[QAItem]
    settings: Settings
    vanilla_dir: Path
    seed: int = 0
    cache: dict[str, Any] = field(default_factory=dict)  # what several targets share (the vanilla's activations)


@dataclass
class Target:
    """A model directory under attack."""

    model_dir: Path
    role: str = "model"  # model | oracle | vanilla (for messages and the results file only)

    def load(self, device: str | None = None, for_training: bool = False):
        from asru.models.load import load_model

        return load_model(self.model_dir, device=device, for_training=for_training)

    @contextlib.contextmanager
    def loaded(self, device: str | None = None, for_training: bool = False) -> Iterator[tuple[Any, Any]]:
        """(model, processor) with the model's saved test-time steering applied, i.e. the model as it ships."""
        model, processor = self.load(device, for_training)
        with self.steered(model):
            yield model, processor

    @contextlib.contextmanager
    def steered(self, model) -> Iterator[None]:
        from asru.steering.runtime import apply_saved_steering

        handle = apply_saved_steering(model, self.model_dir)
        try:
            yield
        finally:
            if handle is not None:
                handle.close()

    def own_vector(self) -> tuple[int, torch.Tensor] | None:
        """(layer, vector) of the steering direction this model ships: MLLMEraser's gated vector in the model
        directory, or ASRU's refusal vector in its run directory; None for a model without one."""
        from asru.steering.runtime import load_saved_steering

        gated = load_saved_steering(self.model_dir)
        if gated is not None:
            return gated.layer, gated.scale * gated.vector
        path = self.run_steering_path()
        if path is None:
            return None
        from asru.steering.direction import SteeringVector

        vector = SteeringVector.load(path)
        return vector.layer, vector.vector

    def run_steering_path(self) -> Path | None:
        parent = self.model_dir.parent
        if (parent / RUN_STEERING).is_file() and str(read_manifest(parent).get("command", "")).startswith("unlearn"):
            return parent / RUN_STEERING
        return None


def check_steering(target: Target, vanilla_dir: Path) -> None:
    """Refuse a steering file made for another model (width, layer count; ASRU's vector also by its vanilla
    fingerprint), with one line, before anything is computed."""
    from transformers import AutoConfig

    from asru.steering.runtime import STEERING_FILE, load_saved_steering

    config = AutoConfig.from_pretrained(target.model_dir)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    width, layers = int(text.hidden_size), int(text.num_hidden_layers)
    found: list[tuple[Path, int, int, str | None]] = []
    gated = load_saved_steering(target.model_dir)
    if gated is not None:
        found.append((target.model_dir / STEERING_FILE, gated.layer, gated.vector.shape[0], None))
    path = target.run_steering_path()
    if path is not None:
        from asru.steering.direction import SteeringVector

        vector = SteeringVector.load(path)
        found.append((path, vector.layer, vector.vector.shape[0], vector.metadata.get("vanilla_fingerprint")))
    for file, layer, size, fingerprint in found:
        if size != width or not 0 <= layer < layers:
            raise UserError(f"{file} was made for another model (layer {layer}, width {size}); {target.model_dir} has "
                            f"{layers} layers of width {width}; remove the file or pass the model it belongs to")
        if fingerprint:
            from asru.steering.direction import model_fingerprint

            if model_fingerprint(vanilla_dir) != fingerprint:
                raise UserError(f"{file} was computed from another vanilla model than --vanilla {vanilla_dir} "
                                f"(fingerprint {fingerprint}); pass the vanilla model this run started from")


class Attack:
    """One attack. Subclasses set `name`, `description`, `Config`, `metric` (the figure its recovered share is
    read from) and `run`; the headline is the variant (not a control) with the largest recovered share."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    metric: ClassVar[str] = "gen_contains"
    controls: ClassVar[tuple[str, ...]] = ()  # variants that are controls, never the attack's headline
    Config: ClassVar[type] = object

    def __init__(self, config: Any) -> None:
        self.config = config

    def check(self, env: AttackEnv) -> None:
        """Refuse bad settings (one line) before any model is touched."""

    def run(self, target: Target, env: AttackEnv, notes: list[str]) -> dict[str, dict]:  # pragma: no cover
        """{variant: measures} of `target` under this attack; `notes` collects one-line remarks (skips)."""
        raise NotImplementedError
