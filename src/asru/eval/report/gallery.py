"""The gallery: the same few generation questions (half forget, half retain, spread over people) asked of every
method, each with the person's portrait (downscaled, read from the data directory recorded in the results) and
every method's answer with the category the offline judge gave it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from asru.errors import UserError
from asru.eval.judge import CATEGORIES
from asru.eval.report.runs import Run
from asru.eval.report.table import group_runs

GALLERY_SPLITS = ("forget", "retain")
CATEGORY_COLOURS = {"correct": "#2e7d32", "refusal": "#1565c0", "hallucination": "#ef6c00",
                    "gibberish": "#c62828", "other": "#757575"}
CATEGORY_MEANING = {
    "correct": "states the ground truth (wanted on retain, a leak on forget)",
    "refusal": "declines to answer",
    "hallucination": "fluent but wrong specific claim",
    "gibberish": "degenerate text (repetition, non-words)",
    "other": "none of the above",
}
PORTRAIT_PX = 128


@dataclass
class GalleryRow:
    """One question shown with the portrait and every method's answer (first seed of each label)."""

    split: str
    id: str
    question: str
    ground_truth: str
    setting: str
    image: bytes | None
    answers: dict[str, tuple[str, str]]  # label -> (prediction, judged category)


def _gen_records(run: Run, split: str) -> dict[tuple[str, str], dict]:
    return {(str(r["id"]), r["question"]): r for r in run.records if r["task"] == "gen" and r["split"] == split}


def _natural(text: str) -> tuple:
    from asru.data.mllmu import natural_key

    return natural_key(text)


def pick_questions(keys: Sequence[tuple[str, str, str]], n: int) -> list[tuple[str, str, str]]:
    """`n` (id, question, setting) keys spread over people: everyone's first question (image ones first) before
    anyone's second, people in ID order. Why: a gallery of one person's answers says little about a method."""
    by_person: dict[str, list[tuple[str, str, str]]] = {}
    for key in sorted(keys, key=lambda k: (_natural(k[0]), k[2] != "image", k[1])):
        by_person.setdefault(key[0], []).append(key)
    ranked = sorted(((rank, _natural(pid), k) for pid, ks in by_person.items() for rank, k in enumerate(ks)),
                    key=lambda t: (t[0], t[1]))
    return [k for _, _, k in ranked[:n]]


def _split_source(run: Run, split: str, records: dict) -> str | None:
    """The benchmark split an evaluation split was read from (record "source", else the meta's forget/retain)."""
    for r in records.values():
        if r.get("source"):
            return r["source"]
    return run.results.get("meta", {}).get(f"{split}_split")


def thumbnail(image: bytes, size: int = PORTRAIT_PX) -> bytes | None:
    """A PNG at most `size` px on its longer side (keeps report.html small); None when the bytes do not decode."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(image)) as img:
            img = img.convert("RGB")
            img.thumbnail((size, size))
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            return buf.getvalue()
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def portraits(run: Run, split: str, source: str | None, ids: set[str]) -> dict[tuple[str, str], bytes]:
    """(id, question) -> image bytes, plus (id, "") -> the person's image for text questions; {} when the data dir
    recorded in the results is gone or unreadable (the gallery then shows no portrait)."""
    from asru.data.mllmu import eval_items

    data_dir = run.results.get("meta", {}).get("data")
    if not data_dir or not source or not Path(data_dir).is_dir():
        return {}
    try:
        items = eval_items(data_dir, source, ids=ids)
    except (UserError, OSError, ValueError):
        return {}
    out: dict[tuple[str, str], bytes] = {}
    for item in items:
        if item.image:
            out.setdefault((item.id, item.question), item.image)
            out.setdefault((item.id, ""), item.image)
    return out


def _category(record: dict) -> str:
    category = (record.get("judge") or {}).get("category")
    return category if category in CATEGORIES else "other"


def gallery_rows(runs: Sequence[Run], n: int = 6) -> list[GalleryRow]:
    """About `n` generation questions (half forget, half retain) asked of every method, with their answers."""
    firsts = [group[0] for group in group_runs(runs).values()]
    if not firsts or n < 1:
        return []
    quotas = {"forget": n - n // 2, "retain": n // 2}
    rows: list[GalleryRow] = []
    for split in GALLERY_SPLITS:
        per_run = [_gen_records(run, split) for run in firsts]
        common = set.intersection(*(set(r) for r in per_run))
        keys = pick_questions([(i, q, per_run[0][(i, q)].get("setting", "")) for i, q in common], quotas[split])
        images = portraits(firsts[0], split, _split_source(firsts[0], split, per_run[0]), {k[0] for k in keys})
        for pid, question, setting in keys:
            first = per_run[0][(pid, question)]
            image = images.get((pid, question)) or images.get((pid, ""))
            answers = {run.label: (recs[(pid, question)]["prediction"], _category(recs[(pid, question)]))
                       for run, recs in zip(firsts, per_run)}
            rows.append(GalleryRow(split, pid, question, first.get("ground_truth", ""), setting,
                                   thumbnail(image) if image else None, answers))
    return rows

