"""Tokenize (question, image, answer) examples and pad them into batches any image-text model accepts.

Why one encoder for every stage: training, scoring, generation and steering all tokenize the prompt the
same way (the processor on the chat-templated prompt, then the answer tokens appended), so a model is
always trained on exactly the token sequence it later sees at inference.

Works for Qwen3-VL / Qwen2.5-VL / Qwen2-VL processors (pixel_values are patch rows, `image_grid_thw` one row
per image, `mm_token_type_ids` per token, needed by transformers 5.x M-RoPE whenever `image_grid_thw` is
passed) and for LLaVA processors (pixel_values one image per row); mixed batches where only some examples
have an image are fine because image tensors are concatenated in the order their placeholder tokens occur.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from asru.errors import UserError
from asru.models.chat import ImageInput, build_prompt, to_pil

IGNORE_INDEX = -100
# Keys with one value per token; everything else a processor returns (pixel_values, image_grid_thw, ...)
# has one row (or a block of rows) per image.
TOKEN_KEYS = ("input_ids", "attention_mask", "labels", "mm_token_type_ids", "token_type_ids")


def encode_prompt(processor, question: str, image: ImageInput, reply_prefix: str = "") -> dict:
    """One prompt: token lists for per-token keys (no attention_mask), tensors for the image inputs.
    `reply_prefix`: words the assistant's turn already starts with (the prefilling attack)."""
    pil = to_pil(image)
    text = build_prompt(processor, question, pil is not None)
    bos = getattr(processor.tokenizer, "bos_token", None)
    add_special = not (bos and text.startswith(bos))  # the template may already start with BOS
    enc = processor(
        text=[text], images=[pil] if pil is not None else None, return_tensors="pt", add_special_tokens=add_special
    )
    out: dict = {}
    for key, value in enc.items():
        if key == "attention_mask":
            continue
        out[key] = value[0].tolist() if key in TOKEN_KEYS else value
    if reply_prefix:
        extra = processor.tokenizer(reply_prefix, add_special_tokens=False)["input_ids"]
        out["input_ids"] = out["input_ids"] + extra
        for key in ("mm_token_type_ids", "token_type_ids"):  # the prefix is text
            if key in out:
                out[key] = out[key] + [0] * len(extra)
    return out


def turn_end_token(tokenizer) -> str:
    """The token that closes an assistant turn ("<|im_end|>" for Qwen, else the tokenizer's EOS)."""
    vocab = tokenizer.get_vocab()
    if "<|im_end|>" in vocab:
        return "<|im_end|>"
    if tokenizer.eos_token is None:
        raise UserError("the tokenizer has neither <|im_end|> nor an EOS token, so answers cannot be terminated")
    return tokenizer.eos_token


def encode_example(processor, question: str, image: ImageInput, answer: str) -> dict:
    """Prompt + answer + turn end; labels are IGNORE_INDEX except the answer tokens and the closing token.

    The closing token is trained so the model learns to stop. The answer is tokenized on its own, exactly as
    generation produces it after the prompt.
    """
    return with_answer(processor, encode_prompt(processor, question, image), answer)


def with_answer(processor, prompt: dict, answer: str) -> dict:
    """An encoded prompt (left untouched, so one encoding can serve several answers) followed by `answer` and
    the turn end, labelled for the loss."""
    enc = dict(prompt)
    tokenizer = processor.tokenizer
    completion = tokenizer(answer + turn_end_token(tokenizer), add_special_tokens=False)["input_ids"]
    n_prompt = len(enc["input_ids"])
    enc["input_ids"] = enc["input_ids"] + completion
    enc["labels"] = [IGNORE_INDEX] * n_prompt + list(completion)
    for key in ("mm_token_type_ids", "token_type_ids"):
        if key in enc:
            enc[key] = enc[key] + [0] * len(completion)
    return enc


def pad_features(features: Sequence[dict], pad_token_id: int, padding_side: str = "right") -> dict:
    """Pad per-token lists into [B, T] tensors (with attention_mask) and concatenate the image tensors."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
    if not features:
        raise ValueError("cannot pad an empty batch")
    width = max(len(f["input_ids"]) for f in features)
    pad_values = {"input_ids": pad_token_id, "labels": IGNORE_INDEX}
    batch: dict[str, torch.Tensor] = {}
    keys = [k for k in TOKEN_KEYS if k != "attention_mask" and any(k in f for f in features)]
    for key in keys:
        rows = [_pad(f[key], width, pad_values.get(key, 0), padding_side) for f in features]
        batch[key] = torch.tensor(rows, dtype=torch.long)
    masks = [_pad([1] * len(f["input_ids"]), width, 0, padding_side) for f in features]
    batch["attention_mask"] = torch.tensor(masks, dtype=torch.long)
    image_keys = sorted({k for f in features for k in f if k not in TOKEN_KEYS})
    for key in image_keys:
        batch[key] = torch.cat([f[key] for f in features if key in f], dim=0)
    return batch


def _pad(values: list[int], width: int, value: int, side: str) -> list[int]:
    padding = [value] * (width - len(values))
    return padding + list(values) if side == "left" else list(values) + padding


def pad_token_id(processor) -> int:
    """The id used for padding (the pad token, else EOS)."""
    tokenizer = processor.tokenizer
    pid = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pid is None:
        raise UserError("the tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token")
    return pid


def encode_batch(processor, examples: Sequence[tuple[str, ImageInput, str]], padding_side: str = "right") -> dict:
    """A training batch for `model(**batch)`: input_ids, attention_mask, labels (+ image inputs when present)."""
    features = [encode_example(processor, q, img, a) for q, img, a in examples]
    return pad_features(features, pad_token_id(processor), padding_side)


def encode_prompts(processor, prompts: Sequence[tuple[str, ImageInput]], padding_side: str = "left",
                   prefixes: Sequence[str] | None = None) -> dict:
    """A batch of generation prompts (left padded by default, so every row ends at the last position)."""
    prefixes = prefixes or [""] * len(prompts)
    features = [encode_prompt(processor, q, img, prefix) for (q, img), prefix in zip(prompts, prefixes)]
    return pad_features(features, pad_token_id(processor), padding_side)


def move_batch(batch: dict, model: torch.nn.Module) -> dict:
    """Move a batch to the model's device; floating inputs (pixel_values) take the model's dtype."""
    param = next(model.parameters())
    return {
        k: v.to(param.device, dtype=param.dtype if v.is_floating_point() else None) for k, v in batch.items()
    }
