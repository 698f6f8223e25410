"""Teacher-forced token scores of many (prompt, image, answer) examples in few forward passes.

Why its own module (beside models/score.py): the likelihood metrics need more than a sum per answer — each answer
token's log-probability (Min-K%), the mean and spread of the model's log-probabilities at that position (Min-K%++),
and the log-probabilities of a few probe tokens at the first answer position (the MC letters) — and they score
the same prompt with several answers, so the prompt (and its image, the slow part on a CPU) is encoded once.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from asru.errors import UserError
from asru.models.batch import (IGNORE_INDEX, encode_prompt, move_batch, pad_features, pad_token_id, turn_end_token,
                               with_answer)
from asru.models.chat import ImageInput
from asru.models.generate import chunks, eval_mode


@dataclass
class TokenScores:
    """One scored answer: natural-log probabilities of its tokens (answer + closing token), optionally the mean
    `mu` and standard deviation `sigma` of log p over the vocabulary at each of those positions, and `probe`:
    log p of each probe id at the first answer position."""

    logprobs: list[float]
    mu: list[float] = field(default_factory=list)
    sigma: list[float] = field(default_factory=list)
    probe: list[float] = field(default_factory=list)

    @property
    def sum(self) -> float:
        return float(sum(self.logprobs))

    @property
    def n(self) -> int:
        return len(self.logprobs)

    @property
    def mean(self) -> float:
        return self.sum / max(self.n, 1)


def max_positions(model) -> int | None:
    """How many positions the model's language part holds (None when the config does not say)."""
    config = getattr(model, "config", None)
    for cfg in (getattr(config, "text_config", None), config):
        value = getattr(cfg, "max_position_embeddings", None)
        if isinstance(value, int):
            return value
    return None


class PromptCache:
    """encode_prompt results by (prompt, image identity): options of one question share one encoding."""

    def __init__(self, processor):
        self.processor = processor
        self._cache: dict[tuple[str, int | None], dict] = {}

    def example(self, prompt: str, image: ImageInput, answer: str) -> dict:
        key = (prompt, None if image is None else id(image))
        if key not in self._cache:
            self._cache[key] = encode_prompt(self.processor, prompt, image)
        return with_answer(self.processor, self._cache[key], answer)


@torch.inference_mode()
def score_answers(model, processor, examples: Sequence[tuple[str, ImageInput, str]], *, batch_size: int = 32,
                  stats: bool = False, probe_ids: Sequence[int] | None = None) -> list[TokenScores]:
    """Score every (prompt, image, answer), in input order: see TokenScores. `stats` adds mu/sigma (Min-K%++);
    `probe_ids` adds the probe tokens' log-probabilities at the first answer position."""
    cache = PromptCache(processor)
    features = [cache.example(p, img, a) for p, img, a in examples]
    limit = max_positions(model)
    longest = max((len(f["input_ids"]) for f in features), default=0)
    if limit is not None and longest > limit:
        worst = max(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
        raise UserError(f"the model holds {limit} positions but prompt + answer of {examples[worst][0][:60]!r} "
                        f"needs {longest} tokens; evaluate a model with a longer context (max_position_embeddings)")
    order = sorted(range(len(features)), key=lambda i: (examples[i][1] is not None, len(features[i]["input_ids"])))
    out: list[TokenScores | None] = [None] * len(features)
    pad = pad_token_id(processor)
    with eval_mode(model):
        for idx in chunks(order, batch_size):
            for i, score in zip(idx, _score_batch(model, [features[i] for i in idx], pad, stats, probe_ids)):
                out[i] = score
    return out  # type: ignore[return-value]


def _score_batch(model, features: list[dict], pad: int, stats: bool, probe_ids) -> list[TokenScores]:
    """Left padding aligns every answer to the end, so only the last k+1 positions need logits."""
    batch = move_batch(pad_features(features, pad, padding_side="left"), model)
    labels = batch.pop("labels")
    k = max(sum(label != IGNORE_INDEX for label in f["labels"]) for f in features)
    logits = model(**batch, logits_to_keep=k + 1).logits[:, -(k + 1):-1].float()
    logp = torch.log_softmax(logits, dim=-1)
    targets = labels[:, -k:]
    mask = targets != IGNORE_INDEX
    token_lp = logp.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    if stats:
        p = logp.exp()
        mu = (p * logp).sum(-1)
        sigma = (p * (logp - mu.unsqueeze(-1)).square()).sum(-1).sqrt()  # centred: no cancellation
    scores = []
    for row in range(len(features)):
        m = mask[row]
        first = int(m.nonzero()[0]) if m.any() else None
        scores.append(TokenScores(
            token_lp[row][m].tolist(),
            mu[row][m].tolist() if stats else [],
            sigma[row][m].tolist() if stats else [],
            logp[row, first, list(probe_ids)].tolist() if probe_ids and first is not None else []))
    return scores


@torch.inference_mode()
def score_options(model, processor, groups: Sequence[tuple[str, ImageInput, Sequence[str]]], *,
                  batch_size: int = 32) -> list[list[TokenScores]]:
    """Score several answers to one prompt, for every (prompt, image, answers): the prompt (and its image, the
    expensive part) goes through the model once, its key/value cache is repeated for each answer, and only the
    answers' tokens are run on top. Same numbers as `score_answers` on every (prompt, image, answer)
    (tests/test_likelihood.py checks it), for about 1/len(answers) of the vision cost."""
    if not groups:
        return []
    tokenizer = processor.tokenizer
    end = turn_end_token(tokenizer)
    prompts = [encode_prompt(processor, p, img) for p, img, _ in groups]
    answers = [[tokenizer(a + end, add_special_tokens=False)["input_ids"] for a in answers] for _, _, answers in groups]
    limit = max_positions(model)
    for k, (enc, conts) in enumerate(zip(prompts, answers)):
        need = len(enc["input_ids"]) + max(map(len, conts))
        if limit is not None and need > limit:
            raise UserError(f"the model holds {limit} positions but prompt + answer of {groups[k][0][:60]!r} "
                            f"needs {need} tokens; evaluate a model with a longer context (max_position_embeddings)")
    out: list[list[TokenScores]] = [[] for _ in groups]
    order = sorted(range(len(groups)), key=lambda i: (groups[i][1] is not None, len(prompts[i]["input_ids"])))
    pad = pad_token_id(processor)
    with eval_mode(model):
        for size in {len(a) for a in answers}:  # one repeat factor per batch
            same = [i for i in order if len(answers[i]) == size]
            for idx in chunks(same, max(1, batch_size // size)):
                scored = _options_batch(model, [prompts[i] for i in idx], [answers[i] for i in idx], pad, size)
                if scored is None:  # no cached-prefix path for this batch: every answer in full
                    flat = score_answers(model, processor, [(groups[i][0], groups[i][1], a) for i in idx
                                                            for a in groups[i][2]], batch_size=batch_size)
                    scored = [flat[k * size:(k + 1) * size] for k in range(len(idx))]
                for i, scores in zip(idx, scored):
                    out[i] = scores
    return out


def _options_batch(model, prompts: list[dict], answers: list[list[list[int]]], pad: int,
                   r: int) -> list[list[TokenScores]] | None:
    """The cached-prefix path, or None for a model that returns no key/value cache (then: one pass per answer).

    Positions: a Qwen-VL prompt pass over an image sets M-RoPE offsets (`rope_deltas`), from which the answer
    tokens' positions follow exactly as in one pass over prompt + answer; otherwise a plain forward numbers
    positions by cache position, which a forward on top of the cache continues by itself.
    """
    inner = getattr(model, "model", None)
    batch = move_batch(pad_features(prompts, pad, padding_side="left"), model)
    if inner is not None and hasattr(inner, "rope_deltas"):
        inner.rope_deltas = None  # recomputed by this prompt pass when it has images; a stale value must not survive
    first = model(**batch, use_cache=True, logits_to_keep=1)
    keys = first.keys() if hasattr(first, "keys") else vars(first)
    name = next((k for k in ("cache", "past_key_values") if k in keys), None)  # renamed in transformers 5.x
    cache = getattr(first, name) if name else None
    if cache is None:
        return None
    first_logp = torch.log_softmax(first.logits[:, -1].float(), dim=-1)
    cache.batch_repeat_interleave(r)
    conts = [c for group in answers for c in group]
    width = max(map(len, conts))
    device = batch["input_ids"].device
    ids = torch.tensor([c + [pad] * (width - len(c)) for c in conts], device=device)
    cont_mask = torch.tensor([[1] * len(c) + [0] * (width - len(c)) for c in conts], device=device)
    mask = torch.cat([batch["attention_mask"].repeat_interleave(r, dim=0), cont_mask], dim=1)
    deltas = getattr(inner, "rope_deltas", None)
    positions = _positions(deltas, mask, width, r) if isinstance(deltas, torch.Tensor) else None
    # transformers renames past_key_values to `cache` (5.x, removed in 5.40): pass whichever the model takes
    cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False,
                   **{cache_kw: cache}).logits
    logp = torch.log_softmax(logits.float(), dim=-1)
    scores = []
    for j, c in enumerate(conts):
        head = first_logp[j // r, c[0]]
        rest = logp[j, torch.arange(len(c) - 1, device=device), torch.tensor(c[1:], dtype=torch.long, device=device)]
        scores.append(TokenScores([float(head), *rest.tolist()]))
    return [scores[k * r:(k + 1) * r] for k in range(len(answers))]


def _positions(rope_deltas: torch.Tensor, mask: torch.Tensor, width: int, r: int) -> torch.Tensor:
    """M-RoPE position ids (3 x rows x width) of the answer tokens after a left-padded prompt: the row's count of
    real tokens plus its offset `rope_deltas` (set by the prompt's forward pass), as in one pass."""
    positions = (mask.long().cumsum(-1) - 1)[:, -width:]
    deltas = rope_deltas.to(positions.device).repeat_interleave(r, dim=0)
    return (positions + deltas).unsqueeze(0).expand(3, -1, -1)
