"""SimNPO (Fan et al. 2024, "Simplicity Prevails: Rethinking Negative Preference Optimization for LLM Unlearning").

Why a second NPO: NPO weighs each forget answer relative to the vanilla model (at the start every ratio is 1, so
every answer gets the same weight whatever its own likelihood: the paper's "reference model bias"), and its summed
log-probabilities weigh long answers more than short ones. SimNPO drops the reference and normalises by length,
with a margin (the paper's gamma, here `delta`):

    forget_loss = -(2/beta) * mean_i logsigmoid(-(beta/|y_i|) * log p_model(y_i|x_i) - delta)

that is logsigmoid(beta * nll_i - delta) with nll_i the mean NLL of answer i's tokens (the answer and its closing
turn token, the tokens every other loss here counts). The retain term is the retain answers' cross-entropy (as
GA-Diff and NPO); `loss = gamma * forget_loss + alpha * retain_loss`. With delta = 0 the loss is (2/beta) log 2
at nll = 0 and falls to 0 as the forget answers become improbable, so, like NPO, it saturates instead of
diverging like GA.

Defaults (`SimNPOConfig`): beta 4.5, delta 0, gamma 0.125 and alpha 1 are open-unlearning's
`configs/trainer/SimNPO.yaml` (locuslab/open-unlearning; its comments name the authors' TOFU config,
OPTML-Group/Unlearn-Simple `TOFU/config/forget.yaml`, as the source); the schedule (lr 2e-5, batch 4, 2 epochs,
LoRA r 16) is `GradientConfig`'s MLLMU-Bench baseline setting, shared with every other gradient baseline.
Note on delta: the authors' code and open-unlearning subtract the margin *before* multiplying by beta
(logsigmoid(beta * (nll - delta))), so their delta is the paper's gamma divided by beta; this module follows the
paper's formula. Both published defaults are 0, where the two agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn.functional as F

from asru.errors import UserError
from asru.methods.ga_diff import GradDiff
from asru.methods.gradient import GradientConfig, logits
from asru.training import answer_nll


@dataclass
class SimNPOConfig(GradientConfig):
    gamma: float = 0.125  # forget-loss weight (open-unlearning SimNPO.yaml: "npo_coeff" of the authors' config)
    beta: float = 4.5  # inverse temperature of the length-normalised log-probability (open-unlearning SimNPO.yaml)
    delta: float = 0.0  # the paper's reward margin gamma, added outside beta (open-unlearning SimNPO.yaml: 0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not math.isfinite(self.beta) or self.beta <= 0:
            raise UserError(f"simnpo beta must be > 0, got {self.beta}; set e.g. beta: 4.5 (open-unlearning's default)")
        if not math.isfinite(self.delta) or self.delta < 0:
            raise UserError(f"simnpo delta (the paper's margin gamma) must be a finite number >= 0, got {self.delta}; "
                            "set e.g. delta: 0.0")


def simnpo_loss(mean_nll, beta: float, delta: float):
    """-(2/beta) * mean logsigmoid(beta * mean_nll - delta) over sequences: SimNPO's forget term from each forget
    answer's mean token NLL (= -log p(y|x) / |y|)."""
    return -(2.0 / beta) * F.logsigmoid(beta * mean_nll - delta).mean()


class SimNPO(GradDiff):
    name = "simnpo"
    description = ("SimNPO (Fan et al. 2024): reference-free, length-normalised NPO with a margin on forget + "
                   "cross-entropy on retain")
    Config = SimNPOConfig

    def forget_loss(self, model, batch, ref):
        nll = answer_nll(logits(model, batch), batch["labels"], reduction="mean")
        return simnpo_loss(nll, self.config.beta, self.config.delta)
