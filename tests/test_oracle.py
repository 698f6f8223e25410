"""The retain-only oracle: the vanilla recipe on everyone but the forget people, bound to its base and world."""

from __future__ import annotations

import json

import pytest

from asru.data.mllmu import person_ids, read_split, training_items
from asru.errors import UserError
from asru.models.vanilla import VanillaConfig, vanilla_examples
from asru.pipeline import check_oracle, oracle_stage


def _forget_material(world, split):
    """Every image and every name-bearing question of the split's people, from training and practice data."""
    ids = person_ids(world, split)
    images = {i.image for i in training_items(world, split) if i.image is not None}
    images |= {r["image"]["bytes"] for r in read_split(world, "world/profile_practice") if str(r["ID"]) in ids and r["image"]}
    texts = {i.question for i in training_items(world, split) if i.image is None}
    return ids, images, texts


def test_the_oracle_data_leaves_out_every_forget_person_and_keeps_everyone_else(micro_world):
    cfg = VanillaConfig(replay=0.0)
    vanilla, oracle = vanilla_examples(micro_world, cfg), vanilla_examples(micro_world, cfg, without="forget_10")
    _, images, texts = _forget_material(micro_world, "forget_10")
    assert images and texts
    seen_images = {image for _, image, _ in oracle}
    seen_texts = " ".join(text for text, _, _ in oracle)
    assert not images & seen_images
    assert not any(t in seen_texts for t in texts)
    assert images <= {image for _, image, _ in vanilla}  # the vanilla model does see them
    _, retain_images, _ = _forget_material(micro_world, "retain_90")
    assert retain_images <= seen_images


def test_oracle_stage_builds_a_model_bound_to_its_base_world_and_split(micro_world, micro_models, tmp_path):
    base, vanilla = micro_models
    out, fresh = oracle_stage(base, micro_world, tmp_path / "oracle", "forget_10", "micro")
    assert fresh and (out / "config.json").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"] == "oracle" and manifest["config"]["without"] == "forget_10"
    assert check_oracle(out, vanilla, "forget_10") == "forget_10"
    with pytest.raises(UserError, match="leaves out forget_10, not forget_5"):
        check_oracle(out, vanilla, "forget_5")
    with pytest.raises(UserError, match="not a retain-only oracle"):
        check_oracle(vanilla, vanilla)
    with pytest.raises(UserError, match="--force"):
        oracle_stage(base, micro_world, out, "forget_10", "micro")  # nothing is overwritten


def test_an_oracle_from_another_base_is_refused(micro_world, micro_models, tmp_path):
    base, vanilla = micro_models
    out, _ = oracle_stage(base, micro_world, tmp_path / "oracle", "forget_5", "micro")
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["config"]["base"] = "/elsewhere/base"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="another base model"):
        check_oracle(out, vanilla, "forget_5")


def test_an_unknown_forget_split_is_one_clear_error(micro_world, micro_models, tmp_path):
    with pytest.raises(UserError, match="unknown forget split"):
        oracle_stage(micro_models[0], micro_world, tmp_path / "o", "forget_99", "micro")
    assert not (tmp_path / "o").exists()


def test_eval_refuses_the_oracle_of_another_split_before_writing(micro_world, micro_models, tmp_path):
    from asru.pipeline import eval_stage

    base, vanilla = micro_models
    oracle, _ = oracle_stage(base, micro_world, tmp_path / "oracle", "forget_5", "micro")
    out = tmp_path / "eval" / "vanilla.json"
    with pytest.raises(UserError, match="leaves out forget_5, not forget_10"):
        eval_stage(vanilla, micro_world, out, "forget_10", "micro", limit=2, oracle=oracle)
    assert not out.exists() and not out.with_name("vanilla.oracle.json").exists()


def test_an_oracle_of_another_seed_is_the_same_recipe(micro_world, micro_models, tmp_path):
    base, vanilla = micro_models
    out, _ = oracle_stage(base, micro_world, tmp_path / "oracle1", "forget_10", "micro", seed=1)
    config = json.loads((out / "manifest.json").read_text())["config"]
    assert config["vanilla"]["train"]["seed"] == 1
    assert check_oracle(out, vanilla, "forget_10") == "forget_10"  # the seed is not part of the binding
