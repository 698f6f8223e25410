"""RMU (Li et al. 2024, "The WMDP Benchmark", Representation Misdirection for Unlearning).

Why: RMU scrambles the model's internal state on forget inputs instead of editing output likelihoods. A fixed
random direction u is drawn once; the MLPs of a few layers up to layer L are trained so that on forget inputs the
output of decoder layer L becomes c * u (a large, content-free state that later layers cannot read the forgotten
facts from), while on retain inputs it stays what the frozen vanilla model computes:

    forget_loss = MSE(h_L(model, forget), c * u)
    retain_loss = MSE(h_L(model, retain), h_L(vanilla, retain))
    loss        = gamma * forget_loss + alpha * retain_loss

It is the method ASRU's stage 1 adapts (there the target is h_frozen + c * v with v a refusal direction).

Implementation choices:
- u is WMDP's draw: uniform on [0, 1)^H, normalised to unit length (`control_vector`), from a generator seeded with
  the run's seed, so the same seed gives the same u on any device.
- Positions: the states the answer is generated from, i.e. the last prompt token and every answer token but the
  last (labels shifted by one), on both sides. WMDP's plain-text corpora have no prompt, so it takes every token;
  here the prompt holds the image tokens, and the answer's first token is predicted from the last prompt token,
  which an answer-token-only mask (open-unlearning's) would leave out. MSE is the mean over those positions and
  the H dimensions, as WMDP's `mse_loss` over its whole batch.
- Layer L's output is read with a forward hook that stops the forward pass right after layer L
  (`steering.hooks.layer_states`): later layers cannot change it, so they are not run. Only the chosen MLP
  parameters (`steering.redirect.mlp_parameters`) of `layers_trained` are trainable; everything else is frozen.
- The frozen targets come from the frozen vanilla copy the shared loop loads (`needs_reference`), as WMDP keeps a
  frozen model; `lora` is refused (RMU trains the MLP weights themselves).

Defaults (`RMUConfig`), WMDP's README recipe for Zephyr-7B unless said: coeff c 6.5, alpha 1200, lr 5e-5, batch 4,
AdamW (torch's default weight decay 0.01), no warm-up, no gradient clipping; layer L 7 of Zephyr's 32 layers,
here `num_layers // 4` when not set; layers_trained L-2, L-1, L and only their MLP's down_proj (WMDP's
`--layer_ids 5,6,7 --param_ids 6`). The schedule length is the other baselines' (2 epochs over the forget set,
MLLMU-Bench's), not WMDP's 150 batches. c and alpha depend on the activation scale of the model and layer: tune
them per model (WMDP itself raised c for larger models).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from asru.errors import UserError
from asru.methods.gradient import GradientConfig, GradientMethod
from asru.models.batch import IGNORE_INDEX
from asru.models.layers import hidden_size, num_layers
from asru.steering.hooks import layer_states
from asru.steering.redirect import mlp_parameters, train_only

TRAINABLE = ("down_proj", "mlp")


@dataclass
class RMUConfig(GradientConfig):
    layer: int | None = None  # L, whose output is steered; None: num_layers // 4 (WMDP: layer 7 of Zephyr-7B's 32)
    layers_trained: list[int] | None = None  # None: L-2, L-1, L (WMDP --layer_ids 5,6,7), those below 0 dropped
    coeff: float = 6.5  # c, the norm of the forget target c * u (WMDP's Zephyr-7B --steering_coeffs)
    trainable: str = "down_proj"  # which part of each trained MLP: "down_proj" (WMDP --param_ids 6) or "mlp" (all)
    lr: float = 5e-5  # WMDP
    alpha: float = 1200.0  # retain weight (WMDP's Zephyr-7B --alpha)
    grad_clip: float = 0.0  # WMDP does not clip

    def __post_init__(self) -> None:
        super().__post_init__()
        if not _number(self.coeff) or not math.isfinite(self.coeff) or self.coeff <= 0:
            raise UserError(f"rmu coeff must be a finite number > 0, got {self.coeff!r}; set e.g. coeff: 6.5 (WMDP's)")
        if self.layer is not None and not _index(self.layer):
            raise UserError(f"rmu layer must be a decoder layer index >= 0 (or null for num_layers // 4), "
                            f"got {self.layer!r}")
        if self.layers_trained is not None:
            if not isinstance(self.layers_trained, list) or not self.layers_trained or \
                    not all(_index(i) for i in self.layers_trained):
                raise UserError(f"rmu layers_trained must be a non-empty list of layer indices >= 0 (or null for "
                                f"L-2, L-1, L), got {self.layers_trained!r}")
            if self.layer is not None and max(self.layers_trained) > self.layer:
                raise UserError(f"rmu layers_trained {self.layers_trained} has layers after layer {self.layer}: they "
                                "do not change layer L's output; use layers <= layer")
        if self.trainable not in TRAINABLE:
            raise UserError(f"rmu trainable must be one of {', '.join(TRAINABLE)}, got '{self.trainable}'")
        if self.lora:
            raise UserError("rmu trains the chosen MLP weights themselves; set lora: false")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _index(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def control_vector(hidden: int, seed: int) -> torch.Tensor:
    """WMDP's random direction u: uniform on [0, 1)^hidden, unit length (float32, CPU), fixed by `seed`."""
    u = torch.rand(hidden, generator=torch.Generator().manual_seed(seed))
    return u / u.norm()


def answer_positions(labels: torch.Tensor) -> torch.Tensor:
    """[B, T] mask of the positions the answer is generated from: those whose next token is an answer label (the last
    prompt token and every answer token but the last)."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return mask


def layer_output(model, layer: int, batch: dict) -> torch.Tensor:
    """Decoder layer `layer`'s output [B, T, H] in float32 (the forward pass stops after it; labels are not passed)."""
    return layer_states(model, layer, {k: v for k, v in batch.items() if k != "labels"}).float()


class RMU(GradientMethod):
    name = "rmu"
    description = ("RMU (Li et al. 2024, WMDP): push layer-L states on forget inputs to c * a random direction, keep "
                   "retain states; only a few MLPs trained")
    Config = RMUConfig
    needs_reference = True
    uses_retain = True

    def on_load(self, model) -> None:
        """Resolve L and the trained layers against the model (before any data is encoded) and draw u."""
        cfg = self.config
        n = num_layers(model)
        self.layer = cfg.layer if cfg.layer is not None else n // 4
        if self.layer >= n:
            raise UserError(f"rmu layer {self.layer} is out of range: this model has {n} decoder layers, valid layers "
                            f"are 0..{n - 1}; set layer to one of them (or null for num_layers // 4 = {n // 4})")
        trained = cfg.layers_trained if cfg.layers_trained is not None else \
            [i for i in range(self.layer - 2, self.layer + 1) if i >= 0]
        if max(trained) > self.layer:  # also catches layers past the model's last (layer itself is in range)
            raise UserError(f"rmu layers_trained {trained} has layers after layer {self.layer}: they do not change "
                            "layer L's output; use layers <= layer")
        self.layers_trained = sorted(set(trained))
        self.target = cfg.coeff * control_vector(hidden_size(model), self.seed)

    def prepare(self, model, forget, retain, collate_fn) -> dict:
        params = [p for i in self.layers_trained for p in mlp_parameters(model, i, self.config.trainable)]
        train_only(model, params)
        return {"layer": self.layer, "layers_trained": self.layers_trained, "coeff": self.config.coeff,
                "trained_parameters": sum(p.numel() for p in params)}

    def forget_loss(self, model, batch, ref):
        """MSE of layer L's states at the answer positions to c * u."""
        h = layer_output(model, self.layer, batch)[answer_positions(batch["labels"])]
        return torch.nn.functional.mse_loss(h, self.target.to(h.device).expand_as(h))

    def retain_loss(self, model, batch, ref):
        """MSE of layer L's states at the answer positions to the frozen vanilla model's."""
        mask = answer_positions(batch["labels"])
        h = layer_output(model, self.layer, batch)[mask]
        with torch.no_grad():
            frozen = layer_output(ref.frozen, self.layer, batch)[mask]
        return torch.nn.functional.mse_loss(h, frozen)
