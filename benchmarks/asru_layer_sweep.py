"""The small sweep that picks ASRU's steering layer (and redirection strength) for the tiny preset.

    python benchmarks/asru_layer_sweep.py [--runs runs/demo] [--layers 0 1 2 3] [--set redirect.lr=1e-3 ...]

For each layer L: stage 1 only (steering vector at L + activation redirection), then the evaluation; prints
the forget refusal rate (wanted high), the retain refusal rate (over-refusal, wanted low), forget MC accuracy
and the steering vector's norm and refusal-sample count.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from asru import pipeline


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=Path, default=Path("runs/demo"))
    parser.add_argument("--forget-split", default="forget_10")
    parser.add_argument("--layers", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--tag", default="sweep")
    args = parser.parse_args()
    console = Console()
    runs, split = args.runs, args.forget_split
    table = Table(title=f"stage-1 layer sweep ({split})")
    for col in ("layer", "forget refusal", "retain refusal", "test refusal", "forget MC img", "retain MC img",
                "|v|", "refusal samples", "seconds"):
        table.add_column(col)
    for layer in args.layers:
        overrides = pipeline.parse_overrides([*args.overrides, f"layer={layer}"])
        overrides["stages"] = [1]
        out = runs / args.tag / f"L{layer}"
        pipeline.unlearn_stage("asru", runs / "vanilla", runs / "world", out, split, base=runs / "base", preset="tiny",
                               overrides=overrides, force=True)
        res = pipeline.eval_stage(out, runs / "world", out / "eval.json", split, "tiny", limit=16, judge="none", force=True)
        stats = json.loads((out / "stage1.json").read_text())
        seconds = json.loads((out / "manifest.json").read_text())["stages"]["unlearn"]["seconds"]
        table.add_row(str(layer), f"{res['forget']['gen_refusal_rate']:.3f}", f"{res['retain']['gen_refusal_rate']:.3f}",
                      f"{res['test']['gen_refusal_rate']:.3f}", f"{res['forget']['mc_image_acc']:.3f}",
                      f"{res['retain']['mc_image_acc']:.3f}", f"{stats['steering']['norm']:.2f}",
                      str(stats["steering"]["positive_samples"]), f"{seconds:.0f}")
        console.print(table)


if __name__ == "__main__":
    main()
