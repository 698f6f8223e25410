"""Generation quality added to an evaluation: the offline judge on every generation answer of forget, test and
retain, with per-token perplexity under a reference model (the vanilla model by default) feeding naturalness."""

from __future__ import annotations

import math
from dataclasses import asdict

from asru.eval.judge import aggregate, judge_answer

JUDGED_SPLITS = ("forget", "test", "retain")


def judged_indices(records: list[dict]) -> list[int]:
    """Positions of the generation answers the judge scores (forget, test, retain)."""
    return [i for i, r in enumerate(records) if r["task"] == "gen" and r["split"] in JUDGED_SPLITS]


def answer_perplexities(reference, processor, records: list[dict], images: dict, batch_size: int = 32) -> list[float]:
    """exp(mean negative log-prob) of each prediction given its prompt, under the reference model."""
    from asru.models.score import answer_logprobs

    items = [(r["prompt"], images.get(i), r["prediction"] or " ") for i, r in enumerate(records)]
    scores = answer_logprobs(reference, processor, items, batch_size=batch_size)
    return [math.exp(min(50.0, -s.mean_logprob)) for s in scores]


def add_quality(results: dict, records: list[dict], perplexities: list[float] | None = None) -> dict:
    """Judge each generation record in place (record["judge"]) and add results[split]["quality"]."""
    judged = [records[i] for i in judged_indices(records)]
    for i, record in enumerate(judged):
        score = judge_answer(record["question"], record["prediction"], record["ground_truth"], key=record.get("key"),
                             perplexity=perplexities[i] if perplexities else None)
        record["judge"] = {**asdict(score), **({"perplexity": perplexities[i]} if perplexities else {})}
    for split in JUDGED_SPLITS:
        rows = [r for r in judged if r["split"] == split]
        if split in results and rows:
            results[split]["quality"] = aggregate([_score(r) for r in rows], [r["prediction"] for r in rows])
    return results


def _score(record: dict):
    from asru.eval.judge import JudgeScore

    j = record["judge"]
    return JudgeScore(j["contextual_refusal"], j["leakage"], j["naturalness"], j["hallucination"], j["category"])


def add_llm_quality(results: dict, records: list[dict], judge) -> dict:
    """Score the same generation answers with an LLM judge (`asru.eval.llm_judge.LLMJudge`): record["llm_judge"]
    per item and results[split]["llm_quality"] (mean per axis over parsed replies, parse failures counted) per split."""
    from asru.eval.llm_judge import summarize

    judged = [records[i] for i in judged_indices(records)]
    verdicts = judge.judge_many([{"question": r["question"], "ground_truth": r["ground_truth"],
                                  "prediction": r["prediction"], "id": f"{r['split']}/{r['id']}"} for r in judged])
    for record, verdict in zip(judged, verdicts):
        record["llm_judge"] = verdict
    for split in JUDGED_SPLITS:
        rows = [r["llm_judge"] for r in judged if r["split"] == split]
        if split in results and rows:
            results[split]["llm_quality"] = summarize(rows)
    total = summarize(verdicts)
    results.setdefault("meta", {})["llm_judge"] = {"url": judge.base_url, "model": judge.model, "n": total["n"],
                                                   "parse_failures": total["parse_failures"]}
    return results
