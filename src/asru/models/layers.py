"""Find the language model's decoder layers (the residual stream that steering reads and writes).

Why one place: Qwen3-VL, Qwen2.5-VL, Qwen2-VL and LLaVA nest their text decoder differently, and PEFT wraps
all of them once more; every steering and unlearning stage asks the same question through these functions.
"""

from __future__ import annotations

import torch
from torch import nn

from asru.errors import UserError

# Attribute paths from the (unwrapped) top-level model to its text decoder's block list, most common first.
_LAYER_PATHS = (
    "model.language_model.layers",  # Qwen3-VL, Qwen2.5-VL, Qwen2-VL, LLaVA (transformers 5.x)
    "language_model.model.layers",  # LLaVA-style checkpoints with a causal-LM text tower
    "language_model.layers",  # bare multimodal base models (Qwen3VLModel, LlavaModel)
    "model.text_model.layers",
    "model.layers",  # plain decoder-only LMs
)


def unwrap(model: nn.Module) -> nn.Module:
    """The underlying transformers model of a DDP- or PEFT-wrapped model (the model itself otherwise): the
    Trainer wraps the model in DistributedDataParallel in a multi-process run, and its hooks must reach the
    layers inside."""
    while isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The text decoder's blocks, in order; their outputs are the residual stream after each block."""
    base = unwrap(model)
    for path in _LAYER_PATHS:
        layers = _get_path(base, path)
        if isinstance(layers, nn.ModuleList) and len(layers) > 0:
            return layers
    raise UserError(
        f"cannot find the decoder layers of {type(base).__name__}; supported: Qwen3-VL, Qwen2.5-VL, Qwen2-VL, "
        "LLaVA-style models (and PEFT-wrapped versions of them)"
    )


def _get_path(obj: object, path: str) -> object | None:
    for name in path.split("."):
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


def num_layers(model: nn.Module) -> int:
    """How many decoder layers the text model has."""
    return len(decoder_layers(model))


def hidden_size(model: nn.Module) -> int:
    """Width of the text residual stream (the size of a steering vector)."""
    config = unwrap(model).config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text_config.hidden_size)


def check_layer(model: nn.Module, layer: int) -> int:
    """Return `layer` if it indexes a decoder layer, else a UserError that names the valid range."""
    n = num_layers(model)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n:
        raise UserError(f"layer {layer!r} is out of range: this model has {n} decoder layers, valid layers are 0..{n - 1}")
    return layer


def layer_mlp(model: nn.Module, layer: int) -> nn.Module:
    """The feed-forward (MLP) module of decoder layer `layer`."""
    block = decoder_layers(model)[check_layer(model, layer)]
    mlp = getattr(block, "mlp", None)
    if mlp is None:
        mlp = getattr(block, "feed_forward", None)
    if not isinstance(mlp, nn.Module):
        raise UserError(f"decoder layer {layer} of {type(unwrap(model)).__name__} has no `mlp` module")
    return mlp


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter (where inputs must go)."""
    return next(model.parameters()).device
