"""Every unlearning method runs end to end on tiny random-weight Qwen2.5-VL and LLaVA models, not only Qwen3-VL.

Why: the methods are meant for real checkpoints of several families; decoder-layer discovery, prompt building,
steering hooks, TRL's GRPO and PEFT all have per-architecture corners, and only running each method proves them.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForImageTextToText

from asru.methods import method_names
from asru.methods.idk import REFUSALS
from asru.models.tiny import build_tiny_llava, build_tiny_qwen25vl, build_tokenizer
from asru.models.vanilla import world_texts
from asru.pipeline import unlearn_stage

GRPO = {"max_steps": 1, "num_generations": 2, "per_device_train_batch_size": 4, "max_completion_length": 6,
        "learning_rate": 1e-4, "report_to": "none", "save_steps": 1, "gradient_checkpointing": False}
STEERING = {"layer": 1, "probe": {"max_prompts": 12, "max_new_tokens": 6}, "redirect": {"epochs": 1, "batch_size": 4, "lr": 1e-3},
            "boundary": {"size": 6}, "grpo": GRPO}
FAST = {
    "asru": STEERING,
    "asru_robust": {**STEERING, "suppress": {"steps": 2, "batch_size": 2, "lr": 1e-3}},
    "rule": {"boundary": {"size": 6}, "grpo": GRPO, "sft": {"steps": 2, "batch_size": 2, "lr": 1e-3}},  # no ASRU-only options
    "mllmeraser": {"layer": 1, "max_items": 16, "batch_size": 4},
}
GRADIENT_FAST = {"steps": 2, "batch_size": 2, "lr": 1e-3}


@pytest.fixture(scope="module")
def models(micro_world, tmp_path_factory):
    """One random tiny model per architecture, with a tokenizer trained on the micro world."""
    tokenizer = build_tokenizer(world_texts(micro_world) + list(REFUSALS), vocab_size=512)
    root = tmp_path_factory.mktemp("archs")
    out = {}
    for arch, build in (("qwen25vl", build_tiny_qwen25vl), ("llava", build_tiny_llava)):
        model, processor = build(tokenizer, seed=0)
        model.save_pretrained(root / arch)
        processor.save_pretrained(root / arch)
        out[arch] = root / arch
    return out


@pytest.fixture(autouse=True)
def random_base_refuses(monkeypatch):
    """A random base never refuses; count its probe answers as refusals so ASRU/RULE have a refusal side
    (the detector is tested in test_refusal.py)."""
    import asru.steering.direction as direction

    monkeypatch.setattr(direction, "is_refusal", lambda text: True)


def _state(path) -> dict[str, torch.Tensor]:
    return AutoModelForImageTextToText.from_pretrained(path).state_dict()


@pytest.mark.micro
@pytest.mark.parametrize("arch", ["qwen25vl", "llava"])
@pytest.mark.parametrize("method", method_names())
def test_every_method_runs_on_other_architectures(method, arch, models, micro_world, tmp_path):
    model_dir = models[arch]
    out, _ = unlearn_stage(method, model_dir, micro_world, tmp_path / "run", "forget_10", base=model_dir,
                           preset="micro", overrides=FAST.get(method, GRADIENT_FAST))
    assert json.loads((out / "manifest.json").read_text())["status"] == "done"
    before, after = _state(model_dir), _state(out / "model")
    assert type(AutoModelForImageTextToText.from_pretrained(out / "model")).__name__ == \
        type(AutoModelForImageTextToText.from_pretrained(model_dir)).__name__
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    if method == "mllmeraser":  # test-time steering: weights untouched, the steering file travels with the model
        assert not changed and any(p.name.startswith("steering") for p in (out / "model").iterdir())
    else:
        assert changed
