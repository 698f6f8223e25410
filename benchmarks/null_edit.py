"""The testbed's own fragility: a "null edit" that should change nothing the retain split measures.

    python benchmarks/null_edit.py [--runs runs/demo] [--forget-split forget_10] [--steps 50]

Fine-tunes the vanilla model for `--steps` steps on the retain people's own training QA only (cross-entropy,
GA-Diff's learning rate and batch size; it is GA-Diff with the forget term switched off, gamma = 0), evaluates
it, and counts the retain generation answers that flip against the vanilla model's evaluation. Every
unlearning method changes the weights at least this much, so this figure is the part of a method's retain loss
that belongs to the testbed, not to the method. Target on the tiny preset: <= 2 points of retain answer-contains.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from asru import pipeline


def gen_records(items_path: Path, split: str) -> dict[tuple, bool]:
    """(id, question, setting) -> the `contains` decision of every generation item of `split`."""
    out = {}
    for line in items_path.read_text().splitlines():
        r = json.loads(line)
        if r["split"] == split and r["task"] == "gen":
            out[(r["id"], r["question"], r["setting"])] = bool(r["contains"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=Path, default=Path("runs/demo"))
    parser.add_argument("--forget-split", default="forget_10")
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    console = Console()
    runs, split = args.runs, args.forget_split
    vanilla_eval = runs / "eval" / "vanilla.json"
    if not vanilla_eval.exists():
        pipeline.demo(console, runs, split, "tiny", 0)
    out = runs / f"null_edit_{split}"
    pipeline.unlearn_stage("ga_diff", runs / "vanilla", runs / "world", out, split, preset="tiny",
                           overrides={"gamma": 0.0, "steps": args.steps}, reuse=True)
    edited_eval = out / "eval.json"
    edited = pipeline.eval_stage(out, runs / "world", edited_eval, split, "tiny", judge="none", reuse=True)
    vanilla = json.loads(vanilla_eval.read_text())
    before = gen_records(vanilla_eval.with_suffix(".items.jsonl"), "retain")
    after = gen_records(edited_eval.with_suffix(".items.jsonl"), "retain")
    lost = sum(1 for k, v in before.items() if v and not after[k])
    gained = sum(1 for k, v in before.items() if not v and after[k])
    change = 100 * (edited["retain"]["gen_contains"] - vanilla["retain"]["gen_contains"])
    console.print(f"null edit: {args.steps} steps of retain-only cross-entropy (GA-Diff lr, gamma 0) on {split}")
    console.print(f"retain generation items: {len(before)}; flipped right->wrong {lost}, wrong->right {gained}")
    console.print(f"retain answer-contains {vanilla['retain']['gen_contains']:.3f} -> {edited['retain']['gen_contains']:.3f} "
                  f"({change:+.1f} points; target: within 2)")
    for name in ("forget", "celebrity"):
        console.print(f"{name} answer-contains {vanilla[name]['gen_contains']:.3f} -> {edited[name]['gen_contains']:.3f}")


if __name__ == "__main__":
    main()
