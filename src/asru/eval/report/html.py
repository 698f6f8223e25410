"""report.html from the Jinja2 template `asru/eval/templates/report.html.j2` (+ `macros.html.j2`, `report.css`),
all package data: one self-contained file, CSS inline and plots and portraits as base64 data URIs, that can be
mailed or archived. Why a template: the page's markup lives in one readable file with autoescaping on, so every
method name, question and answer is escaped by construction; this module only turns the report's rows into plain
values for it.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from functools import lru_cache
from importlib.resources import files

from asru.eval.report.gallery import CATEGORY_COLOURS, CATEGORY_MEANING, GalleryRow
from asru.eval.report.panels import PLOT_TITLES
from asru.eval.report.plots import method_colours
from asru.eval.report.runs import Run, _runs_list
from asru.eval.report.table import _method_name, best_labels, header, table_groups


@lru_cache(maxsize=1)
def _env():
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    return Environment(loader=PackageLoader("asru.eval", "templates"), autoescape=select_autoescape(["html", "html.j2"]),
                       undefined=StrictUndefined, keep_trailing_newline=True)


def _template():
    return _env().get_template("report.html.j2")


def css() -> str:
    return files("asru.eval").joinpath("templates/report.css").read_text()


def data_uri(png: bytes) -> str:
    """Inline PNG: the HTML must open offline and stay one file."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def tint(colour: str, alpha: float = 0.12) -> str:
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    mix = [round(255 - (255 - c) * alpha) for c in (r, g, b)]
    return "#" + "".join(f"{c:02x}" for c in mix)


def answer_html(text: str, category: str) -> str:
    """One answer, its box tinted and edged in the colour of its judged category, the category named below."""
    colour = CATEGORY_COLOURS.get(category, CATEGORY_COLOURS["other"])
    return str(_env().get_template("macros.html.j2").module.answer(text, category, colour, tint(colour)))


def _notes_markup(notes_md: str) -> str:
    """The caller's Markdown notes as bare HTML, for the template's notes block (raw HTML in them is escaped)."""
    if not notes_md.strip():
        return ""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(notes_md)


def notes_html(notes_md: str) -> str:
    """The caller's Markdown notes as HTML (raw HTML in them is escaped, not passed through)."""
    html_notes = _notes_markup(notes_md)
    return f'<div class="notes">{html_notes}</div>' if html_notes else ""


def _tables(rows: Sequence[dict]) -> list[dict]:
    colours = method_colours(rows)
    tables = []
    for heading, cols in table_groups(rows):
        best = {c.key: best_labels(rows, c) for c in cols}
        body = []
        for row in rows:
            cells = []
            for c in cols:
                value = row.get(c.key)
                mean, std = value.parts(c.unit) if value is not None else ("–", "")
                cells.append({"mean": mean, "std": std, "best": row["label"] in best[c.key]})
            body.append({"name": _method_name(row), "colour": colours[row["label"]], "cells": cells})
        tables.append({"heading": heading, "headers": [header(c) for c in cols], "rows": body, "wide": len(cols) > 5})
    return tables


BUDGET_PLOT = "retain_budget.png"
OWN_SECTION = ("pareto.png", BUDGET_PLOT)  # plots with a section of their own, not among the per-split ones


def _figure(name: str, png: bytes, css_class: str = "") -> dict:
    return {"uri": data_uri(png), "caption": PLOT_TITLES.get(name, name), "css_class": css_class}


def _gallery(rows: Sequence[GalleryRow]) -> dict:
    labels = list(rows[0].answers) if rows else []
    out = []
    for row in rows:
        answers = []
        for label in labels:
            text, category = row.answers[label]
            colour = CATEGORY_COLOURS.get(category, CATEGORY_COLOURS["other"])
            answers.append({"text": text, "category": category, "colour": colour, "tint": tint(colour)})
        out.append({"image": data_uri(row.image) if row.image else None, "split": row.split, "id": row.id,
                    "badge": row.split + (" · text only" if row.setting == "text" else ""),
                    "question": row.question, "truth": row.ground_truth, "answers": answers})
    categories = [{"name": c, "colour": CATEGORY_COLOURS[c], "meaning": m} for c, m in CATEGORY_MEANING.items()]
    return {"rows": out, "labels": labels, "categories": categories}


def html_report(title: str, rows: Sequence[dict], plots: dict[str, bytes], gallery: Sequence[GalleryRow],
                runs: Sequence[Run], notes_md: str = "") -> str:
    """report.html: everything inline (CSS, plots, portraits), so the one file is the whole report."""
    from markupsafe import Markup

    return _template().render(
        title=title, css=Markup(css()), n_methods=len(rows), n_runs=sum(row["n_runs"] for row in rows),
        notes=Markup(_notes_markup(notes_md)), tables=_tables(rows), gallery_ctx=_gallery(gallery),
        pareto=_figure("pareto.png", plots["pareto.png"], "wide") if "pareto.png" in plots else None,
        figures=[_figure(name, png) for name, png in plots.items() if name not in OWN_SECTION],
        budget=_figure(BUDGET_PLOT, plots[BUDGET_PLOT], "wide") if BUDGET_PLOT in plots else None,
        runs=_runs_list(runs))
