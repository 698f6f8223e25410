"""The table: one row per method (runs sharing a label are seeds, averaged as mean ± sample std), its columns read
from the metric registry (`asru.eval.registry`) at call time, each with its unit and direction, plus the helpers
that pick a column's best method, write the headers and group the columns into the report's tables.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from asru.errors import UserError
from asru.eval import registry
from asru.eval.report.panels import BAR_FIGURES, ORACLE_PANEL, PARETO_PANELS
from asru.eval.report.runs import Run


@dataclass(frozen=True)
class Stat:
    """Mean ± sample standard deviation over the `n` seeds of one method that report the number."""

    mean: float
    std: float
    n: int

    def parts(self, unit: str) -> tuple[str, str]:
        """("30.0", "± 14.1") in the column's unit; the std part is "" for a single seed."""
        scale, digits = UNITS[unit]
        return f"{self.mean * scale:.{digits}f}", (f"± {self.std * scale:.{digits}f}" if self.n > 1 else "")

    def format(self, unit: str) -> str:
        return " ".join(p for p in self.parts(unit) if p)


@dataclass(frozen=True)
class Column:
    """One table column: `key` is its path in results.json (dots) or a derived name; `better` is low/high/target/None."""

    key: str
    header: str
    group: str
    unit: str = "pct"
    better: str | None = None
    target: float | None = None  # the best value when better == "target"


UNITS = {"pct": (100.0, 1), "score": (1.0, 2), "s": (1.0, 0), "MB": (1.0, 0)}
GROUPS = {
    "forget": "Forget set (lower = forgotten)",
    "test": "Test set: forget people, new images and paraphrases (lower = forgotten)",
    "retain": "Retain set (higher = kept)",
    "celebrity": "Celebrities, pre-existing knowledge (higher = kept)",
    "oracle": "Knowledge in the weights, against the retain-only oracle",
    "quality": "Generation quality of forget answers (offline judge)",
    "utility": "Over-refusal, general utility and cost",
}


def _split_columns(split: str) -> list[Column]:
    """The registered split metrics shown in the report, with the split's direction (asru.eval.registry)."""
    return [Column(f"{split}.{m.name}", m.header, split, m.unit, m.better(split), m.target)
            for m in registry.split_metrics(split) if m.report]


def _run_columns(group: str) -> list[Column]:
    return [Column(m.name, m.header, group, m.unit, m.forget, m.target)
            for m in registry.metrics("run") if m.report and m.group == group]


def columns() -> tuple[Column, ...]:
    """Every column of the table, read from the registry at call time (a metric registered later shows too)."""
    return (
        *_split_columns("forget"), *_split_columns("test"), *_split_columns("retain"), *_split_columns("celebrity"),
        *_run_columns("oracle"),
        Column("forget.quality.refusal_rate", "refusal %", "quality", "pct", "high"),
        Column("forget.quality.mean_contextual_refusal", "contextual refusal (0-5)", "quality", "score", "high"),
        Column("forget.quality.mean_leakage", "leakage (5 = none)", "quality", "score", "high"),
        Column("forget.quality.mean_naturalness", "naturalness (1-5)", "quality", "score", "high"),
        Column("forget.quality.hallucination_rate", "hallucination %", "quality", "pct", "low"),
        Column("forget.quality.gibberish_rate", "gibberish %", "quality", "pct", "low"),
        Column("forget.quality.top_refusal_share", "top refusal share %", "quality", "pct"),  # 0 also when none refuse
        Column("retain.quality.refusal_rate", "retain refusal % (over-refusal)", "utility", "pct", "low"),
        *_run_columns("utility"),
        Column("unseen_refusal_rate", "unseen-face refusal %", "utility", "pct", "high"),
        Column("wall_seconds", "wall time (s)", "utility", "s", "low"),
        Column("peak_memory_mb", "peak memory (MiB)", "utility", "MB", "low"),
    )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def run_cost(manifest: dict) -> dict[str, float | None]:
    """Wall seconds (sum of the stages) and peak memory (max over stages) of a run's manifest."""
    stages = [s for s in (manifest.get("stages") or {}).values() if isinstance(s, dict)]
    seconds = [_number(s.get("seconds")) for s in stages]
    peaks = [_number(s.get("peak_memory_mb")) for s in stages] + [_number(manifest.get("peak_memory_mb"))]
    wall = sum(s for s in seconds if s is not None) if any(s is not None for s in seconds) else None
    return {"wall_seconds": wall if wall is not None else _number(manifest.get("wall_seconds")),
            "peak_memory_mb": max((p for p in peaks if p is not None), default=None)}


def _unseen_refusal(results: dict) -> float | None:
    values = [_number(results.get(f"unseen_refusal_rate_{s}")) for s in ("image", "text")]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def metric_value(run: Run, key: str, cost: dict | None = None) -> float | None:
    """One number of a run by column key; None when the run does not report it (never read as 0)."""
    if key in ("wall_seconds", "peak_memory_mb"):
        return _number((cost or {}).get(key)) if cost and key in cost else run_cost(run.manifest)[key]
    if key == "unseen_refusal_rate":
        return _unseen_refusal(run.results)
    node: Any = run.results
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return _number(node)


def stat(values: Sequence[float]) -> Stat | None:
    """Mean ± sample std (0 for a single seed); None for no values."""
    if not values:
        return None
    return Stat(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values))


def group_runs(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Runs by label, in first-appearance order (the seeds of one method share a label)."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.label, []).append(run)
    return groups


def results_table(runs: Sequence[Run], costs: dict[str, dict] | None = None) -> list[dict]:
    """One row per label: {"label", "n_runs", "paths", <key>: Stat | None for every key of `row_keys()`}.

    `costs` maps a label to {"wall_seconds", "peak_memory_mb"} when the caller knows them better than the
    manifests beside the runs.
    """
    if not runs:
        raise UserError("no runs to report; pass at least one results.json written by `asru eval`")
    rows = []
    for label, group in group_runs(runs).items():
        cost = (costs or {}).get(label)
        row: dict[str, Any] = {"label": label, "n_runs": len(group), "paths": [str(r.path) for r in group]}
        for key in row_keys():
            row[key] = stat([v for r in group if (v := metric_value(r, key, cost)) is not None])
        rows.append(row)
    return rows


def row_keys() -> list[str]:
    """Every number a row carries: the table's columns, then the extra ones the plots show."""
    keys = dict.fromkeys(c.key for c in columns())
    keys.update(dict.fromkeys(key for panels in BAR_FIGURES.values() for p in panels for key, _ in p.series))
    keys.update(dict.fromkeys(k for panel in (*PARETO_PANELS, ORACLE_PANEL) for k in panel[:2]))
    return list(keys)


def shown_columns(rows: Sequence[dict]) -> list[Column]:
    """Columns at least one row has a number for (no world extras / no manifest -> those columns go)."""
    return [c for c in columns() if any(row.get(c.key) is not None for row in rows)]


def best_labels(rows: Sequence[dict], col: Column) -> set[str]:
    """Labels with the best mean in a column (bolded); none when fewer than two methods report it."""
    scored = [(row[col.key].mean, row["label"]) for row in rows if row.get(col.key) is not None]
    if col.better is None or len(scored) < 2:
        return set()
    if col.better == "target":
        scored = [(abs(m - col.target), label) for m, label in scored]
    best = (max if col.better == "high" else min)(m for m, _ in scored)
    if all(abs(m - best) < 1e-12 for m, _ in scored):
        return set()  # a tie across every method singles nobody out
    return {label for m, label in scored if abs(m - best) < 1e-12}


def _cell(row: dict, col: Column) -> str:
    value = row.get(col.key)
    return value.format(col.unit) if value is not None else "–"


ARROWS = {"high": " ↑", "low": " ↓"}


def header(col: Column) -> str:
    """The column header with its direction: ↑ higher is better, ↓ lower, "→ 0.5" closer to the target."""
    if col.better == "target":
        return f"{col.header} → {col.target:g}"
    return col.header + ARROWS.get(col.better or "", "")


def _method_name(row: dict) -> str:
    return row["label"] + (f" (n={row['n_runs']})" if row["n_runs"] > 1 else "")


def table_groups(rows: Sequence[dict]) -> list[tuple[str, list[Column]]]:
    """(heading, columns) per table group that has at least one shown column."""
    shown = shown_columns(rows)
    return [(heading, cols) for g, heading in GROUPS.items() if (cols := [c for c in shown if c.group == g])]

