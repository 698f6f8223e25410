"""ASRU-robust on the micro world: the suppression stage really lowers the forget answers' likelihood, ASRU's
stages then run on the suppressed model, the run keeps ASRU's layout (steering vector, stages, resume), and its
options are its own."""

from __future__ import annotations

import json
import math

import pytest
import torch

from asru.errors import UserError
from asru.pipeline import unlearn_stage

from helpers import ASRU_FAST as FAST

ROBUST = {**FAST, "suppress": {"steps": 6, "batch_size": 8, "lr": 2e-3, "beta": 0.4}}


@pytest.fixture(scope="module")
def robust_run(micro_world, micro_models, micro_refusing_base, tmp_path_factory):
    out = tmp_path_factory.mktemp("asru_robust") / "run"
    unlearn_stage("asru_robust", micro_models[1], micro_world, out, "forget_10", base=micro_refusing_base,
                  preset="micro", overrides=ROBUST)
    return out


def _mean_answer_nll(model_dir, data_dir, split: str) -> float:
    """Mean per-token NLL of the split's ground-truth answers (teacher forced): what suppression should raise."""
    from asru.data.corpus import qa_examples
    from asru.data.mllmu import training_items
    from asru.methods.gradient import batch_nll, encoder
    from asru.models.load import load_model

    model, processor = load_model(model_dir)
    encode, collate_fn = encoder(processor)
    encoded = encode(qa_examples(training_items(data_dir, split), seed=0), "encoding")
    with torch.no_grad():
        batch = collate_fn(encoded)
        return float(batch_nll(model(**{k: v for k, v in batch.items() if k != "labels"}).logits, batch["labels"]))


def test_run_has_asru_layout_plus_the_suppressed_model(robust_run, micro_models):
    from asru.steering.direction import SteeringVector, model_fingerprint

    manifest = json.loads((robust_run / "manifest.json").read_text())
    assert manifest["status"] == "done" and {"stage1", "stage2"} <= set(manifest["stages"])
    for path in ("suppress/model", "stage1", "stage2", "model", "steering.safetensors"):
        assert (robust_run / path).exists(), path
    stats = json.loads((robust_run / "stage1.json").read_text())
    assert stats["suppress"]["steps"] == 6 and stats["suppress"]["config"]["lr"] == 2e-3
    meta = SteeringVector.load(robust_run / "steering.safetensors").metadata
    # the vector names the vanilla model the run started from (what the attacks check) and the model it redirected
    assert meta["vanilla_fingerprint"] == model_fingerprint(micro_models[1])
    assert meta["start_fingerprint"] == model_fingerprint(robust_run / "suppress" / "model")


def test_redirection_starts_from_the_suppressed_model(robust_run):
    """Stage 1 changes only layer L's MLP of the suppressed model (ASRU's redirection, on the new start)."""
    from transformers import AutoModelForImageTextToText

    suppressed = AutoModelForImageTextToText.from_pretrained(robust_run / "suppress" / "model")
    stage1 = AutoModelForImageTextToText.from_pretrained(robust_run / "stage1")
    layer = json.loads((robust_run / "stage1.json").read_text())["layer"]
    changed = {n for (n, p), (_, q) in zip(stage1.named_parameters(), suppressed.named_parameters())
               if not torch.equal(p, q)}
    assert changed == {f"model.language_model.layers.{layer}.mlp.down_proj.weight"}


def test_suppression_lowers_forget_likelihood_more_than_retain(robust_run, micro_world, micro_models):
    """NPO on the forget answers: their NLL rises (a real change, not noise) and by more than the retain answers'."""
    suppressed = robust_run / "suppress" / "model"
    before_f = _mean_answer_nll(micro_models[1], micro_world, "forget_10")
    after_f = _mean_answer_nll(suppressed, micro_world, "forget_10")
    before_r = _mean_answer_nll(micro_models[1], micro_world, "retain_90")
    after_r = _mean_answer_nll(suppressed, micro_world, "retain_90")
    assert after_f > before_f + 0.05
    assert after_f - before_f > after_r - before_r


def test_resume_reuses_both_stages(robust_run, micro_world, micro_models, micro_refusing_base):
    before = (robust_run / "model" / "model.safetensors").stat().st_mtime_ns
    unlearn_stage("asru_robust", micro_models[1], micro_world, robust_run, "forget_10", base=micro_refusing_base,
                  preset="micro", overrides=ROBUST, resume=True)
    stats = json.loads((robust_run / "manifest.json").read_text())
    assert stats["status"] == "done"
    assert (robust_run / "model" / "model.safetensors").stat().st_mtime_ns >= before


@pytest.mark.parametrize("method, key, value", [("asru", "suppress", {}), ("asru_robust", "sft", {}),
                                                ("asru_robust", "reward_kind", "rule")])
def test_options_belong_to_their_method(method, key, value):
    from asru.config import from_dict
    from asru.methods import get_method

    with pytest.raises(UserError, match=f"unknown option\\(s\\) {key}"):
        from_dict(get_method(method).Config, {key: value}, where=method)


@pytest.mark.parametrize("suppress, match", [({"gamma": -1.0}, "gamma must be a finite number >= 0"),
                                             ({"gamma": math.nan}, "gamma must be a finite number >= 0"),
                                             ({"alpha": math.inf}, "alpha must be a finite number >= 0"),
                                             ({"beta": 0.0}, "beta must be > 0"),
                                             ({"lrr": 1.0}, r"asru_robust.suppress: unknown option\(s\) lrr")])
def test_bad_suppression_options_fail_before_training(suppress, match):
    from asru.methods.asru_robust import RobustASRUConfig

    with pytest.raises(UserError, match=match):
        RobustASRUConfig(suppress=suppress)
    with pytest.raises(UserError, match="order must be one of suppress_first, redirect_first"):
        RobustASRUConfig(order="sideways")


def test_redirect_first_order_suppresses_the_redirected_model(micro_world, micro_models, micro_refusing_base,
                                                               tmp_path):
    """The losing order (docs/asru.md) stays runnable: NPO starts from the redirected model, GRPO from its output."""
    out = tmp_path / "run"
    unlearn_stage("asru_robust", micro_models[1], micro_world, out, "forget_10", base=micro_refusing_base,
                  preset="micro", overrides={**ROBUST, "order": "redirect_first", "stages": [1]})
    redirected = _mean_answer_nll(out / "stage1", micro_world, "forget_10")
    assert _mean_answer_nll(out / "suppress" / "model", micro_world, "forget_10") > redirected + 0.05
    from asru.methods import UnlearnContext
    from asru.methods.asru_robust import RobustASRU, RobustASRUConfig

    ctx = UnlearnContext(model_dir=micro_models[1], data_dir=micro_world, forget_split="forget_10", out_dir=out)
    assert RobustASRU(RobustASRUConfig(order="redirect_first")).stage1_dir(ctx) == out / "suppress" / "model"
    assert RobustASRU(RobustASRUConfig()).stage1_dir(ctx) == out / "stage1"


def test_a_diverging_suppression_stops_with_one_line_and_writes_no_model(micro_world, micro_models,
                                                                          micro_refusing_base, tmp_path):
    """A suppression weight that overflows the loss stops with a clear error before redirection; no final model."""
    out = tmp_path / "run"
    overrides = {**ROBUST, "suppress": {**ROBUST["suppress"], "gamma": 1e38}}
    with pytest.raises(UserError, match="loss became"):
        unlearn_stage("asru_robust", micro_models[1], micro_world, out, "forget_10", base=micro_refusing_base,
                      preset="micro", overrides=overrides)
    assert not (out / "model").exists() and not (out / "stage1").exists()
