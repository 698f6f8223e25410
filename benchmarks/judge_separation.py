"""Does the offline judge separate the failure modes on real model outputs? (generation-quality issue)

    python benchmarks/judge_separation.py [--runs runs/demo]

Three models from the demo's vanilla model: the vanilla itself (answers forget questions correctly: contextual
refusal ~0, low leakage score), a gradient-ascent collapse (plain GA, a few hundred steps at a high learning
rate: naturalness <= 2 expected), and a model fine-tuned to answer every forget question with one fixed
sentence (rigidity flagged: top refusal share high, contextual refusal <= 4).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from asru import pipeline

CASES = {
    "vanilla": None,
    "ga_collapse": ("ga", {"steps": 300, "lr": 1e-3, "batch_size": 8}),
    "fixed_refusal": ("idk", {"epochs": 4, "lr": 3e-4, "batch_size": 8, "fixed_refusal": "I don't know."}),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=Path, default=Path("runs/demo"))
    parser.add_argument("--forget-split", default="forget_10")
    args = parser.parse_args()
    runs, split = args.runs, args.forget_split
    root = runs / "judge_separation"
    table = Table(title="offline judge on forget generation answers")
    for col in ("model", "refusal", "contextual refusal", "leakage", "naturalness", "hallucination", "gibberish",
                "top refusal share", "distinct refusals"):
        table.add_column(col)
    for name, spec in CASES.items():
        model = runs / "vanilla"
        if spec is not None:
            method, overrides = spec
            model, _ = pipeline.unlearn_stage(method, runs / "vanilla", runs / "world", root / name, split,
                                              preset="tiny", overrides=overrides, reuse=True, force=True)
        res = pipeline.eval_stage(model, runs / "world", root / f"{name}.json", split, "tiny",
                                  reference=runs / "vanilla", reuse=True)
        q = res["forget"]["quality"]
        table.add_row(name, f"{q['refusal_rate']:.2f}", f"{q['mean_contextual_refusal']:.2f}", f"{q['mean_leakage']:.2f}",
                      f"{q['mean_naturalness']:.2f}", f"{q['hallucination_rate']:.2f}", f"{q['gibberish_rate']:.2f}",
                      f"{q['top_refusal_share']:.2f}", str(q["n_distinct_refusals"]))
    Console().print(table)


if __name__ == "__main__":
    main()
