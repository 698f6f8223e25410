"""Prefilling: the assistant's reply is started with the ground truth's words up to the fact and the model
continues ("She was born in" -> ?). The answer key (the world's `world/answer_keys`, QAItem.meta['key']) marks
where the fact starts. Without a key (real data): the ground truth's words before its first answer word, an answer
word being a content word of the ground truth that is neither in the question nor answer framing (the offline
judge's `answer_stems`); a ground truth with no such word is prefilled with nothing (plain generation)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from asru.attacks.base import Attack, AttackEnv, Target
from asru.attacks.measure import gen_items, score_replies
from asru.data.schema import QAItem
from asru.eval.judge import answer_stems
from asru.eval.metrics import stem
from asru.eval.mllmu import prompt_for
from asru.models.batch import encode_prompt, move_batch, pad_features, pad_token_id
from asru.models.generate import _stop_ids, chunks, eval_mode


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


@torch.inference_mode()
def generate_prefilled(model, processor, items: list[QAItem], prefixes: list[str], max_new_tokens: int,
                       batch_size: int) -> list[str]:
    """Greedy continuations of each prompt whose assistant turn already starts with its prefix."""
    replies = [""] * len(items)
    with eval_mode(model):
        for idx in chunks(list(range(len(items))), batch_size):
            features = []
            for i in idx:
                enc = encode_prompt(processor, prompt_for(items[i]), items[i].image)
                extra = processor.tokenizer(prefixes[i], add_special_tokens=False)["input_ids"] if prefixes[i] else []
                enc["input_ids"] = enc["input_ids"] + extra
                for key in ("mm_token_type_ids", "token_type_ids"):
                    if key in enc:
                        enc[key] = enc[key] + [0] * len(extra)
                features.append(enc)
            batch = move_batch(pad_features(features, pad_token_id(processor), "left"), model)
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=pad_token_id(processor), eos_token_id=_stop_ids(model, processor.tokenizer))
            texts = processor.tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
            for i, text in zip(idx, texts):
                replies[i] = text.strip()
    return replies


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
            continued = generate_prefilled(model, processor, items, prefixes, env.settings.max_new_tokens,
                                           env.settings.batch_size)
        replies = [f"{p} {c}".strip() for p, c in zip(prefixes, continued)]
        return {"prefill": {**score_replies(items, replies), "mc_lik": None,
                            "n_prefilled": sum(bool(p) for p in prefixes)}}
