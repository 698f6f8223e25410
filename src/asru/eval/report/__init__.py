"""Results JSONs -> one comparison report: a mean ± std table per method, forget-vs-retain Pareto and per-split bar
plots, and a gallery of answers coloured by the offline judge.

Why both formats: report.md (+ PNG files next to it) diffs well and renders on any forge; report.html is one
self-contained file (plots and portraits inlined as base64, no external resource) that can be mailed or archived.
A *run* is a label plus a results.json written by `asru eval` (its per-item records in `<stem>.items.jsonl` next to
it); several results files with the same label are seeds of one method and are averaged.

The package, one module per concern, each importing only from those before it: `runs` (loading) <- `panels` (which
numbers each figure shows) <- `table` <- `plots`, `gallery` <- `markdown`, `html` <- this module, which writes both
files. The names below are the ones callers use (`asru.compare`, the CLI, the tests).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from asru.eval.report.gallery import CATEGORY_COLOURS, gallery_rows
from asru.eval.report.html import answer_html as _answer_html
from asru.eval.report.html import html_report, notes_html
from asru.eval.report.markdown import _gallery_image_name, markdown_report, markdown_tables
from asru.eval.report.plots import all_plots, budget_figure, pareto_front
from asru.eval.report.runs import SPLITS, Run, items_path, load_run
from asru.eval.report.table import best_labels, columns, results_table

__all__ = ["CATEGORY_COLOURS", "SPLITS", "Run", "all_plots", "best_labels", "budget_figure", "columns",
           "gallery_rows", "html_report", "items_path", "load_run", "markdown_report", "markdown_tables", "notes_html",
           "pareto_front", "results_table", "write_report"]


def write_report(runs: Sequence[Run], out_dir: str | Path, title: str = "Machine unlearning report",
                 notes_md: str = "", *, n_gallery: int = 6,
                 costs: dict[str, dict] | None = None, retain_budget: dict | None = None) -> tuple[Path, Path]:
    """Write report.md (+ its PNG plots and gallery portraits) and a self-contained report.html into `out_dir`.

    Overwrites files of the same names: whether `out_dir` may be reused is the caller's decision (--force).
    `retain_budget` (asru.compare.budget_curves, a sweep of two budgets or more) adds retain_budget.png.
    """
    rows = results_table(runs, costs)
    plots = all_plots(rows, retain_budget)
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

