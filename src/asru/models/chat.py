"""Turn a question (and maybe an image) into the exact prompt string the model was trained to answer.

Why: generation, scoring, training and steering must all see the same prompt, built by the model's own
chat template, so a behaviour measured in one stage is the behaviour trained in another.
"""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

from asru.errors import UserError

# What an example's image may be: stored PNG/JPEG bytes, a parquet struct {"bytes": ...}, a PIL image, or None.
ImageInput = bytes | Image.Image | dict | None


def user_message(question: str, has_image: bool) -> list[dict]:
    """One user turn in the multimodal message format; the image comes before the question text."""
    content: list[dict] = [{"type": "image"}] if has_image else []
    content.append({"type": "text", "text": question})
    return [{"role": "user", "content": content}]


def build_prompt(processor, question: str, has_image: bool) -> str:
    """The chat-templated user turn followed by the assistant's generation prompt (not tokenized)."""
    messages = user_message(question, has_image)
    owner = processor if getattr(processor, "chat_template", None) else getattr(processor, "tokenizer", processor)
    if not getattr(owner, "chat_template", None):
        raise UserError("the processor has no chat template; save one with the model (chat_template.jinja)")
    return owner.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def to_pil(image: ImageInput) -> Image.Image | None:
    """Decode stored image bytes (PNG/JPEG, or a parquet struct {"bytes": ...}) into an RGB PIL image."""
    if image is None:
        return None
    if isinstance(image, dict):
        image = image.get("bytes")
        if image is None:
            raise UserError("image struct has no 'bytes' field; store images as PNG/JPEG bytes")
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _decode(bytes(image))
    raise UserError(f"cannot use a {type(image).__name__} as an image; expected PNG/JPEG bytes or a PIL image")


def _decode(data: bytes) -> Image.Image:
    if not data:
        raise UserError("image bytes are empty; store images as PNG/JPEG bytes")
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise UserError(f"cannot decode image ({len(data)} bytes, starting {data[:8]!r}): {err}") from err
