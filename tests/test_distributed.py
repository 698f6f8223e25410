"""Two processes (`accelerate launch` with configs/accelerate/cpu.yaml, and torchrun; gloo on CPU) run the vanilla
fine-tune, GA-Diff, NPO and both ASRU stages like one process does: the same
optimizer steps, weights close to the one-process run's, and a saved model that loads and generates.

Why "close", not equal: each process takes half of every batch (accelerate `split_batches`) and DDP averages the
two halves' gradients. For per-example means (the SFT loss, NPO's forget term) that is the one-process gradient
up to float rounding; a token mean (GA-Diff, NPO's retain term) is taken per half, which weighs tokens slightly
differently when the halves hold different numbers of answer tokens (docs/training.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from asru.models.load import load_model
from asru.pipeline import unlearn_stage, vanilla_stage

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "ASRU_PROGRESS": "0"}
TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
ACCELERATE = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
CPU_CONFIG = Path(__file__).parents[1] / "src" / "asru" / "configs" / "accelerate" / "cpu.yaml"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from mllmu_fixture import tiny_model_on_fixture

    return tiny_model_on_fixture(tmp_path_factory.mktemp("ddp"), {
        "vanilla": {"replay": 0.0, "train": {"steps": 6, "batch_size": 4, "lr": 1e-3, "warmup_steps": 2, "save_steps": 0}},
        "methods": {m: {"steps": 4, "batch_size": 4, "lr": 1e-3, "save_steps": 0} for m in ("ga_diff", "npo")},
    })


def _two_processes(*args: str, launcher: str = "torchrun") -> None:
    if launcher == "torchrun":
        cmd = [TORCHRUN, "--standalone", "--nproc-per-node", "2", "-m", "asru.cli", *args]  # standalone: a free port
    else:  # the shipped accelerate config for CPU processes
        cmd = [ACCELERATE, "launch", "--config_file", str(CPU_CONFIG), "--num_processes", "2", "--main_process_port",
               str(_free_port()), "-m", "asru.cli", *args]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]


def _l2(a: dict, b: dict) -> float:
    return sum(float((a[k].double() - b[k].double()).square().sum()) for k in a) ** 0.5


def _compare(one: Path, two: Path, start: Path, manifest_dir_one: Path, manifest_dir_two: Path, tolerance: float) -> None:
    r1, r2 = (json.loads((d / "manifest.json").read_text())["result"] for d in (manifest_dir_one, manifest_dir_two))
    assert r1["steps"] == r2["steps"] > 0
    w1, w2, w0 = (load_model(p, device="cpu")[0].state_dict() for p in (one, two, start))
    assert _l2(w1, w2) <= tolerance * _l2(w1, w0)
    from asru.models.generate import generate

    model, processor = load_model(two, device="cpu")
    assert len(generate(model, processor, [("Who is this?", None), ("Where does she live?", None)], max_new_tokens=3)) == 2


@pytest.mark.e2e
def test_two_processes_fine_tune_like_one(setup, tmp_path):
    model_dir, preset, data = setup
    one, _ = vanilla_stage(model_dir, data, tmp_path / "one", preset)
    _two_processes("vanilla", "--base", str(model_dir), "--world", str(data), "--out", str(tmp_path / "two"),
                   "--preset", preset, launcher="accelerate")
    _compare(one, tmp_path / "two", model_dir, one, tmp_path / "two", tolerance=1e-4)  # per-example means: ~exact


@pytest.mark.e2e
@pytest.mark.parametrize("method, tolerance", [("ga_diff", 0.3), ("npo", 0.1)])
def test_two_processes_unlearn_like_one(method, tolerance, setup, tmp_path):
    model_dir, preset, data = setup
    one, _ = unlearn_stage(method, model_dir, data, tmp_path / "one", preset=preset)
    _two_processes("unlearn", method, "--model", str(model_dir), "--data", str(data), "--out", str(tmp_path / "two"),
                   "--preset", preset)
    _compare(one / "model", tmp_path / "two" / "model", model_dir, one, tmp_path / "two", tolerance)


@pytest.mark.e2e
def test_two_processes_run_both_asru_stages(micro_world, micro_models, micro_refusing_base, tmp_path):
    """ASRU under torchrun: stage 1 (steering vector, then redirection through the Trainer) and stage 2 (TRL's
    GRPO). Both processes compute the same vector (rank 0 writes it, every rank reads it back), stage 1 ends close
    to the one-process weights, GRPO takes as many optimizer steps, and the final model loads and generates. GRPO's
    weights are not compared: each process samples its own completions, so the update differs by design."""
    import yaml

    from helpers import ASRU_FAST as FAST

    from asru.config import load_preset
    from asru.methods.asru import STEERING_FILE
    from asru.steering.direction import SteeringVector

    preset = load_preset("micro")
    preset["methods"]["asru"] = {**preset["methods"]["asru"], **FAST}
    preset_path = tmp_path / "preset.yaml"
    preset_path.write_text(yaml.safe_dump(preset))
    vanilla, one, two = micro_models[1], tmp_path / "one", tmp_path / "two"
    unlearn_stage("asru", vanilla, micro_world, one, "forget_10", base=micro_refusing_base, preset=str(preset_path))
    _two_processes("unlearn", "asru", "--model", str(vanilla), "--base", str(micro_refusing_base), "--data",
                   str(micro_world), "--out", str(two), "--preset", str(preset_path))
    v1, v2 = (SteeringVector.load(d / STEERING_FILE) for d in (one, two))
    assert v1.layer == v2.layer and torch.allclose(v1.vector, v2.vector, atol=1e-5)
    w1, w2, w0 = (load_model(p, device="cpu")[0].state_dict() for p in (one / "stage1", two / "stage1", vanilla))
    assert _l2(w1, w2) <= 0.3 * _l2(w1, w0)
    s1, s2 = (json.loads((d / "stage2.json").read_text()) for d in (one, two))
    assert s1["steps"] == s2["steps"] > 0
    model, processor = load_model(two / "model", device="cpu")
    from asru.models.generate import generate

    assert len(generate(model, processor, [("Who is this?", None)], max_new_tokens=3)) == 1


@pytest.mark.parametrize("name", ["ddp", "zero2", "zero3", "fsdp", "cpu"])
def test_shipped_accelerate_configs_load_and_build_their_plugins(name):
    """accelerate reads each shipped config; DeepSpeed and FSDP ones build their plugin objects (the deepspeed
    package itself is not needed for that)."""
    from accelerate.utils import DeepSpeedPlugin, DistributedType, FullyShardedDataParallelPlugin

    from asru.config import accelerate_config

    cfg = accelerate_config(name)
    if cfg.distributed_type == DistributedType.DEEPSPEED:
        options = {k: v for k, v in cfg.deepspeed_config.items() if k != "deepspeed_multinode_launcher"}
        plugin = DeepSpeedPlugin(**options)
        assert plugin.zero_stage == int(name[-1]) and plugin.deepspeed_config["zero_optimization"]["stage"] == int(name[-1])
    elif cfg.distributed_type == DistributedType.FSDP:
        renamed = {"offload_params": "cpu_offload"}  # the config key -> the plugin's argument (as `accelerate launch` maps it)
        options = {renamed.get(k.removeprefix("fsdp_"), k.removeprefix("fsdp_")): v for k, v in cfg.fsdp_config.items()}
        assert options["sync_module_states"] and options["cpu_ram_efficient_loading"]
        if not torch.cuda.is_available():  # both ask the plugin for the current GPU while it is built
            options.update(sync_module_states=False, cpu_ram_efficient_loading=False)
        plugin = FullyShardedDataParallelPlugin(**options)
        assert "FULL_SHARD" in str(plugin.sharding_strategy) and plugin.use_orig_params
    else:
        assert cfg.num_processes >= 1 and cfg.use_cpu == (name == "cpu")


def test_a_missing_or_broken_accelerate_config_is_one_line(tmp_path):
    from asru.config import accelerate_config
    from asru.errors import UserError

    with pytest.raises(UserError, match="does not exist; use one of cpu, ddp, fsdp, zero2, zero3"):
        accelerate_config("zero9")
    broken = tmp_path / "broken.yaml"
    broken.write_text("distributed_type: [MULTI_GPU\n")
    with pytest.raises(UserError, match="does not parse") as err:
        accelerate_config(str(broken))
    assert "\n" not in str(err.value)
