"""KL-Min: gradient ascent on the forget answers while keeping the retain next-token distributions at the vanilla model's."""

from __future__ import annotations

from asru.methods.ga import GradientAscent
from asru.methods.gradient import answer_kl, logits


class KLMin(GradientAscent):
    name = "kl_min"
    description = "Gradient ascent on forget + KL(vanilla || model) on retain answer tokens"
    uses_retain = True
    needs_reference = True

    def retain_loss(self, model, batch, ref):
        """retain_loss = KL(vanilla || model), averaged over the retain answer tokens."""
        return answer_kl(logits(model, batch), ref.logits(batch), batch["labels"])
