"""Which figures the report draws and which numbers each one shows: the forget-vs-retain scatter panels, the bar
panels of every bar chart and the plots' captions. Plain data, no matplotlib: the table (`row_keys`) reads it to
know every number a row must carry, the plots read it to draw, Markdown and HTML for the captions.
"""

from __future__ import annotations

from dataclasses import dataclass

from asru.eval.report.runs import SPLITS

PARETO_PANELS = (
    ("forget.mc_image_acc", "retain.mc_image_acc", "Multiple choice (image)", "MC image accuracy"),
    ("forget.gen_contains", "retain.gen_contains", "Generation (answer stated)", "answer-stated rate"),
)
# Knowledge in the weights: where every method sits between the vanilla model (top right) and the oracle.
ORACLE_PANEL = ("forget.mc_lik_acc", "retain.mc_lik_acc", "Likelihood MC (in the weights)", "likelihood MC accuracy")


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



# The retain-budget figure (comparisons with two budgets or more; asru.compare.budget_curves gives the numbers):
# (curve key, title, y label, scale). Effectiveness and utility change are 0 for the vanilla model by definition.
BUDGET_PANELS = (
    ("effectiveness", "Forgetting", "effectiveness (mean drop from vanilla)", 1.0),
    ("utility_change_points", "Utility", "utility change (points)", 1.0),
)
# Whether the knowledge left the weights: a method that only refuses keeps its likelihood MC near the vanilla's.
BUDGET_LIKELIHOOD_PANEL = ("forget_likelihood", "Forget likelihood MC (in the weights)",
                           "forget likelihood MC % (lower = removed)", 100.0)

PLOT_TITLES = {"pareto.png": "Forget vs retain (Pareto front dashed; the star is the ideal corner)",
               "bars_mc.png": "Multiple-choice accuracy per split",
               "bars_gen.png": "Generation scores per split",
               "bars_refusal.png": "Refusals and judge categories",
               "bars_quality.png": "Generation-quality axes (offline judge)",
               "retain_budget.png": "Forgetting and utility against the retain budget (log axis; ASRU drawn thicker)"}
