"""The shipped testbed: the demo installs it when world and recipes match the code, trains what no longer matches,
refuses damaged or foreign testbeds in one line, and the shipped tiny testbed still matches the code."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from asru import pipeline
from asru import testbed as T
from asru.errors import UserError
from asru.manifest import read_manifest
from helpers import one_line_error, run

STAGES = ("base", "vanilla", "oracle_forget_10")


@pytest.fixture(scope="module")
def micro_rebuild(tmp_path_factory):
    """`asru demo --rebuild` on the micro preset, shipped into a throw-away package directory: a real testbed."""
    out = tmp_path_factory.mktemp("rebuild") / "demo"
    pipeline.demo(Console(quiet=True), out, preset="micro", rebuild=True)
    root = tmp_path_factory.mktemp("shipped")
    T.ship(out, "micro", 0, root=root)
    return out, root


@pytest.fixture()
def shipped_micro(micro_rebuild, monkeypatch):
    monkeypatch.setattr(T, "SHIPPED_DIR", micro_rebuild[1])
    return micro_rebuild


def _figures(results: dict) -> dict:
    """A results file without what names this machine's paths (meta, the oracle's directory)."""
    figures = {k: v for k, v in results.items() if k != "meta"}
    if isinstance(figures.get("oracle"), dict):
        figures["oracle"] = {k: v for k, v in figures["oracle"].items() if k != "oracle_model"}
    return figures


def test_rebuild_trains_every_testbed_stage(micro_rebuild):
    out, root = micro_rebuild
    for stage in T.stage_names():
        manifest = read_manifest(out / stage)
        assert manifest["status"] == "done" and "shipped" not in manifest, stage
        assert (root / "micro-seed0" / stage / "model.safetensors").is_file()
    assert json.loads((out / "demo.json").read_text())["mode"] == "rebuild"


def test_demo_installs_the_shipped_testbed_and_reuses_it(shipped_micro, tmp_path, capsys):
    rebuilt, root = shipped_micro
    out = tmp_path / "demo"
    code, printed, _ = run(["demo", "--out", out, "--preset", "micro", "--compare", ""], capsys)
    assert code == 0 and "shipped testbed" in printed
    for stage in STAGES:
        manifest = read_manifest(out / stage)
        assert manifest["shipped"]["from"] == str(root / "micro-seed0" / stage)
        assert manifest["config"] == {**read_manifest(rebuilt / stage)["config"],
                                      **{k: manifest["config"][k] for k in T.LOCAL_KEYS if k in manifest["config"]}}
        assert T.model_files(out / stage) == T.model_files(rebuilt / stage)  # the same bytes as the trained weights
    assert not (out / "oracle_forget_5").exists()  # only the demo's split is installed
    # the evaluation of the installed models equals the rebuild's, figure for figure
    for name in ("vanilla", "base", "oracle_forget_10"):
        ours, theirs = (_figures(json.loads((d / "eval" / f"{name}.json").read_text())) for d in (out, rebuilt))
        assert ours == theirs, name
    stamps = {stage: (out / stage / "manifest.json").stat().st_mtime for stage in STAGES}
    assert run(["demo", "--out", out, "--preset", "micro", "--compare", ""], capsys)[0] == 0
    assert stamps == {stage: (out / stage / "manifest.json").stat().st_mtime for stage in STAGES}  # reused


def test_a_recipe_change_trains_that_stage_and_names_the_difference(shipped_micro, tmp_path, capsys, monkeypatch):
    original = pipeline.load_preset

    def longer_vanilla(name):
        preset = original(name)
        preset["vanilla"]["train"]["steps"] += 1
        return preset

    monkeypatch.setattr(pipeline, "load_preset", longer_vanilla)
    code, printed, _ = run(["demo", "--out", tmp_path / "demo", "--preset", "micro", "--compare", ""], capsys)
    assert code == 0
    assert "shipped vanilla no longer matches the code's recipe (vanilla.train.steps: shipped 40, code 41)" in " ".join(
        printed.split())
    assert read_manifest(tmp_path / "demo" / "base").get("shipped")  # base still matches: installed
    assert not read_manifest(tmp_path / "demo" / "vanilla").get("shipped")  # trained here


def test_a_modified_shipped_model_is_refused_before_anything_is_written(shipped_micro, tmp_path, capsys, monkeypatch):
    import shutil

    root = tmp_path / "shipped"
    shutil.copytree(shipped_micro[1], root)
    monkeypatch.setattr(T, "SHIPPED_DIR", root)
    weights = root / "micro-seed0" / "vanilla" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])  # truncated
    code, _, err = run(["demo", "--out", tmp_path / "demo", "--preset", "micro", "--compare", ""], capsys)
    assert code == 2 and "model.safetensors does not match its checksum" in one_line_error(err)
    assert not (tmp_path / "demo").exists()


def test_no_shipped_testbed_for_another_seed_or_preset(shipped_micro, tmp_path, capsys):
    for extra in (["--preset", "micro", "--seed", "1"], ["--preset", "tiny"]):
        code, _, err = run(["demo", "--out", tmp_path / "demo", *extra, "--compare", ""], capsys)
        assert code == 2 and "--rebuild" in one_line_error(err) and "micro-seed0" in err
        assert not (tmp_path / "demo").exists()


def test_rebuild_into_a_directory_of_other_runs_needs_force(shipped_micro, tmp_path, capsys):
    out = tmp_path / "demo"
    (out / "mine").mkdir(parents=True)
    (out / "mine" / "notes.txt").write_text("keep me")
    code, _, err = run(["demo", "--out", out, "--rebuild", "--preset", "micro", "--compare", ""], capsys)
    assert code == 2 and "--force" in one_line_error(err)
    assert (out / "mine" / "notes.txt").read_text() == "keep me" and sorted(p.name for p in out.iterdir()) == ["mine"]


def test_world_fingerprint_ignores_encoding_bytes_but_not_pixels(micro_world, tmp_path):
    """Re-encoding every image (another Pillow/zlib) keeps the fingerprint; changing one pixel changes it."""
    import io
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    copy = tmp_path / "world"
    shutil.copytree(micro_world, copy)
    file = copy / "forget_10" / "train-00000-of-00001.parquet"
    table = pq.read_table(file)

    def rewrite(change_pixel: bool):
        rows = table.to_pylist()
        for i, row in enumerate(rows):
            image = Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB")
            if change_pixel and i == 0:
                image.putpixel((0, 0), tuple(255 - c for c in image.getpixel((0, 0))))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", compress_level=1)
            row["image"] = {**row["image"], "bytes": buffer.getvalue()}
        pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), file)

    reference = T.world_fingerprint(micro_world)
    rewrite(change_pixel=False)
    assert file.read_bytes() != (micro_world / "forget_10" / file.name).read_bytes()
    assert T.world_fingerprint(copy) == reference
    rewrite(change_pixel=True)
    assert T.world_fingerprint(copy) != reference


def test_verify_names_an_extra_file(shipped_micro, tmp_path):
    import shutil

    shutil.copytree(shipped_micro[1], tmp_path / "root")
    (tmp_path / "root" / "micro-seed0" / "base" / "stray.bin").write_bytes(b"x")
    with pytest.raises(UserError, match="stray.bin"):
        T.shipped_testbed("micro", 0, root=tmp_path / "root").model("base").verify()


@pytest.mark.e2e
def test_the_shipped_tiny_testbed_matches_the_code(tmp_path):
    """A stale testbed cannot ship silently: the tiny world this code builds and the recipes in the tiny preset
    must equal the shipped manifests (else `asru demo --rebuild` and `benchmarks/ship_testbed.py --force`)."""
    testbed = T.shipped_testbed("tiny", 0)
    assert testbed is not None, "asru ships no tiny testbed (src/asru/shipped/tiny-seed0)"
    assert set(testbed.models) == set(T.stage_names())
    world, _ = pipeline.world_stage(tmp_path / "world", "tiny", 0)
    assert T.world_fingerprint(world) == testbed.world_fingerprint, "the world generator changed"
    base = tmp_path / "base"
    configs = {"base": pipeline.base_config(world, "tiny")[1],
               "vanilla": pipeline.vanilla_config(base, world, "tiny")[1],
               **{f"oracle_{s}": pipeline.vanilla_config(base, world, "tiny", s)[1] for s in T.TESTBED_SPLITS}}
    for stage, config in configs.items():
        assert testbed.model(stage).mismatch(config) is None, (stage, testbed.model(stage).mismatch(config))
        testbed.model(stage).verify()
