"""ASRU end to end on the micro world: steering vector, redirection, boundary set, GRPO, resume, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from asru.errors import UserError
from asru.pipeline import unlearn_stage
from asru.steering.direction import SteeringVector
from helpers import ASRU_FAST as FAST

@pytest.fixture(scope="module")
def asru_run(micro_world, micro_models, micro_refusing_base, tmp_path_factory):
    """ASRU with a base model that really refuses (conftest.micro_refusing_base): the steering vector's refusal
    side comes from genuine refusals found by the real detector."""
    out = tmp_path_factory.mktemp("asru") / "run"
    unlearn_stage("asru", micro_models[1], micro_world, out, "forget_10", base=micro_refusing_base, preset="micro",
                  overrides=FAST)
    return out


def test_no_refusals_on_the_probe_is_a_clear_error(micro_world, micro_models, tmp_path):
    base, vanilla = micro_models  # the plain micro base refuses none of the probe prompts (real generations)
    with pytest.raises(UserError, match="refused none of the probe prompts"):
        unlearn_stage("asru", vanilla, micro_world, tmp_path / "r", "forget_10", base=base, preset="micro",
                      overrides={**FAST, "stages": [1]})


def test_asru_writes_both_stages_and_a_loadable_model(asru_run, micro_models):
    from transformers import AutoModelForImageTextToText

    manifest = json.loads((asru_run / "manifest.json").read_text())
    assert manifest["status"] == "done"
    assert {"stage1", "stage2"} <= set(manifest["stages"])
    final = AutoModelForImageTextToText.from_pretrained(asru_run / "model")
    vanilla = AutoModelForImageTextToText.from_pretrained(micro_models[1])
    changed = [n for (n, p), (_, q) in zip(final.named_parameters(), vanilla.named_parameters()) if not torch.equal(p, q)]
    assert changed


def test_stage1_trains_only_the_mlp_of_layer_l(asru_run, micro_models):
    from transformers import AutoModelForImageTextToText

    stage1 = AutoModelForImageTextToText.from_pretrained(asru_run / "stage1")
    vanilla = AutoModelForImageTextToText.from_pretrained(micro_models[1])
    layer = json.loads((asru_run / "stage1.json").read_text())["layer"]
    changed = {n for (n, p), (_, q) in zip(stage1.named_parameters(), vanilla.named_parameters()) if not torch.equal(p, q)}
    assert changed == {f"model.language_model.layers.{layer}.mlp.down_proj.weight"}


def test_steering_vector_file_has_provenance(asru_run, micro_models):
    vector = SteeringVector.load(asru_run / "steering.safetensors")
    assert vector.vector.shape == (128,) and vector.layer >= 0
    # genuine refusals: some of the probe prompts, not all of them (a stubbed detector would accept every reply)
    assert 0 < vector.metadata["positive_samples"] < vector.metadata["probe_prompts"]
    assert vector.metadata["negative_samples"] > 0
    assert vector.metadata["vanilla_fingerprint"]


def test_steering_vector_from_another_model_is_refused(asru_run, micro_models, tmp_path):
    from asru.models.load import load_model

    model, _ = load_model(micro_models[1])
    vector = SteeringVector.load(asru_run / "steering.safetensors")
    SteeringVector(torch.zeros(64), vector.layer).save(tmp_path / "small.safetensors")
    with pytest.raises(UserError, match="hidden size"):
        SteeringVector.load(tmp_path / "small.safetensors").check_compatible(model)
    foreign = SteeringVector(vector.vector, vector.layer, {"vanilla_fingerprint": "0000"})
    with pytest.raises(UserError, match="another model"):
        foreign.check_compatible(model, micro_models[1])


def test_resume_skips_finished_stages(asru_run, micro_world, micro_models, micro_refusing_base):
    before = (asru_run / "stage1.json").read_text()
    unlearn_stage("asru", micro_models[1], micro_world, asru_run, "forget_10", base=micro_refusing_base,
                  preset="micro", overrides=FAST, resume=True)
    manifest = json.loads((asru_run / "manifest.json").read_text())
    assert manifest["result"]["stage1"]["reused"] is True and manifest["result"]["stage2"]["reused"] is True
    assert (asru_run / "stage1.json").read_text() == before


def test_layer_out_of_range(micro_world, micro_models, tmp_path):
    base, vanilla = micro_models
    with pytest.raises(UserError, match="valid layers"):
        unlearn_stage("asru", vanilla, micro_world, tmp_path / "r", "forget_10", base=base, preset="micro",
                      overrides={**FAST, "layer": 99, "stages": [1]})


def test_forget_and_retain_sharing_a_person(micro_world, micro_models, tmp_path):
    import shutil

    base, vanilla = micro_models
    world = tmp_path / "world"
    shutil.copytree(micro_world, world)
    src = world / "baseline_train_split/forget_10"
    shutil.copy(next(src.glob("*.parquet")), world / "baseline_train_split/retain_90/extra.parquet")
    with pytest.raises(UserError, match="share"):
        unlearn_stage("asru", vanilla, world, tmp_path / "r", "forget_10", base=base, preset="micro",
                      overrides={**FAST, "stages": [1]})


def test_eval_of_a_run_keeps_its_manifest(asru_run, micro_world):
    from asru.pipeline import eval_stage

    results = eval_stage(asru_run, micro_world, asru_run / "eval.json", "forget_10", "micro", limit=2)
    assert json.loads((asru_run / "manifest.json").read_text())["command"] == "unlearn asru"
    assert json.loads((asru_run / "eval.manifest.json").read_text())["command"] == "eval"
    assert results["meta"]["judge"]["perplexity_reference"]  # the vanilla model the run started from
    assert "quality" in results["forget"]


@pytest.mark.parametrize("key, value", [("layer", 2), ("probe", {}), ("redirect", {}), ("contextual_bonus", 0.5),
                                        ("redirect_retain_ratio", 2)])
def test_rule_config_rejects_asru_only_options(key, value):
    from asru.config import from_dict
    from asru.methods.rule import RULEConfig

    with pytest.raises(UserError, match=f"unknown option\\(s\\) {key}"):
        from_dict(RULEConfig, {key: value}, where="rule")
    with pytest.raises(UserError, match="reward_kind"):
        RULEConfig(reward_kind="other")
