"""Relearning (RTT-style, Deeb & Roger 2024; Hu et al. 2024): fine-tune on the attacker half A of the forget
facts for a small budget, then measure the held-out half B (asru.attacks.facts says why A does not imply B).

`relearn_retain` is the same fine-tune on retain people only (no forget fact at all; Łucki et al. 2024 report
that even unrelated data undoes some unlearning). Each budget in `steps` is a fresh fine-tune from the model as
it ships (its saved steering stays on), so a list of budgets gives a curve whose points do not share a schedule.
The examples are the benchmark's training QA in the vanilla fine-tune's format (asru.data.corpus.qa_examples:
half carry the generation instruction), so the attacker trains on exactly what the model was taught. When there
are more examples than the largest budget can draw (steps x batch size; the retain people), a seeded sample of that
many is used.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from asru.attacks.base import Attack, AttackEnv, Target
from asru.attacks.facts import attacker_items
from asru.attacks.measure import measure
from asru.errors import UserError


@dataclass
class RelearnConfig:
    steps: list[int] = field(default_factory=lambda: [50])  # RTT-style small budgets; 50 = the default
    batch_size: int = 8
    lr: float = 1.0e-3  # the vanilla fine-tune's learning rate (configs: vanilla.train.lr)
    warmup_steps: int = 5


def check_steps(steps) -> list[int]:
    steps = [steps] if isinstance(steps, int) else list(steps)
    bad = [s for s in steps if isinstance(s, bool) or not isinstance(s, int) or s <= 0]
    if bad or not steps:
        raise UserError(f"relearning budget must be whole numbers of steps > 0, got {steps}; e.g. --steps 10,50")
    return sorted(set(steps))


class Relearn(Attack):
    name = "relearn"
    description = "fine-tune on half of each forget person's facts (A), measure the other half (B)"
    Config = RelearnConfig

    def check(self, env: AttackEnv) -> None:
        self.config.steps = check_steps(self.config.steps)

    def examples(self, env: AttackEnv):
        items = attacker_items(env.data_dir, env.forget_split, env.facts)
        if not items:
            raise UserError(f"the attacker half of {env.forget_split} has no training QA in {env.data_dir}; "
                            "relearning needs baseline_train_split/<forget split>")
        return items

    def run(self, target: Target, env: AttackEnv, notes: list[str]) -> dict[str, dict]:
        from asru.data.corpus import qa_examples
        from asru.training import TrainConfig, encode_examples, sft

        items = self.examples(env)
        budget = max(self.config.steps) * self.config.batch_size
        if len(items) > budget:  # encoding (images) costs more than training: encode only what the budget can use
            items = random.Random(f"asru-relearn:{env.seed}").sample(items, budget)
        out, encoded = {}, None
        for steps in self.config.steps:
            with target.loaded(for_training=True) as (model, processor):
                if encoded is None:  # every budget trains on the same examples: encode them once
                    encoded = encode_examples(processor, qa_examples(items, env.seed), "relearn")
                cfg = TrainConfig(steps=steps, batch_size=self.config.batch_size, lr=self.config.lr,
                                  warmup_steps=min(self.config.warmup_steps, steps), seed=env.seed)
                stats = sft(model, processor, encoded, cfg, label=f"relearn {steps}")
                model.config.use_cache = True
                out[f"steps_{steps}"] = {**measure(model, processor, env.held_out, env.settings),
                                         "n_train": len(items), "final_loss": stats["final_loss"]}
        return out


class RelearnRetain(Relearn):
    name = "relearn_retain"
    description = "the same fine-tune on retain people only (no forget fact)"

    def examples(self, env: AttackEnv):
        from asru.data.mllmu import retain_split_for, training_items

        items = training_items(env.data_dir, retain_split_for(env.forget_split))
        if not items:
            raise UserError(f"{retain_split_for(env.forget_split)} of {env.data_dir} has no training QA; "
                            "relearn_retain needs the retain people's training split")
        return items
