"""report.md: the tables (one per column group, best mean bold), the gallery with its portraits as linked PNG
files, the plots as linked PNG files and the list of runs, as Markdown that diffs well and renders on any forge.
"""

from __future__ import annotations

from collections.abc import Sequence

from asru.eval.report.gallery import CATEGORY_MEANING, GalleryRow
from asru.eval.report.panels import PLOT_TITLES
from asru.eval.report.runs import Run, _runs_list
from asru.eval.report.table import _cell, _method_name, best_labels, header, table_groups


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

