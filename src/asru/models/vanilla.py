"""The two models unlearning starts from: the base (pretrained on the world's general corpus) and the vanilla
(the base fine-tuned on every fictitious profile, as real experiments fine-tune Qwen3-VL on MLLMU-Bench)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from asru.data import corpus
from asru.data.prompts import CLOZE_INSTRUCTION, GEN_INSTRUCTION, MC_INSTRUCTION
from asru.errors import UserError
from asru.models.lora import add_lora
from asru.models.tiny import TinyConfig, build_processor, build_tiny_model, build_tokenizer, save_tiny
from asru.training import TrainConfig, encode_examples, sft


@dataclass
class BaseConfig:
    model: TinyConfig = field(default_factory=TinyConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=2400, lr=2e-3, warmup_steps=100))
    vocab_size: int = 2048


@dataclass
class VanillaConfig:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=1800, lr=1e-3, warmup_steps=50))
    replay: float = 0.5  # base-corpus examples mixed in, as a share of the profile examples (keeps old skills)
    full_split: str = "forget_15"  # forget_15 + retain_85 = every fictitious person
    lora: bool = False  # real models: the paper's LoRA (below) instead of a full fine-tune (the tiny presets)
    lora_r: int = 16
    lora_alpha: int = 16
    lora_dropout: float = 0.05

    def __post_init__(self) -> None:
        if self.lora and self.lora_r < 1:
            raise UserError(f"vanilla.lora_r must be >= 1, got {self.lora_r}")


def world_texts(data_dir: Path) -> list[str]:
    """Every string in the world's tables: the tokenizer's training text."""
    texts = [GEN_INSTRUCTION, MC_INSTRUCTION, CLOZE_INSTRUCTION, "Example:", "Answer:", "[Blank]"]
    for file in sorted(Path(data_dir).rglob("*.parquet")):
        table = pq.read_table(file)
        for name in table.column_names:
            if name in ("image", "images"):
                continue
            texts += [str(v) for v in table.column(name).to_pylist() if v]
    return texts


def build_base(data_dir: str | Path, out_dir: str | Path, cfg: BaseConfig, resume: bool = False) -> dict:
    """Build tokenizer + processor + random tiny Qwen3-VL, pretrain it on the base corpus, save it."""
    data_dir = Path(data_dir)
    tokenizer = build_tokenizer(world_texts(data_dir), cfg.vocab_size)
    processor = build_processor(tokenizer, image_size=cfg.model.image_size)
    model = build_tiny_model(tokenizer, cfg.model, seed=cfg.train.seed)
    examples = corpus.base_examples(data_dir, seed=cfg.train.seed)
    encoded = encode_examples(processor, examples, label="encoding base corpus")
    stats = sft(model, processor, encoded, cfg.train, label="pretraining base", out_dir=out_dir, resume=resume)
    save_tiny(model, processor, out_dir)
    return {"examples": len(examples), "parameters": sum(p.numel() for p in model.parameters()), **stats}


def vanilla_examples(data_dir: Path, cfg: VanillaConfig) -> list[tuple]:
    from asru.data.mllmu import retain_split_for, training_items

    items = training_items(data_dir, cfg.full_split) + training_items(data_dir, retain_split_for(cfg.full_split))
    profile = corpus.qa_examples(items, seed=cfg.train.seed) + corpus.practice_examples(data_dir, seed=cfg.train.seed)
    base_path = data_dir / "world/base_corpus"
    replay: list[tuple] = []
    if base_path.exists() and cfg.replay > 0:
        base = corpus.base_examples(data_dir, seed=cfg.train.seed + 1)
        replay = random.Random(cfg.train.seed).sample(base, min(len(base), int(cfg.replay * len(profile))))
    return profile + replay


def build_vanilla(base_dir: str | Path, data_dir: str | Path, out_dir: str | Path, cfg: VanillaConfig,
                  resume: bool = False) -> dict:
    """Fine-tune the base on all fictitious profiles (+ a replay share of the base corpus where the world has one):
    a full fine-tune, or with `lora` the paper's LoRA, merged into the saved weights."""
    from asru.models.load import load_model, save_model

    model, processor = load_model(base_dir, for_training=True)
    examples = vanilla_examples(Path(data_dir), cfg)
    encoded = encode_examples(processor, examples, label="encoding profiles")
    if cfg.lora:
        model = add_lora(model, cfg)
    stats = sft(model, processor, encoded, cfg.train, label="fine-tuning vanilla", out_dir=out_dir, resume=resume)
    if cfg.lora:
        model = model.merge_and_unload()
    save_model(model, processor, out_dir)
    return {"examples": len(examples), "finetune": "lora" if cfg.lora else "full", **stats}
