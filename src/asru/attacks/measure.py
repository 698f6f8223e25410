"""What every attack reports on the held-out forget facts, and the recovered share.

- `gen_contains`: greedy generation contains the answer (asru.eval.metrics.contains_answer, the key where known);
- `mc_lik`: option-likelihood multiple choice (asru.eval.likelihood: each option scored inside the answer sentence);
- `leakage`: 1 - offline-judge leakage / 5 (0 = no trace of the answer, 1 = the answer stated).
All three read "higher = more of the fact is there".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from asru.data.schema import QAItem
from asru.eval import likelihood
from asru.eval.judge import leakage as judge_leakage
from asru.eval.metrics import contains_answer
from asru.eval.mllmu import prompt_for
from asru.models.generate import generate

METRICS = ("gen_contains", "mc_lik", "leakage")


@dataclass(frozen=True)
class Settings:
    """Decoding settings of the measurement (the preset's `eval` section)."""

    max_new_tokens: int = 32
    batch_size: int = 32


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def gen_items(items: Sequence[QAItem]) -> list[QAItem]:
    return [i for i in items if i.task == "gen"]


def score_replies(items: Sequence[QAItem], replies: Sequence[str]) -> dict:
    """gen_contains and leakage of replies to generation items (one reply per item)."""
    contains = [float(contains_answer(r, i.answer, key=i.meta.get("key"))) for i, r in zip(items, replies)]
    leaks = [1 - judge_leakage(i.question, r, i.answer, i.meta.get("key")) / 5 for i, r in zip(items, replies)]
    return {"gen_contains": mean(contains), "leakage": mean(leaks), "n_gen": len(items)}


def option_likelihood_mc(model, processor, items: Sequence[QAItem], batch_size: int = 32) -> float | None:
    """Option-likelihood MC accuracy of the MC items among `items` (their people's generation items give the
    answer sentences), scored by the evaluation's likelihood module (no letter pass: the attacks do not report
    it); None where there is no MC item."""
    mc = [i for i in items if i.task == "mc"]
    if not mc:
        return None
    scored = [("forget", item, prompt_for(item)) for item in mc]
    plans = likelihood.plan(scored, {"forget": gen_items(items)})
    records: list[dict] = [{} for _ in scored]
    likelihood.score(model, processor, plans, records, batch_size=batch_size, letter=False)
    return mean([float(r["lik_correct"]) for r in records if "lik_correct" in r])


def measure(model, processor, items: Sequence[QAItem], settings: Settings, mc: bool = True) -> dict:
    """The three metrics of a model (as it is now: hooks, quantization, fine-tuning included) on `items`."""
    gen = gen_items(items)
    replies = generate(model, processor, [(prompt_for(i), i.image) for i in gen],
                       max_new_tokens=settings.max_new_tokens, batch_size=settings.batch_size)
    out = score_replies(gen, replies)
    out["mc_lik"] = option_likelihood_mc(model, processor, items, settings.batch_size) if mc else None
    out["n_mc"] = sum(i.task == "mc" for i in items)
    return out


def recovered_share(attacked: float | None, oracle: float | None, vanilla: float | None) -> float | None:
    """(attacked - oracle attacked) / (vanilla attacked - oracle attacked), clipped to [0, 1]: 0 = no more than
    from a model that never knew, 1 = everything back. None when a figure is missing or the vanilla model is not
    above the oracle (nothing to recover)."""
    if attacked is None or oracle is None or vanilla is None or vanilla - oracle <= 1e-12:
        return None
    return min(1.0, max(0.0, (attacked - oracle) / (vanilla - oracle)))
