"""Tiny model / tokenizer / processor, loading, layer discovery, collation, generation and scoring."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from asru.errors import UserError
from asru.models.batch import IGNORE_INDEX, encode_batch, encode_example, encode_prompts
from asru.models.chat import build_prompt, to_pil
from asru.models.generate import generate
from asru.models.layers import check_layer, decoder_layers, hidden_size, layer_mlp
from asru.models.load import load_model
from asru.models.score import answer_logprobs
from asru.models.tiny import (
    IM_END,
    SPECIAL_TOKENS,
    build_processor,
    build_tiny_llava,
    build_tiny_model,
    build_tiny_qwen25vl,
    build_tokenizer,
    save_tiny,
)

CORPUS = [
    "What is the name of the person in this picture?",
    "Alice Smith was born in Paris in 1980 and works as a painter.",
    "Bob Jones likes chess. Where was he born? He was born in Lima.",
    "I'm sorry, I can't identify people from their faces.",
] * 20


def png(seed: int, size: int = 64) -> bytes:
    """A random RGB PNG (deterministic for a seed)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(CORPUS, vocab_size=512)


@pytest.fixture(scope="module")
def proc(tok):
    return build_processor(tok)


@pytest.fixture(scope="module")
def model(tok):
    return build_tiny_model(tok).eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory, model, proc):
    return save_tiny(model, proc, tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module", params=["qwen3vl", "qwen25vl", "llava"])
def arch(request, tok, model, proc):
    """(model, processor, image) for each supported architecture, each image sized for its processor."""
    if request.param == "qwen3vl":
        return model, proc, png(5, 64)
    if request.param == "qwen25vl":
        return (*build_tiny_qwen25vl(tok), png(5, 56))
    return (*build_tiny_llava(tok), png(5, 32))


# --- tokenizer, chat template, processor -------------------------------------------------------------------


@pytest.mark.parametrize("text", ["Alice Smith, born 1980.", "Zoë naïve café ünïcode 漢字 🙂", "  two\n\tlines  ", "\x00\x7f"])
def test_tokenizer_roundtrips_any_string(tok, text):
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text
    assert tok.unk_token_id is None


def test_tokenizer_special_tokens(tok):
    ids = [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    assert len(set(ids)) == len(SPECIAL_TOKENS)
    assert tok.eos_token == IM_END and tok.pad_token == "<|endoftext|>"
    text = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>hi<|im_end|>"
    assert tok.encode(text, add_special_tokens=False)[:1] == [tok.convert_tokens_to_ids("<|im_start|>")]
    assert tok.decode(tok.encode(text, add_special_tokens=False), skip_special_tokens=True) == "user\nhi"


def test_chat_prompt_is_qwen_format(proc):
    assert build_prompt(proc, "Who is this?", has_image=True) == (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Who is this?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert build_prompt(proc, "Hi?", has_image=False) == "<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize("size", [64, 100, 32])
def test_square_image_becomes_four_tokens(proc, tok, size):
    enc = encode_example(proc, "Who?", png(1, size), "x")
    assert enc["image_grid_thw"].tolist() == [[1, 4, 4]]
    image_id = tok.convert_tokens_to_ids("<|image_pad|>")
    assert enc["input_ids"].count(image_id) == 4
    assert enc["pixel_values"].shape == (16, 3 * 2 * 16 * 16)


def test_to_pil_decodes_and_rejects(tok):
    assert to_pil(None) is None
    assert to_pil(png(0, 8)).size == (8, 8)
    assert to_pil({"bytes": png(0, 8), "path": None}).mode == "RGB"
    assert to_pil(Image.new("RGBA", (4, 4))).mode == "RGB"
    with pytest.raises(UserError, match="cannot decode image"):
        to_pil(b"not an image at all")
    with pytest.raises(UserError, match="empty"):
        to_pil(b"")
    with pytest.raises(UserError, match="cannot use a int"):
        to_pil(3)


# --- the tiny model -----------------------------------------------------------------------------------------


def test_tiny_model_is_a_small_real_qwen3vl(model, tok):
    from transformers import Qwen3VLForConditionalGeneration

    assert type(model) is Qwen3VLForConditionalGeneration
    assert 1_000_000 <= sum(p.numel() for p in model.parameters()) <= 3_000_000
    cfg = model.config
    assert cfg.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert cfg.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert cfg.vision_end_token_id == tok.convert_tokens_to_ids("<|vision_end|>")
    assert cfg.text_config.vocab_size == len(tok)
    assert cfg.text_config.rope_parameters["mrope_section"] == [3, 3, 2]
    assert model.generation_config.eos_token_id == tok.eos_token_id
    assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()


def test_tiny_model_is_deterministic(tok):
    a, b = build_tiny_model(tok, seed=3), build_tiny_model(tok, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.e2e
def test_saved_dir_loads_without_asru(saved, model, proc, tmp_path):
    """A fresh interpreter with only transformers loads the directory and computes the same logits."""
    out = tmp_path / "logits.pt"
    script = textwrap.dedent(
        f"""
        import io, sys, torch
        from PIL import Image
        from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer
        model = AutoModelForImageTextToText.from_pretrained({str(saved)!r}).eval()
        proc = AutoProcessor.from_pretrained({str(saved)!r})
        msgs = [{{"role": "user", "content": [{{"type": "image"}}, {{"type": "text", "text": "Who is this?"}}]}}]
        text = proc.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        tok = AutoTokenizer.from_pretrained({str(saved)!r})
        assert tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == text
        image = Image.open(io.BytesIO(open({str(tmp_path / "img.png")!r}, "rb").read())).convert("RGB")
        batch = proc(text=[text], images=[image], return_tensors="pt")
        with torch.no_grad():
            logits = model(**batch).logits
        assert not any(name.startswith("asru") for name in sys.modules)
        torch.save({{"logits": logits, "input_ids": batch["input_ids"]}}, {str(out)!r})
        """
    )
    (tmp_path / "img.png").write_bytes(png(7))
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=tmp_path, timeout=120)
    theirs = torch.load(out)
    batch = encode_prompts(proc, [("Who is this?", png(7))])
    assert torch.equal(theirs["input_ids"], batch["input_ids"])
    with torch.no_grad():
        ours = model(**batch).logits
    torch.testing.assert_close(ours, theirs["logits"], rtol=0, atol=1e-5)


def test_load_model_returns_left_padding_eval_model(saved, model):
    loaded, processor = load_model(saved, device="cpu")
    assert processor.tokenizer.padding_side == "left"
    assert not loaded.training and loaded.dtype == torch.float32
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    trainable, _ = load_model(saved, device="cpu", for_training=True)
    assert trainable.training


def test_load_model_user_errors(tmp_path, saved):
    from transformers import LlamaConfig, LlamaForCausalLM

    with pytest.raises(UserError, match="does not exist"):
        load_model(tmp_path / "nope")
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(UserError, match="is a file"):
        load_model(tmp_path / "file.bin")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        load_model(tmp_path / "empty")
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    with pytest.raises(UserError, match="PEFT adapter"):
        load_model(tmp_path / "adapter")
    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "textonly")
    with pytest.raises(UserError, match="'llama' model, not an image-text model"):
        load_model(tmp_path / "textonly")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text(json.dumps({"model_type": "no-such-model"}))
    with pytest.raises(UserError, match="cannot be read by transformers"):
        load_model(tmp_path / "bad")
    with pytest.raises(UserError, match="unknown dtype"):
        load_model(saved, dtype="float8")
    build_tiny_model(build_tokenizer(["a b"], vocab_size=300)).save_pretrained(tmp_path / "noprocessor")
    with pytest.raises(UserError, match="has no image processor"):
        load_model(tmp_path / "noprocessor")
    sharded = tmp_path / "sharded"
    shutil.copytree(saved, sharded)
    (sharded / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {"a": "model.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(UserError, match="lacks weight shard.*model-00002-of-00002.safetensors"):
        load_model(sharded)


# --- layers -------------------------------------------------------------------------------------------------


def test_layer_discovery_per_architecture(arch):
    model, _, _ = arch
    layers = decoder_layers(model)
    text_config = model.config.get_text_config()
    assert len(layers) == text_config.num_hidden_layers
    assert layers is model.model.language_model.layers
    assert hidden_size(model) == text_config.hidden_size
    assert layer_mlp(model, 1) is layers[1].mlp
    assert check_layer(model, len(layers) - 1) == len(layers) - 1
    for bad in (len(layers), -1):
        with pytest.raises(UserError, match=rf"valid layers are 0\.\.{len(layers) - 1}"):
            check_layer(model, bad)


def test_layer_discovery_through_peft(tok):
    from peft import LoraConfig, get_peft_model

    base = build_tiny_model(tok)
    layers = decoder_layers(base)
    wrapped = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    assert decoder_layers(wrapped) is layers
    assert hidden_size(wrapped) == 128
    assert layer_mlp(wrapped, 3) is layers[3].mlp
    with pytest.raises(UserError, match=r"valid layers are 0\.\.3"):
        check_layer(wrapped, 4)


def test_no_decoder_layers_is_a_user_error():
    with pytest.raises(UserError, match="cannot find the decoder layers of Linear"):
        decoder_layers(torch.nn.Linear(2, 2))


# --- collation and training ---------------------------------------------------------------------------------


def test_encode_batch_masks_everything_but_answer_and_end(proc, tok):
    examples = [("Who is this?", png(0), "Alice Smith"), ("Where was Bob born?", None, "Lima"), ("Q?", png(1, 100), "A")]
    batch = encode_batch(proc, examples)
    assert set(batch) == {"input_ids", "attention_mask", "labels", "mm_token_type_ids", "pixel_values", "image_grid_thw"}
    assert batch["image_grid_thw"].shape == (2, 3) and batch["pixel_values"].shape[0] == 32
    image_id = tok.convert_tokens_to_ids("<|image_pad|>")
    assert torch.equal(batch["mm_token_type_ids"] == 1, batch["input_ids"] == image_id)
    for row, (_, _, answer) in enumerate(examples):
        labels, ids, mask = batch["labels"][row], batch["input_ids"][row], batch["attention_mask"][row]
        kept = labels != IGNORE_INDEX
        assert tok.decode(labels[kept]) == answer + IM_END
        assert torch.equal(labels[kept], ids[kept])
        n = int(mask.sum())
        assert mask[:n].all() and not mask[n:].any()  # right padding
        assert kept.nonzero().max() == n - 1  # the closing token is the last real token


def test_encode_batch_text_only_batch_has_no_image_inputs(proc):
    batch = encode_batch(proc, [("Hi?", None, "Hello"), ("Where?", None, "Lima")], padding_side="left")
    assert "pixel_values" not in batch and "image_grid_thw" not in batch
    assert batch["attention_mask"][:, -1].all()


def test_forward_backward_per_architecture(arch):
    model, processor, image = arch
    batch = encode_batch(processor, [("Who is this?", image, "Alice Smith"), ("Where was Bob born?", None, "Lima")])
    model.train()
    model.zero_grad()
    loss = model(**batch).loss
    loss.backward()
    model.eval()
    assert torch.isfinite(loss)
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert any(("visual" in n or "vision" in n) and g.abs().sum() > 0 for n, g in grads.items())
    assert any("language_model" in n and g.abs().sum() > 0 for n, g in grads.items())


def test_short_training_teaches_answers_and_stopping(tok):
    """Loss on answer + closing token is enough for greedy generation to reproduce answers and stop."""
    examples = [("Who is this?", png(0), "Alice Smith"), ("Who is this?", png(1), "Bob Jones"),
                ("Where was Alice born?", None, "Paris")]
    model, processor = build_tiny_model(tok, seed=1), build_processor(tok)
    batch = encode_batch(processor, examples)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(30):
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()
    assert generate(model, processor, [(q, img) for q, img, _ in examples], max_new_tokens=10) == [
        a for *_, a in examples
    ]


def test_length_grouped_batches_pad_less_and_cover_every_example():
    """Grouping by length keeps every example once per epoch, is seeded, and cuts padding; off, it is the plain
    shuffled stream (so runs without it are unchanged)."""
    from itertools import islice

    from asru.training import GROUP_POOL, batches

    rng = np.random.default_rng(0)
    encoded = [{"input_ids": [0] * int(n), "id": i} for i, n in enumerate(rng.integers(5, 200, 8 * GROUP_POOL))]
    epoch = lambda group: list(islice(batches(encoded, 8, seed=3, group_by_length=group), GROUP_POOL))  # noqa: E731
    padded = lambda bs: sum(8 * max(len(e["input_ids"]) for e in b) for b in bs)  # noqa: E731
    grouped, plain = epoch(True), epoch(False)
    assert sorted(e["id"] for b in grouped for e in b) == list(range(len(encoded)))
    assert [[e["id"] for e in b] for b in grouped] == [[e["id"] for e in b] for b in epoch(True)]
    assert padded(grouped) < 0.7 * padded(plain)
    shuffled_lengths = [max(len(e["input_ids"]) for e in b) for b in grouped]
    assert shuffled_lengths != sorted(shuffled_lengths)  # batch order is shuffled, not short-to-long


# --- generation and scoring ---------------------------------------------------------------------------------


def _mixed_prompts() -> list[tuple[str, bytes | None]]:
    questions = ["Who?", "What is the name of the person in this picture?", "Where was Bob Jones born?", "Hi",
                 "Tell me about Alice Smith, the painter born in Paris.", "Why?", "Who is this?", "Lima or Paris?"]
    return [(q, png(i, 64 if i % 3 else 100) if i % 2 == 0 else None) for i, q in enumerate(questions)]


def test_batched_generation_equals_one_at_a_time(model, proc):
    prompts = _mixed_prompts()
    batched = generate(model, proc, prompts, max_new_tokens=12, batch_size=3)
    single = [generate(model, proc, [p], max_new_tokens=12, batch_size=1)[0] for p in prompts]
    assert batched == single
    assert any(batched) and len(set(batched)) > 1  # the random model says different, non-empty things
    assert generate(model, proc, [], max_new_tokens=4) == []


def test_generation_progress_bar_does_not_change_results(model, proc):
    prompts = _mixed_prompts()[:3]
    assert generate(model, proc, prompts, max_new_tokens=4, progress=True) == generate(
        model, proc, prompts, max_new_tokens=4
    )


def test_batched_generation_other_architectures(arch):
    model, processor, image = arch
    prompts = [("Who is this?", image), ("Where was Bob Jones born?", None), ("Hi", image)]
    batched = generate(model, processor, prompts, max_new_tokens=6, batch_size=3)
    assert batched == [generate(model, processor, [p], max_new_tokens=6)[0] for p in prompts]


def test_answer_logprobs_match_training_loss(model, proc):
    items = [("Who is this?", png(0), "Alice Smith"), ("Where was Bob born?", None, "Lima"), ("Q?", png(1), "A b c")]
    scores = answer_logprobs(model, proc, items, batch_size=2)
    for item, score in zip(items, scores):
        batch = encode_batch(proc, [item])
        with torch.no_grad():
            loss = model(**batch).loss
        assert score.n_tokens == int((batch["labels"] != IGNORE_INDEX).sum())
        assert score.mean_logprob == pytest.approx(-float(loss), abs=1e-4)
    assert [s.sum_logprob for s in scores] == pytest.approx(
        [answer_logprobs(model, proc, [it])[0].sum_logprob for it in items], abs=1e-4
    )


LEAKY = {"top_k": 1, "top_p": 0.001, "temperature": 0.1, "repetition_penalty": 1.05, "no_repeat_ngram_size": 2}


def test_a_checkpoints_generation_settings_do_not_leak_into_asrus_decoding(saved):
    """Qwen2.5-VL's released generation_config.json (top_k 1, top_p 0.001, T 0.1, repetition_penalty 1.05) must not
    turn asru's greedy decoding into penalised decoding, nor its sampling into greedy."""
    import copy

    from asru.models.generate import decoding, generate
    from asru.models.load import load_model

    model, processor = load_model(saved, device="cpu")
    clean = copy.deepcopy(model.generation_config)
    for key, value in LEAKY.items():
        setattr(model.generation_config, key, value)
    for asked in (decoding(), decoding(do_sample=True, temperature=1.0, top_p=0.95)):
        effective = model._prepare_generation_config(None, **asked)[0]
        assert effective.repetition_penalty == 1.0 and effective.no_repeat_ngram_size == 0 and effective.num_beams == 1
        if asked["do_sample"]:
            assert (effective.top_k, effective.top_p, effective.temperature) == (50, 0.95, 1.0)
    prompts = [("Where was this person born?", None)] * 8
    greedy_leaky = generate(model, processor, prompts[:2], max_new_tokens=12)
    samples = generate(model, processor, prompts, max_new_tokens=12, do_sample=True, temperature=1.0, top_p=0.95)
    assert len(set(samples)) > 1  # top_k 1 would make all eight identical
    model.generation_config = clean
    assert generate(model, processor, prompts[:2], max_new_tokens=12) == greedy_leaky


@pytest.mark.parametrize("local_rank, expected", [(None, "cuda:0"), ("3", "cuda:3")])
def test_each_rank_loads_onto_its_own_gpu(monkeypatch, local_rank, expected):
    """Under torchrun every process must default to cuda:LOCAL_RANK, never all to cuda:0 (CUDA mocked)."""
    import torch

    from asru.models.load import _default_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    if local_rank is None:
        monkeypatch.delenv("LOCAL_RANK", raising=False)
    else:
        monkeypatch.setenv("LOCAL_RANK", local_rank)
    assert str(_default_device()) == expected
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert str(_default_device()) == "cpu"
