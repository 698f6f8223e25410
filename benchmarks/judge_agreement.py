"""How often the offline judge's category agrees with hand labels (tests/data/judge_labels.jsonl).

Usage: python benchmarks/judge_agreement.py [labels.jsonl] [--errors]
Prints the agreement figure and the confusion table (rows = hand label, columns = judge category).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from asru.eval.judge import CATEGORIES, judge_answer

DEFAULT = Path(__file__).resolve().parents[1] / "tests" / "data" / "judge_labels.jsonl"


def judged(path: Path = DEFAULT) -> list[tuple[dict, str]]:
    """(row, judge category) for every labelled row."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(r, judge_answer(r["question"], r["prediction"], r["ground_truth"], key=r.get("key")).category) for r in rows]


def main(argv: list[str]) -> None:
    args = [a for a in argv if not a.startswith("--")]
    pairs = judged(Path(args[0]) if args else DEFAULT)
    agree = sum(r["label"] == c for r, c in pairs) / len(pairs)
    print(f"agreement: {agree:.1%} ({sum(r['label'] == c for r, c in pairs)}/{len(pairs)})")
    table = Counter((r["label"], c) for r, c in pairs)
    labels = [c for c in CATEGORIES if c != "other"]
    print(f"{'label/judge':>14} " + " ".join(f"{c:>13}" for c in CATEGORIES))
    for label in labels:
        print(f"{label:>14} " + " ".join(f"{table[(label, c)]:>13}" for c in CATEGORIES))
    if "--errors" in argv:
        for r, c in pairs:
            if r["label"] != c:
                print(f"  [{r['label']} -> {c}] {r['question']!r} :: {r['prediction']!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
