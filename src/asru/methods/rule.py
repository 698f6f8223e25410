"""RULE-style baseline (the text-LLM predecessor of ASRU): a refusal SFT warm start (IDK fine-tuning on forget
questions with varied refusals, cross-entropy on retain), then the same GRPO boundary stage as ASRU, rewarded
by refusal on forget queries and non-refusal on retain queries (RULE's refusal-boundary reward).

It differs from ASRU only in how the refusal behaviour is first put in (supervised targets instead of
activation redirection) and in its reward, which is why it is a subclass: the stages, resume and GRPO wiring
are shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from asru.config import from_dict
from asru.errors import UserError
from asru.methods.asru import ASRU, BoundaryStagesConfig
from asru.methods.base import UnlearnContext
from asru.methods.gradient import GradientConfig
from asru.methods.idk import IdkFineTune


@dataclass
class RULEConfig(BoundaryStagesConfig):
    """RULE's own options only: ASRU's probe, layer and redirection do not exist here (unknown options are errors)."""

    sft: dict = field(default_factory=dict)  # GradientConfig fields of the refusal SFT warm start
    reward_kind: str = "rule"  # "rule" (refusal boundary) or "asru" (the ASRU table)

    def __post_init__(self) -> None:
        if self.reward_kind not in ("rule", "asru"):
            raise UserError(f"rule reward_kind must be 'rule' or 'asru', got '{self.reward_kind}'")


class RULE(ASRU):
    name = "rule"
    Config = RULEConfig
    description = "refusal SFT warm start + GRPO with a refusal-boundary reward (RULE-style)"

    def stage1_dir(self, ctx: UnlearnContext) -> Path:
        return ctx.out_dir / "sft" / "model"

    def stage1(self, ctx: UnlearnContext) -> dict:
        sft_cfg = from_dict(GradientConfig, self.config.sft, where="rule.sft")
        sft_ctx = replace(ctx, out_dir=ctx.out_dir / "sft", manifest=None)  # the run manifest stays at the run root
        return IdkFineTune(sft_cfg).unlearn(sft_ctx)

    def reward(self):
        from asru.rl.rewards import asru_reward, refusal_reward

        return refusal_reward if self.config.reward_kind == "rule" else asru_reward
