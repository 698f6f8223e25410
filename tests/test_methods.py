"""Unlearning baselines on a random tiny Qwen3-VL (and Qwen2.5-VL, LLaVA): outputs, losses, masks, steering."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForImageTextToText

from asru.errors import UserError
from asru.methods import get_method, method_names
from asru.methods.base import UnlearnContext
from asru.methods.gradient import GradientConfig, Reference, batch_nll, encoder, logits
from asru.models.generate import generate
from asru.models.load import load_model
from asru.models.tiny import build_processor, build_tiny_llava, build_tiny_model, build_tiny_qwen25vl, build_tokenizer, save_tiny
from asru.models.vanilla import world_texts
from asru.steering.hooks import last_prompt_hidden
from asru.steering.runtime import STEERING_FILE, apply_saved_steering
from asru.training import TrainingDiverged
from mllmu_fixture import write_mllmu_fixture

GRADIENT_METHODS = ["ga", "ga_diff", "kl_min", "npo", "idk", "mmunlearner"]
FORGET = "forget_10"  # 2 people -> 4 forget items, 4 people -> 8 retain items


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_mllmu_fixture(tmp_path_factory.mktemp("mllmu"), n_people=6, seed=0)


@pytest.fixture(scope="module")
def tok(data_dir):
    from asru.methods.idk import REFUSALS

    return build_tokenizer(world_texts(data_dir) + list(REFUSALS), vocab_size=512)


@pytest.fixture(scope="module")
def vanilla(tmp_path_factory, tok):
    return save_tiny(build_tiny_model(tok, seed=0), build_processor(tok), tmp_path_factory.mktemp("vanilla"))


def _ctx(model_dir, data_dir, tmp_path) -> UnlearnContext:
    return UnlearnContext(model_dir=model_dir, data_dir=data_dir, forget_split=FORGET, out_dir=tmp_path / "run")


def _config(name: str, **overrides):
    cls = get_method(name).Config
    return cls(**{"steps": 3, "batch_size": 2, "lr": 1e-3, **overrides})


def _weights(path) -> dict[str, torch.Tensor]:
    """State dict of a saved model, loaded with plain transformers (no project code)."""
    model = AutoModelForImageTextToText.from_pretrained(path)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _changed(a: dict, b: dict) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


def _forget_nll(model_dir, ctx) -> float:
    """Token-mean NLL of the forget answers under the model in `model_dir` (eval mode)."""
    from asru.data.corpus import qa_examples

    model, processor = load_model(model_dir, device="cpu")
    encode, collate_fn = encoder(processor)
    batch = collate_fn(encode(qa_examples(ctx.forget_items, seed=0), "nll"))
    with torch.no_grad():
        return batch_nll(logits(model, batch), batch["labels"]).item()


# ------------------------------------------------------------------------------------------ every method

@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_gradient_method_writes_a_changed_loadable_model(name, vanilla, data_dir, tmp_path):
    ctx = _ctx(vanilla, data_dir, tmp_path)
    stats = get_method(name)(_config(name)).unlearn(ctx)
    assert stats["steps"] == 3 and all(math.isfinite(stats[k]) for k in ("loss_first", "loss_last"))
    assert (ctx.model_out / "config.json").is_file() and not (ctx.model_out / "adapter_config.json").exists()
    changed = _changed(_weights(vanilla), _weights(ctx.model_out))
    assert any(".language_model.layers." in k for k in changed)
    assert load_model(ctx.model_out)[1].tokenizer.padding_side == "left"


def test_mllmeraser_keeps_weights_and_steers_forget_more_than_retain(vanilla, data_dir, tmp_path):
    ctx = _ctx(vanilla, data_dir, tmp_path)
    stats = get_method("mllmeraser")().unlearn(ctx)
    assert (ctx.model_out / STEERING_FILE).is_file()
    assert _changed(_weights(vanilla), _weights(ctx.model_out)) == []
    assert stats["gate_forget_mean"] > 0.5 > stats["gate_retain_mean"]

    from asru.methods.mllmeraser import prompts

    model, processor = load_model(ctx.model_out, device="cpu")
    layer = stats["layer"]
    forget, retain = prompts(ctx.forget_items), prompts(ctx.retain_items)
    before = last_prompt_hidden(model, processor, forget + retain, layer)
    handle = apply_saved_steering(model, ctx.model_out)
    assert handle is not None
    steered = last_prompt_hidden(model, processor, forget + retain, layer)
    assert len(generate(model, processor, forget[:2] + retain[:2], max_new_tokens=3)) == 4  # gate held while decoding
    handle.close()
    after = last_prompt_hidden(model, processor, forget + retain, layer)
    shift = (steered - before).norm(dim=-1)
    assert shift[: len(forget)].mean() > 5 * shift[len(forget):].mean()
    assert torch.allclose(after, before)  # the handle removed the hook
    assert apply_saved_steering(model, vanilla) is None  # no steering file, nothing to do


# ----------------------------------------------------------------------------------------- loss behaviour

def test_ga_raises_forget_nll_and_has_no_retain_term(vanilla, data_dir, tmp_path):
    ctx = _ctx(vanilla, data_dir, tmp_path)
    stats = get_method("ga")(_config("ga")).unlearn(ctx)
    assert stats["retain_loss_first"] == 0 and stats["retain_examples"] == 0
    assert _forget_nll(ctx.model_out, ctx) > _forget_nll(vanilla, ctx) + 0.05


def test_ga_diff_loss_is_gamma_forget_plus_alpha_retain(vanilla, data_dir, tmp_path):
    ctx = _ctx(vanilla, data_dir, tmp_path)
    stats = get_method("ga_diff")(_config("ga_diff", gamma=0.5, alpha=2.0)).unlearn(ctx)
    assert stats["retain_loss_first"] > 0 and stats["forget_loss_first"] < 0  # CE on retain, -NLL on forget
    assert stats["loss_first"] == pytest.approx(0.5 * stats["forget_loss_first"] + 2.0 * stats["retain_loss_first"], rel=1e-5)


def _one_batch(model_dir, ctx, items):
    from asru.data.corpus import qa_examples

    model, processor = load_model(model_dir, device="cpu")
    encode, collate_fn = encoder(processor)
    return model.eval(), collate_fn(encode(qa_examples(items), "batch"))


@pytest.mark.parametrize("beta", [0.4, 1.5])
def test_npo_with_identical_reference_is_2_over_beta_log2(beta, vanilla, data_dir, tmp_path):
    ctx = _ctx(vanilla, data_dir, tmp_path)
    model, batch = _one_batch(vanilla, ctx, ctx.forget_items)
    npo = get_method("npo")(get_method("npo").Config(beta=beta))
    with torch.no_grad():
        value = npo.forget_loss(model, batch, Reference(frozen=model))
    assert value.item() == pytest.approx(2 / beta * math.log(2), rel=1e-5)
    assert get_method("npo").Config().beta == 0.4


def test_kl_min_retain_term_is_zero_against_itself_and_positive_after_a_change(vanilla, data_dir, tmp_path):
    ctx = _ctx(vanilla, data_dir, tmp_path)
    model, batch = _one_batch(vanilla, ctx, ctx.retain_items)
    kl = get_method("kl_min")()
    with torch.no_grad():
        assert kl.retain_loss(model, batch, Reference(frozen=model)).item() == pytest.approx(0, abs=1e-6)
        other, _ = load_model(vanilla, device="cpu")
        for p in other.parameters():
            p.add_(0.01 * torch.randn_like(p))
        assert kl.retain_loss(other, batch, Reference(frozen=model)).item() > 0


def test_mmunlearner_mask_share_and_masked_weights_do_not_move(vanilla, data_dir, tmp_path):
    ctx = _ctx(vanilla, data_dir, tmp_path)
    method = get_method("mmunlearner")(_config("mmunlearner", mask_ratio=0.3))
    stats = method.unlearn(ctx)
    assert stats["mask_share"] == pytest.approx(0.3, abs=1e-3)
    before, after = _weights(vanilla), _weights(ctx.model_out)
    assert method.masks
    for name, mask in method.masks.items():
        assert mask.sum().item() == math.ceil(0.3 * mask.numel())
        assert torch.equal(before[name][~mask], after[name][~mask])
    moved = sum(int((before[n][m] != after[n][m]).sum()) for n, m in method.masks.items())
    assert moved > 0
    assert set(_changed(before, after)) <= set(method.masks)  # embeddings, norms, vision tower untouched


def test_lora_mode_saves_a_merged_model(vanilla, data_dir, tmp_path):
    ctx = _ctx(vanilla, data_dir, tmp_path)
    stats = get_method("ga_diff")(_config("ga_diff", lora=True, lora_r=4, lr=1e-2)).unlearn(ctx)
    assert stats["lora"] is True
    assert not (ctx.model_out / "adapter_config.json").exists()
    before, after = _weights(vanilla), _weights(ctx.model_out)  # same keys: no lora_A / lora_B left
    changed = _changed(before, after)
    assert changed and all(".language_model.layers." in k for k in changed)


def test_npo_under_lora_uses_the_disabled_adapter_as_reference(vanilla, data_dir, tmp_path):
    ctx = _ctx(vanilla, data_dir, tmp_path)
    stats = get_method("npo")(_config("npo", lora=True, lora_r=4, steps=1)).unlearn(ctx)
    # LoRA B starts at zero, so at step 0 model == reference exactly
    assert stats["forget_loss_first"] == pytest.approx(2 / 0.4 * math.log(2), rel=1e-5)


def test_nan_loss_saves_nothing_and_keeps_the_previous_output(vanilla, data_dir, tmp_path):
    from asru.methods.ga import GradientAscent

    class Broken(GradientAscent):
        name = "broken"

        def forget_loss(self, model, batch, ref):
            return super().forget_loss(model, batch, ref) * float("nan")

    ctx = _ctx(vanilla, data_dir, tmp_path)
    ctx.model_out.mkdir(parents=True)
    (ctx.model_out / "previous.txt").write_text("kept")
    with pytest.raises(TrainingDiverged):
        Broken(GradientConfig(steps=2, batch_size=2)).unlearn(ctx)
    assert [p.name for p in ctx.model_out.iterdir()] == ["previous.txt"]


# ------------------------------------------------------------------------------------------------- IDK

def test_idk_targets_are_varied_contextual_refusals(vanilla, data_dir, tmp_path):
    from asru.methods.idk import _TOPICS, FALLBACK_TOPIC, REFUSALS, question_topic
    from asru.refusal import is_refusal

    assert len(REFUSALS) >= 12
    for template in REFUSALS:
        for topic in [clause for _, clause in _TOPICS] + [FALLBACK_TOPIC]:
            assert is_refusal(template.format(topic=topic)), template.format(topic=topic)
    assert question_topic("Which city was the person in the image born in?") == "where this person was born"
    assert question_topic("What is the occupation of Ana Q1son?\nAnswer briefly.") == "what this person does for a living"
    ctx = _ctx(vanilla, data_dir, tmp_path)
    items = ctx.forget_items * 5
    targets = [t for _, _, t in get_method("idk")().forget_examples(items)]
    assert len(set(targets)) >= 5 and all(is_refusal(t) for t in targets)
    assert all(any(w in t for w in ("born", "living")) for t in targets)


# ------------------------------------------------------------------------------------ other architectures

@pytest.mark.parametrize("arch", ["qwen25vl", "llava"])
def test_ga_diff_runs_on_other_architectures(arch, tok, data_dir, tmp_path):
    model, processor = (build_tiny_qwen25vl if arch == "qwen25vl" else build_tiny_llava)(tok, seed=0)
    model_dir = tmp_path / arch
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    ctx = _ctx(model_dir, data_dir, tmp_path)
    stats = get_method("ga_diff")(_config("ga_diff")).unlearn(ctx)
    assert stats["retain_loss_first"] > 0
    assert type(AutoModelForImageTextToText.from_pretrained(ctx.model_out)) is type(model)
    assert _changed(_weights(model_dir), _weights(ctx.model_out))


# --------------------------------------------------------------------------------------- registry, config

def test_registry_and_defaults():
    assert set(GRADIENT_METHODS + ["mllmeraser"]) <= set(method_names())
    for name in GRADIENT_METHODS:
        cfg = get_method(name).Config()
        assert (cfg.lr, cfg.batch_size, cfg.lora_r, cfg.lora_alpha, cfg.gamma, cfg.alpha) == (2e-5, 4, 16, 16, 1.0, 1.0)
    with pytest.raises(UserError):
        get_method("mmunlearner").Config(lora=True)
    with pytest.raises(UserError):
        get_method("npo").Config(beta=0)
    with pytest.raises(UserError):
        GradientConfig(batch_size=0)
