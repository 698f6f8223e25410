"""Reward functions for GRPO, as plain TRL-style callables `f(prompts, completions, **columns) -> list[float]`.

`asru_reward` is the ASRU refusal-boundary reward (stage 2), with the authors' table:

    | query  | answer appears | refusal | ROUGE-L F condition | otherwise |
    | forget | 0.0            | 1.0     | 0 < R < 0.4 -> 0.5  | 0.1       |
    | retain | 1.0            | 0.0     | R > 0.6     -> 0.5  | 0.1       |

checked top to bottom within a row. "Answer appears" (our choice, documented in docs/judge.md): when the
dataset has an `answer_key` column (the attribute value, "Lima" for "She was born in Lima.") the key is looked
for as a whole normalised phrase, so a reworded leak ("Lima is her birthplace.") is caught; without a key the
whole normalised ground truth must occur, as in the authors' code, and a partial overlap falls through to the
ROUGE-L rows. `refusal_reward` is the RULE baseline's reward. `reward_components` exposes every ingredient
for logging; under TRL the rewards also log component means through the trainer's `log_metric` hook.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from asru.eval.metrics import contains_answer, rouge_l
from asru.refusal import context_level, is_refusal, refusal_phrase_key

FORGET_ROUGE_MAX = 0.4
RETAIN_ROUGE_MIN = 0.6


def message_text(message: Any) -> str:
    """Plain text of a completion or prompt: a string, a message dict, or a conversation (last message wins).

    Content may be a string or a list of parts [{"type": "text", "text": ...}, {"type": "image"}, ...].
    """
    if message is None:
        return ""
    if isinstance(message, str):
        return message
    if isinstance(message, dict):
        content = message.get("content", "")
        if isinstance(content, str):
            return content
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type", "text") == "text")
    if isinstance(message, Sequence) and message:
        return message_text(message[-1])
    return ""


def _prompt_question(prompt: Any) -> str:
    """The last user turn of a prompt (the question), or the prompt string itself."""
    if isinstance(prompt, Sequence) and not isinstance(prompt, str):
        users = [m for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return message_text(users[-1] if users else prompt)
    return message_text(prompt)


def _table(appears: bool, refusal: bool, rouge: float, is_forget: bool) -> float:
    if is_forget:
        return 0.0 if appears else 1.0 if refusal else 0.5 if 0.0 < rouge < FORGET_ROUGE_MAX else 0.1
    return 1.0 if appears else 0.0 if refusal else 0.5 if rouge > RETAIN_ROUGE_MIN else 0.1


def asru_reward_one(completion: str, ground_truth: str, is_forget: bool, answer_key: str | None = None) -> float:
    """ASRU reward of one completion (the table in the module docstring)."""
    return _table(contains_answer(completion, ground_truth, key=answer_key), is_refusal(completion), rouge_l(completion, ground_truth), is_forget)


def _column(values: Sequence | None, n: int) -> list:
    return list(values) if values is not None else [None] * n


def reward_components(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    *,
    ground_truth: Sequence[str],
    is_forget: Sequence[bool],
    answer_key: Sequence[str | None] | None = None,
    contextual_bonus: float = 0.0,
    **_: Any,
) -> dict[str, list[float]]:
    """Every ingredient of the ASRU reward per completion, for logging and tests.

    Keys: appears, refusal, rougeL, base (the table), context (1 when a forget refusal names what was asked),
    duplicate (1 when a forget refusal repeats another one of the same prompt's group verbatim, compared by
    `refusal_phrase_key`), reward = base + contextual_bonus * (context - duplicate). With the default
    contextual_bonus = 0 the reward is exactly the authors' table.
    """
    texts = [message_text(c) for c in completions]
    keys = _column(answer_key, len(texts))
    appears, refusal, rouge, base = [], [], [], []
    for text, gt, forget, key in zip(texts, ground_truth, is_forget, keys, strict=True):
        appears.append(float(contains_answer(text, gt, key=key)))
        refusal.append(float(is_refusal(text)))
        rouge.append(rouge_l(text, gt))
        base.append(_table(appears[-1] == 1.0, refusal[-1] == 1.0, rouge[-1], bool(forget)))

    questions = [_prompt_question(p) for p in prompts]
    quality = [bool(f) and r == 1.0 and a == 0.0 for f, r, a in zip(is_forget, refusal, appears)]
    context = [float(q and context_level(question, t) == 2) for q, question, t in zip(quality, questions, texts)]
    counts = Counter((question, refusal_phrase_key(t)) for q, question, t in zip(quality, questions, texts) if q)
    duplicate = [float(q and counts[(question, refusal_phrase_key(t))] > 1) for q, question, t in zip(quality, questions, texts)]
    reward = [b + contextual_bonus * (c - d) for b, c, d in zip(base, context, duplicate)]
    return {"appears": appears, "refusal": refusal, "rougeL": rouge, "base": base, "context": context, "duplicate": duplicate, "reward": reward}


def _log_means(log_metric: Callable[[str, float], None] | None, prefix: str, comps: dict[str, list[float]], is_forget) -> None:
    """Send split-wise component means to TRL's `log_metric` hook (present in TRL >= 1.x reward kwargs)."""
    if not callable(log_metric):
        return
    for split, flag in (("forget", True), ("retain", False)):
        idx = [i for i, f in enumerate(is_forget) if bool(f) == flag]
        if idx:
            for name, values in comps.items():
                log_metric(f"{prefix}/{split}_{name}", sum(values[i] for i in idx) / len(idx))


def asru_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    *,
    ground_truth: Sequence[str],
    is_forget: Sequence[bool],
    answer_key: Sequence[str | None] | None = None,
    log_metric: Callable[[str, float], None] | None = None,
    **kwargs: Any,
) -> list[float]:
    """ASRU reward for a batch (TRL reward-function signature); dataset columns ground_truth, is_forget and
    optionally answer_key. Extra TRL kwargs (completion_ids, trainer_state, ...) are ignored."""
    comps = reward_components(prompts, completions, ground_truth=ground_truth, is_forget=is_forget, answer_key=answer_key)
    _log_means(log_metric, "asru", comps, is_forget)
    return comps["reward"]


def make_asru_reward(contextual_bonus: float = 0.1) -> Callable[..., list[float]]:
    """ASRU reward plus the optional quality term: + bonus for a forget refusal that names what was asked,
    - bonus for a forget refusal duplicated verbatim within its prompt's group of rollouts.

    Why: the table alone pays a rigid "I don't know." as much as a contextual refusal; GRPO's group-normalised
    advantage then turns this small spread into a push towards varied, question-aware refusals. The bonus stays
    below the gaps of the table (0.5) so it never reorders refusal vs leak vs wrong answer.
    """

    def asru_reward_contextual(prompts, completions, *, ground_truth, is_forget, answer_key=None, log_metric=None, **kwargs):
        comps = reward_components(
            prompts, completions, ground_truth=ground_truth, is_forget=is_forget, answer_key=answer_key, contextual_bonus=contextual_bonus
        )
        _log_means(log_metric, "asru", comps, is_forget)
        return comps["reward"]

    return asru_reward_contextual


def refusal_reward(prompts: Sequence[Any], completions: Sequence[Any], *, is_forget: Sequence[bool], **kwargs: Any) -> list[float]:
    """RULE-style reward: 1 for a refusal on a forget query, 1 for a non-refusal on a retain query, else 0."""
    return [float(is_refusal(message_text(c)) == bool(f)) for c, f in zip(completions, is_forget, strict=True)]
