"""An evaluation is reused only when what its numbers depend on matches: model (content), data, config."""

from __future__ import annotations

import json
import shutil

from asru.pipeline import eval_stage


def _eval(model, world, out, **kwargs):
    kwargs.setdefault("limit", 1)
    return eval_stage(model, world, out, "forget_10", "micro", judge="none", reuse=True, **kwargs)


def test_same_model_and_config_is_reused(micro_world, micro_models, tmp_path):
    out = tmp_path / "r.json"
    first = _eval(micro_models[1], micro_world, out)
    stamp = out.stat().st_mtime_ns
    assert _eval(micro_models[1], micro_world, out) == first and out.stat().st_mtime_ns == stamp
    identity = first["meta"]["identity"]
    assert identity["model"]["fingerprint"] and identity["data"]["fingerprint"] and identity["limit"] == 1


def test_other_config_model_or_data_is_evaluated_again(micro_world, micro_models, tmp_path):
    base, vanilla = micro_models
    out = tmp_path / "r.json"
    first = _eval(vanilla, micro_world, out)
    assert _eval(vanilla, micro_world, out, limit=2)["meta"]["protocol"]["retain_people_limit"] == 2
    other = _eval(base, micro_world, out, limit=2)  # another model in the same place: not the vanilla's numbers
    assert other["meta"]["identity"]["model"]["path"] == str(base.resolve())
    # the same directory with other weights (a retrained model written over the old one) is another model
    copy = tmp_path / "model"
    shutil.copytree(vanilla, copy)
    at_copy = _eval(copy, micro_world, out)
    assert at_copy["meta"]["identity"]["model"]["fingerprint"] == first["meta"]["identity"]["model"]["fingerprint"]
    shutil.copyfile(base / "model.safetensors", copy / "model.safetensors")
    stamp = out.stat().st_mtime_ns
    changed = _eval(copy, micro_world, out)
    assert out.stat().st_mtime_ns != stamp
    assert changed["meta"]["identity"]["model"]["fingerprint"] != first["meta"]["identity"]["model"]["fingerprint"]
    # other data (one parquet file rewritten) is other data
    world = tmp_path / "world"
    shutil.copytree(micro_world, world)
    assert _eval(copy, world, out)["meta"]["identity"]["data"]["fingerprint"] == \
        changed["meta"]["identity"]["data"]["fingerprint"]
    import pyarrow.parquet as pq

    path = next((world / "Retain_Set").glob("*.parquet"))
    table = pq.read_table(path)
    pq.write_table(table.slice(0, table.num_rows - 1), path)
    assert _eval(copy, world, out)["meta"]["identity"]["data"]["fingerprint"] != \
        changed["meta"]["identity"]["data"]["fingerprint"]


def test_a_result_without_identity_is_not_trusted(micro_world, micro_models, tmp_path):
    out = tmp_path / "r.json"
    results = _eval(micro_models[1], micro_world, out)
    results["meta"].pop("identity")
    results["forget"]["gen_contains"] = 123.0  # what an older file of unknown origin might say
    out.write_text(json.dumps(results))
    again = _eval(micro_models[1], micro_world, out)
    assert again["forget"]["gen_contains"] != 123.0 and "identity" in again["meta"]
    assert json.loads(out.read_text())["meta"]["identity"] == again["meta"]["identity"]
