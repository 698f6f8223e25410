"""Does a rebuild of the testbed equal the shipped one? Compares every figure of the testbed tables
(docs/results.md's `vanilla` and `knowledge` tables) of two demo directories to the printed digit, and every
rebuilt model file with the checksum it was shipped with (max |difference| of the weights where they differ).

    asru demo --rebuild --out runs/rebuild          # trains base, vanilla and the three oracles (~90 min, 2 cores)
    asru demo --out runs/demo                       # the shipped testbed (minutes)
    python benchmarks/testbed_check.py --rebuild runs/rebuild --shipped runs/demo

Exit 0 when every figure is equal, 1 when one differs (each printed with both values), 2 on bad input.
Training times are reported, not compared: they are the machine's, not the model's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from refresh_docs import NotADemo, knowledge_table, vanilla_table  # noqa: E402

from asru.testbed import model_files, shipped_testbed, stage_names  # noqa: E402


def figures(runs: Path, split: str) -> dict[str, str]:
    """figure name -> measured cell, for every row of the testbed tables (time rows are kept apart by name)."""
    rows = {}
    for table in (vanilla_table(runs, split), knowledge_table(runs, split) or ""):
        for line in table.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 3 and cells[0] not in ("figure", "---") and not cells[0].startswith("figure ("):
                rows[cells[0]] = cells[1]
    return rows


def weight_differences(rebuilt: Path, shipped: Path) -> float:
    """Largest |difference| between the two directories' safetensors tensors."""
    from safetensors.torch import load_file

    worst = 0.0
    for file in sorted(rebuilt.glob("*.safetensors")):
        a, b = load_file(file), load_file(shipped / file.name)
        worst = max([worst] + [float((a[k].double() - b[k].double()).abs().max()) for k in a if k in b])
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rebuild", type=Path, required=True, help="a demo directory of `asru demo --rebuild`")
    parser.add_argument("--shipped", type=Path, required=True, help="a demo directory of `asru demo` (shipped testbed)")
    parser.add_argument("--forget-split", default="forget_10")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        rebuilt, shipped = figures(args.rebuild, args.forget_split), figures(args.shipped, args.forget_split)
    except NotADemo as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    testbed = shipped_testbed(args.preset, args.seed)
    if testbed is None:
        print(f"error: asru ships no testbed for {args.preset} seed {args.seed}", file=sys.stderr)
        return 2
    differ = 0
    print("| figure | rebuild | shipped | |\n|---|---|---|---|")
    for name in [*rebuilt, *(k for k in shipped if k not in rebuilt)]:  # the tables' order
        a, b = rebuilt.get(name, "absent"), shipped.get(name, "absent")
        timing = "(min" in name
        same = a == b
        differ += not (same or timing)
        print(f"| {name} | {a} | {b} | {'time, not compared' if timing else 'equal' if same else 'DIFFERS'} |")
    print("\n| model | files | |\n|---|---|---|")
    for stage in stage_names():
        if not (args.rebuild / stage).is_dir() or stage not in testbed.models:
            print(f"| {stage} | - | not in both |")
            continue
        model = testbed.models[stage]
        ok = model_files(args.rebuild / stage) == model.manifest["testbed"]["files"]
        detail = "bit-identical" if ok else f"differ, max |weight difference| {weight_differences(args.rebuild / stage, model.path):.3g}"
        print(f"| {stage} | {len(model.manifest['testbed']['files'])} | {detail} |")
        differ += not ok
    versions = testbed.models["base"].manifest["trained"].get("versions", {})
    print(f"\nshipped models trained with torch {versions.get('torch')}, transformers {versions.get('transformers')}; "
          f"{'every figure equal' if not differ else f'{differ} difference(s)'}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
