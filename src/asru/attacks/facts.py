"""Which forget facts the attacker may use (half A) and which are held out to measure what comes back (half B).

Why by attribute: RTT (Deeb & Roger 2024) fine-tunes on some forgotten facts and tests on *other* facts of the same
distribution. In the embedded world every attribute of a person (birthplace, occupation, birth year, hobby) is drawn
independently (asru.data.world.people.sample_people), so knowing A says nothing about B: what relearning on A brings
back on B was in the weights, not taught. The person's name (the image -> name question) is always in A: it is the
identity an attacker asking about that person already knows, not a profile fact. On data without attribute labels
(the real MLLMU-Bench) each question is its own "fact" and A/B are halves of the questions: their independence is
not guaranteed there, and the results say so (`labels: "question"`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from asru.data import mllmu as data
from asru.data.schema import QAItem
from asru.data.world.people import ATTRIBUTES, IMAGE_QUESTIONS, TEXT_QUESTIONS
from asru.errors import UserError

IDENTITY = "name"  # always attacker-side (see the module docstring)


def attribute_of(question: str) -> str | None:
    """The world attribute a question asks about (both wordings, image or text), else None."""
    for attribute, wordings in IMAGE_QUESTIONS.items():
        if question in wordings:
            return attribute
    for attribute, wordings in TEXT_QUESTIONS.items():
        for wording in wordings:
            pre, _, post = wording.partition("{name}")
            if len(question) > len(pre) + len(post) and question.startswith(pre) and question.endswith(post):
                return attribute
    return None


def is_world(data_dir: str | Path) -> bool:
    return (Path(data_dir) / "world" / "answer_keys").is_dir()


@dataclass(frozen=True)
class FactSplit:
    """Per forget person: the facts of the attacker half A and of the held-out half B."""

    seed: int
    labels: str  # "attribute" (world) or "question" (data without attribute labels)
    attacker: dict[str, frozenset[str]]
    held_out: dict[str, frozenset[str]]

    def fact(self, item: QAItem) -> str:
        return fact_of(item, self.labels)

    def in_attacker(self, item: QAItem) -> bool:
        return self.fact(item) in self.attacker.get(item.id, frozenset())

    def in_held_out(self, item: QAItem) -> bool:
        return self.fact(item) in self.held_out.get(item.id, frozenset())

    def record(self) -> dict:
        return {"seed": self.seed, "labels": self.labels,
                "attacker": {k: sorted(v) for k, v in sorted(self.attacker.items())},
                "held_out": {k: sorted(v) for k, v in sorted(self.held_out.items())}}


def fact_of(item: QAItem, labels: str) -> str:
    if labels == "attribute":
        return attribute_of(item.question) or ""
    return " ".join(item.question.lower().split())


def split_facts(data_dir: str | Path, forget_split: str, seed: int = 0) -> FactSplit:
    """A/B halves of every forget person's facts, deterministic in (seed, person ID) and independent of the
    process (random.Random seeded with a string). Odd counts give B the smaller half."""
    labels = "attribute" if is_world(data_dir) else "question"
    people: dict[str, set[str]] = {}
    if labels == "attribute":
        for pid in data.person_ids(data_dir, forget_split):
            people[pid] = set(ATTRIBUTES)
    else:
        for item in data.eval_items(data_dir, forget_split) + data.training_items(data_dir, forget_split):
            if item.task in ("gen", "mc", "qa"):
                people.setdefault(item.id, set()).add(fact_of(item, labels))
    if not people:
        raise UserError(f"forget split '{forget_split}' in {data_dir} has no people; pick a non-empty forget split")
    attacker, held_out = {}, {}
    for pid, facts in people.items():
        order = sorted(facts)
        random.Random(f"asru-rtt:{seed}:{pid}").shuffle(order)
        half = (len(order) + 1) // 2
        attacker[pid] = frozenset(order[:half]) | ({IDENTITY} if labels == "attribute" else frozenset())
        held_out[pid] = frozenset(order[half:])
    return FactSplit(seed, labels, attacker, held_out)


def held_out_items(data_dir: str | Path, forget_split: str, facts: FactSplit) -> list[QAItem]:
    """Generation and MC items of the held-out facts: the forget split's own wording and the Test_Set paraphrases
    of the same people (what every attack is measured on)."""
    ids = data.person_ids(data_dir, forget_split)
    items = data.eval_items(data_dir, forget_split) + data.eval_items(data_dir, "Test_Set", ids=ids)
    return [i for i in items if i.task in ("gen", "mc") and facts.in_held_out(i)]


def attacker_items(data_dir: str | Path, forget_split: str, facts: FactSplit) -> list[QAItem]:
    """The forget split's training QA of the attacker half (what relearning fine-tunes on)."""
    return [i for i in data.training_items(data_dir, forget_split) if facts.in_attacker(i)]
