"""Foundation figures (issue: world, base, vanilla, evaluation) on the tiny preset, measured on this machine.

    python benchmarks/foundation.py [--runs runs/demo] [--fresh]

Uses the artifacts of `make demo` (runs/demo) when they exist, else builds them (like `make demo`), then
prints: world build time, base + vanilla training time, the vanilla model's evaluation against the targets, the
base model's MC accuracy on fictitious people (knowledge must come from the vanilla fine-tune), and the
evaluation wall time with and without the offline judge.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from asru import pipeline
from asru.manifest import read_manifest


def seconds(run_dir: Path) -> float:
    return sum(s["seconds"] for s in read_manifest(run_dir).get("stages", {}).values())


def target_table(rows: list[tuple[str, float | None, str, bool]]) -> Table:
    table = Table(title="targets")
    for col in ("figure", "measured", "target", "met"):
        table.add_column(col)
    for name, value, target, met in rows:
        shown = "-" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))
        table.add_row(name, shown, target, "[green]yes[/green]" if met else "[red]NO[/red]")
    return table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=Path, default=Path("runs/demo"))
    parser.add_argument("--forget-split", default="forget_10")
    args = parser.parse_args()
    console = Console()
    runs = args.runs

    with tempfile.TemporaryDirectory() as tmp:  # world timing on a fresh directory
        start = time.perf_counter()
        pipeline.world_stage(Path(tmp) / "world", "tiny", 0)
        world_s = time.perf_counter() - start
    pipeline.demo(console, runs, args.forget_split, "tiny", 0)
    base_s, vanilla_s = seconds(runs / "base"), seconds(runs / "vanilla")
    vanilla = json.loads((runs / "eval" / "vanilla.json").read_text())

    with tempfile.TemporaryDirectory() as tmp:
        base_eval = pipeline.eval_stage(runs / "base", runs / "world", Path(tmp) / "base.json", args.forget_split,
                                        "tiny", judge="none")
        start = time.perf_counter()
        pipeline.eval_stage(runs / "vanilla", runs / "world", Path(tmp) / "nojudge.json", args.forget_split, "tiny",
                            judge="none")
        eval_plain = time.perf_counter() - start
        start = time.perf_counter()
        pipeline.eval_stage(runs / "vanilla", runs / "world", Path(tmp) / "judge.json", args.forget_split, "tiny",
                            judge="offline")
        eval_judged = time.perf_counter() - start

    f, t, r, c = (vanilla[s] for s in ("forget", "test", "retain", "celebrity"))
    gen_train = (f["gen_contains"] * f["n_items"]["gen"] + r["gen_contains"] * r["n_items"]["gen"]) / (
        f["n_items"]["gen"] + r["n_items"]["gen"])
    base_fict = [base_eval[s][k] for s in ("forget", "retain") for k in ("mc_image_acc", "mc_text_acc")]
    rows = [
        ("world --preset tiny (s)", round(world_s, 1), "< 60", world_s < 60),
        ("base + vanilla (min)", round((base_s + vanilla_s) / 60, 2), "<= 15", base_s + vanilla_s <= 900),
        ("forget MC image", f["mc_image_acc"], ">= 0.95", f["mc_image_acc"] >= 0.95),
        ("forget MC text", f["mc_text_acc"], ">= 0.95", f["mc_text_acc"] >= 0.95),
        ("retain MC image", r["mc_image_acc"], ">= 0.95", r["mc_image_acc"] >= 0.95),
        ("retain MC text", r["mc_text_acc"], ">= 0.95", r["mc_text_acc"] >= 0.95),
        ("Test_Set MC (image)", t["mc_image_acc"], ">= 0.85", t["mc_image_acc"] >= 0.85),
        ("Test_Set MC (text)", t["mc_text_acc"], ">= 0.85", t["mc_text_acc"] >= 0.85),
        ("generation contains attribute, training views", gen_train, ">= 0.90", gen_train >= 0.90),
        ("generation contains attribute, Test_Set", t["gen_contains"], ">= 0.80", t["gen_contains"] >= 0.80),
        ("celebrity MC image", c["mc_image_acc"], ">= 0.90", c["mc_image_acc"] >= 0.90),
        ("celebrity MC text", c["mc_text_acc"], ">= 0.90", c["mc_text_acc"] >= 0.90),
        ("general VQA", vanilla["general_vqa_acc"], ">= 0.85", vanilla["general_vqa_acc"] >= 0.85),
        ("unseen faces refusal (image)", vanilla["unseen_refusal_rate_image"], ">= 0.90",
         vanilla["unseen_refusal_rate_image"] >= 0.90),
        ("unseen faces refusal (text)", vanilla["unseen_refusal_rate_text"], ">= 0.90",
         vanilla["unseen_refusal_rate_text"] >= 0.90),
        ("distinct refusal phrasings (unseen)", vanilla["unseen_n_distinct_refusals"], ">= 10",
         vanilla["unseen_n_distinct_refusals"] >= 10),
        ("base model MC on fictitious people (max)", max(base_fict), "<= 0.40", max(base_fict) <= 0.40),
        ("offline judge eval overhead (%)", round(100 * (eval_judged / eval_plain - 1), 1), "<= 50",
         eval_judged <= 1.5 * eval_plain),
    ]
    console.print(f"base {base_s:.0f} s, vanilla {vanilla_s:.0f} s, eval {eval_plain:.1f} s (judge {eval_judged:.1f} s)")
    console.print(target_table(rows))


if __name__ == "__main__":
    main()
