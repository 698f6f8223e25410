"""Kill and resume: a run killed mid-training (a real signal to a real process) continues from its last Trainer
checkpoint with `--resume` and ends with the same weights as an uninterrupted run of the same seed; `--resume`
on a directory it cannot continue is one clear error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asru.errors import UserError
from asru.models.load import load_model
from asru.models.tiny import build_processor, build_tiny_model, build_tokenizer, save_tiny
from asru.pipeline import unlearn_stage, vanilla_stage
from helpers import SENTENCES, grpo_run

TESTS = Path(__file__).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "ASRU_PROGRESS": "0"}  # one thread, as in this process (conftest)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The real-layout fixture (small, so encoding is quick), a random tiny model (as base and vanilla) and a preset
    with short runs that checkpoint often."""
    from mllmu_fixture import tiny_model_on_fixture

    return tiny_model_on_fixture(tmp_path_factory.mktemp("resume"), {
        "vanilla": {"replay": 0.0, "train": {"steps": 24, "batch_size": 4, "lr": 1e-3, "warmup_steps": 4, "save_steps": 3}},
        "methods": {"ga_diff": {"steps": 24, "batch_size": 4, "lr": 1e-3, "save_steps": 3}},
    })


def _kill_after_checkpoint(cmd: list[str], checkpoints: Path, sig: int, step: int = 6) -> None:
    """Start `cmd`, send `sig` once checkpoint-`step` is complete, and check the process died of it."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=TESTS.parent, env=ENV)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if (checkpoints / f"checkpoint-{step}" / "trainer_state.json").is_file():
            proc.send_signal(sig)
            break
        time.sleep(0.01)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -sig, f"the run was not killed mid-training (rc {proc.returncode}): {err.decode()[-2000:]}"


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = load_model(a, device="cpu")[0].state_dict(), load_model(b, device="cpu")[0].state_dict()
    assert wa.keys() == wb.keys()
    worst = max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa)
    assert worst <= 1e-6, worst


@pytest.mark.e2e
def test_killed_gradient_method_resumes_to_the_uninterrupted_weights(setup, tmp_path):
    model_dir, preset, data = setup
    whole, _ = unlearn_stage("ga_diff", model_dir, data, tmp_path / "whole", preset=preset)
    killed = tmp_path / "killed"
    _kill_after_checkpoint([sys.executable, "-m", "asru.cli", "unlearn", "ga_diff", "--model", str(model_dir),
                            "--data", str(data), "--out", str(killed), "--preset", preset],
                           killed / "checkpoints", signal.SIGKILL)
    assert not (killed / "model").exists()
    out, _ = unlearn_stage("ga_diff", model_dir, data, killed, preset=preset, resume=True)
    _same_weights(whole / "model", out / "model")

    # what --resume refuses, one line each, without touching the run
    with pytest.raises(UserError, match="no checkpoint to continue from"):  # finished: its checkpoints are gone
        unlearn_stage("ga_diff", model_dir, data, whole, preset=preset, resume=True)
    with pytest.raises(UserError, match="another method or configuration"):
        unlearn_stage("ga", model_dir, data, whole, preset=preset, resume=True)
    with pytest.raises(UserError, match="another method or configuration"):
        unlearn_stage("ga_diff", model_dir, data, whole, preset=preset, resume=True, overrides={"lr": 2e-3})
    with pytest.raises(UserError, match="no run to resume"):
        unlearn_stage("ga_diff", model_dir, data, tmp_path / "empty", preset=preset, resume=True)
    assert (whole / "model" / "config.json").is_file()


@pytest.mark.e2e
def test_killed_sft_resumes_to_the_uninterrupted_weights(setup, tmp_path):
    model_dir, preset, data = setup
    whole, _ = vanilla_stage(model_dir, data, tmp_path / "whole", preset)
    killed = tmp_path / "killed"
    _kill_after_checkpoint([sys.executable, "-m", "asru.cli", "vanilla", "--base", str(model_dir), "--world",
                            str(data), "--out", str(killed), "--preset", preset],
                           killed / "checkpoints", signal.SIGTERM)
    out, _ = vanilla_stage(model_dir, data, killed, preset, resume=True)
    _same_weights(whole, out)
    assert not (out / "checkpoints").exists()


GRPO_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from helpers import grpo_run
grpo_run({model!r}, {out!r})
"""


@pytest.mark.e2e
def test_killed_grpo_resumes_to_the_uninterrupted_weights(tmp_path):
    from asru.models.tiny import TinyConfig

    tok = build_tokenizer(SENTENCES * 4, vocab_size=400)
    cfg = TinyConfig(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128, vision_depth=1,
                     deepstack_visual_indexes=[0])
    model_dir = str(save_tiny(build_tiny_model(tok, cfg, seed=0), build_processor(tok), tmp_path / "model"))
    grpo_run(model_dir, str(tmp_path / "whole"))
    killed = tmp_path / "killed"
    _kill_after_checkpoint([sys.executable, "-c", GRPO_SCRIPT.format(tests=str(TESTS), model=model_dir, out=str(killed))],
                           killed / "checkpoints", signal.SIGKILL, step=3)
    grpo_run(model_dir, str(killed), resume=True)
    _same_weights(tmp_path / "whole", killed)
