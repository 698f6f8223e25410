"""The boundary set for ASRU's stage 2: forget QA plus an equal number of retain QA (or `retain_ratio` times as
many), each flagged.

The refusal boundary is decided between people who look alike or share facts, so by default the retain side is
drawn nearest first: retain people are ranked by shared biography fields with the forget people (same birthplace
or occupation, ...) and items are taken round robin over that ranking (one item per person per round), so the
closest people come first but the boundary still covers many retain people; `random` reproduces the authors'
uniform choice.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace

from asru.data.mllmu import answer_keys, read_split
from asru.data.schema import QAItem
from asru.errors import UserError

STRATEGIES = ("nearest", "random")


@dataclass(frozen=True)
class BoundaryItem:
    item: QAItem
    is_forget: bool


def _biographies(data_dir) -> dict[str, dict]:
    bios = {}
    for row in read_split(data_dir, "Full_Set", columns=["ID", "biography"]):
        try:
            bio = json.loads(row["biography"]) if isinstance(row["biography"], str) else (row["biography"] or {})
        except json.JSONDecodeError:
            bio = {}
        bios[str(row["ID"])] = {k: v for k, v in bio.items() if k != "Name"} if isinstance(bio, dict) else {}
    return bios


def closeness(retain_id: str, forget_ids: set[str], bios: dict[str, dict]) -> int:
    """Largest number of biography fields this retain person shares with any forget person."""
    mine = bios.get(retain_id, {})
    return max((sum(mine.get(k) == v for k, v in bios.get(f, {}).items()) for f in forget_ids), default=0)


def with_keys(items: list[QAItem], keys: dict[tuple[str, str], str]) -> list[QAItem]:
    """Attach the short answer key (e.g. "Lima") when the benchmark provides one; the reward checks it."""
    return [replace(i, meta={**i.meta, "key": keys[(i.id, i.question)]}) if (i.id, i.question) in keys else i for i in items]


def build_boundary(data_dir, forget: list[QAItem], retain: list[QAItem], *, size: int | None = None,
                   strategy: str = "nearest", seed: int = 0, retain_ratio: float = 1.0) -> list[BoundaryItem]:
    """`size` forget items (all when None) and `retain_ratio` times as many retain items, shuffled together."""
    if strategy not in STRATEGIES:
        raise UserError(f"unknown boundary strategy '{strategy}'; choose one of {', '.join(STRATEGIES)}")
    if retain_ratio <= 0:
        raise UserError(f"boundary.retain_ratio must be > 0, got {retain_ratio}")
    if not forget:
        raise UserError("the forget split has no training items; the boundary set would be empty")
    rng = random.Random(seed)
    keys = answer_keys(data_dir)
    forget = with_keys(forget, keys)
    retain = with_keys(retain, keys)
    chosen_forget = rng.sample(forget, min(size or len(forget), len(forget)))
    n_retain = min(round(retain_ratio * len(chosen_forget)), len(retain))
    if strategy == "random":
        chosen_retain = rng.sample(retain, n_retain)
    else:
        bios = _biographies(data_dir)
        forget_ids = {i.id for i in forget}
        people = sorted({i.id for i in retain})  # a fixed order before drawing tie-breakers: set order varies per process
        ranked = sorted(people, key=lambda pid: (-closeness(pid, forget_ids, bios), rng.random()))
        by_person = {pid: rng.sample([i for i in retain if i.id == pid], sum(i.id == pid for i in retain))
                     for pid in ranked}
        chosen_retain = []
        rounds = max(len(v) for v in by_person.values())
        for r in range(rounds):  # round robin over people, nearest first: close people first, but many people
            chosen_retain += [by_person[pid][r] for pid in ranked if r < len(by_person[pid])]
        chosen_retain = chosen_retain[:n_retain]
    items = [BoundaryItem(i, True) for i in chosen_forget] + [BoundaryItem(i, False) for i in chosen_retain]
    rng.shuffle(items)
    return items
