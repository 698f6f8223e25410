"""Results JSONs -> one comparison report: a mean ± std table per method, forget-vs-retain Pareto and per-split bar
plots, and a gallery of answers coloured by the offline judge.

Why both formats: report.md (+ PNG files next to it) diffs well and renders on any forge; report.html is one
self-contained file (plots and portraits inlined as base64, no external resource) that can be mailed or archived.
A *run* is a label plus a results.json written by `asru eval` (its per-item records in `<stem>.items.jsonl` next to
it); several results files with the same label are seeds of one method and are averaged.
"""

from __future__ import annotations

import io
import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from asru.errors import UserError
from asru.eval import registry
from asru.eval.judge import CATEGORIES, JudgeScore, aggregate, judge_answer

SPLITS = ("forget", "test", "retain", "celebrity")
REQUIRED_SPLITS = ("forget", "retain")
JUDGED_SPLITS = ("forget", "test", "retain")
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
METHOD_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
                  "#bcbd22", "#7f7f7f")
PORTRAIT_PX = 128


# ----------------------------------------------------------------------------------------------- loading

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


# ----------------------------------------------------------------------------------------------- the table

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


# ----------------------------------------------------------------------------------------------- plots

def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats (x lower is better, y higher is better), sorted by x."""
    def dominated(i: int) -> bool:
        xi, yi = points[i]
        return any(x <= xi and y >= yi and (x, y) != (xi, yi) for x, y in points)

    return sorted((i for i in range(len(points)) if not dominated(i)), key=lambda i: (points[i][0], -points[i][1]))


def _figure(ncols: int, width: float = 5.6, height: float = 4.2):
    """A pyplot-free Agg figure (no global backend switch, safe next to other plotting code)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), dpi=100, layout="constrained")
    return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def method_colours(rows: Sequence[dict]) -> dict[str, str]:
    """One stable colour per method, shared by every plot."""
    return {row["label"]: METHOD_COLOURS[i % len(METHOD_COLOURS)] for i, row in enumerate(rows)}


PARETO_PANELS = (
    ("forget.mc_image_acc", "retain.mc_image_acc", "Multiple choice (image)", "MC image accuracy"),
    ("forget.gen_contains", "retain.gen_contains", "Generation (answer stated)", "answer-stated rate"),
)
# Knowledge in the weights: where every method sits between the vanilla model (top right) and the oracle.
ORACLE_PANEL = ("forget.mc_lik_acc", "retain.mc_lik_acc", "Likelihood MC (in the weights)", "likelihood MC accuracy")
REFERENCE_MARKERS = {"vanilla": "s", "oracle": "D"}  # the two reference models stand out from the methods


def _pareto_panel(ax, rows: Sequence[dict], xkey: str, ykey: str, title: str, what: str, colours: dict) -> None:
    pts = [(row, row[xkey], row[ykey]) for row in rows if row.get(xkey) is not None and row.get(ykey) is not None]
    for row, x, y in pts:
        marker = REFERENCE_MARKERS.get(row["label"], "o")
        ax.errorbar(x.mean * 100, y.mean * 100, xerr=x.std * 100, yerr=y.std * 100, fmt=marker,
                    ms=11 if marker != "o" else 8, capsize=3, color=colours[row["label"]], label=row["label"],
                    markeredgecolor="black" if marker != "o" else None)
        ax.annotate(row["label"], (x.mean * 100, y.mean * 100), xytext=(6, 5), textcoords="offset points", fontsize=9)
    front = pareto_front([(x.mean, y.mean) for _, x, y in pts])
    if len(front) > 1:
        xs, ys = [pts[i][1].mean * 100 for i in front], [pts[i][2].mean * 100 for i in front]
        ax.step(xs, ys, where="post", ls="--", color="#555555", lw=1.2, label="Pareto front", zorder=0)
    ax.plot([0], [100], marker="*", ms=14, color="#f2b701", ls="none", label="ideal", zorder=0)
    ax.set(xlim=(-5, 105), ylim=(-5, 105), title=title, xlabel=f"forget {what} % (← lower is better)",
           ylabel=f"retain {what} % (higher is better →)")
    ax.grid(alpha=0.3)
    if not pts:
        ax.text(50, 50, "no run reports these numbers", ha="center", va="center", color="#777777")


def pareto_panels(rows: Sequence[dict]) -> tuple:
    """The scatter panels: the oracle/likelihood panel joins when some run reports likelihood MC."""
    with_lik = any(row.get(ORACLE_PANEL[0]) is not None for row in rows)
    return (*PARETO_PANELS, ORACLE_PANEL) if with_lik else PARETO_PANELS


def pareto_png(rows: Sequence[dict]) -> bytes:
    """Forget-vs-retain scatter, one point per method (± std over seeds), with the Pareto front dashed; the vanilla
    model is a square and the retain-only oracle a diamond."""
    panels = pareto_panels(rows)
    fig, axes = _figure(len(panels), width=4.6, height=3.9)
    colours = method_colours(rows)
    for ax, panel in zip(axes, panels):
        _pareto_panel(ax, rows, *panel, colours)
    axes[-1].legend(loc="lower right", fontsize=8)
    return _png(fig)


@dataclass(frozen=True)
class Panel:
    """One bar chart: groups of bars (one bar per method) for each (column key, tick label) in `series`."""

    title: str
    series: tuple[tuple[str, str], ...]
    ylabel: str
    unit: str = "pct"
    ymax: float = 100.0


def _split_series(metric: str) -> tuple[tuple[str, str], ...]:
    return tuple((f"{s}.{metric}", s) for s in SPLITS)


BAR_FIGURES: dict[str, tuple[Panel, ...]] = {
    "bars_mc.png": (Panel("MC accuracy, image questions", _split_series("mc_image_acc"), "%"),
                    Panel("MC accuracy, text questions", _split_series("mc_text_acc"), "%")),
    "bars_gen.png": (Panel("Generation ROUGE-L", _split_series("gen_rougeL"), "ROUGE-L ×100"),
                     Panel("Generation: answer stated", _split_series("gen_contains"), "%")),
    "bars_refusal.png": (Panel("Refusal rate (detector) per split", _split_series("gen_refusal_rate"), "%"),
                         Panel("Judge categories of forget answers",
                               (("forget.quality.refusal_rate", "refusal"), ("forget.quality.correct_rate", "correct"),
                                ("forget.quality.hallucination_rate", "hallucination"),
                                ("forget.quality.gibberish_rate", "gibberish")), "%")),
    "bars_quality.png": (Panel("Judge axes, forget answers (higher is better)",
                               (("forget.quality.mean_contextual_refusal", "contextual\nrefusal"),
                                ("forget.quality.mean_leakage", "no leakage"),
                                ("forget.quality.mean_naturalness", "naturalness")), "score (0-5)", "score", 5.0),
                         Panel("Judge axes, retain answers",
                               (("retain.quality.mean_contextual_refusal", "contextual\nrefusal"),
                                ("retain.quality.mean_leakage", "no leakage"),
                                ("retain.quality.mean_naturalness", "naturalness")), "score (0-5)", "score", 5.0)),
}


def _bar_panel(ax, rows: Sequence[dict], panel: Panel, colours: dict) -> None:
    scale = UNITS[panel.unit][0]
    width = 0.8 / max(1, len(rows))
    for i, row in enumerate(rows):
        stats = [row.get(key) for key, _ in panel.series]
        xs = [g + (i - (len(rows) - 1) / 2) * width for g in range(len(panel.series))]
        nan = float("nan")  # a number the run does not report is left out, not drawn as 0
        ax.bar(xs, [s.mean * scale if s else nan for s in stats], width,
               yerr=[s.std * scale if s else nan for s in stats], capsize=2, color=colours[row["label"]],
               label=row["label"], edgecolor="white", linewidth=0.5)
    ax.set_xticks(range(len(panel.series)), [tick for _, tick in panel.series])
    ax.set(title=panel.title, ylabel=panel.ylabel, ylim=(0, panel.ymax * 1.05))
    ax.grid(axis="y", alpha=0.3)


def bar_pngs(rows: Sequence[dict]) -> dict[str, bytes]:
    """Per-split grouped bars (MC, generation, refusal, judge axes), one PNG per file name in BAR_FIGURES."""
    colours, out = method_colours(rows), {}
    for name, panels in BAR_FIGURES.items():
        fig, axes = _figure(len(panels), width=4.6, height=3.3)
        for ax, panel in zip(axes, panels):
            _bar_panel(ax, rows, panel, colours)
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside upper center", ncol=min(len(rows), 8),
                   frameon=False)
        out[name] = _png(fig)
    return out


PLOT_TITLES = {"pareto.png": "Forget vs retain (Pareto front dashed; the star is the ideal corner)",
               "bars_mc.png": "Multiple-choice accuracy per split",
               "bars_gen.png": "Generation scores per split",
               "bars_refusal.png": "Refusals and judge categories",
               "bars_quality.png": "Generation-quality axes (offline judge)"}


def all_plots(rows: Sequence[dict]) -> dict[str, bytes]:
    """Every plot of the report, file name -> PNG bytes."""
    return {"pareto.png": pareto_png(rows), **bar_pngs(rows)}


# ----------------------------------------------------------------------------------------------- gallery

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


# ----------------------------------------------------------------------------------------------- markdown

def _md_escape(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").strip() or " "


def _md_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def markdown_tables(rows: Sequence[dict]) -> str:
    """One Markdown table per column group, one row per method; the best mean of a column is bold."""
    parts = []
    for heading, cols in table_groups(rows):
        best = {c.key: best_labels(rows, c) for c in cols}
        body = [[_md_escape(_method_name(row))] +
                [f"**{_cell(row, c)}**" if row["label"] in best[c.key] else _cell(row, c) for c in cols]
                for row in rows]
        parts.append(f"### {heading}\n\n" + _md_table(["method", *[header(c) for c in cols]], body))
    return "\n\n".join(parts)


def _gallery_image_name(row: GalleryRow) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in row.id)
    return f"gallery/{row.split}-{safe}.png"


def markdown_gallery(rows: Sequence[GalleryRow]) -> str:
    if not rows:
        return "_No generation question is shared by every run._"
    labels = list(rows[0].answers)
    body = []
    for row in rows:
        portrait = f"![{row.split} {row.id}]({_gallery_image_name(row)})" if row.image else "(no image)"
        badge = row.split + (" · text only" if row.setting == "text" else "")
        question = f"**{badge}** · {_md_escape(row.question)}<br>_truth:_ {_md_escape(row.ground_truth)}"
        body.append([portrait, question] +
                    [f"{_md_escape(row.answers[l][0])} **[{row.answers[l][1]}]**" for l in labels])
    legend = "; ".join(f"**{c}** = {m}" for c, m in CATEGORY_MEANING.items())
    return _md_table(["portrait", "question", *map(_md_escape, labels)], body) + f"\n\nCategories: {legend}."


def _runs_list(runs: Sequence[Run]) -> list[tuple[str, str]]:
    return [(run.label, str(run.path)) for run in runs]


def markdown_report(title: str, rows: Sequence[dict], plots: dict[str, bytes], gallery: Sequence[GalleryRow],
                    runs: Sequence[Run], notes_md: str = "") -> str:
    """report.md: the tables, the plots as linked PNG files, the gallery and the runs it was built from."""
    parts = [f"# {title}", notes_md.strip(), "## Results",
             "Mean ± sample standard deviation over the seeds of each method (n = seeds when more than one). "
             "Rates and accuracies are percentages; the best mean of a column is **bold**.",
             markdown_tables(rows), "## Sample answers",
             "Same questions for every method (first seed of each); category by the offline judge.",
             markdown_gallery(gallery), "## Plots"]
    parts += [f"![{PLOT_TITLES.get(name, name)}]({name})" for name in plots]
    parts += ["## Runs"]
    parts += ["\n".join(f"- {_md_escape(label)}: `{path}`" for label, path in _runs_list(runs))]
    return "\n\n".join(p for p in parts if p) + "\n"


# ----------------------------------------------------------------------------------------------- html

def html_report(title: str, rows: Sequence[dict], plots: dict[str, bytes], gallery: Sequence[GalleryRow],
                runs: Sequence[Run], notes_md: str = "") -> str:
    """report.html, rendered from the Jinja2 template (asru.eval.report_html)."""
    from asru.eval import report_html

    return report_html.html_report(title, rows, plots, gallery, runs, notes_md)


def notes_html(notes_md: str) -> str:
    """The caller's Markdown notes as HTML (raw HTML in them is escaped, not passed through)."""
    from asru.eval import report_html

    html_notes = report_html.notes_html(notes_md)
    return f'<div class="notes">{html_notes}</div>' if html_notes else ""


def _answer_html(text: str, category: str) -> str:
    from asru.eval import report_html

    return report_html.answer_html(text, category)


# ----------------------------------------------------------------------------------------------- writing

def write_report(runs: Sequence[Run], out_dir: str | Path, title: str = "Machine unlearning report",
                 notes_md: str = "", *, n_gallery: int = 6,
                 costs: dict[str, dict] | None = None) -> tuple[Path, Path]:
    """Write report.md (+ its PNG plots and gallery portraits) and a self-contained report.html into `out_dir`.

    Overwrites files of the same names: whether `out_dir` may be reused is the caller's decision (--force).
    """
    rows = results_table(runs, costs)
    plots = all_plots(rows)
    gallery = gallery_rows(runs, n_gallery)
    out = Path(out_dir)
    (out / "gallery").mkdir(parents=True, exist_ok=True)
    for name, png in plots.items():
        (out / name).write_bytes(png)
    for row in gallery:
        if row.image:
            (out / _gallery_image_name(row)).write_bytes(row.image)
    md_path, html_path = out / "report.md", out / "report.html"
    md_path.write_text(markdown_report(title, rows, plots, gallery, runs, notes_md))
    html_path.write_text(html_report(title, rows, plots, gallery, runs, notes_md))
    return md_path, html_path

