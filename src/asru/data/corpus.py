"""Training examples (prompt text, image, answer) for the base pretraining and the vanilla fine-tune."""

from __future__ import annotations

import json
import random
from pathlib import Path

from asru.data.mllmu import read_split
from asru.data.prompts import cloze_prompt, gen_prompt, mc_prompt

Example = tuple[str, bytes | None, str]  # (user text, image bytes or None, target answer)


def _image(row: dict) -> bytes | None:
    image = row.get("image")
    return image.get("bytes") if isinstance(image, dict) else None


def corpus_examples(rows: list[dict], seed: int = 0) -> list[Example]:
    """Turn world corpus rows into prompts exactly as the evaluator words them.

    Half of the MC items get a 1-shot demonstration (another MC item) and half of the free-form items get the
    generation instruction, so the model answers the same way with or without the protocol's scaffolding.
    """
    rng = random.Random(seed)
    mcs = [r for r in rows if r["task"] == "mc"]
    examples: list[Example] = []
    for row in rows:
        question, answer, task = row["question"], row["answer"], row["task"]
        if task == "mc":
            options = json.loads(row["options"])
            demo = None
            if mcs and rng.random() < 0.5:
                other = mcs[rng.randrange(len(mcs))]
                demo = (other["question"], json.loads(other["options"]), other["answer"])
            text = mc_prompt(question, options, demo)
        elif task == "cloze":
            text = cloze_prompt(question)
        else:
            text = gen_prompt(question) if rng.random() < 0.5 else question
        examples.append((text, _image(row), answer))
    return examples


def base_examples(data_dir: str | Path, seed: int = 0) -> list[Example]:
    """Pretraining corpus of the world: celebrities, refusals on strangers and privacy questions, visual QA."""
    return corpus_examples(read_split(data_dir, "world/base_corpus"), seed)


def practice_examples(data_dir: str | Path, seed: int = 0, exclude: frozenset[str] = frozenset()) -> list[Example]:
    """World-only answer-format practice (MC, cloze) on the fictitious profiles; absent for real benchmarks.
    `exclude`: person IDs whose practice is left out (the retain-only oracle never sees the forget people)."""
    path = Path(data_dir) / "world/profile_practice"
    if not path.exists():
        return []
    rows = [r for r in read_split(data_dir, "world/profile_practice") if str(r["ID"]) not in exclude]
    return corpus_examples(rows, seed)


def qa_examples(items, seed: int = 0) -> list[Example]:
    """baseline_train_split QA items (QAItem) as examples; half carry the generation instruction."""
    rng = random.Random(seed)
    return [(gen_prompt(i.question) if rng.random() < 0.5 else i.question, i.image, i.answer) for i in items]
