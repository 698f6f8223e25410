"""`asru compare` bookkeeping: one compare directory per (world, vanilla, split), and the paper-style figures."""

from __future__ import annotations

import json
import shutil

import pytest

from asru.compare import bind, effectiveness, expand_methods, generation_quality, relative_claims
from asru.errors import UserError


def test_a_compare_dir_refuses_another_world(micro_world, micro_models, tmp_path):
    other = tmp_path / "other_world"
    shutil.copytree(micro_world, other)
    from asru.data.world.build import build_world

    build_world(other, "micro", seed=5)  # same layout, different people
    bind(tmp_path / "cmp", micro_world, micro_models[1], "forget_10", "micro")
    bind(tmp_path / "cmp", micro_world, micro_models[1], "forget_10", "micro")  # same origin: fine
    with pytest.raises(UserError, match="another world"):
        bind(tmp_path / "cmp", other, micro_models[1], "forget_10", "micro")
    with pytest.raises(UserError, match="another vanilla"):
        bind(tmp_path / "cmp", micro_world, micro_models[0], "forget_10", "micro")


def test_unknown_method_in_the_list():
    assert "asru" in expand_methods("all") and expand_methods("npo,ga") == ["npo", "ga"]
    with pytest.raises(UserError, match="known methods"):
        expand_methods("npo,magic")


def _results(forget_mc, forget_gen, cr, leak, nat, retain_gen):
    split = lambda mc, gen: {"mc_image_acc": mc, "mc_text_acc": mc, "gen_contains": gen, "cloze_acc": gen}  # noqa: E731
    return {"forget": {**split(forget_mc, forget_gen), "quality": {"mean_contextual_refusal": cr, "mean_leakage": leak,
                                                                   "mean_naturalness": nat}},
            "test": split(forget_mc, forget_gen), "retain": split(0.9, retain_gen), "celebrity": split(0.9, 0.9),
            "general_vqa_acc": 0.8}


class _Run:
    """The two fields of a loaded run that the claims read."""

    def __init__(self, label, results):
        self.label, self.results = label, results


def test_relative_claims_follow_their_definitions():
    vanilla = _results(1.0, 1.0, 0, 0, 5, 0.9)
    runs = [_Run("vanilla", vanilla), _Run("asru", _results(0.5, 0.0, 5, 5, 5, 0.9)),
            _Run("ga", _results(0.75, 0.5, 1, 2, 1, 0.9))]
    claims = relative_claims(runs)
    assert effectiveness(runs[1].results, vanilla) == pytest.approx((4 * 0.5 + 3 * 1.0) / 7)  # 4 MC, 3 answer metrics
    assert generation_quality(runs[1].results) == pytest.approx(1.0)
    ours, theirs = claims["per_method"]["asru"], claims["per_method"]["ga"]
    assert claims["asru_vs"]["ga"]["generation_quality_ratio"] == pytest.approx(ours["generation_quality"] / theirs["generation_quality"])
    assert claims["asru_vs"]["ga"]["effectiveness_gain_pct"] == pytest.approx(
        100 * (ours["effectiveness"] - theirs["effectiveness"]) / theirs["effectiveness"])
    assert ours["utility_change_points"] == pytest.approx(0.0)
    assert ours["seeds"] == 1 and ours["std"]["effectiveness"] is None


def test_claims_average_seeds_and_report_their_spread():
    from asru.compare import claims_markdown

    vanilla = _results(1.0, 1.0, 0, 0, 5, 0.9)
    runs = [_Run("vanilla", vanilla), _Run("asru", _results(0.5, 0.0, 5, 5, 5, 0.9)),
            _Run("asru", _results(0.7, 0.0, 5, 5, 5, 0.9)), _Run("ga", _results(0.75, 0.5, 1, 2, 1, 0.9))]
    claims = relative_claims(runs)
    asru = claims["per_method"]["asru"]
    one, two = effectiveness(runs[1].results, vanilla), effectiveness(runs[2].results, vanilla)
    assert asru["seeds"] == 2 and asru["effectiveness"] == pytest.approx((one + two) / 2)
    assert asru["std"]["effectiveness"] == pytest.approx(abs(one - two) / 2 ** 0.5)
    assert asru["std"]["generation_quality"] == pytest.approx(0.0)
    assert f"| asru | 2 | {asru['effectiveness']:.3f} ± {asru['std']['effectiveness']:.3f}" in claims_markdown(claims)


def test_compare_reuses_the_demo_evaluation_of_the_vanilla_model(micro_world, micro_models, tmp_path, monkeypatch):
    """`asru demo --compare` must not evaluate the vanilla model twice: the demo's results are copied."""
    from rich.console import Console

    from asru import pipeline
    from asru.compare import run_compare
    from asru.eval import mllmu

    first = pipeline.eval_stage(micro_models[1], micro_world, tmp_path / "eval" / "vanilla.json", "forget_10", "micro")

    real_evaluate = mllmu.evaluate
    vanilla_path = str(micro_models[1].resolve())

    def no_second_evaluation(model, *args, **kwargs):
        if str(model.name_or_path) == vanilla_path or str(model.name_or_path) == str(micro_models[1]):
            raise AssertionError("the vanilla model was evaluated again")
        return real_evaluate(model, *args, **kwargs)  # the oracle compare builds is evaluated once, as it must be

    monkeypatch.setattr(mllmu, "evaluate", no_second_evaluation)
    run_compare(Console(quiet=True), micro_world, micro_models[1], None, tmp_path / "cmp", "forget_10", [], 1, "micro",
                vanilla_results=tmp_path / "eval" / "vanilla.json")
    copied = tmp_path / "cmp" / "results"
    assert json.loads((copied / "vanilla.json").read_text()) == first
    assert (copied / "vanilla.items.jsonl").read_text() == (tmp_path / "eval" / "vanilla.items.jsonl").read_text()


def test_tiny_tuning_record_gives_every_method_the_same_budget_and_is_printed():
    """Fair comparison: each registered method has exactly one swept knob with 3 values, the preset's chosen value
    is one of them, and the report's tuning table says so."""
    from asru.compare import tuning_markdown
    from asru.config import load_preset
    from asru.methods import method_names

    preset = load_preset("tiny")
    knobs = preset["tuning"]["knobs"]
    untuned = set(preset["tuning"].get("untuned") or [])
    assert set(knobs) | untuned == set(method_names()) and not set(knobs) & untuned
    table = tuning_markdown(preset, method_names())
    for name, knob in knobs.items():
        chosen = preset["methods"][name]
        for part in knob["option"].split("."):
            chosen = chosen[part]
        assert len(knob["values"]) == 3 and chosen in knob["values"], name
        assert f"| {name} | {knob['option']} |" in table and f"| {chosen:g} |" in table
    assert "not tuned" in tuning_markdown(preset, ["someone_else"])
    assert "no tuning record" in tuning_markdown({}, ["ga"])


def test_a_retrained_run_is_evaluated_again(micro_world, micro_models, tmp_path):
    """When a method's configuration changes, compare retrains the run; its old results must not be reused."""
    from rich.console import Console

    from asru.compare import run_compare

    base, vanilla = micro_models
    args = (Console(quiet=True), micro_world, vanilla, base, tmp_path / "cmp", "forget_10", ["ga"], 1, "micro")
    run_compare(*args, limit=2)
    results = tmp_path / "cmp" / "results" / "ga" / "seed0.json"
    stale = {**json.loads(results.read_text()), "stale": True}
    results.write_text(json.dumps(stale))
    run_compare(*args, limit=2)  # same configuration: the finished run and its results are reused
    assert json.loads(results.read_text()) == stale
    manifest = tmp_path / "cmp" / "runs" / "ga" / "seed0" / "manifest.json"
    recorded = json.loads(manifest.read_text())
    recorded["config"]["method_config"]["lr"] = 123.0  # as if the preset had changed since
    manifest.write_text(json.dumps(recorded))
    run_compare(*args, limit=2)
    assert "stale" not in json.loads(results.read_text())


def test_compare_with_an_oracle_row_forget_quality_and_distance(micro_world, micro_models, tmp_path):
    """A real micro oracle (the vanilla recipe without forget_10's people) as a row of its own."""
    from rich.console import Console

    from asru.compare import run_compare
    from asru.pipeline import oracle_stage

    base, vanilla = micro_models
    oracle, _ = oracle_stage(base, micro_world, tmp_path / "oracle", "forget_10", "micro")
    summary = run_compare(Console(quiet=True), micro_world, vanilla, None, tmp_path / "cmp", "forget_10", [], 1,
                          "micro", limit=2, oracle=oracle)
    claims = summary["claims"]
    distance = claims["distance_to_oracle"]["vanilla"]
    oracle = json.loads((tmp_path / "cmp" / "results" / "oracle.json").read_text())
    mine = json.loads((tmp_path / "cmp" / "results" / "vanilla.json").read_text())
    assert distance["forget.mc_lik_acc"] == pytest.approx(abs(mine["forget"]["mc_lik_acc"] -
                                                              oracle["forget"]["mc_lik_acc"]))
    md = (tmp_path / "cmp" / "report" / "report.md").read_text()
    assert "| oracle |" in md and "Forget Quality (KS p) ↑" in md and "Distance to the retain-only oracle" in md
    assert "MIA LOSS AUC → 0.5" in md
    assert (tmp_path / "cmp" / "report" / "pareto.png").stat().st_size > 0


def test_oracle_comparison_reads_forget_quality_and_privleak():
    from asru.eval.mllmu import oracle_comparison

    model = {"forget_truth_ratios": [0.1, 0.2, 0.15, 0.12], "mia": {"loss_auc": 0.9}}
    same = oracle_comparison(model, {"forget_truth_ratios": [0.1, 0.2, 0.15, 0.12], "mia": {"loss_auc": 0.5}})
    assert same["forget_quality"] == pytest.approx(1.0) and same["loss_privleak"] == pytest.approx(0.8)
    apart = oracle_comparison(model, {"forget_truth_ratios": [0.9, 1.1, 1.0, 0.95]})
    assert apart["forget_quality"] < 0.05 and "loss_privleak" not in apart
    with pytest.raises(UserError, match="forget_truth_ratios"):
        oracle_comparison(model, {"meta": {}})
