"""The Trainer-based loops reproduce the hand-written loops they replaced, step for step.

tests/data/old_loops_reference.json holds the old loops' figures on the micro world (per-step losses and the
norm of the weight change), written by tests/data/old_loops_reference.py on the last commit that had them.
Same data order, AdamW, schedule and clipping give the same numbers up to float rounding.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from asru.methods import UnlearnContext, get_method
from asru.models.load import load_model
from asru.models.tiny import build_processor, build_tiny_model, build_tokenizer, save_tiny
from asru.models.vanilla import VanillaConfig, vanilla_examples, world_texts

REFERENCE = json.loads((Path(__file__).parent / "data" / "old_loops_reference.json").read_text())
TOL = 1e-5


@pytest.fixture(scope="module")
def tiny(micro_world, tmp_path_factory):
    """(tokenizer, processor, a saved random tiny model's directory) exactly as the reference script built them."""
    tok = build_tokenizer(world_texts(micro_world), 1024)
    processor = build_processor(tok, image_size=64)
    out = save_tiny(build_tiny_model(tok, seed=0), processor, tmp_path_factory.mktemp("ref") / "vanilla")
    return tok, processor, Path(out)


def _delta(after: dict, before: dict) -> float:
    return sum(float((after[k].double() - before[k].double()).square().sum()) for k in before) ** 0.5


def test_sft_matches_the_old_loop(micro_world, tiny, tmp_path):
    from asru import training

    tok, processor, _ = tiny
    encoded = training.encode_examples(processor, vanilla_examples(micro_world, VanillaConfig())[:48])
    model = build_tiny_model(tok, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = training.TrainConfig(steps=20, batch_size=4, lr=1e-3, warmup_steps=5, seed=0, save_steps=5)
    seen = []
    original = training.SFTTrainer.training_loss
    training.SFTTrainer.training_loss = lambda self, m, i: (lambda loss: (seen.append(loss.item()), loss)[1])(original(self, m, i))
    try:
        stats = training.sft(model, processor, encoded, cfg, out_dir=tmp_path)
    finally:
        training.SFTTrainer.training_loss = original
    assert stats["steps"] == 20 and not model.training
    assert seen == pytest.approx(REFERENCE["sft"]["losses"], abs=TOL)
    assert _delta(model.state_dict(), before) == pytest.approx(REFERENCE["sft"]["delta"], abs=TOL)
    assert not (tmp_path / "checkpoints").exists()  # checkpoints were written every 5 steps, removed at the end


@pytest.mark.parametrize("name", ["ga_diff", "npo"])
def test_gradient_method_matches_the_old_loop(name, micro_world, tiny, tmp_path):
    from asru.methods.gradient import GradientMethod

    _, _, vanilla = tiny
    cls = get_method(name)
    ctx = UnlearnContext(model_dir=vanilla, data_dir=micro_world, forget_split="forget_10", out_dir=tmp_path / name, seed=0)
    method = cls(cls.Config(steps=6, batch_size=4, lr=1e-3, warmup_steps=2))
    histories = []
    original = GradientMethod._train
    GradientMethod._train = lambda self, *a, **k: (lambda h: (histories.append(h), h)[1])(original(self, *a, **k))
    try:
        method.unlearn(ctx)
    finally:
        GradientMethod._train = original
    ref = REFERENCE[name]
    for key in ("loss", "forget", "retain"):
        assert [h[key] for h in histories[0]] == pytest.approx(ref["losses" if key == "loss" else key], abs=TOL)
    after = load_model(ctx.model_out, device="cpu")[0].state_dict()
    assert _delta(after, load_model(vanilla, device="cpu")[0].state_dict()) == pytest.approx(ref["delta"], abs=TOL)


@pytest.mark.parametrize("positions", ["last", "all"])
def test_redirect_matches_the_old_loop(positions, micro_world, tiny, tmp_path):
    from asru.steering.direction import SteeringVector
    from asru.steering.redirect import RedirectConfig, redirect

    _, processor, vanilla = tiny
    ctx = UnlearnContext(model_dir=vanilla, data_dir=micro_world, forget_split="forget_10", out_dir=tmp_path, seed=0)
    forget = [(i.question, i.image) for i in ctx.forget_items[:6]]
    retain = [(i.question, i.image, i.answer) for i in ctx.retain_items[:6]]
    model = load_model(vanilla, device="cpu", for_training=True)[0]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = RedirectConfig(coeff=3.0, alpha=1.0, lr=1e-3, epochs=2, batch_size=2, trainable="mlp", retain_positions=positions)
    stats = redirect(model, processor, SteeringVector(vector=torch.ones(128) * 0.5, layer=1), forget, retain, cfg)
    ref = REFERENCE[f"redirect_{positions}"]
    assert stats["steps"] == ref["steps"]
    for key in ("forget_loss_first", "forget_loss_last", "retain_loss_first", "retain_loss_last"):
        assert stats[key] == pytest.approx(ref[key], abs=TOL)
    assert _delta(model.state_dict(), before) == pytest.approx(ref["delta"], abs=TOL)


def test_real_preset_vanilla_is_the_papers_lora_on_the_training_split_alone(tmp_path):
    """`asru vanilla` with a Qwen3-VL preset on the real MLLMU-Bench layout (no world extras): LoRA r16/alpha16/
    dropout 0.05 on the language model's linear layers through the Trainer, merged into a plain model directory."""
    import math

    import yaml
    from mllmu_fixture import write_mllmu_fixture

    from asru.config import load_preset
    from asru.data.mllmu import training_items
    from asru.manifest import read_manifest
    from asru.models.load import save_model
    from asru.pipeline import vanilla_stage

    data = write_mllmu_fixture(tmp_path / "mllmu", world=False)
    tok = build_tokenizer(world_texts(data), 512)
    base = save_model(build_tiny_model(tok, seed=1), build_processor(tok), tmp_path / "base")
    preset = load_preset("qwen3vl-2b")
    assert {k: preset["vanilla"][k] for k in ("lora", "lora_r", "lora_alpha", "lora_dropout")} == \
        {"lora": True, "lora_r": 16, "lora_alpha": 16, "lora_dropout": 0.05}
    (tmp_path / "preset.yaml").write_text(yaml.safe_dump(preset))
    out, fresh = vanilla_stage(base, data, tmp_path / "vanilla", str(tmp_path / "preset.yaml"))

    result = read_manifest(out)["result"]
    examples = len(training_items(data, "forget_15")) + len(training_items(data, "retain_85"))
    assert fresh and result["finetune"] == "lora" and result["examples"] == examples
    assert result["steps"] == math.ceil(2 * examples / 4)  # 2 epochs, batch 4
    assert (out / "config.json").is_file() and not (out / "adapter_config.json").exists()
    assert not (out / "checkpoints").exists()
    before = load_model(base, device="cpu")[0].state_dict()
    after = load_model(out, device="cpu")[0].state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".language_model.layers." in k and k.endswith("proj.weight") for k in changed)
    assert {k.split(".")[-2] for k in changed} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


THROWAWAY = '''
"""A throwaway method: half-weight gradient ascent on forget, cross-entropy on retain."""
from asru.methods.gradient import GradientMethod, batch_nll, logits


class Throwaway(GradientMethod):
    name = "throwaway"
    uses_retain = True

    def forget_loss(self, model, batch, ref):
        return -0.5 * batch_nll(logits(model, batch), batch["labels"])

    def retain_loss(self, model, batch, ref):
        return batch_nll(logits(model, batch), batch["labels"])
'''


def test_a_new_gradient_method_is_one_file_one_registry_line_one_preset_entry(micro_world, tiny, tmp_path, monkeypatch):
    import yaml

    from asru import methods
    from asru.manifest import read_manifest
    from asru.pipeline import unlearn_stage

    _, _, vanilla = tiny
    (tmp_path / "throwaway_method.py").write_text(THROWAWAY)  # the file
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(methods._MODULES, "throwaway", "throwaway_method:Throwaway")  # the registry line
    preset = tmp_path / "preset.yaml"  # the preset entry
    preset.write_text(yaml.safe_dump({"methods": {"throwaway": {"steps": 3, "batch_size": 2, "lr": 1e-3, "alpha": 2.0}}}))

    assert "throwaway" in methods.method_names()
    out, _ = unlearn_stage("throwaway", vanilla, micro_world, tmp_path / "run", preset=str(preset))
    result = read_manifest(out)["result"]
    assert result["steps"] == 3 and result["retain_examples"] > 0
    assert result["forget_loss_first"] < 0 < result["retain_loss_first"]
    assert result["loss_first"] == pytest.approx(result["forget_loss_first"] + 2.0 * result["retain_loss_first"], rel=1e-6)
    assert load_model(out / "model", device="cpu")[0] is not None
