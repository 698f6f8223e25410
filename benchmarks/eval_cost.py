"""Wall time of `asru eval` with and without the knowledge-in-the-weights metrics (likelihood MC, letter likelihood,
truth ratio, membership inference); issue 10 asks for at most 1.5x.

    PYTHONPATH=src python benchmarks/eval_cost.py --model runs/demo/vanilla --data runs/demo/world \
        [--preset tiny] [--limit N]

Both runs use the preset's eval settings and skip the offline judge (identical in both, so it would only dilute
the ratio). Prints one line per run and the ratio.
"""

from __future__ import annotations

import argparse
import time

import torch

from asru.config import apply_threads, load_preset
from asru.eval.mllmu import evaluate
from asru.models.load import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--forget-split", default="forget_10")
    parser.add_argument("--limit", type=int, default=None, help="retain people (default: all)")
    args = parser.parse_args()
    preset = load_preset(args.preset)
    threads = apply_threads(preset)  # the preset's thread count, as `asru eval` runs
    settings = preset.get("eval", {})
    model, processor = load_model(args.model)
    times = {}
    for likelihood in (False, True):
        start = time.perf_counter()
        results, _ = evaluate(model, processor, args.data, args.forget_split, limit=args.limit, progress=False,
                              judge=False, likelihood=likelihood, max_new_tokens=settings.get("max_new_tokens", 32),
                              batch_size=settings.get("batch_size", 64))
        times[likelihood] = time.perf_counter() - start
        extra = results["meta"]["likelihood"] or {}
        print(f"likelihood={likelihood}: {times[likelihood]:.1f} s (likelihood part {extra.get('seconds')} s, "
              f"MIA {'on' if 'mia' in results else 'off'})")
    print(f"threads: {threads or torch.get_num_threads()}")
    print(f"ratio with / without: {times[True] / times[False]:.2f}x")


if __name__ == "__main__":
    main()
