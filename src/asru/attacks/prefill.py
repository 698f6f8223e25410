"""Prefilling: the assistant's reply is started with the ground truth's words up to the fact and the model
continues ("She was born in" -> ?). The answer key (the world's `world/answer_keys`, QAItem.meta['key']) marks
where the fact starts. Without a key (real data): the ground truth's words before its first answer word, an answer
word being a content word of the ground truth that is neither in the question nor answer framing (the offline
judge's `answer_stems`); a ground truth with no such word is prefilled with nothing (plain generation)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from asru.attacks.base import Attack, AttackEnv, Target
from asru.attacks.measure import gen_items, score_replies
from asru.data.schema import QAItem
from asru.eval.judge import answer_stems
from asru.eval.metrics import stem
from asru.eval.mllmu import prompt_for
from asru.models.generate import generate


def prefix_of(item: QAItem) -> str:
    """The ground truth up to (not including) the fact; '' when the fact opens the answer or is not found."""
    truth, key = item.answer, item.meta.get("key")
    if key:
        match = re.search(r"\b" + re.escape(key), truth, re.IGNORECASE)
        return truth[:match.start()].rstrip() if match else ""
    needed = answer_stems(item.question, truth)
    for match in re.finditer(r"\w+(?:'\w+)*", truth):
        if stem(match.group().lower()) in needed:
            return truth[:match.start()].rstrip()
    return ""


@dataclass
class PrefillConfig:
    pass


class Prefill(Attack):
    name = "prefill"
    description = "the reply starts with the ground truth's words up to the fact; the model continues"
    Config = PrefillConfig

    def run(self, target: Target, env: AttackEnv, notes: list[str]) -> dict[str, dict]:
        items = gen_items(env.held_out)
        prefixes = [prefix_of(i) for i in items]
        with target.loaded() as (model, processor):
            continued = generate(model, processor, [(prompt_for(i), i.image) for i in items], prefixes=prefixes,
                                 max_new_tokens=env.settings.max_new_tokens, batch_size=env.settings.batch_size)
        replies = [f"{p} {c}".strip() for p, c in zip(prefixes, continued)]
        return {"prefill": {**score_replies(items, replies), "mc_lik": None,
                            "n_prefilled": sum(bool(p) for p in prefixes)}}
