"""MMUnlearner: GA-Diff restricted to the weights that matter for the forget set more than for the retain set.

Why a mask: updating only the parameters salient to the forgotten knowledge, and not to what must be kept,
limits the collateral damage of gradient ascent (Huo et al., 2025). The mask is computed once, on the vanilla
model, before training.

The exact rule implemented here:
- g_f = gradient of the forget NLL (token mean, summed over forget batches, up to `mask_examples` examples),
  g_r = the same on retain examples; both on the vanilla model, parameters at their initial values.
- Only the language model's weight matrices are candidates: every 2-D parameter inside the text decoder
  blocks (attention and MLP projections). Embeddings, norms, biases, the vision tower and the projector are
  frozen (never updated).
- score = |g_f| / (|g_r| + eps), eps = 1e-8 * mean|g_r| of that tensor + 1e-12 (scale-free).
- Per weight matrix, the top ceil(mask_ratio * numel) scores are kept (mask 1), the rest are 0. Per-tensor
  rather than global top-k, so the share is exactly `mask_ratio` in every matrix and no quantile over
  billions of values is needed on a real model.
- Training is GA on forget + CE on retain with every gradient multiplied by the mask; masked tensors use
  weight decay 0 so that masked entries (zero gradient, zero Adam moments) do not move at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from asru.errors import UserError
from asru.methods.ga_diff import GradDiff
from asru.methods.gradient import GradientConfig, batch_nll, logits, to_device
from asru.models.generate import eval_mode
from asru.models.layers import decoder_layers
from asru.progress import progress_bar


@dataclass
class MMUnlearnerConfig(GradientConfig):
    mask_ratio: float = 0.5  # share of each language-model weight matrix that may be updated
    mask_examples: int = 256  # forget (and retain) examples whose gradients define the mask

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.mask_ratio <= 1:
            raise UserError(f"mmunlearner mask_ratio must be in (0, 1], got {self.mask_ratio}")
        if self.mask_examples < 1:
            raise UserError(f"mmunlearner mask_examples must be >= 1, got {self.mask_examples}")
        if self.lora:
            raise UserError("mmunlearner masks the model's own weights; set lora: false")


def candidate_parameters(model) -> dict[str, torch.nn.Parameter]:
    """The language model's weight matrices (2-D parameters inside the decoder blocks), by qualified name."""
    layer_params = {id(p) for p in decoder_layers(model).parameters()}
    return {n: p for n, p in model.named_parameters() if id(p) in layer_params and p.dim() == 2}


def saliency_mask(grad_forget: torch.Tensor, grad_retain: torch.Tensor, ratio: float) -> torch.Tensor:
    """Boolean mask keeping the top ceil(ratio * numel) entries of |g_f| / (|g_r| + eps)."""
    g_r = grad_retain.abs().float()
    eps = 1e-8 * g_r.mean() + 1e-12
    score = (grad_forget.abs().float() / (g_r + eps)).flatten()
    k = min(score.numel(), math.ceil(ratio * score.numel()))
    mask = torch.zeros_like(score, dtype=torch.bool)
    mask[torch.topk(score, k, sorted=False).indices] = True
    return mask.view_as(grad_forget)


def _grad(param: torch.nn.Parameter) -> torch.Tensor:
    return param.grad.detach() if param.grad is not None else torch.zeros_like(param)


class MMUnlearner(GradDiff):
    name = "mmunlearner"
    description = "GA on forget + CE on retain, updating only forget-salient language-model weights"
    Config = MMUnlearnerConfig

    def prepare(self, model, forget, retain, collate_fn) -> dict:
        candidates = candidate_parameters(model)
        for name, param in model.named_parameters():  # before the saliency pass: no gradients for the rest
            param.requires_grad_(name in candidates)
        self._accumulate(model, forget, collate_fn, "saliency (forget)")
        g_forget = {n: _grad(p).clone() for n, p in candidates.items()}
        self._accumulate(model, retain, collate_fn, "saliency (retain)")
        # pop as we go: at most one extra copy of the language model's weights is alive at a time
        self.masks = {n: saliency_mask(g_forget.pop(n), _grad(p), self.config.mask_ratio) for n, p in candidates.items()}
        model.zero_grad(set_to_none=True)
        self._masked = [(candidates[n], m) for n, m in self.masks.items()]
        kept = sum(int(m.sum()) for m in self.masks.values())
        total = sum(m.numel() for m in self.masks.values())
        return {"mask_share": kept / total, "mask_parameters": total}

    def _accumulate(self, model, encoded, collate_fn, label) -> None:
        """Leave in `.grad` the summed gradient of the token-mean NLL over up to `mask_examples` examples (dropout off)."""
        model.zero_grad(set_to_none=True)
        device = next(model.parameters()).device
        part = encoded[: self.config.mask_examples]
        size = self.config.batch_size
        with eval_mode(model), progress_bar(label, total=len(part)) as advance:
            for start in range(0, len(part), size):
                batch = to_device(collate_fn(part[start:start + size]), device)
                batch_nll(logits(model, batch), batch["labels"]).backward()
                advance(len(part[start:start + size]))

    def param_groups(self, params):
        return [{"params": params, "weight_decay": 0.0}]  # see the module docstring: masked entries must not decay

    def before_step(self, model) -> None:
        for param, mask in self._masked:
            if param.grad is not None:
                param.grad.mul_(mask)
