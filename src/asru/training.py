"""Supervised fine-tuning on (prompt, image, answer) examples: the loop behind `asru base` and `asru vanilla`.

Examples are encoded once (the image processor is the slow part on a CPU), then batched by padding; the loss
covers only the answer tokens and the closing <|im_end|>, so the model learns what to say and when to stop.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

from asru.errors import UserError
from asru.models.chat import build_prompt, to_pil
from asru.progress import progress_bar

IGNORE = -100


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class TrainingDiverged(UserError):
    """The loss became NaN/inf; the caller keeps the last good checkpoint."""


def encode_examples(processor, examples: Sequence[tuple[str, bytes | None, str]], chunk: int = 256,
                    label: str = "encoding") -> list[dict]:
    """Tokenize each example once: prompt ids (with image tokens expanded) + answer ids, and pixel values."""
    tokenizer = processor.tokenizer
    end = tokenizer.eos_token or "<|im_end|>"
    encoded: list[dict] = []
    with progress_bar(label, total=len(examples)) as advance:
        for start in range(0, len(examples), chunk):
            part = examples[start:start + chunk]
            for has_image in (True, False):
                group = [(i, ex) for i, ex in enumerate(part) if (ex[1] is not None) == has_image]
                if not group:
                    continue
                prompts = [build_prompt(processor, ex[0], has_image) for _, ex in group]
                images = [to_pil(ex[1]) for _, ex in group] if has_image else None
                batch = processor(text=prompts, images=images, return_tensors=None, padding=False)
                answers = tokenizer([ex[2] + end for _, ex in group], add_special_tokens=False)["input_ids"]
                pixels = batch.get("pixel_values")
                grids = batch.get("image_grid_thw")
                offset = 0
                for j, ((_, ex), prompt_ids, answer_ids) in enumerate(zip(group, batch["input_ids"], answers)):
                    item = {"input_ids": list(prompt_ids) + list(answer_ids),
                            "labels": [IGNORE] * len(prompt_ids) + list(answer_ids)}
                    if has_image:
                        grid = torch.as_tensor(grids[j])
                        n = int(grid.prod())
                        item["pixel_values"] = torch.as_tensor(pixels[offset:offset + n])
                        item["image_grid_thw"] = grid.view(1, 3)
                        offset += n
                        item["mm_token_type_ids"] = list(batch["mm_token_type_ids"][j]) + [0] * len(answer_ids)
                    encoded.append(item)
            advance(len(part))
    return encoded


def collate(batch: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of encoded examples into model inputs (images concatenated in batch order)."""
    ids = [torch.tensor(b["input_ids"]) for b in batch]
    out = {
        "input_ids": pad_sequence(ids, batch_first=True, padding_value=pad_id),
        "labels": pad_sequence([torch.tensor(b["labels"]) for b in batch], batch_first=True, padding_value=IGNORE),
        "attention_mask": pad_sequence([torch.ones(len(i), dtype=torch.long) for i in ids], batch_first=True),
    }
    with_images = [b for b in batch if "pixel_values" in b]
    if with_images:
        out["pixel_values"] = torch.cat([b["pixel_values"] for b in with_images])
        out["image_grid_thw"] = torch.cat([b["image_grid_thw"] for b in with_images])
        mm = [torch.tensor(b.get("mm_token_type_ids", [0] * len(b["input_ids"]))) for b in batch]
        out["mm_token_type_ids"] = pad_sequence(mm, batch_first=True, padding_value=0)
    return out


def _schedule(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def batches(encoded: list[dict], batch_size: int, seed: int):
    """Endless shuffled batches (a new permutation each epoch)."""
    rng = random.Random(seed)
    order: list[int] = []
    while True:
        if len(order) < batch_size:
            fresh = list(range(len(encoded)))
            rng.shuffle(fresh)
            order += fresh
        chunk, order = order[:batch_size], order[batch_size:]
        yield [encoded[i] for i in chunk]


def sft(model, processor, encoded: list[dict], cfg: TrainConfig, label: str = "training") -> dict:
    """Train `model` in place for cfg.steps steps; returns loss statistics for the manifest."""
    if not encoded:
        raise UserError(f"{label}: no training examples; check the data directory")
    torch.manual_seed(cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _schedule(s, cfg))
    pad_id = processor.tokenizer.pad_token_id
    device = next(model.parameters()).device
    model.train()
    losses: list[float] = []
    stream = batches(encoded, cfg.batch_size, cfg.seed)
    with progress_bar(label, total=cfg.steps) as advance:
        for step in range(cfg.steps):
            inputs = {k: v.to(device) for k, v in collate(next(stream), pad_id).items()}
            loss = model(**inputs).loss
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"{label}: loss became {loss.item()} at step {step}; lower the learning rate")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            advance(1, loss=f"{loss.item():.3f}")
    model.eval()
    tail = losses[-50:]
    return {"steps": cfg.steps, "first_loss": losses[0], "final_loss": sum(tail) / len(tail)}
