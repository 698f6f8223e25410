"""Stage-2 GRPO on a random tiny Qwen3-VL: mixed image/text batches, logging, saving, LoRA merge, resume, NaN stop."""

import json
import math
from pathlib import Path

import pytest
import torch

from asru.errors import UserError
from asru.models.load import load_model
from asru.models.tiny import TinyConfig, build_processor, build_tiny_model, build_tokenizer, save_tiny
from asru.rl import grpo
from asru.rl.grpo import GRPOSettings, boundary_dataset, check_settings, reward_summary, run_grpo
from asru.rl.rewards import asru_reward, refusal_reward
from helpers import SENTENCES, length_reward
from helpers import grpo_items as _items
from helpers import grpo_settings as _settings

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    tokenizer = build_tokenizer(SENTENCES * 4, vocab_size=400)
    cfg = TinyConfig(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128, vision_depth=1,
                     deepstack_visual_indexes=[0])
    model = build_tiny_model(tokenizer, cfg, seed=0)
    return save_tiny(model, build_processor(tokenizer), tmp_path_factory.mktemp("tiny"))


def _weights(path) -> dict[str, torch.Tensor]:
    model, _ = load_model(path, device="cpu")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_boundary_dataset_columns():
    ds = boundary_dataset(*_items())
    assert ds.column_names == ["prompt", "images", "ground_truth", "is_forget", "answer_key", "split", "id"]
    first, second = ds[0], ds[1]
    assert [p["type"] for p in first["prompt"][0]["content"]] == ["image", "text"]
    assert len(first["images"]) == 1 and first["images"][0].size == (64, 64)
    assert [p["type"] for p in second["prompt"][0]["content"]] == ["text"] and second["images"] == []
    assert ds["answer_key"] == ["Lima", "pilot", "", ""] and ds["is_forget"] == [True, True, False, False]


def test_boundary_dataset_rejects_mismatched_flags():
    items, _ = _items()
    with pytest.raises(UserError, match="forget flags"):
        boundary_dataset(items, [True])


def test_batch_must_hold_whole_groups():
    with pytest.raises(UserError, match="multiple of num_generations"):
        GRPOSettings(num_generations=8, per_device_train_batch_size=12)  # checked when the settings are built
    settings = GRPOSettings(num_generations=8, per_device_train_batch_size=8)
    settings.per_device_train_batch_size = 4  # 4 completions x 2 processes = one group of 8
    check_settings(settings, world_size=2)
    with pytest.raises(UserError, match="multiple of num_generations"):
        check_settings(settings, world_size=1)
    with pytest.raises(UserError, match="num_generations must be >= 2"):
        GRPOSettings(num_generations=1, per_device_train_batch_size=4)


def test_run_grpo_checks_the_batch_before_loading(tmp_path):
    with pytest.raises(UserError, match="multiple of num_generations"):
        run_grpo(tmp_path / "no-model", tmp_path / "out", boundary_dataset(*_items()), [refusal_reward],
                 _settings(num_generations=3, per_device_train_batch_size=4))


def test_run_grpo_mixed_modalities_saves_and_logs(model_dir, tmp_path, monkeypatch):
    seen: dict[str, list] = {}
    dropped = []
    drop = grpo._drop_empty_images
    monkeypatch.setattr(grpo, "_drop_empty_images", lambda *a: dropped.append(drop(*a)) or dropped[-1])

    def spy_reward(prompts, completions, *, ground_truth, is_forget, **kwargs):
        seen.setdefault("ground_truth", []).extend(ground_truth)
        seen.setdefault("is_forget", []).extend(is_forget)
        has_image = {any(p.get("type") == "image" for m in prompt for p in m["content"]) for prompt in prompts}
        seen.setdefault("mixed_batches", []).append(has_image == {True, False})
        return asru_reward(prompts, completions, ground_truth=ground_truth, is_forget=is_forget, **kwargs)

    out = tmp_path / "out"
    # gradient accumulation 2 splits every generation batch into micro-batches, some of them text-only
    stats = run_grpo(model_dir, out, boundary_dataset(*_items()), [spy_reward, refusal_reward, length_reward],
                     _settings(per_device_train_batch_size=2, gradient_accumulation_steps=2))

    assert stats["steps"] == 2 and stats["resumed_from"] is None
    assert set(seen["ground_truth"]) <= {"She was born in Lima.", "He works as a pilot."}
    assert True in seen["is_forget"] and False in seen["is_forget"]
    assert any(seen["mixed_batches"])  # one generation batch held image and text-only prompts
    assert any(d is not None for d in dropped)  # a text-only chunk's empty pixel_values were dropped
    assert {"rewards/spy_reward/mean", "rewards/refusal_reward/mean", "kl"} <= set(stats["components"])
    assert math.isfinite(stats["reward_first"]) and math.isfinite(stats["reward_last"])
    lines = [json.loads(line) for line in (out / grpo.LOG_FILE).read_text().splitlines()]
    assert len(lines) == 2 and all("reward" in line for line in lines)
    logged = {key for line in lines for key in line}  # a step may draw only forget or only retain prompts
    for key in ("forget/spy_reward", "retain/spy_reward", "forget/refusal_rate", "retain/refusal_rate",
                "forget/refusal_reward", "asru/forget_refusal", "asru/retain_reward"):
        assert key in logged, key

    before, after = _weights(model_dir), _weights(out)
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert (out / "checkpoints" / "checkpoint-2").is_dir()


def test_lora_saves_a_merged_model(model_dir, tmp_path):
    out = tmp_path / "lora"
    stats = run_grpo(model_dir, out, boundary_dataset(*_items()), [length_reward],
                     _settings(lora=True, lora_r=4, lora_alpha=8, max_steps=1))
    assert stats["steps"] == 1
    assert (out / "config.json").is_file() and not (out / "adapter_config.json").exists()
    before, after = _weights(model_dir), _weights(out)
    assert before.keys() == after.keys()  # merged: plain parameter names, no lora_A/lora_B
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_resume_continues_from_last_checkpoint(model_dir, tmp_path):
    out = tmp_path / "resume"
    ds = boundary_dataset(*_items())
    run_grpo(model_dir, out, ds, [refusal_reward], _settings(max_steps=1))
    stats = run_grpo(model_dir, out, ds, [refusal_reward], _settings(max_steps=2), resume=True)
    assert stats["resumed_from"].endswith("checkpoint-1")
    assert stats["steps"] == 2
    assert (out / "checkpoints" / "checkpoint-2").is_dir()


def test_nan_loss_stops_with_user_error_and_keeps_checkpoint(model_dir, tmp_path, monkeypatch):
    original = grpo.BoundaryGRPOTrainer._compute_loss

    def poisoned(self, model, inputs):
        loss = original(self, model, inputs)
        return loss * float("nan") if self.state.global_step >= 1 else loss

    monkeypatch.setattr(grpo.BoundaryGRPOTrainer, "_compute_loss", poisoned)
    out = tmp_path / "nan"
    with pytest.raises(UserError, match="became nan at step 2"):
        run_grpo(model_dir, out, boundary_dataset(*_items()), [refusal_reward], _settings(max_steps=3))
    assert (out / "checkpoints" / "checkpoint-1").is_dir()
    assert not (out / "checkpoints" / "checkpoint-2").exists()


@pytest.mark.parametrize("name, kind, stage", [("ddp", "MULTI_GPU", None), ("zero2", "DEEPSPEED", 2), ("zero3", "DEEPSPEED", 3)])
def test_accelerate_configs_load(name, kind, stage):
    from accelerate.commands.config.config_args import load_config_from_file

    import asru

    cfg = load_config_from_file(str(Path(asru.__file__).parent / "configs" / "accelerate" / f"{name}.yaml"))
    assert cfg.distributed_type.name == kind and cfg.mixed_precision == "bf16"
    assert (cfg.deepspeed_config or {}).get("zero_stage") == stage


def test_reward_summary_windows_do_not_overlap():
    history = [{"reward": float(i), "kl": 0.0, "forget/x": 1.0} for i in range(4)]
    summary = reward_summary(history)
    assert summary["reward_first"] == 0.5 and summary["reward_last"] == 2.5
    assert summary["components"] == {"forget/x": 1.0, "kl": 0.0}


def test_vllm_is_off_unless_asked_and_sized_when_on(monkeypatch):
    """vLLM unset would size its KV cache for the whole 262k context and fail at start: asru sizes it."""
    import importlib

    from asru.config import load_preset

    for preset in ("qwen3vl-8b", "qwen25vl-7b"):
        assert all(section["grpo"]["use_vllm"] is False for name, section in load_preset(preset)["methods"].items()
                   if "grpo" in section), preset
    monkeypatch.setattr(importlib.import_module("trl.import_utils"), "is_vllm_available", lambda *a, **k: True)
    on = _settings(use_vllm=True, max_completion_length=64)
    assert on.use_vllm is True and on.vllm_max_model_length == grpo.VLLM_PROMPT_BUDGET + 64
    assert _settings(use_vllm=True, vllm_max_model_length=1000).vllm_max_model_length == 1000
    assert _settings().use_vllm is False and _settings().vllm_max_model_length is None
