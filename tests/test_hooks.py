"""Residual-stream reading (last prompt token) and writing (add_to_layer) through forward hooks."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from asru.errors import UserError
from asru.models.batch import encode_prompts
from asru.models.generate import generate
from asru.models.layers import decoder_layers
from asru.models.tiny import build_processor, build_tiny_llava, build_tiny_model, build_tiny_qwen25vl, build_tokenizer
from asru.steering.hooks import add_to_layer, last_prompt_hidden

CORPUS = ["Who is the person in this picture?", "Alice Smith was born in Paris.", "I can't tell who that is."] * 20


def png(seed: int, size: int = 64) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def prompts_for(image_size: int) -> list[tuple[str, bytes | None]]:
    """Mixed image / text-only prompts of quite different lengths (so left padding really happens)."""
    questions = ["Who?", "Who is the person in this picture, and where was she born?", "Hi", "Alice?", "Why not?"]
    return [(q, png(i, image_size) if i % 2 == 0 else None) for i, q in enumerate(questions)]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(CORPUS, vocab_size=512)


@pytest.fixture(scope="module")
def qwen3(tok):
    return build_tiny_model(tok).eval(), build_processor(tok)


@pytest.fixture(scope="module", params=["qwen3vl", "qwen25vl", "llava"])
def arch(request, tok, qwen3):
    if request.param == "qwen3vl":
        return (*qwen3, 64)
    build, size = (build_tiny_qwen25vl, 56) if request.param == "qwen25vl" else (build_tiny_llava, 32)
    model, processor = build(tok)
    return model.eval(), processor, size


def test_last_prompt_hidden_is_padding_independent(arch):
    """Batched (left padded, mixed image/text) states equal each prompt run alone."""
    model, processor, size = arch
    prompts = prompts_for(size)
    batched = last_prompt_hidden(model, processor, prompts, layer=1, batch_size=3)
    alone = torch.cat([last_prompt_hidden(model, processor, [p], layer=1) for p in prompts])
    assert batched.shape == (len(prompts), model.config.get_text_config().hidden_size)
    assert batched.dtype == torch.float32
    torch.testing.assert_close(batched, alone, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(batched[0], batched[1])


@pytest.mark.parametrize("layer", [0, 2])
def test_last_prompt_hidden_is_layer_output_at_generation_prompt_end(qwen3, layer):
    """Equals hidden_states[layer + 1][:, -1] of an unpadded forward: the block's output at '...assistant\\n'.

    (The last layer is left out: transformers reports it after the final norm.)
    """
    model, processor = qwen3
    for prompt in prompts_for(64)[:2]:
        batch = encode_prompts(processor, [prompt])
        assert processor.tokenizer.decode(batch["input_ids"][0, -3:]) == "<|im_start|>assistant\n"
        with torch.no_grad():
            states = model(**batch, output_hidden_states=True).hidden_states
        got = last_prompt_hidden(model, processor, [prompt], layer=layer)
        torch.testing.assert_close(got, states[layer + 1][:, -1], rtol=1e-5, atol=1e-5)


def test_last_prompt_hidden_rejects_bad_layer(qwen3):
    model, processor = qwen3
    with pytest.raises(UserError, match=r"valid layers are 0\.\.3"):
        last_prompt_hidden(model, processor, [("Hi", None)], layer=4)


def test_add_to_layer_shifts_that_layer_and_is_removed(qwen3):
    model, processor = qwen3
    prompts = prompts_for(64)
    vector = torch.randn(128, generator=torch.Generator().manual_seed(0))
    n_hooks = len(decoder_layers(model)[2]._forward_hooks)
    before2, before3 = (last_prompt_hidden(model, processor, prompts, layer=L) for L in (2, 3))
    with add_to_layer(model, 2, vector):
        during2 = last_prompt_hidden(model, processor, prompts, layer=2)
        during3 = last_prompt_hidden(model, processor, prompts, layer=3)
    torch.testing.assert_close(during2, before2 + vector, rtol=1e-5, atol=1e-5)
    assert (during3 - before3).abs().max() > 1e-2  # the change propagates downstream
    torch.testing.assert_close(last_prompt_hidden(model, processor, prompts, layer=3), before3, rtol=0, atol=0)
    assert len(decoder_layers(model)[2]._forward_hooks) == n_hooks


def test_output_hidden_states_sees_steering(qwen3):
    """transformers records hidden states with its own hooks; steering must run before them."""
    model, processor = qwen3
    batch = encode_prompts(processor, [("Hi", None)])
    with torch.no_grad():
        before = model(**batch, output_hidden_states=True).hidden_states[2]
        with add_to_layer(model, 1, torch.ones(128)):
            during = model(**batch, output_hidden_states=True).hidden_states[2]
    torch.testing.assert_close(during, before + 1, rtol=1e-5, atol=1e-5)


def test_add_to_layer_gate_scales_per_example(qwen3):
    model, processor = qwen3
    prompts = prompts_for(64)[:4]
    vector = torch.ones(128)
    shapes = []

    def gate(hidden):
        shapes.append(tuple(hidden.shape))
        return torch.tensor([0.0, 0.5, 1.0, 2.0])[: hidden.shape[0]].view(-1, 1, 1)

    base = last_prompt_hidden(model, processor, prompts, layer=1, batch_size=4)
    with add_to_layer(model, 1, vector, gate=gate):
        steered = last_prompt_hidden(model, processor, prompts, layer=1, batch_size=4)
    torch.testing.assert_close(steered - base, torch.tensor([0.0, 0.5, 1.0, 2.0])[:, None].expand(4, 128),
                               rtol=1e-4, atol=1e-4)
    assert shapes and all(len(s) == 3 and s[0] == 4 and s[2] == 128 for s in shapes)


def test_add_to_layer_steers_generation_then_restores(qwen3):
    model, processor = qwen3
    prompts = prompts_for(64)[:3]
    plain = generate(model, processor, prompts, max_new_tokens=6)
    with add_to_layer(model, 1, 50 * torch.randn(128, generator=torch.Generator().manual_seed(1))):
        steered = generate(model, processor, prompts, max_new_tokens=6)
    assert steered != plain
    assert generate(model, processor, prompts, max_new_tokens=6) == plain


def test_add_to_layer_removed_after_error_and_checks_shape(qwen3):
    model, _ = qwen3
    n_hooks = len(decoder_layers(model)[0]._forward_hooks)
    with pytest.raises(RuntimeError, match="boom"):
        with add_to_layer(model, 0, torch.zeros(128)):
            raise RuntimeError("boom")
    assert len(decoder_layers(model)[0]._forward_hooks) == n_hooks
    with pytest.raises(ValueError, match=r"shape \[128\]"):
        with add_to_layer(model, 0, torch.zeros(64)):
            pass
    with pytest.raises(UserError, match="out of range"):
        with add_to_layer(model, 9, torch.zeros(128)):
            pass


def test_hooks_work_through_peft(tok, qwen3):
    """A LoRA-wrapped model (B initialised to zero) reads the same states and accepts steering."""
    from peft import LoraConfig, get_peft_model

    model, processor = qwen3
    prompts = prompts_for(64)[:3]
    base = last_prompt_hidden(model, processor, prompts, layer=2)
    wrapped = get_peft_model(build_tiny_model(tok), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    torch.testing.assert_close(last_prompt_hidden(wrapped, processor, prompts, layer=2), base, rtol=1e-5, atol=1e-5)
    vector = torch.full((128,), 0.25)
    with add_to_layer(wrapped, 2, vector):
        steered = last_prompt_hidden(wrapped, processor, prompts, layer=2)
    torch.testing.assert_close(steered, base + vector, rtol=1e-5, atol=1e-5)


def test_whole_answer_retain_loss_holds_question_and_answer_tokens(tok):
    """retain_positions=all: the retain loss holds layer-L states at every retain question *and answer* token near
    the frozen model (vs no retain loss), while forget prompts are still pushed along v. (Whether it protects
    answers better than the paper's last-token loss is an empirical question for a trained model: docs/asru.md.)"""
    from asru.models.batch import encode_batch
    from asru.steering.direction import SteeringVector
    from asru.steering.hooks import layer_states
    from asru.steering.redirect import RedirectConfig, redirect

    processor = build_processor(tok)
    forget = [("Where was Alice Smith born?", png(10)), ("Who is this?", png(11)), ("Tell me who that is.", None)]
    retain = [(q, img, "Alice Smith was born in Paris.") for q, img in prompts_for(64)]
    probe = encode_batch(processor, retain, padding_side="left")
    probe.pop("labels")
    real = probe["attention_mask"].bool()
    fresh = lambda: build_tiny_model(tok, seed=3).eval()  # noqa: E731
    with torch.no_grad():
        frozen = layer_states(fresh(), 1, probe)[real]
    drift, pushed = {}, {}
    for alpha in (0.0, 3.0):
        model = fresh()
        cfg = RedirectConfig(coeff=3.0, alpha=alpha, lr=3e-3, epochs=8, batch_size=2, trainable="mlp", retain_positions="all")
        redirect(model, processor, SteeringVector(vector=torch.ones(128) * 0.5, layer=1), forget, retain, cfg)
        with torch.no_grad():
            drift[alpha] = torch.nn.functional.mse_loss(layer_states(model, 1, probe)[real], frozen).item()
        pushed[alpha] = last_prompt_hidden(model, processor, forget, 1).mean().item()
    assert drift[3.0] < 0.1 * drift[0.0]
    assert pushed[3.0] > 1.0  # the states start near 0 and the target is +1.5 in every coordinate


def test_redirect_rejects_unknown_retain_positions():
    from asru.steering.redirect import RedirectConfig

    with pytest.raises(UserError, match="retain_positions"):
        RedirectConfig(retain_positions="answer")
