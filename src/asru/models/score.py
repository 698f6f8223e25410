"""Teacher-forced log-probabilities of given answers (truth ratios, perplexity, probability metrics).

Why it returns (sum, count) pairs: the truth ratio compares per-token averages of answers of different
lengths, perplexity needs token-weighted means over a set; both follow from the pair, a bare mean does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from asru.models.batch import IGNORE_INDEX, encode_example, move_batch, pad_features, pad_token_id
from asru.models.chat import ImageInput
from asru.models.generate import chunks, eval_mode


class AnswerScore(NamedTuple):
    """Sum of the answer tokens' log-probabilities (natural log) and how many tokens were scored."""

    sum_logprob: float
    n_tokens: int

    @property
    def mean_logprob(self) -> float:
        """Per-token average; exp(-mean_logprob) is the answer's perplexity."""
        return self.sum_logprob / max(self.n_tokens, 1)


@torch.inference_mode()
def answer_logprobs(
    model, processor, items: Sequence[tuple[str, ImageInput, str]], batch_size: int = 32
) -> list[AnswerScore]:
    """Score each `(question, image or None, answer)`: log p(answer tokens + closing token | prompt).

    The scored tokens are exactly the training labels of `encode_example` (answer plus the turn-closing
    token), so `-sum_logprob / n_tokens` equals the per-token training loss on that example.
    """
    scores: list[AnswerScore] = []
    with eval_mode(model):
        for idx in chunks(list(range(len(items))), batch_size):
            scores.extend(_score_batch(model, processor, [items[i] for i in idx]))
    return scores


def _score_batch(model, processor, items) -> list[AnswerScore]:
    """Left padding aligns every answer to the end, so only the last `k` positions need logits (saves memory)."""
    features = [encode_example(processor, q, img, a) for q, img, a in items]
    batch = move_batch(pad_features(features, pad_token_id(processor), padding_side="left"), model)
    labels = batch.pop("labels")
    k = max(sum(label != IGNORE_INDEX for label in f["labels"]) for f in features)
    logits = model(**batch, logits_to_keep=k + 1).logits[:, :-1].float()
    targets = labels[:, -k:]
    mask = targets != IGNORE_INDEX
    logprobs = torch.log_softmax(logits, dim=-1).gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    sums = (logprobs * mask).sum(dim=1)
    return [AnswerScore(float(s), int(n)) for s, n in zip(sums.tolist(), mask.sum(dim=1).tolist())]
