"""ASRU on the tiny preset, measured: `asru unlearn asru` (both stages) from the demo's vanilla model, the
evaluation of the vanilla, stage-1 and final models against the issue's targets, the wall time and peak memory
of each stage, and GRPO rollout vs teacher-forced tokens/s.

    python benchmarks/asru_tiny.py [--runs runs/demo] [--forget-split forget_10] [--out runs/demo/asru]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console

from asru import pipeline
from asru.manifest import read_manifest

try:  # run as a script from the repo root
    from foundation import target_table
except ImportError:  # pragma: no cover
    from benchmarks.foundation import target_table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=Path, default=Path("runs/demo"))
    parser.add_argument("--forget-split", default="forget_10")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--force", action="store_true", help="redo the unlearning run")
    args = parser.parse_args()
    console = Console()
    runs, split = args.runs, args.forget_split
    out = args.out or runs / f"asru_{split}"
    if not (runs / "vanilla" / "config.json").exists():
        pipeline.demo(console, runs, split, "tiny", 0)
    vanilla_dir, base_dir, world = runs / "vanilla", runs / "base", runs / "world"
    start = time.perf_counter()
    pipeline.unlearn_stage("asru", vanilla_dir, world, out, split, base=base_dir, preset="tiny",
                           reuse=not args.force, force=True)
    wall = time.perf_counter() - start
    manifest = read_manifest(out)
    results = {}
    for name, model in (("vanilla", vanilla_dir), ("stage1", out / "stage1"), ("final", out / "model")):
        results[name] = pipeline.eval_stage(model, world, out / "eval" / f"{name}_{split}.json", split, "tiny",
                                            reference=vanilla_dir, reuse=not args.force, force=True)
    v, s1, fin = results["vanilla"], results["stage1"], results["final"]
    q = fin["forget"].get("quality") or {}

    def delta(key_split: str, key: str) -> float:
        return abs(fin[key_split][key] - v[key_split][key])

    retain_gen_refusal = fin["retain"]["gen_refusal_rate"]
    rows = [
        ("stage 1: forget gen refusal rate", s1["forget"]["gen_refusal_rate"], ">= 0.80", s1["forget"]["gen_refusal_rate"] >= 0.80),
        ("final: forget MC image acc", fin["forget"]["mc_image_acc"], "<= 0.35", fin["forget"]["mc_image_acc"] <= 0.35),
        ("final: forget gen refusal rate", fin["forget"]["gen_refusal_rate"], ">= 0.90", fin["forget"]["gen_refusal_rate"] >= 0.90),
        ("final: forget leakage (gt in answer)", fin["forget"]["gen_contains"], "<= 0.05", fin["forget"]["gen_contains"] <= 0.05),
        ("final: Test_Set refusal rate", fin["test"]["gen_refusal_rate"], ">= 0.80", fin["test"]["gen_refusal_rate"] >= 0.80),
        ("final: |retain MC image - vanilla|", delta("retain", "mc_image_acc"), "<= 0.03", delta("retain", "mc_image_acc") <= 0.03),
        ("final: |retain MC text - vanilla|", delta("retain", "mc_text_acc"), "<= 0.03", delta("retain", "mc_text_acc") <= 0.03),
        ("final: |retain gen contains - vanilla|", delta("retain", "gen_contains"), "<= 0.03", delta("retain", "gen_contains") <= 0.03),
        ("final: retain refusal rate", retain_gen_refusal, "<= 0.05", retain_gen_refusal <= 0.05),
        ("final: |celebrity MC image - vanilla|", delta("celebrity", "mc_image_acc"), "<= 0.03", delta("celebrity", "mc_image_acc") <= 0.03),
        ("final: |general VQA - vanilla|", abs(fin["general_vqa_acc"] - v["general_vqa_acc"]), "<= 0.03",
         abs(fin["general_vqa_acc"] - v["general_vqa_acc"]) <= 0.03),
        ("retain refusal: stage 1 -> final", f"{s1['retain']['gen_refusal_rate']:.3f} -> {retain_gen_refusal:.3f}",
         "final < stage 1", retain_gen_refusal < s1["retain"]["gen_refusal_rate"]),
        ("distinct refusals on forget gen", q.get("n_distinct_refusals"), ">= 10", (q.get("n_distinct_refusals") or 0) >= 10),
        ("top refusal share on forget gen", q.get("top_refusal_share"), "<= 0.30", (q.get("top_refusal_share") or 1) <= 0.30),
        ("asru unlearn wall time (min)", round(sum(st["seconds"] for k, st in manifest["stages"].items() if k == "unlearn") / 60, 2),
         "<= 10", manifest["stages"]["unlearn"]["seconds"] <= 600),
    ]
    for stage, info in manifest["stages"].items():
        console.print(f"stage {stage}: {info['seconds']:.1f} s, peak memory {info['peak_memory_mb']:.0f} MiB")
    console.print(f"(this invocation: {wall:.1f} s)")
    console.print(target_table(rows))
    grpo_log = out / "stage2" / "grpo_log.jsonl"
    if grpo_log.exists():
        lines = [json.loads(x) for x in grpo_log.read_text().splitlines() if x.strip()]
        console.print(f"GRPO: {len(lines)} logged steps; reward first {lines[0].get('reward')} last {lines[-1].get('reward')}")


if __name__ == "__main__":
    main()
