"""The whole attack suite on one model, with the time of every attack on each of the three models it runs on.

    python benchmarks/attacks_tiny.py --model RUN_OR_MODEL_DIR --data runs/demo/world \
        --oracle runs/demo/oracle_forget_10 --vanilla runs/demo/vanilla [--out /tmp/attacks_tiny] [--preset tiny]

Target (issue 11): the suite on one tiny model <= 5 min on 2 cores, all three models (model, oracle, vanilla)
included. Prints one line per attack: seconds on the model / oracle / vanilla, the headline variant and its
recovered share; the results are in <out>/attacks.json (the same file `asru attack all` writes).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console

from asru.attacks.run import attack_stage


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=Path("runs/demo/world"))
    parser.add_argument("--oracle", type=Path, default=Path("runs/demo/oracle_forget_10"))
    parser.add_argument("--vanilla", type=Path, default=Path("runs/demo/vanilla"))
    parser.add_argument("--forget-split", default="forget_10")
    parser.add_argument("--out", type=Path, default=Path("/tmp/attacks_tiny"))
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    console = Console()
    start = time.perf_counter()
    body = attack_stage(["all"], args.model, args.data, args.forget_split, args.oracle, args.vanilla, args.out,
                        preset=args.preset, seed=args.seed, force=True, console=console)
    total = time.perf_counter() - start
    console.print(f"\n{'attack':16} {'model s':>8} {'oracle s':>9} {'vanilla s':>10}  headline  recovered share")
    for name, result in body["attacks"].items():
        s = result["seconds"]
        share = result["recovered_share"]
        console.print(f"{name:16} {s['model']:8.1f} {s['oracle']:9.1f} {s['vanilla']:10.1f}  {result['headline']}  "
                      f"{'n/a' if share is None else f'{share:.2f}'}")
    console.print(f"total {total:.1f} s (target <= 300 s on 2 cores); results {args.out / 'attacks.json'}")


if __name__ == "__main__":
    main()
