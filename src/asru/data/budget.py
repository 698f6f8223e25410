"""The retain budget: which retain *people* a method may learn from when only a fraction F of them is available.

Why people, not items: in practice a budget is whom you may use (the people whose data can be reused), not a
random sample of their questions. Why a hash ranking: the subset must be the same for every method and every
process at a given (F, seed) (Python's string hashing changes per process), and a smaller budget is then a
subset of a larger one, so a sweep over F only ever adds people. Evaluation never sees a budget.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from asru.data.schema import QAItem
from asru.errors import UserError

FULL = 1.0


def check_fraction(fraction: float) -> float:
    """A retain fraction must lie in (0, 1]."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise UserError(f"--retain-fraction must be in (0, 1] (a share of the retain people), got {fraction}")
    return float(fraction)


def ranked_people(items: list[QAItem], seed: int) -> list[str]:
    """Retain person IDs in the order budgets take them: sha256(seed, ID), so identical in every process."""
    return sorted({i.id for i in items}, key=lambda pid: (hashlib.sha256(f"{seed}:{pid}".encode()).hexdigest(), pid))


@dataclass(frozen=True)
class RetainBudget:
    """The retain items a method may use under fraction `fraction` (all of them at 1.0), and what was kept."""

    fraction: float
    items: list[QAItem]
    people: int
    of_people: int

    def record(self) -> dict:
        return {"fraction": self.fraction, "people": self.people, "of_people": self.of_people, "items": len(self.items)}


def retain_budget(items: list[QAItem], fraction: float, seed: int, split: str = "retain") -> RetainBudget:
    """The first floor(F * n) people of the seeded ranking, with all their items in their original order."""
    fraction = check_fraction(fraction)
    people = {i.id for i in items}
    if fraction == FULL:
        return RetainBudget(FULL, list(items), len(people), len(people))
    keep = math.floor(fraction * len(people) + 1e-9)
    if keep == 0:
        smallest = math.ceil(10_000 / max(1, len(people))) / 10_000
        raise UserError(f"--retain-fraction {fraction:g} leaves no retain person ({len(people)} people in {split}); "
                        f"the smallest fraction that leaves one is {smallest:g}")
    chosen = set(ranked_people(items, seed)[:keep])
    return RetainBudget(fraction, [i for i in items if i.id in chosen], keep, len(people))
