"""Equal-budget tuning: every method gets the same small sweep (3 values of its main knob) on the tiny world,
and the chosen value is picked by one fixed rule, so no method is tuned harder than another.

    python benchmarks/baseline_sweep.py [--runs runs/demo] [--forget-split forget_10] [--methods all]

Rule: among the settings whose utility change (retain/celebrity/VQA, vs vanilla) is within -10 points, take the
one with the highest unlearning effectiveness + generation quality; if none is within -10 points, take the one
with the smallest utility loss. Results go to <runs>/sweep_<split>/sweep.json and are printed as a table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from asru import pipeline
from asru.compare import effectiveness, expand_methods, generation_quality, utility_change
from asru.config import load_preset

TUNING = load_preset("tiny")["tuning"]  # the one record of the sweep (also printed in every comparison report)
KNOBS = {name: (knob["option"], knob["values"]) for name, knob in TUNING["knobs"].items()}
UTILITY_FLOOR = TUNING["utility_floor"]


def choose(rows: list[dict]) -> dict:
    ok = [r for r in rows if r["utility"] >= UTILITY_FLOOR]
    if ok:
        return max(ok, key=lambda r: r["effectiveness"] + r["quality"])
    return max(rows, key=lambda r: r["utility"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=Path, default=Path("runs/demo"))
    parser.add_argument("--forget-split", default="forget_10")
    parser.add_argument("--methods", default="all")
    parser.add_argument("--name", default="sweep", help="results file name (run several sweeps side by side)")
    args = parser.parse_args()
    console = Console()
    runs, split = args.runs, args.forget_split
    root = runs / f"sweep_{split}"
    vanilla = pipeline.eval_stage(runs / "vanilla", runs / "world", root / "vanilla.json", split, "tiny", reuse=True)
    path = root / f"{args.name}.json"
    summary = json.loads(path.read_text()) if path.exists() else {}
    for method in expand_methods(args.methods):
        option, values = KNOBS[method]
        rows = []
        for value in values:
            out = root / method / f"{option}={value}"
            pipeline.unlearn_stage(method, runs / "vanilla", runs / "world", out, split, base=runs / "base",
                                   preset="tiny", overrides=pipeline.parse_overrides([f"{option}={value}"]),
                                   reuse=True, force=True)
            res = pipeline.eval_stage(out, runs / "world", out / "eval.json", split, "tiny", reuse=True,
                                      reference=runs / "vanilla")
            rows.append({"value": value, "effectiveness": effectiveness(res, vanilla),
                         "quality": generation_quality(res), "utility": utility_change(res, vanilla),
                         "forget_refusal": res["forget"]["gen_refusal_rate"],
                         "retain_refusal": res["retain"]["gen_refusal_rate"]})
        best = choose(rows)
        summary[method] = {"option": option, "rows": rows, "chosen": best["value"]}
        path.write_text(json.dumps(summary, indent=2))
        table = Table(title=f"{method}: sweep of {option} ({split})")
        for col in ("value", "effectiveness", "quality", "utility (pts)", "forget refusal", "retain refusal", "chosen"):
            table.add_column(col)
        for r in rows:
            table.add_row(str(r["value"]), f"{r['effectiveness']:.3f}", f"{r['quality']:.3f}", f"{r['utility']:+.1f}",
                          f"{r['forget_refusal']:.2f}", f"{r['retain_refusal']:.2f}", "*" if r is best else "")
        console.print(table)


if __name__ == "__main__":
    main()
