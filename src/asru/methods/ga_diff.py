"""GA-Diff (gradient difference): gradient ascent on the forget answers, ordinary fine-tuning on the retain answers."""

from __future__ import annotations

from asru.methods.ga import GradientAscent
from asru.methods.gradient import batch_nll, logits


class GradDiff(GradientAscent):
    name = "ga_diff"
    description = "Gradient ascent on forget + cross-entropy on retain"
    uses_retain = True

    def retain_loss(self, model, batch, ref):
        """retain_loss = NLL(retain answers): keep answering the other people correctly."""
        return batch_nll(logits(model, batch), batch["labels"])
