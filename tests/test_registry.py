"""The metric registry: a metric is declared once and the split summary, the report, the compare claims and the CLI
summary all pick it up; bad declarations are refused."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from asru import compare, pipeline
from asru.eval import registry, report
from asru.eval.mllmu import split_summary


@pytest.fixture
def throwaway():
    """A metric registered for one test only: share of generation answers longer than three words."""
    metric = registry.register(registry.Metric(
        "gen_long_rate", "long answers %", "low", "high", task="gen",
        value=lambda r: float(len(r["prediction"].split()) > 3), summary=True, claims=("forget", "retain")))
    yield metric
    registry.unregister(metric.name)


RECORDS = [{"task": "gen", "setting": "text", "prediction": "one two three four five", "rougeL": 1.0, "rouge1": 1.0,
            "rouge2": 1.0, "bleu": 1.0, "contains": True, "refusal": False},
           {"task": "gen", "setting": "image", "prediction": "short", "rougeL": 0.0, "rouge1": 0.0, "rouge2": 0.0,
            "bleu": 0.0, "contains": False, "refusal": True}]


def test_registered_metric_reaches_summary_report_claims_and_cli(throwaway):
    block = split_summary(RECORDS, "forget")
    assert block["gen_long_rate"] == 0.5 and block["gen_contains"] == 0.5
    vanilla = {"forget": {**block, "gen_long_rate": 1.0}, "retain": {**block, "gen_long_rate": 1.0}, "meta": {}}
    model = {"forget": {**block, "gen_long_rate": 0.0}, "retain": {**block, "gen_long_rate": 0.5}, "meta": {}}
    # it is the only number that differs: forget moved 1.0 in the forgetting direction, retain lost 50 points
    eff_paths = [p for p, _ in compare.forget_metrics()]
    assert "forget.gen_long_rate" in eff_paths and "test.gen_long_rate" not in eff_paths
    assert compare.effectiveness(model, vanilla) == pytest.approx(1.0 / len([p for p in eff_paths if
                                                                              compare._get(model, p) is not None]))
    assert compare.utility_change(model, vanilla) < 0

    runs = [report.Run("vanilla", report.Path("v.json"), vanilla, []), report.Run("m", report.Path("m.json"), model, [])]
    rows = report.results_table(runs)
    md = report.markdown_tables(rows)
    assert "long answers % ↓" in md and "long answers % ↑" in md  # forget: lower is better; retain: higher
    cols = {c.key: c for c in report.columns()}
    assert report.best_labels(rows, cols["forget.gen_long_rate"]) == {"m"}  # lower wins on forget
    assert report.best_labels(rows, cols["retain.gen_long_rate"]) == {"vanilla"}  # higher wins on retain

    out = io.StringIO()
    pipeline.print_results(Console(file=out, width=400), model)
    assert "gen_long_rate" in out.getvalue()


def test_unregistered_metric_is_gone(throwaway):
    registry.unregister(throwaway.name)
    assert "gen_long_rate" not in split_summary(RECORDS, "forget")
    registry.register(throwaway)  # the fixture unregisters it again


def test_registering_twice_or_without_direction_is_refused(throwaway):
    with pytest.raises(registry.MetricError, match="registered twice"):
        registry.register(throwaway)
    with pytest.raises(registry.MetricError, match="no valid forget direction"):
        registry.register(registry.Metric("x_rate", "x", None, "high", task="gen", value=lambda r: 1.0))
    with pytest.raises(registry.MetricError, match="target"):
        registry.register(registry.Metric("x_rate", "x", "target", "target", level="run"))
    with pytest.raises(registry.MetricError, match="value="):
        registry.register(registry.Metric("x_rate", "x", "low", "high"))
    assert "x_rate" not in [m.name for m in registry.metrics()]


def test_directions_and_target_metrics():
    m = registry.Metric("auc", "AUC", "target", "target", level="run", target=0.5)
    assert registry.is_better(m, None, 0.55, 0.9) and not registry.is_better(m, None, 0.1, 0.55)
    acc = registry.get("mc_image_acc")
    assert acc.better("forget") == "low" and acc.better("retain") == "high"
    assert registry.knowledge_drop(acc, "forget", 0.2, 0.9) == pytest.approx(0.7)
    assert registry.utility_delta(acc, "retain", 0.8, 0.9) == pytest.approx(-0.1)


def test_the_tofu_truth_ratio_score_reads_forget_and_retain_items_differently():
    from asru.eval.registry import get

    metric = get("truth_ratio_score")
    records = [{"task": "mc", "split": "forget", "truth_ratio": 0.5}, {"task": "mc", "split": "forget", "truth_ratio": 2.0}]
    assert metric.compute(records) == pytest.approx(0.5)  # min(R, 1/R): 0.5 both times
    retain = [{"task": "mc", "split": "retain", "truth_ratio": 0.25}, {"task": "mc", "split": "retain", "truth_ratio": 1.5}]
    assert metric.compute(retain) == pytest.approx((0.75 + 0.0) / 2)  # max(0, 1 - R)
    assert metric.better("forget") == metric.better("retain") == "high"
