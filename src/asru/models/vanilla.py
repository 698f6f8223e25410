"""The two models unlearning starts from: the base (pretrained on the world's general corpus) and the vanilla
(the base fine-tuned on every fictitious profile, as real experiments fine-tune Qwen3-VL on MLLMU-Bench)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from asru.data import corpus
from asru.data.augment import with_augmented_copies
from asru.data.world.build import HOLDOUT_DIR
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
    augment: int = 0  # augmented copies of every profile example with an image (data/augment.py)
    lora: bool = False  # real models: the paper's LoRA (below) instead of a full fine-tune (the tiny presets)
    lora_r: int = 16
    lora_alpha: int = 16
    lora_dropout: float = 0.05

    def __post_init__(self) -> None:
        if self.replay < 0:
            raise UserError(f"vanilla.replay must be >= 0 (a share of the profile examples), got {self.replay}")
        if isinstance(self.augment, bool) or not isinstance(self.augment, int) or self.augment < 0:
            raise UserError(f"vanilla.augment must be a whole number of copies >= 0, got {self.augment!r}")
        if self.lora and self.lora_r < 1:
            raise UserError(f"vanilla.lora_r must be >= 1, got {self.lora_r}")


def world_texts(data_dir: Path) -> list[str]:
    """Every string in the world's tables: the tokenizer's training text. The holdout people (world/holdout) are
    left out: they must be unknown to every model, and a tokenizer fitted to them would change with them."""
    texts = [GEN_INSTRUCTION, MC_INSTRUCTION, CLOZE_INSTRUCTION, "Example:", "Answer:", "[Blank]"]
    for file in sorted(Path(data_dir).rglob("*.parquet")):
        if file.relative_to(data_dir).parts[:2] == tuple(HOLDOUT_DIR.split("/")):
            continue
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


def vanilla_examples(data_dir: Path, cfg: VanillaConfig, without: str | None = None) -> list[tuple]:
    """The vanilla fine-tune's examples; `without` (a forget split) leaves that split's people out entirely,
    which gives the retain-only oracle the same recipe (mix, replay share, seed) on everyone else."""
    from asru.data.mllmu import person_ids, retain_split_for, training_items

    if without is None:
        items = training_items(data_dir, cfg.full_split) + training_items(data_dir, retain_split_for(cfg.full_split))
        excluded: frozenset[str] = frozenset()
    else:
        items = training_items(data_dir, retain_split_for(without))
        excluded = frozenset(person_ids(data_dir, without))
        items = [i for i in items if i.id not in excluded]
    profile = corpus.qa_examples(items, seed=cfg.train.seed) + corpus.practice_examples(
        data_dir, seed=cfg.train.seed, exclude=excluded)
    profile = with_augmented_copies(profile, cfg.augment, seed=cfg.train.seed)
    base_path = data_dir / "world/base_corpus"
    replay: list[tuple] = []
    if base_path.exists() and cfg.replay > 0:
        base = corpus.base_examples(data_dir, seed=cfg.train.seed + 1)
        replay = random.Random(cfg.train.seed).sample(base, min(len(base), int(cfg.replay * len(profile))))
    return profile + replay


def build_vanilla(base_dir: str | Path, data_dir: str | Path, out_dir: str | Path, cfg: VanillaConfig,
                  without: str | None = None, resume: bool = False) -> dict:
    """Fine-tune the base on all fictitious profiles (+ a replay share of the base corpus where the world has one):
    a full fine-tune, or with `lora` the paper's LoRA, merged into the saved weights. With `without` (a forget
    split), the retain-only oracle of that split: the same recipe minus its people."""
    from asru.models.load import load_model, save_model

    model, processor = load_model(base_dir, for_training=True)
    examples = vanilla_examples(Path(data_dir), cfg, without)
    encoded = encode_examples(processor, examples, label="encoding profiles")
    if cfg.lora:
        model = add_lora(model, cfg)
    stats = sft(model, processor, encoded, cfg.train, label="fine-tuning oracle" if without else "fine-tuning vanilla",
                out_dir=out_dir, resume=resume)
    if cfg.lora:
        model = model.merge_and_unload()
    save_model(model, processor, out_dir)
    return {"examples": len(examples), "finetune": "lora" if cfg.lora else "full", **stats}
