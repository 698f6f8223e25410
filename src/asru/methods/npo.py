"""NPO (negative preference optimisation): a bounded version of gradient ascent, relative to the vanilla model.

forget_loss = -(2/beta) * mean logsigmoid(-beta * (log p_model(a|q) - log p_ref(a|q))) on sequence log-probs of
the forget answers. Unlike GA it saturates once the model is well below the reference, so it collapses more
slowly. With model == reference it equals (2/beta) * log 2. beta = 0.4 as in MLLMU-Bench.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from asru.errors import UserError
from asru.methods.ga_diff import GradDiff
from asru.methods.gradient import GradientConfig, logits
from asru.training import answer_nll


@dataclass
class NPOConfig(GradientConfig):
    beta: float = 0.4

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta <= 0:
            raise UserError(f"npo beta must be > 0, got {self.beta}")


class NPO(GradDiff):
    name = "npo"
    description = "Negative preference optimisation on forget (reference = vanilla) + cross-entropy on retain"
    Config = NPOConfig
    needs_reference = True

    def forget_loss(self, model, batch, ref):
        labels = batch["labels"]
        logp = -answer_nll(logits(model, batch), labels, reduction="sum")
        logp_ref = -answer_nll(ref.logits(batch), labels, reduction="sum")
        beta = self.config.beta
        return -(2.0 / beta) * F.logsigmoid(-beta * (logp - logp_ref)).mean()
