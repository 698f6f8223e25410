"""A tiny but real Qwen3-VL (model, tokenizer, processor) built from a config, so everything runs on a CPU.

Why: the whole pipeline (pretrain -> fine-tune -> unlearn -> evaluate) must run anywhere in minutes, with
exactly the classes and file formats a real Qwen3-VL checkpoint uses; nothing here is a look-alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    PreTrainedTokenizerFast,
    Qwen2VLImageProcessor,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
)

from asru.errors import UserError

PAD = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
SPECIAL_TOKENS = [PAD, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD]

# Qwen2-VL / Qwen3-VL chat format without a default system prompt (keeps the tiny model's prompts short).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Texts the chat template always emits; training on them gives the role words their own tokens.
_TEMPLATE_TEXTS = ["user\n", "assistant\n", "system\n"]


def build_tokenizer(texts: Iterable[str], vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts` with Qwen's special tokens and chat template.

    Why byte-level: every string (any language, emoji, stray bytes) encodes and decodes exactly, with no UNK,
    so generated answers can be compared to references character for character.
    """
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_with_template_texts(texts), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=None, eos_token=IM_END, pad_token=PAD, unk_token=None,
        model_max_length=4096,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _with_template_texts(texts: Iterable[str]) -> Iterable[str]:
    yield from _TEMPLATE_TEXTS
    yield from texts


@dataclass
class TinyConfig:
    """Shape of the tiny Qwen3-VL (about 1.5 M parameters with a 2k vocabulary)."""

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 8  # 8 narrow heads: option-lookup (multiple choice) circuits form far sooner than with 4 wide ones
    num_kv_heads: int = 4
    head_dim: int = 16
    intermediate_size: int = 384
    mrope_section: list[int] = field(default_factory=lambda: [3, 3, 2])  # sums to head_dim / 2
    rope_theta: float = 10_000.0  # prompts are ~100 tokens; Qwen3-VL's 5e6 leaves most rotary pairs static here
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = True
    vision_depth: int = 2
    vision_hidden_size: int = 64
    vision_heads: int = 2
    vision_intermediate_size: int = 128
    patch_size: int = 16
    spatial_merge_size: int = 2
    temporal_patch_size: int = 2
    deepstack_visual_indexes: list[int] = field(default_factory=lambda: [0, 1])
    image_size: int = 64


def _qwen3vl_config(tokenizer: PreTrainedTokenizerFast, cfg: TinyConfig) -> Qwen3VLConfig:
    """Translate TinyConfig into the exact config keys transformers' Qwen3-VL reads (rope_parameters, deepstack)."""
    ids = {tok: _token_id(tokenizer, tok) for tok in SPECIAL_TOKENS}
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": cfg.rope_theta,
            "mrope_section": list(cfg.mrope_section),
            "mrope_interleaved": True,
        },
        pad_token_id=ids[PAD],
        eos_token_id=ids[IM_END],
        bos_token_id=None,
        tie_word_embeddings=cfg.tie_word_embeddings,
    )
    grid_side = cfg.image_size // cfg.patch_size
    vision = dict(
        depth=cfg.vision_depth,
        hidden_size=cfg.vision_hidden_size,
        intermediate_size=cfg.vision_intermediate_size,
        num_heads=cfg.vision_heads,
        patch_size=cfg.patch_size,
        spatial_merge_size=cfg.spatial_merge_size,
        temporal_patch_size=cfg.temporal_patch_size,
        out_hidden_size=cfg.hidden_size,
        num_position_embeddings=grid_side * grid_side,
        deepstack_visual_indexes=list(cfg.deepstack_visual_indexes),
    )
    return Qwen3VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids[IMAGE_PAD],
        video_token_id=ids[VIDEO_PAD],
        vision_start_token_id=ids[VISION_START],
        vision_end_token_id=ids[VISION_END],
        tie_word_embeddings=cfg.tie_word_embeddings,
    )


def _token_id(tokenizer: PreTrainedTokenizerFast, token: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise UserError(f"tokenizer has no {token} token; build it with asru.models.tiny.build_tokenizer")
    return token_id


def build_tiny_model(
    tokenizer: PreTrainedTokenizerFast, cfg: TinyConfig | None = None, seed: int = 0
) -> Qwen3VLForConditionalGeneration:
    """A randomly initialised `Qwen3VLForConditionalGeneration` whose token ids match `tokenizer`.

    Initialisation uses its own seeded RNG so the same (tokenizer, cfg, seed) always gives the same weights,
    without disturbing the caller's global RNG state.
    """
    cfg = cfg or TinyConfig()
    config = _qwen3vl_config(tokenizer, cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.generation_config.bos_token_id = None
    return model


def build_processor(
    tokenizer: PreTrainedTokenizerFast,
    image_size: int = 64,
    patch_size: int = 16,
    merge_size: int = 2,
    temporal_patch_size: int = 2,
) -> Qwen3VLProcessor:
    """A `Qwen3VLProcessor` that turns every square image into `image_size`x`image_size` pixels.

    min_pixels = max_pixels = image_size**2 makes the Qwen resize land on exactly that size, so a 64x64 image
    is a 4x4 patch grid and 4 image tokens after the 2x2 merge, whatever the input resolution.
    """
    factor = patch_size * merge_size
    if image_size <= 0 or image_size % factor:
        raise UserError(f"image_size {image_size} must be a positive multiple of patch_size*merge_size = {factor}")
    pixels = image_size * image_size
    common = dict(
        patch_size=patch_size,
        merge_size=merge_size,
        temporal_patch_size=temporal_patch_size,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    image_processor = Qwen2VLImageProcessor(size={"shortest_edge": pixels, "longest_edge": pixels}, **common)
    video_processor = Qwen3VLVideoProcessor(
        size={"shortest_edge": pixels * temporal_patch_size, "longest_edge": pixels * 64}, **common
    )
    template = tokenizer.chat_template or CHAT_TEMPLATE
    return Qwen3VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor, chat_template=template
    )


def save_tiny(model: Qwen3VLForConditionalGeneration, processor: Qwen3VLProcessor, out_dir: str | Path) -> Path:
    """Write a standard `save_pretrained` directory that `AutoModelForImageTextToText` / `AutoProcessor` load."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_tiny_qwen25vl(tokenizer: PreTrainedTokenizerFast, seed: int = 0):
    """A random tiny `Qwen2_5_VLForConditionalGeneration` and its processor (56x56 images -> 4 tokens).

    Why: proves that layer discovery, collation, scoring and steering are not Qwen3-VL specific.
    """
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLVideoProcessor,
    )

    text = dict(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [4, 6, 6]},
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
        tie_word_embeddings=True,
    )
    vision = dict(
        depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14, spatial_merge_size=2,
        temporal_patch_size=2, window_size=56, out_hidden_size=64, fullatt_block_indexes=[1],
    )
    config = Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, tie_word_embeddings=True,
        image_token_id=_token_id(tokenizer, IMAGE_PAD), video_token_id=_token_id(tokenizer, VIDEO_PAD),
        vision_start_token_id=_token_id(tokenizer, VISION_START), vision_end_token_id=_token_id(tokenizer, VISION_END),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config)
    common = dict(patch_size=14, merge_size=2, temporal_patch_size=2)
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(size={"shortest_edge": 56 * 56, "longest_edge": 56 * 56}, **common),
        video_processor=Qwen2VLVideoProcessor(**common),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )
    return model, processor


LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ 'USER: ' if message['role'] == 'user' else 'ASSISTANT: ' }}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|image_pad|>\n{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{{ ' ' if message['role'] == 'user' else '<|im_end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def build_tiny_llava(tokenizer: PreTrainedTokenizerFast, seed: int = 0):
    """A random tiny `LlavaForConditionalGeneration` (CLIP vision + Llama text) and its `LlavaProcessor`.

    32x32 images, 16-pixel patches: 4 image tokens (the CLS token is dropped). `<|image_pad|>` is the image token.
    """
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=16
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=_token_id(tokenizer, IMAGE_PAD),
        vision_feature_select_strategy="default", vision_feature_layer=-1, image_seq_length=4,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=16, vision_feature_select_strategy="default",
        image_token=IMAGE_PAD, num_additional_image_tokens=1, chat_template=LLAVA_CHAT_TEMPLATE,
    )
    return model, processor
