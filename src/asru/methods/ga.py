"""GA (gradient ascent): push the vanilla model's likelihood of the forget answers down, nothing else.

The crudest baseline and the one that most readily collapses into gibberish; it has no retain term.
"""

from __future__ import annotations

from asru.methods.gradient import GradientMethod, batch_nll, logits


class GradientAscent(GradientMethod):
    name = "ga"
    description = "Gradient ascent on the forget answers (no retain term)"

    def forget_loss(self, model, batch, ref):
        """forget_loss = -NLL(forget answers): minimising it maximises the forget NLL."""
        return -batch_nll(logits(model, batch), batch["labels"])
