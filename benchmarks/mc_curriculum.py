"""Does a model that *has* the option-lookup skill answer the world's MC questions? (issue 2, negative result)

    python benchmarks/mc_curriculum.py --data runs/demo/world --out runs/mc_curriculum [--steps 3000]
    asru vanilla --base runs/mc_curriculum --data runs/demo/world --out runs/mc_curriculum_vanilla
    asru eval --model runs/mc_curriculum_vanilla --data runs/demo/world --out runs/mc_curriculum_eval.json

Builds a base model like `asru base` but first trains it `--steps` steps on nothing but option lookup + binding
practice (benchmarks/mc_lookup.py's items, half each, the setting where lookup reliably leaves its plateau),
then on the base corpus as usual. Prints held-out lookup accuracy after each phase; the two commands above
then fine-tune and evaluate it, so the vanilla model's MC accuracy shows whether the skill transfers to
"recall the fact, then find its letter". Measured figures: docs/world.md.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from mc_lookup import echo_items, encode, first_answer_token_accuracy, lookup_items  # noqa: E402

from asru import training as T  # noqa: E402
from asru.data import corpus  # noqa: E402
from asru.models.tiny import build_processor, build_tiny_model, build_tokenizer, save_tiny  # noqa: E402
from asru.models.vanilla import BaseConfig, world_texts  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", "--world", dest="world", required=True, type=Path, help="world directory")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--steps", type=int, default=3000, help="curriculum steps before the base corpus")
    parser.add_argument("--group-by-length", action="store_true", help="length-grouped batches in both phases")
    args = parser.parse_args()
    cfg, start = BaseConfig(), time.time()
    cfg.train.group_by_length = args.group_by_length
    tokenizer = build_tokenizer(world_texts(args.world), cfg.vocab_size)
    processor = build_processor(tokenizer, image_size=cfg.model.image_size)
    model = build_tiny_model(tokenizer, cfg.model, seed=cfg.train.seed)
    pairs = lookup_items(10_000, "lookup", 0) + echo_items(10_000, 2)
    random.Random(0).shuffle(pairs)
    drills = [encode(tokenizer, p, a) for p, a in pairs]
    held_out = T.collate([encode(tokenizer, p, a) for p, a in lookup_items(400, "lookup", 1)], tokenizer.pad_token_id)
    T.sft(model, processor, drills, T.TrainConfig(steps=args.steps, lr=cfg.train.lr, warmup_steps=100,
                                                 group_by_length=args.group_by_length), label="curriculum")
    print(f"after the curriculum: held-out lookup {first_answer_token_accuracy(model, held_out):.3f} "
          f"({time.time() - start:.0f} s)", flush=True)
    encoded = T.encode_examples(processor, corpus.base_examples(args.world, seed=cfg.train.seed))
    T.sft(model, processor, encoded, cfg.train, label="base corpus")
    print(f"after the base corpus: held-out lookup {first_answer_token_accuracy(model, held_out):.3f} "
          f"({time.time() - start:.0f} s)", flush=True)
    save_tiny(model, processor, args.out)


if __name__ == "__main__":
    main()
