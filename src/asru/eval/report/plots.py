"""Plots as PNG bytes: the forget-vs-retain scatter with its Pareto front (one point per method, ± std over
seeds), the per-split grouped bar charts and, for a retain-budget sweep, forgetting and utility against the budget,
drawn on pyplot-free Agg figures from the table's rows, one stable
colour per method shared by every plot.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from asru.eval.report.panels import (BAR_FIGURES, BUDGET_LIKELIHOOD_PANEL, BUDGET_PANELS, ORACLE_PANEL,
                                    PARETO_PANELS, Panel)
from asru.eval.report.table import UNITS

METHOD_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
                  "#bcbd22", "#7f7f7f")


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



OURS = "asru"  # the method a comparison is about: drawn thicker in the budget plot
REFERENCE_LINES = {"vanilla": "--", "oracle": ":"}


def budget_panels(curves: dict) -> tuple:
    """Forgetting and utility, plus forget likelihood MC when some run reports it (results before the likelihood
    metrics have none, and an empty panel would read as "no knowledge left")."""
    with_lik = any(v is not None for m in curves["methods"].values() for v in m[BUDGET_LIKELIHOOD_PANEL[0]])
    return (*BUDGET_PANELS, BUDGET_LIKELIHOOD_PANEL) if with_lik else BUDGET_PANELS


def _budget_colour(method: str, i: int, colours: dict) -> str:
    """The method's colour in the other plots: its full-budget row's, else that of its first `<method>@<F>` row."""
    fallback = METHOD_COLOURS[i % len(METHOD_COLOURS)]
    return colours.get(method) or next((c for label, c in colours.items() if label.split("@")[0] == method), fallback)


def _budget_panel(ax, curves: dict, panel: tuple, colours: dict) -> None:
    key, title, ylabel, scale = panel
    xs = curves["fractions"]
    for i, (method, values) in enumerate(curves["methods"].items()):
        ours = method == OURS
        ax.plot(xs, [float("nan") if v is None else v * scale for v in values[key]], marker="o", label=method,
                lw=3.2 if ours else 1.5, ms=7 if ours else 5, zorder=3 if ours else 2,
                color=_budget_colour(method, i, colours))
    # effectiveness and utility change are 0 for the vanilla model; likelihood MC has measured references
    references = curves["references"] if key == BUDGET_LIKELIHOOD_PANEL[0] else {"vanilla": 0.0}
    for name, value in references.items():
        ax.axhline(value * scale, ls=REFERENCE_LINES.get(name, "--"), lw=1.2, color=colours.get(name, "#555555"),
                   label=name, zorder=1)
    ax.set_xscale("log")
    ax.set_xticks(xs, [f"{f:g}" for f in xs])
    ax.set_xticks([], minor=True)  # only the budgets that ran, not the log axis' decades
    ax.set(title=title, xlabel="retain budget F (share of retain people)", ylabel=ylabel)
    ax.grid(alpha=0.3)


def budget_figure(curves: dict, colours: dict):
    """The retain-budget figure before PNG encoding (one line per method against F, log axis), so tests can count
    its panels."""
    panels = budget_panels(curves)
    fig, axes = _figure(len(panels), width=4.6, height=3.6)
    for ax, panel in zip(axes, panels):
        _budget_panel(ax, curves, panel, colours)
    handles, labels = axes[-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncol=min(len(labels), 8), frameon=False)
    return fig


def budget_png(curves: dict, colours: dict) -> bytes:
    """retain_budget.png: how forgetting and utility change as a method gets less retain data (the fourth claim)."""
    return _png(budget_figure(curves, colours))


def all_plots(rows: Sequence[dict], retain_budget: dict | None = None) -> dict[str, bytes]:
    """Every plot of the report, file name -> PNG bytes; the budget plot only for a sweep of two budgets or more
    (`retain_budget` from asru.compare.budget_curves)."""
    plots = {"pareto.png": pareto_png(rows), **bar_pngs(rows)}
    if retain_budget and len(retain_budget["fractions"]) > 1:
        plots["retain_budget.png"] = budget_png(retain_budget, method_colours(rows))
    return plots
