"""Membership inference on the generation answers of forget people (members: the vanilla model was taught them)
against holdout people (never taught to anyone): LOSS, ZLib, Min-K% and Min-K%++, AUC by scikit-learn, and
MUSE's PrivLeak against a retain-only oracle. Definitions follow open-unlearning / MUSE (docs/evaluation.md).

Why answers and not whole prompts: the answer is what the model was trained to produce; the prompt is the same
template for members and non-members and would only add noise.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from pathlib import Path

from asru.data import mllmu as data
from asru.data.prompts import gen_prompt
from asru.data.schema import QAItem
from asru.data.world.build import HOLDOUT_DIR
from asru.errors import UserError
from asru.eval.scoring import TokenScores, score_answers

ATTACKS = ("loss", "zlib", "min_k", "min_k_pp")
MIN_K = 0.4  # Min-K% with k = 40 %


def _lowest(values: Sequence[float], k: float) -> list[float]:
    return sorted(values)[:max(1, int(len(values) * k))]


def attack_scores(score: TokenScores, text: str, k: float = MIN_K) -> dict[str, float]:
    """Membership scores of one answer, each oriented so that higher = more likely a training member.

    loss: mean token log-prob (-NLL); zlib: -NLL / zlib-compressed length in bytes (MUSE); min_k: mean of the
    lowest k of the token log-probs (Shi et al.); min_k_pp: the same over (log p - mu) / sigma, mu and sigma the
    mean and std of log p under the model's own next-token distribution (Zhang et al.)."""
    if score.n == 0:
        raise UserError("membership inference on an empty answer: every answer needs at least one scored token")
    normalised = [(lp - m) / s if s > 0 else 0.0 for lp, m, s in zip(score.logprobs, score.mu, score.sigma)]
    return {"loss": score.mean, "zlib": -(-score.mean) / len(zlib.compress(text.encode("utf-8"))),
            "min_k": sum(_lowest(score.logprobs, k)) / len(_lowest(score.logprobs, k)),
            "min_k_pp": sum(_lowest(normalised, k)) / len(_lowest(normalised, k)) if normalised else math.nan}


def auc(members: Sequence[float], nonmembers: Sequence[float]) -> float:
    """ROC AUC of telling members (label 1) from non-members by the score (0.5 = chance)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score([1] * len(members) + [0] * len(nonmembers), list(members) + list(nonmembers)))


def privleak(auc_model: float, auc_oracle: float) -> float:
    """MUSE's PrivLeak: (AUC_model - AUC_oracle) / AUC_oracle; 0 = as private as the retain-only oracle."""
    if auc_oracle == 0:
        raise UserError("the oracle's MIA AUC is 0, so PrivLeak is undefined; check the oracle's results")
    return (auc_model - auc_oracle) / auc_oracle


def holdout_items(data_dir: str | Path, split: str | None, taught: set[str]) -> tuple[list[QAItem] | None, str]:
    """Generation items of the holdout people and where they came from; (None, why) when there is no holdout.

    `split` names a split directory of the data (real data); without it the embedded world's `world/holdout` is
    used when present. A holdout person who is also a training person is refused: the attack would be meaningless."""
    root = Path(data_dir)
    source = split or (HOLDOUT_DIR if (root / HOLDOUT_DIR).is_dir() else None)
    if source is None:
        return None, ("no holdout people (the data has no world/holdout; pass --holdout-split NAME to name a split "
                      "of never-taught people), so membership inference is skipped")
    items = [i for i in data.eval_items(root, source) if i.task == "gen"]
    shared = sorted({i.id for i in items} & taught, key=data.natural_key)
    if shared:
        raise UserError(f"holdout split '{source}' shares {len(shared)} person ID(s) with the training people "
                        f"({', '.join(shared[:10])}); a holdout must hold only people no model was taught")
    if not items:
        raise UserError(f"holdout split '{source}' in {root} has no generation questions; it needs the "
                        "Generation_Task column of a benchmark split")
    return items, source


def run(model, processor, forget: Sequence[QAItem], holdout: Sequence[QAItem], batch_size: int = 32) -> dict:
    """AUC per attack over forget vs holdout generation answers (ground truths under the generation prompt)."""
    items = [*forget, *holdout]
    scores = score_answers(model, processor, [(gen_prompt(i.question), i.image, i.answer) for i in items],
                           batch_size=batch_size, stats=True)
    per_item = [attack_scores(s, i.answer) for s, i in zip(scores, items)]
    members, nonmembers = per_item[:len(forget)], per_item[len(forget):]
    block = {f"{a}_auc": auc([p[a] for p in members], [p[a] for p in nonmembers]) for a in ATTACKS}
    block.update(n_forget=len(members), n_holdout=len(nonmembers))
    return {"block": block, "forget": members, "holdout": nonmembers}


def add_privleak(out: dict, model_block: dict, oracle_block: dict) -> None:
    """`<attack>_privleak` in `out` for every attack both MIA blocks report."""
    for attack in ATTACKS:
        if model_block.get(f"{attack}_auc") is not None and oracle_block.get(f"{attack}_auc") is not None:
            out[f"{attack}_privleak"] = privleak(model_block[f"{attack}_auc"], oracle_block[f"{attack}_auc"])
