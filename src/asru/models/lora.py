"""PEFT LoRA on the language model of an image-text model: the paper's fine-tune (r 16, alpha 16, dropout 0.05, all
linear layers of the text decoder; the vision tower and projector untouched), used by `asru vanilla` on real
models and by the gradient baselines with `lora: true`. Adapters are merged before saving, so every saved model is
a plain `save_pretrained` directory."""

from __future__ import annotations

import torch

from asru.models.layers import decoder_layers


def language_model_linear_names(model) -> list[str]:
    """Qualified names of every nn.Linear inside the text decoder blocks (LoRA's targets)."""
    layers = decoder_layers(model)
    prefix = next(name for name, module in model.named_modules() if module is layers)
    return [name for name, module in model.named_modules()
            if name.startswith(prefix + ".") and isinstance(module, torch.nn.Linear)]


def add_lora(model, cfg):
    """Wrap `model` in PEFT LoRA on all linear layers of the language model; `cfg` has lora_r/alpha/dropout."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=language_model_linear_names(model), bias="none")
    return get_peft_model(model, lora)
