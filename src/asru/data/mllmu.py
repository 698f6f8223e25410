"""MLLMU-Bench as QA items: reads the benchmark's parquet layout (the real download or the embedded world).

Layout (see docs/evaluation.md): `DIR/<split>/*.parquet` or `DIR/<split>.parquet` for the evaluation splits,
`DIR/baseline_train_split/<forget_N|retain_M>/*.parquet` for training, and, for the embedded world only,
`DIR/world/{general_vqa,unseen_faces,answer_keys}/*.parquet`.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from asru.data.schema import QAItem, Setting
from asru.errors import UserError

FORGET_SPLITS = ("forget_5", "forget_10", "forget_15")
RETAIN_FOR = {"forget_5": "retain_95", "forget_10": "retain_90", "forget_15": "retain_85"}
EVAL_SPLITS = ("Full_Set", *FORGET_SPLITS, *RETAIN_FOR.values(), "Test_Set", "Retain_Set")
TRAIN_DIR = "baseline_train_split"

TASK_COLUMNS = ("ID", "Classification_Task", "Generation_Task", "Mask_Task")
TRAIN_COLUMNS = ("image", "metadata")
WORLD_COLUMNS = {
    "world/general_vqa": ("image", "ID", "question", "answer", "key"),
    "world/unseen_faces": ("image", "ID", "question", "answer", "attribute", "setting"),
    "world/answer_keys": ("ID", "question", "key"),
}
TYPE_SETTING: dict[str, Setting] = {"Image_Textual": "image", "Pure_Text": "text"}
MC_GROUPS: dict[str, Setting] = {"Image_Textual_Questions": "image", "Pure_Text_Questions": "text"}


# ----------------------------------------------------------------------------------------------- reading

def split_files(data_dir: str | Path, split: str) -> list[Path]:
    """The parquet files of one split, in name order; both layouts the hub produces are accepted."""
    root = Path(data_dir)
    if not root.is_dir():
        raise UserError(f"data dir {root} does not exist or is not a directory; pass the MLLMU-Bench download "
                        f"(or the embedded world) directory")
    folder, single = root / split, root / f"{split}.parquet"
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files and single.is_file():
        files = [single]
    if not files:
        raise UserError(f"data dir {root} has no split '{split}' (expected {root}/{split}/*.parquet or "
                        f"{root}/{split}.parquet); is this an MLLMU-Bench directory?")
    return files


def expected_columns(split: str) -> tuple[str, ...] | None:
    """Columns this package reads from a split (a subset of what the hub stores); None for other tables."""
    if split.startswith(TRAIN_DIR + "/"):
        return TRAIN_COLUMNS
    if split in WORLD_COLUMNS:
        return WORLD_COLUMNS[split]
    if split in EVAL_SPLITS:
        return ("images" if split == "Test_Set" else "image", *TASK_COLUMNS)
    return None


def read_split(data_dir: str | Path, split: str, columns: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Rows of one split as plain dicts.

    `columns` (default: those this package needs from a benchmark split; every column of any other table)
    must all exist. Why pyarrow and not `datasets`: the local layout is plain parquet, read with no cache dir.
    """
    wanted = tuple(columns) if columns is not None else expected_columns(split)
    rows: list[dict[str, Any]] = []
    for path in split_files(data_dir, split):
        try:
            names = pq.read_schema(path).names
        except (pa.ArrowException, OSError) as exc:
            raise UserError(f"split '{split}': cannot read parquet file {path} ({exc}); re-download it") from exc
        missing = [c for c in wanted or () if c not in names]
        if missing:
            raise UserError(f"split '{split}' ({path}) has no column {', '.join(repr(c) for c in missing)}; "
                            f"expected columns: {', '.join(wanted)} (found: {', '.join(names)})")
        rows.extend(pq.read_table(path, columns=list(wanted) if wanted else None).to_pylist())
    return rows


def image_bytes(struct: Any, *, split: str = "", row_id: str = "") -> bytes:
    """Encoded image bytes from an HF image struct {bytes, path}, checked to decode with PIL.

    Why check here: a broken image otherwise fails deep inside a processor, hours into a run, with no row ID.
    """
    data = struct.get("bytes") if isinstance(struct, dict) else struct
    where = f"split '{split}' row ID {row_id!r}"
    if not data:
        raise UserError(f"{where} has no image bytes; re-download the split (images must be embedded in the parquet)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UserError(f"{where}: image bytes do not decode ({exc}); re-download the split or regenerate "
                        f"the world") from exc
    return bytes(data)


def natural_key(text: str) -> tuple:
    """Sort '2' before '10' (real MLLMU-Bench IDs are numbers stored as strings)."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(text)))


# ----------------------------------------------------------------------------------------------- splits

def retain_split_for(forget_split: str) -> str:
    """forget_5 -> retain_95, forget_10 -> retain_90, forget_15 -> retain_85."""
    if forget_split not in RETAIN_FOR:
        raise UserError(f"unknown forget split {forget_split!r}; choose one of {', '.join(FORGET_SPLITS)}")
    return RETAIN_FOR[forget_split]


def person_ids(data_dir: str | Path, split: str) -> set[str]:
    """IDs of the people in an evaluation split (reads only the ID column)."""
    return {str(r["ID"]) for r in read_split(data_dir, split, columns=["ID"])}


def check_disjoint(forget_ids: Iterable[str], retain_ids: Iterable[str]) -> None:
    """Refuse overlapping forget/retain people: every forget-vs-retain number would be meaningless."""
    shared = sorted(set(forget_ids) & set(retain_ids), key=natural_key)
    if shared:
        shown = ", ".join(shared[:20]) + (f" ... ({len(shared)} in all)" if len(shared) > 20 else "")
        raise UserError(f"forget and retain splits share {len(shared)} person ID(s): {shown}; "
                        f"use matching splits (forget_5/retain_95, forget_10/retain_90, forget_15/retain_85)")


# ----------------------------------------------------------------------------------------------- eval items

def pick_test_image(images: list[Any], row_id: str) -> Any:
    """One of a Test_Set person's images, chosen by a hash of the ID (the official script uses random.choice).

    Why a hash: the same person gets the same image on every run, machine and Python version.
    """
    index = int(hashlib.sha256(str(row_id).encode()).hexdigest(), 16) % len(images)
    return images[index]


def _row_image(row: dict, split: str) -> bytes:
    row_id = str(row["ID"])
    if split == "Test_Set":
        images = row.get("images") or []
        if not images:
            raise UserError(f"split 'Test_Set' row ID {row_id!r} has an empty 'images' list; re-download the split")
        return image_bytes(pick_test_image(images, row_id), split=split, row_id=row_id)
    return image_bytes(row.get("image"), split=split, row_id=row_id)


def _field(entry: Any, key: str, split: str, row_id: str, column: str) -> Any:
    if not isinstance(entry, dict) or entry.get(key) is None:
        raise UserError(f"split '{split}' row ID {row_id!r}: an entry of {column} lacks {key!r}; "
                        f"is this the MLLMU-Bench schema?")
    return entry[key]


def _setting(entry: dict, split: str, row_id: str, column: str) -> Setting:
    kind = _field(entry, "Type", split, row_id, column)
    if kind not in TYPE_SETTING:
        raise UserError(f"split '{split}' row ID {row_id!r}: {column} Type {kind!r} is not one of "
                        f"{', '.join(TYPE_SETTING)}")
    return TYPE_SETTING[kind]


def _mc_item(q: Any, row_id: str, split: str, group: str, image: bytes | None) -> QAItem:
    setting = MC_GROUPS[group]
    options = {k: str(v) for k, v in _field(q, "Options", split, row_id, group).items() if v is not None}
    return QAItem(id=row_id, question=_field(q, "Question", split, row_id, group),
                  answer=str(_field(q, "Correct_Answer", split, row_id, group)).strip(), task="mc",
                  setting=setting, image=image if setting == "image" else None, options=options, split=split)


def _mc_items(row: dict, split: str, image: bytes) -> list[QAItem]:
    groups = row.get("Classification_Task") or {}
    return [_mc_item(q, str(row["ID"]), split, group, image) for group in MC_GROUPS for q in groups.get(group) or []]


def _open_items(row: dict, split: str, image: bytes, column: str, keys: dict) -> list[QAItem]:
    row_id, items = str(row["ID"]), []
    task = "gen" if column == "Generation_Task" else "cloze"
    for q in row.get(column) or []:
        setting = _setting(q, split, row_id, column)
        question = _field(q, "Question", split, row_id, column)
        key = keys.get((row_id, question)) if task == "gen" else None
        items.append(QAItem(id=row_id, question=question, answer=str(_field(q, "Ground_Truth", split, row_id, column)),
                            task=task, setting=setting, image=image if setting == "image" else None,
                            split=split, meta={"key": key} if key else {}))
    return items


def answer_keys(data_dir: str | Path) -> dict[tuple[str, str], str]:
    """(person ID, question) -> attribute value a generation answer must contain (embedded world only)."""
    if not (Path(data_dir) / "world" / "answer_keys").is_dir():
        return {}
    return {(str(r["ID"]), r["question"]): str(r["key"]) for r in read_split(data_dir, "world/answer_keys")}


def eval_items(data_dir: str | Path, split: str, *, ids: Iterable[str] | None = None) -> list[QAItem]:
    """One evaluation split flattened to QA items, per person: MC (image, text), generation, fill-in-the-blank.

    `ids` keeps only those people (filtering before images are decoded, which matters for Test_Set).
    """
    keep = None if ids is None else {str(i) for i in ids}
    keys = answer_keys(data_dir)
    items: list[QAItem] = []
    for row in read_split(data_dir, split):
        if keep is not None and str(row["ID"]) not in keep:
            continue
        image = _row_image(row, split)
        items += _mc_items(row, split, image)
        items += _open_items(row, split, image, "Generation_Task", keys)
        items += _open_items(row, split, image, "Mask_Task", keys)
    return items


def few_shot_example(data_dir: str | Path, setting: Setting = "image") -> QAItem:
    """The 1-shot MC example: the first `setting` question of the Full_Set person with the smallest ID who is in
    no forget split (any person if every one is).

    Why fixed: the official script samples it at random, which makes runs irreproducible; why not a forget
    person: the example's answer would then be shown in every forget prompt.
    """
    if setting not in ("image", "text"):
        raise UserError(f"few-shot setting must be 'image' or 'text', got {setting!r}")
    group = next(g for g, s in MC_GROUPS.items() if s == setting)
    forgotten = _forget_ids(data_dir)
    rows = sorted(read_split(data_dir, "Full_Set", columns=["ID", "Classification_Task"]),
                  key=lambda r: (str(r["ID"]) in forgotten, natural_key(r["ID"])))
    for row in rows:
        questions = (row["Classification_Task"] or {}).get(group) or []
        if questions:
            return _mc_item(questions[0], str(row["ID"]), "Full_Set", group, None)
    raise UserError(f"split 'Full_Set' in {data_dir} has no {group}; the 1-shot MC example needs one")


def _forget_ids(data_dir: str | Path) -> set[str]:
    """IDs in any forget split that exists (a download may hold only some of them)."""
    root = Path(data_dir)
    present = [s for s in FORGET_SPLITS if (root / s).is_dir() or (root / f"{s}.parquet").is_file()]
    return set().union(*(person_ids(root, s) for s in present))


# ----------------------------------------------------------------------------------------------- training

def _names(data_dir: str | Path) -> dict[str, str]:
    """Person ID -> name, from the Full_Set biography JSON."""
    names = {}
    for row in read_split(data_dir, "Full_Set", columns=["ID", "biography"]):
        bio = row["biography"]
        try:
            bio = json.loads(bio) if isinstance(bio, str) else (bio or {})
        except json.JSONDecodeError as exc:
            raise UserError(f"split 'Full_Set' row ID {row['ID']!r}: biography is not JSON ({exc})") from exc
        if isinstance(bio, dict) and bio.get("Name"):
            names[str(row["ID"])] = str(bio["Name"])
    return names


def _metadata(row: dict, split: str, index: int) -> list[dict]:
    meta = row["metadata"]
    try:
        meta = json.loads(meta) if isinstance(meta, str) else meta
    except json.JSONDecodeError as exc:
        raise UserError(f"split '{split}' row {index}: metadata is not JSON ({exc}); re-download the split") from exc
    if not isinstance(meta, list):
        raise UserError(f"split '{split}' row {index}: metadata must be a JSON list of {{Question, Answer, ID}}")
    return meta


def training_items(data_dir: str | Path, train_split: str) -> list[QAItem]:
    """QA pairs of `baseline_train_split/<train_split>` (task "qa").

    A question that names the person (Full_Set biography Name, case-insensitive) is a pure-text item with no
    image, as in the benchmark's text-only questions; every other question is asked about the row's image.
    """
    split = f"{TRAIN_DIR}/{train_split}"
    names = _names(data_dir)
    items: list[QAItem] = []
    for index, row in enumerate(read_split(data_dir, split)):
        qas = _metadata(row, split, index)
        image = None
        for qa in qas:
            row_id = str(_field(qa, "ID", split, str(index), "metadata"))
            question = _field(qa, "Question", split, row_id, "metadata")
            name = names.get(row_id, "")
            text_only = bool(name) and name.lower() in question.lower()
            if not text_only and image is None:
                image = image_bytes(row.get("image"), split=split, row_id=row_id)
            items.append(QAItem(id=row_id, question=question, answer=str(_field(qa, "Answer", split, row_id, "metadata")),
                                task="qa", setting="text" if text_only else "image",
                                image=None if text_only else image, split=train_split))
    return items


# ----------------------------------------------------------------------------------------------- world extras

def general_vqa_items(data_dir: str | Path) -> list[QAItem]:
    """General visual questions (embedded world only; empty for the real benchmark). meta["key"] must appear."""
    split = "world/general_vqa"
    if not (Path(data_dir) / split).is_dir():
        return []
    return [QAItem(id=str(r["ID"]), question=r["question"], answer=str(r["answer"]), task="vqa", setting="image",
                   image=image_bytes(r["image"], split=split, row_id=str(r["ID"])), split=split,
                   meta={"key": str(r["key"])})
            for r in read_split(data_dir, split)]


def unseen_face_items(data_dir: str | Path) -> list[QAItem]:
    """Privacy questions about never-taught faces (embedded world only); the answer is a reference refusal."""
    split = "world/unseen_faces"
    if not (Path(data_dir) / split).is_dir():
        return []
    items = []
    for r in read_split(data_dir, split):
        row_id, setting = str(r["ID"]), r["setting"]
        if setting not in ("image", "text"):
            raise UserError(f"split '{split}' row ID {row_id!r}: setting {setting!r} must be 'image' or 'text'")
        image = image_bytes(r["image"], split=split, row_id=row_id) if setting == "image" else None
        items.append(QAItem(id=row_id, question=r["question"], answer=str(r["answer"]), task="refusal",
                            setting=setting, image=image, split=split, attribute=str(r["attribute"] or "")))
    return items
