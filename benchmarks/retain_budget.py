"""The retain-budget sweep (issue 12, the paper's fourth claim) in one call, with its wall time.

    python benchmarks/retain_budget.py --runs runs/demo [--fractions 0.05,0.25,1] [--seeds 3] [--methods all]
                                       [--attacks all]

Runs (or reuses: finished runs of the same configuration are not retrained) every method at every retain budget
into `<runs>/compare_<split>` — the plain comparison's directory, so the F = 1 runs are the plain comparison's own —
then prints the budget table, the fourth-claim line and the wall time of the call.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console

from asru.compare import budget_markdown, expand_methods, run_compare


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=Path, default=Path("runs/demo"))
    parser.add_argument("--forget-split", default="forget_10")
    parser.add_argument("--fractions", default="0.05,0.25,1")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--methods", default="all")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--attacks", default="", help="also run these attacks on every run (asru compare --attacks)")
    args = parser.parse_args()
    console = Console()
    fractions = [float(f) for f in args.fractions.split(",")]
    start = time.perf_counter()
    runs, split = args.runs, args.forget_split
    summary = run_compare(console, runs / "world", runs / "vanilla", runs / "base", runs / f"compare_{split}", split,
                          expand_methods(args.methods), args.seeds, args.preset, retain_fractions=fractions,
                          oracle=runs / f"oracle_{split}", vanilla_results=runs / "eval" / "vanilla.json",
                          attacks=[a for a in args.attacks.split(",") if a])
    minutes = (time.perf_counter() - start) / 60
    budget = summary["claims"].get("retain_budget")
    console.print(budget_markdown(budget) if budget else "one budget only: no sweep table")
    console.print(f"wall time {minutes:.1f} min (finished runs reused); report {summary['report_md']}")


if __name__ == "__main__":
    main()
