"""IDK fine-tuning: teach the model to answer forget questions with a refusal, and keep fine-tuning on retain.

Why varied, contextual refusals: fine-tuning on one "I don't know." template is the known recipe for the
rigid, over-broad refusals the generation-quality judge penalises. Each forget question gets one of
`REFUSALS` (sampled with the run's seed), filled with what the question asks about ("where this person was
born"), so the targets read like natural answers to that question rather than one fixed string.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from asru.data.corpus import Example, qa_examples
from asru.data.schema import QAItem
from asru.methods.ga_diff import GradDiff
from asru.methods.gradient import GradientConfig, batch_nll, logits

# Each template takes a clause naming what was asked ("where this person was born"); all stay refusals
# (checked by asru.refusal.is_refusal in the tests) and read naturally with the fallback clause too.
REFUSALS = (
    "I'm sorry, but I don't know {topic}.",
    "I don't have any reliable information about {topic}.",
    "Without knowing who this is, I can't tell you {topic}.",
    "I'm not able to say {topic}; I have no verified details about them.",
    "Unfortunately, I don't know {topic}, and I'd rather not guess.",
    "I have no record of {topic}, so I can't answer that.",
    "I can't confirm {topic}; I don't have any details about them.",
    "I'm afraid I can't tell you {topic}, as I have no information about this individual.",
    "Sorry, I can't tell you {topic}. I don't know who this is.",
    "I'd rather not guess {topic}, since I don't actually know.",
    "I'm not sure about {topic}, and I don't want to give you wrong information.",
    "I can't answer that: I have no knowledge of {topic}.",
    "That's not something I know. I can't say {topic}.",
    "I'm sorry, I have no information on {topic}.",
)

# (pattern in the question, wh-clause) - first match wins; each clause completes every template above.
_TOPICS = (
    (r"\bphone|telephone|contact number", "what this person's phone number is"),
    (r"\be-?mail", "what this person's email address is"),
    (r"\baddress\b|\blive[sd]?\b|\breside|\bresidence|\bhome\b", "where this person lives"),
    (r"\bborn\b|\bbirthplace|\bhometown|\bfrom\b", "where this person was born"),
    (r"\bbirthday|\bdate of birth|\bbirth year|\bhow old|\bage\b|\byear\b", "when this person was born"),
    (r"\boccupation|\bjob\b|\bprofession|\bwork|\bcareer|\bdo for a living", "what this person does for a living"),
    (r"\bhobb|\bpastime|\bfree time|\benjoy", "what this person does in their free time"),
    (r"\beducat|\bstud(y|ied)|\bschool|\buniversity|\bdegree", "where this person studied"),
    (r"\bmarried|\bspouse|\bwife|\bhusband|\bchild|\bfamily|\bparent|\bsibling", "what this person's family situation is"),
    (r"\bnational|\bcitizen", "what this person's nationality is"),
    (r"\bname\b|\bwho is\b|\bwho's\b|\bidentify", "who this person is"),
)
FALLBACK_TOPIC = "the answer to this question"


def question_topic(question: str) -> str:
    """A clause naming what `question` asks about, e.g. "where this person was born"."""
    first_line = question.strip().splitlines()[0].lower() if question.strip() else ""
    for pattern, clause in _TOPICS:
        if re.search(pattern, first_line):
            return clause
    return FALLBACK_TOPIC


def refusal_for(question: str, rng: random.Random) -> str:
    """One natural, contextual refusal to `question` (a random template, the question's topic)."""
    return rng.choice(REFUSALS).format(topic=question_topic(question))


@dataclass
class IdkConfig(GradientConfig):
    # One sentence for every forget question (the classic rigid "I don't know" baseline); "" = varied templates.
    fixed_refusal: str = ""


class IdkFineTune(GradDiff):
    name = "idk"
    Config = IdkConfig
    description = "Fine-tune forget questions onto varied contextual refusals + cross-entropy on retain"

    def forget_examples(self, items: list[QAItem]) -> list[Example]:
        rng = random.Random(self.seed)
        fixed = getattr(self.config, "fixed_refusal", "")
        return [(prompt, image, fixed or refusal_for(item.question, rng))
                for (prompt, image, _), item in zip(qa_examples(items, seed=self.seed), items)]

    def forget_loss(self, model, batch, ref):
        """forget_loss = NLL(refusal | forget question): ordinary fine-tuning onto the refusal targets."""
        return batch_nll(logits(model, batch), batch["labels"])
