"""Teacher-forced token scores of many (prompt, image, answer) examples in few forward passes.

Why its own module (beside models/score.py): the likelihood metrics need more than a sum per answer — each answer
token's log-probability (Min-K%), the mean and spread of the model's log-probabilities at that position (Min-K%++),
and the log-probabilities of a few probe tokens at the first answer position (the MC letters) — and they score
the same prompt with several answers, so the prompt (and its image, the slow part on a CPU) is encoded once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from asru.errors import UserError
from asru.models.batch import IGNORE_INDEX, encode_prompt, move_batch, pad_features, pad_token_id, turn_end_token
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
        enc = dict(self._cache[key])
        tokenizer = self.processor.tokenizer
        completion = tokenizer(answer + turn_end_token(tokenizer), add_special_tokens=False)["input_ids"]
        n_prompt = len(enc["input_ids"])
        enc["input_ids"] = enc["input_ids"] + completion
        enc["labels"] = [IGNORE_INDEX] * n_prompt + list(completion)
        for k in ("mm_token_type_ids", "token_type_ids"):
            if k in enc:
                enc[k] = enc[k] + [0] * len(completion)
        return enc


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
