"""Every real-model preset loads and runs one step of ASRU and RULE (and parses for every baseline) on a tiny
random-weight model of the same architecture: the configuration that will run on GPUs is exercised here."""

from __future__ import annotations

import json

import pytest

from asru.config import load_preset, preset_names
from asru.pipeline import method_config, unlearn_stage

REAL_PRESETS = [p for p in preset_names() if p.startswith("qwen")]
ONE_STEP = {"probe": {"max_prompts": 8, "max_new_tokens": 4}, "redirect": {"epochs": 1, "batch_size": 4},
            "boundary": {"size": 4},
            "grpo": {"max_steps": 1, "num_generations": 2, "per_device_train_batch_size": 4, "max_completion_length": 4,
                     "report_to": "none", "save_steps": 1, "gradient_checkpointing": False, "use_vllm": "auto",
                     "lora": False}}


@pytest.fixture(scope="module")
def tiny_models(micro_world, tmp_path_factory):
    """A random tiny Qwen3-VL and Qwen2.5-VL saved as 'vanilla' (also used as 'base')."""
    from asru.models.load import save_model
    from asru.models.tiny import build_processor, build_tiny_model, build_tiny_qwen25vl, build_tokenizer
    from asru.models.vanilla import world_texts

    tokenizer = build_tokenizer(world_texts(micro_world), 1024)
    root = tmp_path_factory.mktemp("arch")
    model, processor = build_tiny_model(tokenizer), build_processor(tokenizer)
    save_model(model, processor, root / "qwen3vl")
    model, processor = build_tiny_qwen25vl(tokenizer)
    save_model(model, processor, root / "qwen25vl")
    return root


def test_real_presets_exist():
    assert {"qwen3vl-2b", "qwen3vl-4b", "qwen3vl-8b", "qwen25vl-3b", "qwen25vl-7b"} <= set(REAL_PRESETS)
    assert load_preset("qwen3vl-8b")["methods"]["asru"]["layer"] == 17


@pytest.mark.parametrize("preset", REAL_PRESETS)
def test_every_method_config_of_the_preset_parses(preset):
    for name in load_preset(preset)["methods"]:
        cls, cfg = method_config(name, preset)
        assert type(cfg) is cls.Config
        for key, value in (load_preset(preset)["methods"][name] or {}).items():
            if not isinstance(value, dict):  # every scalar the preset sets reaches the method's config
                assert getattr(cfg, key) == value, (preset, name, key)


@pytest.mark.micro
@pytest.mark.parametrize("preset", REAL_PRESETS)
@pytest.mark.parametrize("method", ["asru", "rule"])
def test_preset_runs_one_step_on_a_tiny_model_of_its_architecture(preset, method, micro_world, tiny_models, tmp_path,
                                                                  monkeypatch):
    import asru.steering.direction as direction

    # A random model refuses nothing; count every probe answer as a refusal so the steering vector exists.
    monkeypatch.setattr(direction, "is_refusal", lambda text: True)
    model = tiny_models / ("qwen25vl" if preset.startswith("qwen25") else "qwen3vl")
    overrides = {**ONE_STEP, "layer": 1}
    if method == "rule":
        overrides = {"sft": {"steps": 1, "batch_size": 2, "lora": True}, "boundary": {"size": 4}, "grpo": ONE_STEP["grpo"]}
    out = tmp_path / "run"
    unlearn_stage(method, model, micro_world, out, "forget_5", base=model, preset=preset, overrides=overrides)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "done" and (out / "model" / "config.json").exists()
    assert manifest["config"]["method_config"]["grpo"]["learning_rate"] == 1e-6  # the paper's value, from the preset


def test_tiny_preset_fixes_the_thread_count_and_manifests_record_it(tmp_path):
    import torch

    from asru.config import apply_threads
    from asru.manifest import Manifest

    previous = torch.get_num_threads()
    try:
        assert apply_threads(load_preset("tiny")) == 2 == torch.get_num_threads()
        record = json.loads(Manifest(command="x", config={}).write(tmp_path).read_text())
        assert record["torch_threads"] == 2
        assert apply_threads({}) is None and torch.get_num_threads() == 2  # no `threads`: torch keeps its choice, none is recorded
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "two", True])
def test_a_thread_count_that_is_not_a_positive_integer_is_one_clear_error(bad):
    from asru.config import apply_threads
    from asru.errors import UserError

    with pytest.raises(UserError, match="threads must be a positive integer"):
        apply_threads({"threads": bad})
