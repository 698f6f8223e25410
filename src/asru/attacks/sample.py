"""Sampling (Leak@k, arXiv 2511.04934): greedy decoding can hide a fact that sampling reveals. k samples per
held-out question (temperature 1.0, top-p 0.95); a question leaks if any sample contains the answer."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from asru.attacks.base import Attack, AttackEnv, Target
from asru.attacks.measure import gen_items, mean
from asru.eval.metrics import contains_answer
from asru.eval.mllmu import prompt_for
from asru.errors import UserError
from asru.models.generate import generate


@dataclass
class SampleConfig:
    k: int = 16
    temperature: float = 1.0
    top_p: float = 0.95


class Sample(Attack):
    name = "sample"
    description = "Leak@k: k sampled answers per question, leaked if any contains the answer"
    metric = "leak_at_k"
    Config = SampleConfig

    def check(self, env: AttackEnv) -> None:
        c = self.config
        if c.k < 1 or c.temperature <= 0 or not 0 < c.top_p <= 1:
            raise UserError(f"sample: k must be >= 1, temperature > 0 and top_p in (0, 1]; got k={c.k}, "
                            f"temperature={c.temperature}, top_p={c.top_p}")

    def run(self, target: Target, env: AttackEnv, notes: list[str]) -> dict[str, dict]:
        c = self.config
        items = gen_items(env.held_out)
        prompts = [(prompt_for(i), i.image) for i in items for _ in range(c.k)]
        torch.manual_seed(env.seed)
        with target.loaded() as (model, processor):
            replies = generate(model, processor, prompts, max_new_tokens=env.settings.max_new_tokens,
                               batch_size=env.settings.batch_size, do_sample=True, temperature=c.temperature,
                               top_p=c.top_p)
        hits = [[contains_answer(replies[n * c.k + j], item.answer, key=item.meta.get("key")) for j in range(c.k)]
                for n, item in enumerate(items)]
        return {f"k{c.k}": {"leak_at_k": mean([float(any(h)) for h in hits]),
                            "gen_contains": mean([float(x) for h in hits for x in h]),  # per-sample rate
                            "mc_lik": None, "leakage": None, "n_gen": len(items), "k": c.k}}
