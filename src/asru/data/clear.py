"""CLEAR (therem/CLEAR, Dontsov et al. 2024) read from a local copy of the Hugging Face dataset repository.

Why a local directory: the hub is not always reachable (nor wanted) where evaluations run; `git clone
https://huggingface.co/datasets/therem/CLEAR` or `huggingface-cli download --repo-type dataset therem/CLEAR
--local-dir DIR` gives exactly the layout read here. Accepted per config: `DIR/<config>/*.parquet` (any depth,
e.g. `train-00000-of-00001.parquet` or the parquet-converter's `train/0000.parquet`) or `DIR/<config>.parquet`.

Columns (the dataset card's `dataset_info`):
- full, forget01/05/10, retain99/95/90: image {bytes, path}, caption, name
- *_perturbed (forget01/05/10_perturbed, retain_perturbed): + perturbed_captions [str], paraphrased_caption,
  perturbed_names [str]
- real_faces: image, answer, options [str] (no question column: the question is the name question)
- real_world: image, question, answer, options [str] (the card also lists `prompt`, unused here)
`options` holds the distractors; the answer is inserted among them at a position fixed by the row, so the
correct letter is spread over A-D and identical on every run.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from asru.data.schema import QAItem
from asru.errors import UserError

CAPTION_CONFIGS = ("full", "forget01", "forget05", "forget10", "retain99", "retain95", "retain90")
PERTURBED_CONFIGS = (
    "forget01_perturbed",
    "forget05_perturbed",
    "forget10_perturbed",
    "retain_perturbed",
    "retain99_perturbed",
    "retain95_perturbed",
    "retain90_perturbed",
)
QA_CONFIGS = ("real_faces", "real_world")

CAPTION_COLUMNS = ("image", "caption", "name")
PERTURBED_COLUMNS = CAPTION_COLUMNS + ("perturbed_captions", "paraphrased_caption", "perturbed_names")
QA_COLUMNS = {"real_faces": ("image", "answer", "options"), "real_world": ("image", "question", "answer", "options")}

# real_faces has no question column; this is the question its answers (celebrity names) respond to.
NAME_QUESTION = "What is the name of the person in the image?"
# The HF repo stores the default config ("full") under data/ in some revisions.
_CONFIG_ALIASES = {"full": ("full", "data")}


@dataclass(frozen=True)
class ClearCaptionItem:
    """One CLEAR row about a fictitious author: a face image, its caption and the person's name.

    The perturbed fields are empty for the plain configs (full, forgetNN, retainNN).
    """

    id: str
    name: str
    caption: str
    image: bytes | None
    paraphrased_caption: str = ""
    perturbed_captions: tuple[str, ...] = ()
    perturbed_names: tuple[str, ...] = ()


def config_files(data_dir: str | Path, config: str) -> list[Path]:
    """The parquet files of one config, in a stable order; UserError naming what exists when there are none."""
    root = Path(data_dir)
    if not root.is_dir():
        raise UserError(f"CLEAR directory {root} does not exist; download therem/CLEAR there (see docs/clear.md)")
    for name in _CONFIG_ALIASES.get(config, (config,)):
        if (root / name).is_dir():
            files = sorted((root / name).rglob("*.parquet"))
            if files:
                return files
        if (root / f"{name}.parquet").is_file():
            return [root / f"{name}.parquet"]
    raise UserError(
        f"CLEAR config {config!r} not found in {root}: expected {root / config}/*.parquet or "
        f"{root / config}.parquet; configs found there: {', '.join(available_configs(root)) or 'none'}"
    )


def available_configs(data_dir: str | Path) -> list[str]:
    """Config names present in a CLEAR directory (for error messages and discovery)."""
    root = Path(data_dir)
    if not root.is_dir():
        return []
    names = {p.stem for p in root.glob("*.parquet")}
    names |= {p.name for p in root.iterdir() if p.is_dir() and next(p.rglob("*.parquet"), None)}
    return sorted(names)


def read_config(data_dir: str | Path, config: str, columns: Sequence[str]) -> pa.Table:
    """Read the given columns of one config; a missing column is a UserError naming config, file and schema."""
    tables = []
    for path in config_files(data_dir, config):
        present = pq.read_schema(path).names
        missing = [c for c in columns if c not in present]
        if missing:
            raise UserError(
                f"CLEAR config {config!r} in {data_dir}: {path.name} lacks column(s) {', '.join(missing)}; "
                f"expected {', '.join(columns)} (the therem/CLEAR layout), found {', '.join(present)}"
            )
        tables.append(pq.read_table(path, columns=list(columns)))
    return pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]


def load_clear_captions(data_dir: str | Path, config: str) -> list[ClearCaptionItem]:
    """Rows of a caption config (full, forgetNN, retainNN) or a *_perturbed config, as ClearCaptionItems."""
    perturbed = config.endswith("_perturbed")
    columns = PERTURBED_COLUMNS if perturbed else CAPTION_COLUMNS
    rows = read_config(data_dir, config, columns).to_pylist()
    return [_caption_item(data_dir, config, i, row, perturbed) for i, row in enumerate(rows)]


def _caption_item(data_dir, config: str, index: int, row: dict, perturbed: bool) -> ClearCaptionItem:
    extra = {}
    if perturbed:
        extra = {
            "paraphrased_caption": _text(row["paraphrased_caption"]),
            "perturbed_captions": _strings(row["perturbed_captions"], config, index, "perturbed_captions", data_dir),
            "perturbed_names": _strings(row["perturbed_names"], config, index, "perturbed_names", data_dir),
        }
    return ClearCaptionItem(
        id=f"clear/{config}/{index}",
        name=_text(row["name"]),
        caption=_text(row["caption"]),
        image=_image_bytes(row["image"], data_dir, config, index),
        **extra,
    )


def load_clear_qa(data_dir: str | Path, config: str) -> list[QAItem]:
    """real_faces / real_world rows as multiple-choice QAItems (answer = the correct option letter).

    `meta` keeps the texts the CLEAR probability metrics need: answer_text and distractors.
    """
    if config not in QA_COLUMNS:
        raise UserError(f"CLEAR config {config!r} is not a QA config; choose one of {', '.join(QA_COLUMNS)}")
    rows = read_config(data_dir, config, QA_COLUMNS[config]).to_pylist()
    return [_qa_item(data_dir, config, i, row) for i, row in enumerate(rows)]


def _qa_item(data_dir, config: str, index: int, row: dict) -> QAItem:
    answer = _text(row["answer"])
    distractors = tuple(o for o in _strings(row["options"], config, index, "options", data_dir) if o != answer)
    texts = _place_answer(answer, distractors, seed=f"{config}/{index}/{answer}")
    options = {chr(ord("A") + i): text for i, text in enumerate(texts)}
    return QAItem(
        id=f"clear/{config}/{index}",
        question=_text(row.get("question")) or NAME_QUESTION,
        answer=chr(ord("A") + texts.index(answer)),
        task="mc",
        setting="image",
        image=_image_bytes(row["image"], data_dir, config, index),
        options=options,
        split=config,
        meta={"answer_text": answer, "distractors": list(distractors), "benchmark": "clear"},
    )


def _place_answer(answer: str, distractors: Sequence[str], seed: str) -> list[str]:
    """Insert the answer among the distractors at a position derived from a hash: varied, yet reproducible."""
    position = int(hashlib.sha256(seed.encode("utf-8")).hexdigest(), 16) % (len(distractors) + 1)
    return [*distractors[:position], answer, *distractors[position:]]


def perturbed_config(forget_config: str) -> str:
    """`forget05` or `forget05_perturbed` -> `forget05_perturbed`; anything else is a UserError."""
    match = re.fullmatch(r"(forget\d+)(_perturbed)?", forget_config)
    if not match:
        raise UserError(
            f"CLEAR forget config {forget_config!r} is not of the form forgetNN; use forget01, forget05 or forget10"
        )
    return f"{match.group(1)}_perturbed"


def retain_perturbed_config(data_dir: str | Path, forget_config: str) -> str:
    """The perturbed retain config to compare against: `retain_perturbed` (the hub's name) or `retainMM_perturbed`."""
    percent = int(re.search(r"\d+", perturbed_config(forget_config)).group())
    candidates = ("retain_perturbed", f"retain{100 - percent:02d}_perturbed")
    present = set(available_configs(data_dir))
    for name in candidates:
        if name in present:
            return name
    raise UserError(
        f"CLEAR directory {data_dir} has no perturbed retain config: expected {' or '.join(candidates)} "
        f"(as <config>/*.parquet or <config>.parquet)"
    )


def _text(value) -> str:
    return "" if value is None else str(value)


def _strings(value, config: str, index: int, column: str, data_dir) -> tuple[str, ...]:
    """A list-of-strings column; a JSON-encoded list is accepted too (some re-exports store it as text)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass  # reported below as not a list
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UserError(
            f"CLEAR config {config!r} in {data_dir}: row {index} column {column!r} must be a list of strings, "
            f"got {type(value).__name__}"
        )
    return tuple(value)


def _image_bytes(value, data_dir, config: str, index: int) -> bytes | None:
    """The encoded image of an HF Image struct {bytes, path}; falls back to reading `path` next to the data."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if not isinstance(value, dict):
        raise UserError(
            f"CLEAR config {config!r} in {data_dir}: row {index} column 'image' must be a struct {{bytes, path}}, "
            f"got {type(value).__name__}"
        )
    if value.get("bytes"):
        return bytes(value["bytes"])
    path = value.get("path")
    for candidate in (Path(path), Path(data_dir) / config / str(path)) if path else ():
        if candidate.is_file():
            return candidate.read_bytes()
    raise UserError(
        f"CLEAR config {config!r} in {data_dir}: row {index} has an image without bytes and no readable path "
        f"({path!r})"
    )
