"""Read and write the residual stream of one decoder layer with forward hooks.

Why hooks: they work unchanged on every supported architecture (and under PEFT), need no model surgery,
and are removed without a trace, so a steered model is the same object as the unsteered one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch

from asru.models.batch import encode_prompts, move_batch
from asru.models.chat import ImageInput
from asru.models.generate import chunks, eval_mode
from asru.models.layers import check_layer, decoder_layers, hidden_size

Gate = Callable[[torch.Tensor], torch.Tensor]


class _Captured(Exception):
    """Raised by the capture hook to skip the layers after the one being read (they cannot change it)."""


def _hidden(output):
    """The hidden-state tensor of a decoder layer's output (a tensor, or a tuple whose first item it is)."""
    return output[0] if isinstance(output, tuple) else output


def _with_hidden(output, hidden: torch.Tensor):
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


@torch.inference_mode()
def last_prompt_hidden(
    model, processor, prompts: Sequence[tuple[str, ImageInput]], layer: int, batch_size: int = 32
) -> torch.Tensor:
    """Output of decoder layer `layer` at each prompt's last token (the end of the generation prompt).

    Returns a float32 CPU tensor [N, hidden]. Prompts are left padded, so position -1 is every row's last
    real token (checked against the attention mask); this is the state from which the answer's first token
    is predicted. Steering hooks already active on the model (`add_to_layer`) are included.
    """
    check_layer(model, layer)
    rows: list[torch.Tensor] = []
    with eval_mode(model):
        for idx in chunks(list(range(len(prompts))), batch_size):
            batch = move_batch(encode_prompts(processor, [prompts[i] for i in idx], padding_side="left"), model)
            if not bool(batch["attention_mask"][:, -1].all()):
                raise RuntimeError("left padding failed: a prompt does not end at the last position")
            rows.append(layer_last_state(model, layer, batch))
    if not rows:
        return torch.empty(0, hidden_size(model))
    return torch.cat(rows).float().cpu()


def layer_last_state(model, layer: int, batch: dict) -> torch.Tensor:
    """Output of decoder layer `layer` at the last position of each row; the forward pass stops right after it.

    Keeps the autograd graph when called with gradients on (activation redirection trains through it)."""
    return layer_states(model, layer, batch)[:, -1, :]


def layer_states(model, layer: int, batch: dict) -> torch.Tensor:
    """Output of decoder layer `layer` at every position [B, T, H]; the forward pass stops right after it."""
    captured: list[torch.Tensor] = []

    def hook(module, args, output):
        captured.append(_hidden(output))
        raise _Captured

    handle = decoder_layers(model)[layer].register_forward_hook(hook)
    try:
        model(**batch, use_cache=False)
    except _Captured:
        pass
    finally:
        handle.remove()
    return captured[0]


@contextmanager
def add_to_layer(model, layer: int, vector: torch.Tensor, gate: Gate | None = None) -> Iterator[None]:
    """Within the block, add `vector` to layer `layer`'s output at every position of every forward pass.

    `gate(hidden) -> [B, 1, 1]` optionally scales the vector per example from the layer's own output (for
    test-time steering that fires only on some inputs). The hook is removed on exit, even after an error.
    """
    check_layer(model, layer)
    if vector.dim() != 1 or vector.shape[0] != hidden_size(model):
        raise ValueError(f"steering vector must have shape [{hidden_size(model)}], got {list(vector.shape)}")

    def hook(module, args, output):
        hidden = _hidden(output)
        delta = vector.to(hidden.device, hidden.dtype)
        if gate is not None:
            delta = gate(hidden).to(hidden.dtype) * delta
        return _with_hidden(output, hidden + delta)

    # prepend: run before transformers' own output-capturing hooks, so output_hidden_states sees the steered state
    handle = decoder_layers(model)[layer].register_forward_hook(hook, prepend=True)
    try:
        yield
    finally:
        handle.remove()


@torch.inference_mode()
def all_layers_last_hidden(
    model, processor, prompts: Sequence[tuple[str, ImageInput]], batch_size: int = 32
) -> torch.Tensor:
    """Every decoder layer's output at each prompt's last token: float32 CPU tensor [layers, N, hidden].

    One forward pass per batch with a capture hook on every layer (hooks, not `output_hidden_states`, whose last
    entry is after the final norm on some architectures). Active steering/ablation hooks are included."""
    layers = decoder_layers(model)
    rows: list[list[torch.Tensor]] = [[] for _ in layers]

    def capture(index: int):
        def hook(module, args, output):
            rows[index].append(_hidden(output)[:, -1, :].float().cpu())
        return hook

    handles = [layer.register_forward_hook(capture(i)) for i, layer in enumerate(layers)]
    try:
        with eval_mode(model):
            for idx in chunks(list(range(len(prompts))), batch_size):
                batch = move_batch(encode_prompts(processor, [prompts[i] for i in idx], padding_side="left"), model)
                model(**batch, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    if not prompts:
        return torch.empty(len(layers), 0, hidden_size(model))
    return torch.stack([torch.cat(r) for r in rows])


@contextmanager
def project_out(model, directions: dict[int, torch.Tensor]) -> Iterator[None]:
    """Within the block, remove each direction's component from its layer's output at every position:
    h <- h - (h . d) d with d unit length (directional ablation, Arditi et al. 2024). `{layer: vector}`; zero
    vectors are skipped. Hooks are appended, so they act after any steering already added at that layer."""
    handles = []
    try:
        for layer, vector in directions.items():
            check_layer(model, layer)
            norm = float(vector.float().norm())
            if norm == 0.0:
                continue
            unit = (vector.float() / norm)

            def hook(module, args, output, unit=unit):
                hidden = _hidden(output)
                d = unit.to(hidden.device, hidden.dtype)
                return _with_hidden(output, hidden - (hidden @ d).unsqueeze(-1) * d)

            handles.append(decoder_layers(model)[layer].register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()
