"""The paper's relative claims on every forget split at once, from finished `asru compare` directories.

    python benchmarks/compare_summary.py --runs runs/demo   # reads runs/demo/compare_forget_{5,10,15}/claims.json

Prints, per split: each method's effectiveness, generation quality and utility change (mean ± std over seeds)
and ASRU against the average baseline, next to the paper's figures (+24.6 %, 5.8x, within 3 points).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from asru.compare import claim_cells

PAPER = "paper: +24.6 % effectiveness, x5.8 generation quality, utility within 3 points"


def split_table(split: str, claims: dict) -> Table:
    table = Table(title=f"{split}  ({PAPER})")
    for col in ("method", "seeds", "effectiveness", "generation quality", "utility (pts)"):
        table.add_column(col)
    for name, m in sorted(claims["per_method"].items(), key=lambda kv: -kv[1]["effectiveness"]):
        table.add_row(f"[bold]{name}[/bold]" if name == "asru" else name, str(m.get("seeds", 1)), *claim_cells(m))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("runs/demo"))
    args = parser.parse_args()
    console = Console()
    for split in ("forget_5", "forget_10", "forget_15"):
        path = args.runs / f"compare_{split}" / "claims.json"
        if not path.exists():
            console.print(f"{split}: no {path} (run `asru compare --forget-split {split}` first)")
            continue
        claims = json.loads(path.read_text())
        console.print(split_table(split, claims))
        avg = claims.get("asru_vs_average_baseline")
        if avg:
            eff, gq = avg["effectiveness_gain_pct"], avg["generation_quality_ratio"]
            met = [eff is not None and eff >= 24.6, gq is not None and gq >= 5.8, abs(avg["utility_change_points"]) <= 3]
            console.print(f"ASRU vs average baseline: effectiveness {eff:+.1f} % ({'met' if met[0] else 'not met'}), "
                          f"generation quality x{gq:.2f} ({'met' if met[1] else 'not met'}), "
                          f"utility {avg['utility_change_points']:+.1f} pts ({'met' if met[2] else 'not met'})\n")


if __name__ == "__main__":
    main()
