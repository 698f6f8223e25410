"""ASRU-robust: ASRU run on a model whose forget answers were first made improbable (NPO likelihood suppression).

Why: ASRU's stage 1 moves forget activations along one refusal direction and stage 2 only sharpens where the
refusal fires, so the facts keep their probability and come back when an attacker removes the direction or
fine-tunes on neighbouring facts (docs/robustness.md). This variant first runs NPO (negative preference
optimisation, reference = the vanilla model) on the forget answers, with cross-entropy on retain, over every
weight: the facts lose probability in every layer, not only their path to the output. Then ASRU runs unchanged on
the suppressed model: the steering vector is measured on it and its layer-L MLP is redirected (stage 1), and GRPO
sharpens the boundary (stage 2). Suppression comes first because a model redirected first and suppressed after
stops refusing: NPO retrains the layers the redirected activations are decoded by (docs/asru.md, the measured
alternative). Stage numbering stays ASRU's (`--stage 1` = suppression + redirection, `--stage 2` = GRPO), so
resume and the attacks see the same layout: the run ships ASRU's steering vector, and the ablation attack removes it.

The paper's ASRU is untouched (`asru`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from asru.config import from_dict
from asru.errors import UserError
from asru.methods.asru import ASRU, ASRUConfig
from asru.methods.base import UnlearnContext
from asru.methods.npo import NPO, NPOConfig

SUPPRESS_DIR = "suppress"
ORDERS = ("suppress_first", "redirect_first")


@dataclass
class RobustASRUConfig(ASRUConfig):
    """ASRU's options plus `suppress`: NPO fields (steps/epochs, lr, beta, gamma = suppression weight, alpha =
    retain weight; checked by `GradientConfig`) for the stage that lowers the forget answers' likelihood."""

    suppress: dict = field(default_factory=dict)
    # "suppress_first" (default): NPO, then redirection of the suppressed model. "redirect_first": redirection, then
    # NPO from the redirected model (reference = it) - the measured losing order, kept so its figures reproduce.
    order: str = "suppress_first"

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise UserError(f"asru_robust.order must be one of {', '.join(ORDERS)}, got '{self.order}'")
        self.suppress_config()  # bad options fail before stage 1 runs

    def suppress_config(self) -> NPOConfig:
        where = "asru_robust.suppress"
        try:
            return from_dict(NPOConfig, self.suppress, where=where)
        except UserError as err:  # NPOConfig's own checks do not know where they were read from
            raise err if str(err).startswith(where) else UserError(f"{where}: {err}") from None


class RobustASRU(ASRU):
    name = "asru_robust"
    Config = RobustASRUConfig
    description = "NPO likelihood suppression of the forget answers, then ASRU on the suppressed model (beyond the paper)"

    def stage1_dir(self, ctx: UnlearnContext) -> Path:
        """Where stage 2 starts: the redirected model, or the suppressed one when suppression comes second."""
        if self.config.order == "redirect_first":
            return ctx.out_dir / SUPPRESS_DIR / "model"
        return super().stage1_dir(ctx)

    def stage1(self, ctx: UnlearnContext, start: Path | None = None) -> dict:
        npo = NPO(self.config.suppress_config())
        if self.config.order == "redirect_first":
            stats = super().stage1(ctx)
            suppressed = npo.unlearn(replace(ctx, model_dir=ctx.out_dir / "stage1", out_dir=ctx.out_dir / SUPPRESS_DIR,
                                             manifest=None))  # reference: the redirected model
        else:
            suppress_ctx = replace(ctx, out_dir=ctx.out_dir / SUPPRESS_DIR, manifest=None)  # reference: the vanilla
            suppressed = npo.unlearn(suppress_ctx)
            stats = super().stage1(ctx, start=suppress_ctx.model_out)  # redirection of the suppressed model
        stats["suppress"] = {**suppressed, "config": self.config.suppress}
        return stats
