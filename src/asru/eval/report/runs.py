"""Loading: a *run* is a label plus a results.json written by `asru eval` and its per-item records
(`<stem>.items.jsonl` next to it). This module reads both, refuses results of an older or unknown format (a report
built on missing blocks would show wrong zeros), judges generation records that lack a verdict so every run gets
comparable quality numbers, and finds the run's manifest for the cost columns.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from asru.errors import UserError
from asru.eval.judge import JudgeScore, aggregate, judge_answer

SPLITS = ("forget", "test", "retain", "celebrity")
REQUIRED_SPLITS = ("forget", "retain")
JUDGED_SPLITS = ("forget", "test", "retain")


@dataclass
class Run:
    """One evaluated model: `results` is results.json, `records` its per-item lines (each generation record of
    forget/test/retain carries a `judge` dict once loaded), `manifest` the run's manifest (for cost columns)."""

    label: str
    path: Path
    results: dict
    records: list[dict]
    manifest: dict = field(default_factory=dict)


def _recreate_hint(path: Path, results: Any = None) -> str:
    """The command that writes a results file in the current format (model/data filled in when known)."""
    meta = results.get("meta") if isinstance(results, dict) and isinstance(results.get("meta"), dict) else {}
    model, data = meta.get("model") or "MODEL_DIR", meta.get("data") or "DATA_DIR"
    return f"re-create it with `asru eval --model {model} --data {data} --out {path} --force`"


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise UserError(f"results file {path} does not exist; pass the results.json written by `asru eval`")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"results file {path} is not valid JSON ({exc}); {_recreate_hint(path)}") from exc


def _check_format(path: Path, results: Any) -> None:
    """Refuse results from an older or unknown format: a report built on missing blocks would show wrong zeros."""
    if not isinstance(results, dict):
        raise UserError(f"results file {path} is not a JSON object; {_recreate_hint(path)}")
    missing = [] if isinstance(results.get("meta"), dict) and results["meta"].get("data") else ["meta.data"]
    wanted = dict.fromkeys([*REQUIRED_SPLITS, *(results.get("meta") or {}).get("splits", [])])
    missing += [f"'{s}' block" for s in wanted
                if not isinstance(results.get(s), dict) or "mc_image_acc" not in results[s]]
    if missing:
        raise UserError(f"results file {path} is in an older or unknown format (missing {', '.join(missing)}); "
                        f"{_recreate_hint(path, results)}")


def items_path(results_path: str | Path) -> Path:
    """Where `asru eval` puts the per-item records of a results file."""
    path = Path(results_path)
    return path.with_name(path.stem + ".items.jsonl")


def _read_records(path: Path, results: dict) -> list[dict]:
    items = items_path(path)
    if not items.is_file():
        raise UserError(f"per-item records {items} of {path} are missing; {_recreate_hint(path, results)}")
    records = []
    for n, line in enumerate(items.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{items} line {n} is not valid JSON ({exc}); {_recreate_hint(path, results)}") from exc
        if not isinstance(record, dict) or not {"split", "task", "id", "question", "prediction"} <= record.keys():
            raise UserError(f"{items} line {n} is not an item record of this asru version; "
                            f"{_recreate_hint(path, results)}")
        records.append(record)
    return records


def _as_score(judge: dict) -> JudgeScore:
    return JudgeScore(judge["contextual_refusal"], judge["leakage"], judge["naturalness"], bool(judge["hallucination"]),
                      judge["category"])


def fill_quality(results: dict, records: list[dict]) -> None:
    """Judge generation records that lack a verdict and add missing per-split `quality` blocks, in place.

    Why: results written before the judge existed (or with `--judge none`) still get comparable quality columns.
    """
    gen = [r for r in records if r["task"] == "gen" and r["split"] in JUDGED_SPLITS]
    for r in gen:
        if not isinstance(r.get("judge"), dict):
            r["judge"] = asdict(judge_answer(r["question"], r["prediction"], r.get("ground_truth", ""),
                                             key=r.get("key")))
    for split in JUDGED_SPLITS:
        rows = [r for r in gen if r["split"] == split]
        block = results.get(split)
        if rows and isinstance(block, dict) and not isinstance(block.get("quality"), dict):
            block["quality"] = aggregate([_as_score(r["judge"]) for r in rows], [r["prediction"] for r in rows])


def _default_label(path: Path) -> str:
    """runs/ga/results.json -> "ga"; runs/ga-seed1.json -> "ga-seed1"."""
    return path.parent.name if path.stem == "results" and path.parent.name else path.stem


def _find_manifest(path: Path) -> dict:
    """The run's manifest.json beside the results (an unlearning run directory), for wall time and memory."""
    candidate = path.parent / "manifest.json"
    try:
        return json.loads(candidate.read_text()) if candidate.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}


def load_run(results_path: str | Path, label: str | None = None, manifest: dict | None = None) -> Run:
    """Read a results.json and its items; `label` defaults to the run directory's name, `manifest` to the
    manifest.json beside the results (pass a dict with `stages` or `wall_seconds`/`peak_memory_mb` to override)."""
    path = Path(results_path)
    results = _read_json(path)
    _check_format(path, results)
    records = _read_records(path, results)
    fill_quality(results, records)
    return Run(label or _default_label(path), path, results, records,
               manifest if manifest is not None else _find_manifest(path))



def _runs_list(runs: Sequence[Run]) -> list[tuple[str, str]]:
    return [(run.label, str(run.path)) for run in runs]
