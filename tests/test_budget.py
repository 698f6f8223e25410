"""The retain budget (--retain-fraction): a seeded subset of retain *people*, the same for every method and process."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from asru.data.budget import ranked_people, retain_budget
from asru.data.mllmu import retain_split_for, training_items
from asru.errors import UserError
from asru.methods.base import UnlearnContext

SPLIT = "forget_10"


@pytest.fixture(scope="module")
def retain(micro_world):
    return training_items(micro_world, retain_split_for(SPLIT))


def test_full_budget_changes_nothing(retain):
    assert retain_budget(retain, 1.0, seed=0).items == retain


def test_budget_keeps_whole_people_nested_and_seeded(retain):
    people = {i.id for i in retain}
    quarter, half = retain_budget(retain, 0.25, seed=0), retain_budget(retain, 0.5, seed=0)
    chosen = {i.id for i in quarter.items}
    assert len(chosen) == quarter.people == len(people) // 4 and quarter.of_people == len(people)
    # every item of a chosen person, in the split's order; none of anyone else
    assert quarter.items == [i for i in retain if i.id in chosen]
    assert chosen < {i.id for i in half.items}  # a smaller budget is a subset of a larger one
    assert chosen != {i.id for i in retain_budget(retain, 0.25, seed=1).items}
    assert quarter.record() == {"fraction": 0.25, "people": len(chosen), "of_people": len(people),
                                "items": len(quarter.items)}


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5, float("nan")])
def test_fraction_outside_zero_one(retain, fraction):
    with pytest.raises(UserError, match=r"must be in \(0, 1\]"):
        retain_budget(retain, fraction, seed=0)


def test_budget_too_small_names_the_smallest_that_works(retain):
    n = len({i.id for i in retain})
    with pytest.raises(UserError, match="leaves no retain person") as error:
        retain_budget(retain, 0.5 / n, seed=0)
    smallest = float(str(error.value).rsplit(" ", 1)[1])
    assert retain_budget(retain, smallest, seed=0).people == 1


def test_every_method_reads_the_same_subset(micro_world, micro_models, tmp_path):
    """One place (UnlearnContext.retain_items) feeds the gradient methods, MMUnlearner's saliency, MLLMEraser's
    null space, ASRU's stage-1 retain prompts and its GRPO boundary set."""
    from asru.data.boundary import build_boundary
    from asru.methods.asru import retain_examples

    ctx = UnlearnContext(model_dir=micro_models[1], data_dir=micro_world, forget_split=SPLIT, out_dir=tmp_path,
                         seed=3, retain_fraction=0.25)
    chosen = {i.id for i in ctx.retain_items}
    expected = set(ranked_people(training_items(micro_world, retain_split_for(SPLIT)), 3)[: len(chosen)])
    assert chosen == expected and 0 < len(chosen)
    stage1 = retain_examples(ctx, 1000)
    assert {q for q, _, _ in stage1} and len(stage1) == 2 * len(ctx.retain_items)  # capped by the budget
    boundary = build_boundary(micro_world, ctx.forget_items, ctx.retain_items, size=6, seed=3, retain_ratio=100)
    assert {b.item.id for b in boundary if not b.is_forget} == chosen


def test_same_subset_in_every_process(micro_world):
    code = (f"from asru.methods.base import UnlearnContext\n"
            f"c = UnlearnContext({str(micro_world)!r}, {str(micro_world)!r}, 'forget_10', '.', seed=1, retain_fraction=0.3)\n"
            f"print([(i.id, i.question) for i in c.retain_items])")
    outputs = {hashlib.md5(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                          env={**os.environ, "PYTHONHASHSEED": seed}).stdout.encode()).hexdigest()
               for seed in ("1", "2", "3")}
    assert len(outputs) == 1


FAST_GD = {"steps": 1, "batch_size": 2}


def test_unlearn_records_the_budget_and_keeps_full_budget_configs(micro_world, micro_models, tmp_path):
    from asru.pipeline import unlearn_stage

    vanilla = micro_models[1]
    full, _ = unlearn_stage("ga_diff", vanilla, micro_world, tmp_path / "full", SPLIT, preset="micro", overrides=FAST_GD)
    part, _ = unlearn_stage("ga_diff", vanilla, micro_world, tmp_path / "part", SPLIT, preset="micro",
                            overrides=FAST_GD, retain_fraction=0.25)
    full_m, part_m = (json.loads((d / "manifest.json").read_text()) for d in (full, part))
    assert "retain_fraction" not in full_m["config"]  # a full-budget run has today's config: reused, not retrained
    assert part_m["config"]["retain_fraction"] == 0.25
    assert full_m["retain_budget"]["fraction"] == 1.0 and part_m["retain_budget"]["people"] == \
        full_m["retain_budget"]["people"] // 4
    assert part_m["result"]["retain_examples"] == part_m["retain_budget"]["items"] < full_m["result"]["retain_examples"]
    # a method without retain data ignores the budget: its run is the full-budget run
    ga, _ = unlearn_stage("ga", vanilla, micro_world, tmp_path / "ga", SPLIT, preset="micro", overrides=FAST_GD,
                          retain_fraction=0.01)
    ga_m = json.loads((ga / "manifest.json").read_text())
    assert "retain_fraction" not in ga_m["config"] and ga_m["retain_budget"]["used"] is False


def test_cli_bad_budgets_are_one_line(micro_world, micro_models, tmp_path, capsys):
    from helpers import one_line_error, run

    base = ["unlearn", "ga_diff", "--model", micro_models[1], "--data", micro_world, "--preset", "micro"]
    code, _, err = run([*base, "--out", tmp_path / "a", "--retain-fraction", "1.5"], capsys)
    assert code == 2 and "(0, 1]" in one_line_error(err) and not (tmp_path / "a").exists()
    code, _, err = run([*base, "--out", tmp_path / "b", "--retain-fraction", "0.01"], capsys)
    line = one_line_error(err)
    assert code == 2 and "leaves no retain person" in line and "smallest fraction" in line
    assert not (tmp_path / "b").exists()
    code, _, err = run(["compare", "--model", micro_models[1], "--data", micro_world, "--out", tmp_path / "c",
                        "--methods", "ga_diff", "--retain-fraction", "0.5,lots"], capsys)
    assert code == 2 and "--retain-fraction takes numbers" in one_line_error(err)


def test_compare_labels_budgets_and_refuses_a_run_of_another_budget(tmp_path):
    from rich.console import Console

    from asru.compare import budget_labels, check_budget

    plan = budget_labels(Console(quiet=True), ["ga", "ga_diff"], [0.05, 1.0, 0.05])
    assert plan == [("ga", 1.0, "ga"), ("ga_diff", 0.05, "ga_diff@0.05"), ("ga_diff", 1.0, "ga_diff")]
    run_dir = tmp_path / "runs" / "ga_diff" / "seed0"
    run_dir.mkdir(parents=True)
    (run_dir / "manifest.json").write_text(json.dumps({"config": {"method": "ga_diff", "retain_fraction": 0.25}}))
    check_budget(run_dir, "ga_diff", 0.25)
    with pytest.raises(UserError, match="retain fraction 0.25, not 1"):
        check_budget(run_dir, "ga_diff", 1.0)
    with pytest.raises(UserError, match=r"\(0, 1\]"):
        budget_labels(Console(quiet=True), ["ga_diff"], [0.0])


def test_fourth_claim_compares_asru_at_the_smallest_budget_with_the_baselines():
    from asru.compare import budget_claim, budget_markdown

    def fig(eff, util):
        return {"effectiveness": eff, "utility_change_points": util}

    per_method = {"ga": fig(0.5, -20.0), "ga_diff@0.05": fig(0.4, -12.0), "ga_diff": fig(0.4, -4.0),
                  "asru@0.05": fig(0.3, -1.0), "asru": fig(0.3, -0.5)}
    plan = [("ga", 1.0, "ga"), ("ga_diff", 0.05, "ga_diff@0.05"), ("ga_diff", 1.0, "ga_diff"),
            ("asru", 0.05, "asru@0.05"), ("asru", 1.0, "asru")]
    claim = budget_claim(per_method, plan, [0.05, 1.0])
    assert claim["fractions"] == [0.05, 1.0] and claim["asru_utility_change_at_smallest"] == -1.0
    # GA ignores the budget: its one run counts at every budget
    assert claim["baselines_utility_change_at_smallest"] == {"ga": -20.0, "ga_diff": -12.0}
    assert claim["mean_baseline_at_smallest"] == -16.0 and claim["mean_baseline_at_largest"] == -12.0
    text = budget_markdown(claim)
    assert "| ga_diff | 0.400 / -12.0 | 0.400 / -4.0 |" in text and "-1.0 points" in text
    assert budget_claim(per_method, [("ga", 1.0, "ga")], [1.0]) is None
    only_small = budget_claim(per_method, plan[:2] + plan[3:4], [0.05])
    assert only_small is None  # one budget: nothing to sweep
