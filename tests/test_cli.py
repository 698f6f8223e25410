"""The CLI contract: user mistakes give one line on stderr and exit code 2, and nothing on disk is overwritten."""

from __future__ import annotations

import json
import shutil

import pytest

from helpers import one_line_error, run


def test_world_refuses_to_overwrite_without_force(tmp_path, capsys):
    out = tmp_path / "w"
    assert run(["world", "--out", out, "--preset", "micro"], capsys)[0] == 0
    before = (out / "manifest.json").read_text()
    code, _, err = run(["world", "--out", out, "--preset", "micro", "--seed", "1"], capsys)
    assert code == 2 and "--force" in one_line_error(err)
    assert (out / "manifest.json").read_text() == before
    assert run(["world", "--out", out, "--preset", "micro", "--seed", "1", "--force"], capsys)[0] == 0
    assert json.loads((out / "manifest.json").read_text())["seed"] == 1


def test_unknown_preset(tmp_path, capsys):
    code, _, err = run(["world", "--out", tmp_path / "w", "--preset", "huge"], capsys)
    assert code == 2 and "unknown world preset 'huge'" in one_line_error(err)
    assert not (tmp_path / "w").exists()


def test_manifest_records_versions_and_timings(micro_world):
    manifest = json.loads((micro_world / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["seed"] == 0
    assert "transformers" in manifest["versions"] and manifest["stages"]["world"]["seconds"] >= 0
    assert manifest["peak_memory_mb"] > 0


@pytest.fixture()
def broken_world(micro_world, tmp_path):
    copy = tmp_path / "world"
    shutil.copytree(micro_world, copy)
    return copy


def test_data_dir_missing_a_split(broken_world, micro_models, tmp_path, capsys):
    shutil.rmtree(broken_world / "forget_10")
    code, _, err = run(["eval", "--model", micro_models[1], "--data", broken_world, "--out", tmp_path / "r.json",
                        "--preset", "micro"], capsys)
    assert code == 2 and "forget_10" in one_line_error(err)
    assert not (tmp_path / "r.json").exists()


def test_data_dir_missing_a_column(broken_world, micro_models, tmp_path, capsys):
    import pyarrow.parquet as pq

    path = next((broken_world / "forget_10").glob("*.parquet"))
    pq.write_table(pq.read_table(path).drop_columns(["Generation_Task"]), path)
    code, _, err = run(["eval", "--model", micro_models[1], "--data", broken_world, "--out", tmp_path / "r.json",
                        "--preset", "micro"], capsys)
    assert code == 2 and "Generation_Task" in one_line_error(err)


def test_undecodable_image(broken_world, micro_models, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = next((broken_world / "forget_10").glob("*.parquet"))
    table = pq.read_table(path)
    rows = table.to_pylist()
    rows[0]["image"] = {"bytes": b"not an image", "path": "x.png"}
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    code, _, err = run(["eval", "--model", micro_models[1], "--data", broken_world, "--out", tmp_path / "r.json",
                        "--preset", "micro"], capsys)
    assert code == 2 and "decode" in one_line_error(err)


def test_model_dir_that_is_not_an_image_text_model(micro_world, tmp_path, capsys):
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1, vocab_size=64).save_pretrained(tmp_path / "llama")
    code, _, err = run(["eval", "--model", tmp_path / "llama", "--data", micro_world, "--out", tmp_path / "r.json",
                        "--preset", "micro"], capsys)
    assert code == 2 and "not an image-text model" in one_line_error(err)


def test_eval_refuses_existing_results(micro_world, micro_models, tmp_path, capsys):
    out = tmp_path / "r.json"
    out.write_text("{}")
    code, _, err = run(["eval", "--model", micro_models[1], "--data", micro_world, "--out", out, "--preset", "micro"], capsys)
    assert code == 2 and "--force" in one_line_error(err)
    assert out.read_text() == "{}"


def test_unknown_method_lists_the_known_ones(micro_world, micro_models, tmp_path, capsys):
    code, _, err = run(["unlearn", "gradient_magic", "--model", micro_models[1], "--data", micro_world,
                        "--out", tmp_path / "run"], capsys)
    line = one_line_error(err)
    assert code == 2 and "asru" in line and "npo" in line


def test_method_option_it_does_not_take(micro_world, micro_models, tmp_path, capsys):
    code, _, err = run(["unlearn", "ga", "--model", micro_models[1], "--data", micro_world, "--out", tmp_path / "run",
                        "--preset", "micro", "--set", "temperature=2"], capsys)
    assert code == 2 and "unknown option(s) temperature" in one_line_error(err)


def test_overrides_read_exponents_as_numbers():
    from asru.config import from_dict
    from asru.errors import UserError
    from asru.pipeline import parse_overrides
    from asru.training import TrainConfig

    assert parse_overrides(["lr=3e-05", "grpo.learning_rate=1e-5", "name=abc"]) == {
        "lr": 3e-05, "grpo": {"learning_rate": 1e-05}, "name": "abc"}
    assert from_dict(TrainConfig, {"lr": "2e-3"}).lr == 2e-3
    with pytest.raises(UserError, match="must be a number"):
        from_dict(TrainConfig, {"lr": "fast"})


def test_eval_with_the_llm_judge_against_a_local_server(micro_world, micro_models, tmp_path, capsys):
    from helpers import FakeJudgeServer

    out = tmp_path / "r.json"
    with FakeJudgeServer() as server:
        args = ["eval", "--model", micro_models[1], "--data", micro_world, "--out", out, "--preset", "micro",
                "--limit", "2", "--judge", "llm", "--judge-url", server.url, "--judge-model", "fake-judge"]
        assert run(args, capsys)[0] == 0
        calls = server.calls
        assert calls > 0
        assert run([*args, "--force"], capsys)[0] == 0
        assert server.calls == calls  # the cache next to the results answers the second run
    results = json.loads(out.read_text())
    assert results["forget"]["llm_quality"]["n"] > 0 and "quality" in results["forget"]
    assert (tmp_path / "r.llm_cache.jsonl").exists()


def test_eval_llm_judge_unreachable(micro_world, micro_models, tmp_path, capsys):
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    code, _, err = run(["eval", "--model", micro_models[1], "--data", micro_world, "--out", tmp_path / "r.json",
                        "--preset", "micro", "--limit", "2", "--judge", "llm", "--judge-url",
                        f"http://127.0.0.1:{port}/v1", "--judge-model", "m"], capsys)
    assert code == 2 and "127.0.0.1" in one_line_error(err)


def test_data_is_the_benchmark_option_on_every_command(micro_world, tmp_path, capsys):
    """--data names the benchmark directory everywhere; the old --world still works but is hidden."""
    for command in ("base", "vanilla", "eval", "unlearn", "compare", "export-clear"):
        code, out, _ = run([command, "--help"], capsys)
        assert code == 0 and "--data" in out and "--world" not in out, command
    code, _, err = run(["export-clear", "--data", micro_world, "--out", tmp_path / "clear"], capsys)
    assert code == 0 and (tmp_path / "clear").is_dir() and "deprecated" not in err
    code, _, err = run(["export-clear", "--world", micro_world, "--out", tmp_path / "clear2"], capsys)
    assert code == 0 and (tmp_path / "clear2").is_dir() and "--world is deprecated; use --data" in err
    code, _, err = run(["export-clear", "--out", tmp_path / "clear3"], capsys)
    assert code == 2 and "--data" in one_line_error(err) and not (tmp_path / "clear3").exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_truncated_or_corrupt_weights_are_one_line(micro_models, micro_world, tmp_path, capsys, damage):
    model = tmp_path / "model"
    shutil.copytree(micro_models[1], model)
    weights = model / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 3] if damage == "truncated" else bytes(len(data)))
    code, _, err = run(["eval", "--model", model, "--data", micro_world, "--out", tmp_path / "r.json",
                        "--preset", "micro"], capsys)
    line = one_line_error(err)
    assert code == 2 and "model.safetensors" in line and "truncated or corrupt" in line
    assert not (tmp_path / "r.json").exists()


def test_eval_oracle_that_is_not_a_results_file(micro_world, micro_models, tmp_path, capsys):
    bad = tmp_path / "oracle.json"
    bad.write_text("{not json")
    for oracle in (bad, tmp_path / "missing.txt"):
        code, _, err = run(["eval", "--model", micro_models[1], "--data", micro_world, "--out", tmp_path / "r.json",
                            "--preset", "micro", "--oracle", oracle], capsys)
        assert code == 2 and "--oracle" in err and "Traceback" not in err
    assert not (tmp_path / "r.json").exists()


def test_eval_holdout_split_sharing_training_people(micro_world, micro_models, tmp_path, capsys):
    code, _, err = run(["eval", "--model", micro_models[1], "--data", micro_world, "--out", tmp_path / "r.json",
                        "--preset", "micro", "--holdout-split", "forget_5"], capsys)
    assert code == 2 and "shares" in err and "holdout" in err and "Traceback" not in err
    assert not (tmp_path / "r.json").exists()


def test_a_missing_model_directory_is_one_line_for_every_command(micro_world, tmp_path, capsys):
    missing = tmp_path / "no-such-model"
    for argv in (["eval", "--model", missing, "--data", micro_world, "--out", tmp_path / "r.json"],
                 ["unlearn", "ga", "--model", missing, "--data", micro_world, "--out", tmp_path / "run"],
                 ["vanilla", "--base", missing, "--data", micro_world, "--out", tmp_path / "vanilla"],
                 ["attack", "prefill", "--model", missing, "--data", micro_world, "--oracle", missing, "--vanilla",
                  missing, "--out", tmp_path / "attack"]):
        code, _, err = run([*argv, "--preset", "micro"], capsys)
        assert code == 2 and "no-such-model does not exist" in one_line_error(err), argv
    assert sorted(p.name for p in tmp_path.iterdir()) == []
