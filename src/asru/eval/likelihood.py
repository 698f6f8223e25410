"""Multiple choice read from the model's probabilities, beside the generated-letter protocol: option likelihood,
letter likelihood and TOFU's truth ratio, for every MC item of every split (see docs/evaluation.md).

Why the option is scored inside a sentence: a model trained on the benchmark answers in sentences ("He was born in
Tallinn."), so the bare option text as the whole answer is an unlikely reply for every option and scores near
chance even for a model that knows the fact. Each option is therefore scored as the answer sentence of the same
person with the correct value replaced by the option (the template); where no such sentence exists (real rows whose
generation answers do not mention the value) the option text alone is the answer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from asru.data.prompts import gen_prompt
from asru.data.schema import QAItem
from asru.errors import UserError
from asru.eval.scoring import TokenScores, score_answers, score_options

HEADLINE_RULE = "mean"  # mc_*_lik_acc: argmax of the per-token mean log-probability (lm-eval's acc_norm analogue)


@dataclass
class MCPlan:
    """The likelihood scoring of one MC record: prompt, image, each option's continuation and the template used."""

    record: int
    item: QAItem
    prompt: str
    letter_prompt: str
    continuations: dict[str, str]
    template: str  # "same_question" | "same_person" | "option_only"


def _pattern(value: str) -> re.Pattern:
    """`value` as a case-insensitive whole-word pattern (word boundaries only where the value has word ends)."""
    left = r"\b" if re.match(r"\w", value) else ""
    right = r"\b" if re.search(r"\w$", value) else ""
    return re.compile(left + re.escape(value) + right, re.IGNORECASE)


def check_item(item: QAItem, where: str) -> None:
    """Refuse an MC item the likelihood metrics cannot score (one line: what, where, how to fix)."""
    options = item.options or {}
    if item.answer not in options:
        raise UserError(f"{where}: MC question {item.question!r} of ID {item.id!r} has correct letter "
                        f"{item.answer!r}, which is not among its options {', '.join(options) or '(none)'}; "
                        "fix Correct_Answer or Options in the data")
    if not str(options[item.answer]).strip():
        raise UserError(f"{where}: MC question {item.question!r} of ID {item.id!r} has an empty correct answer, so "
                        "its truth ratio is undefined; fill in the option text in the data")


def continuations(item: QAItem, sentences: Sequence[QAItem]) -> tuple[dict[str, str], str]:
    """Each option's continuation and the template kind; `sentences` = generation items of the same person.

    Rule (first that applies): the person's generation answer to the same question, else any of the person's
    generation answers (same setting first), that contains the correct option text as a whole word -> that answer
    with the correct text replaced by each option; else the option text alone."""
    options = item.options or {}
    correct = options[item.answer]
    pattern = _pattern(correct)
    same_q = [s for s in sentences if s.question == item.question]
    others = sorted((s for s in sentences if s.question != item.question), key=lambda s: s.setting != item.setting)
    for kind, pool in (("same_question", same_q), ("same_person", others)):
        for s in pool:
            if pattern.search(s.answer):
                return {k: pattern.sub(lambda _m, v=v: v, s.answer, count=1) for k, v in options.items()}, kind
    return dict(options), "option_only"


def plan(scored: Sequence[tuple[str, QAItem, str]], items: dict[str, list[QAItem]]) -> list[MCPlan]:
    """Plans for every MC record of an evaluation plan (split, item, protocol prompt), checked before any compute."""
    gen = {}
    for split, split_items in items.items():
        for it in split_items:
            if it.task == "gen":
                gen.setdefault((split, it.id), []).append(it)
    plans = []
    for index, (split, item, prompt) in enumerate(scored):
        if item.task != "mc":
            continue
        check_item(item, f"split '{split}' ({item.split})")
        conts, kind = continuations(item, gen.get((split, item.id), []))
        plans.append(MCPlan(index, item, gen_prompt(item.question), prompt, conts, kind))
    return plans


def truth_ratio(true: TokenScores, perturbed: Sequence[TokenScores]) -> float:
    """TOFU's truth ratio: mean over perturbed answers of P(perturbed)^(1/len) divided by P(true)^(1/len).

    Near 0: the model prefers the truth; near 1: no preference (never learned); above 1: prefers a wrong answer."""
    if true.n == 0 or not perturbed or any(p.n == 0 for p in perturbed):
        raise UserError("truth ratio of an empty answer: every answer needs at least one scored token")
    top = max(p.mean for p in perturbed)
    log_mean = top + math.log(sum(math.exp(p.mean - top) for p in perturbed) / len(perturbed))
    return math.exp(min(50.0, log_mean - true.mean))


def forget_quality(model_ratios: Sequence[float], oracle_ratios: Sequence[float]) -> float:
    """TOFU's Forget Quality: the two-sample KS-test p-value between the model's and the oracle's forget truth
    ratios (high = indistinguishable from a model that never saw the forget people)."""
    from scipy.stats import ks_2samp

    if not model_ratios or not oracle_ratios:
        raise UserError("Forget Quality needs forget truth ratios of both models; evaluate them with likelihood on")
    return float(ks_2samp(list(model_ratios), list(oracle_ratios)).pvalue)


def letter_token_ids(tokenizer, letters: Sequence[str]) -> list[int]:
    """The first token of each option letter as the model would generate it right after the prompt."""
    ids = []
    for letter in letters:
        tokens = tokenizer(letter, add_special_tokens=False)["input_ids"]
        if not tokens:
            raise UserError(f"the tokenizer maps option letter {letter!r} to no token; the letter protocol needs one")
        ids.append(tokens[0])
    return ids


def _argmax(scores: dict[str, float]) -> str:
    return max(scores, key=lambda k: scores[k])


def option_letters(plans: Sequence[MCPlan]) -> list[str]:
    """Every option letter of the planned MC items, sorted (the probe tokens of the letter likelihood)."""
    return sorted({k for p in plans for k in p.continuations})


def score(model, processor, plans: Sequence[MCPlan], records: list[dict], batch_size: int = 32,
          letters: Sequence[str] | None = None, letter_logprobs: Sequence[Sequence[float]] | None = None,
          letter: bool = True) -> None:
    """Option likelihood, letter likelihood and truth ratio of every planned MC record, written into the records.

    `letter_logprobs[record]`: log p of each of `letters` at the MC prompt's answer position, when the caller read
    them off its generation pass; otherwise one teacher-forced pass over the MC prompts gets them. `letter=False`
    skips the letter likelihood (callers that only need the option likelihood, such as the attacks)."""
    if not plans:
        return
    groups = [(p.prompt, p.item.image, list(p.continuations.values())) for p in plans]
    option_scores = iter(s for group in score_options(model, processor, groups, batch_size=batch_size) for s in group)
    if letter and not letter_logprobs:
        letters = option_letters(plans)
        probe = letter_token_ids(processor.tokenizer, letters)
        scored = score_answers(model, processor, [(p.letter_prompt, p.item.image, p.item.answer) for p in plans],
                               batch_size=batch_size, probe_ids=probe)
        letter_logprobs = {p.record: s.probe for p, s in zip(plans, scored)}
    for p in plans:
        scores = {k: next(option_scores) for k in p.continuations}
        sums, means = {k: s.sum for k, s in scores.items()}, {k: s.mean for k, s in scores.items()}
        pick_sum, pick_mean = _argmax(sums), _argmax(means)
        answer = p.item.answer
        if letter:
            by_letter = dict(zip(letters, letter_logprobs[p.record]))
            letter_logp = {k: by_letter[k] for k in p.continuations}
            records[p.record].update({"letter_logprobs": letter_logp, "letter_pred": _argmax(letter_logp),
                                      "letter_correct": _argmax(letter_logp) == answer})
        records[p.record].update({
            "lik_template": p.template, "lik_prompt": p.prompt, "lik_continuations": p.continuations,
            "option_scores": {k: {"sum_logprob": sums[k], "mean_logprob": means[k], "n_tokens": scores[k].n}
                              for k in p.continuations},
            "lik_letter": pick_mean if HEADLINE_RULE == "mean" else pick_sum,
            "lik_correct": (pick_mean if HEADLINE_RULE == "mean" else pick_sum) == answer,
            "lik_correct_sum": pick_sum == answer, "lik_correct_mean": pick_mean == answer,
            "truth_ratio": truth_ratio(scores[answer], [s for k, s in scores.items() if k != answer]),
        })


def meta() -> dict:
    """What results.json records about the likelihood protocol."""
    return {"headline_rule": HEADLINE_RULE, "prompt": "generation prompt of the MC question (asru.data.prompts.gen_prompt)",
            "continuation": "the person's answer sentence with the correct option replaced by each option "
                            "(same question, else same person), else the option text alone; + the turn-closing token",
            "letter_prompt": "the official MC prompt (with its 1-shot example); logits of the option letters at "
                             "the first answer position"}
