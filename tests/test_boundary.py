"""The stage-2 boundary set: flagged forget + retain QA, nearest-first retain choice, the authors' random one."""

from __future__ import annotations

import pytest

from asru.data.boundary import _biographies, build_boundary, closeness
from asru.data.mllmu import retain_split_for, training_items
from asru.errors import UserError

SPLIT = "forget_10"


@pytest.fixture(scope="module")
def items(micro_world):
    return training_items(micro_world, SPLIT), training_items(micro_world, retain_split_for(SPLIT))


def test_flags_counts_and_no_person_on_both_sides(micro_world, items):
    forget, retain = items
    boundary = build_boundary(micro_world, forget, retain, size=6, seed=0)
    chosen_forget = [b.item for b in boundary if b.is_forget]
    chosen_retain = [b.item for b in boundary if not b.is_forget]
    assert len(chosen_forget) == 6 and len(chosen_retain) == 6
    assert {i.id for i in chosen_forget} <= {i.id for i in forget}
    assert {i.id for i in chosen_retain} <= {i.id for i in retain}
    assert any(b.is_forget for b in boundary[:6]) and any(not b.is_forget for b in boundary[:6])  # shuffled together
    assert {i.id for i in chosen_forget}.isdisjoint({i.id for i in chosen_retain})


def test_retain_ratio_scales_the_retain_side(micro_world, items):
    forget, retain = items
    boundary = build_boundary(micro_world, forget, retain, size=4, seed=0, retain_ratio=2.5)
    assert sum(b.is_forget for b in boundary) == 4 and sum(not b.is_forget for b in boundary) == 10
    everything = build_boundary(micro_world, forget, retain, size=4, seed=0, retain_ratio=1000)
    assert sum(not b.is_forget for b in everything) == len(retain)  # capped by what exists
    with pytest.raises(UserError, match="retain_ratio"):
        build_boundary(micro_world, forget, retain, size=4, retain_ratio=0)


def test_nearest_takes_the_closest_people_first(micro_world, items):
    forget, retain = items
    bios, forget_ids = _biographies(micro_world), {i.id for i in forget}
    n_people = len({i.id for i in retain})
    boundary = build_boundary(micro_world, forget, retain, size=n_people // 2, seed=0)
    chosen = {b.item.id for b in boundary if not b.is_forget}
    left_out = {i.id for i in retain} - chosen
    assert left_out, "the test needs retain people that were not chosen"
    assert min(closeness(p, forget_ids, bios) for p in chosen) >= max(closeness(p, forget_ids, bios) for p in left_out)
    assert len(chosen) == n_people // 2  # round robin: one item per person before anyone's second


def test_random_strategy_is_seeded_and_differs_from_nearest(micro_world, items):
    forget, retain = items
    pick = lambda strategy, seed: [(b.item.id, b.item.question) for b in  # noqa: E731
                                   build_boundary(micro_world, forget, retain, size=8, strategy=strategy, seed=seed)]
    assert pick("random", 1) == pick("random", 1)
    assert pick("random", 1) != pick("random", 2)
    assert sorted(pick("random", 0)) != sorted(pick("nearest", 0))


def test_bad_boundary_input(micro_world, items):
    forget, retain = items
    with pytest.raises(UserError, match="unknown boundary strategy"):
        build_boundary(micro_world, forget, retain, strategy="farthest")
    with pytest.raises(UserError, match="no training items"):
        build_boundary(micro_world, [], retain)


def test_same_seed_same_set_in_every_process(micro_world):
    """Python randomises string hashing per process; the boundary set (and so GRPO) must not depend on it."""
    import hashlib
    import os
    import subprocess
    import sys

    code = (f"from asru.data.boundary import build_boundary\nfrom asru.data.mllmu import training_items\n"
            f"b = build_boundary({str(micro_world)!r}, training_items({str(micro_world)!r}, 'forget_10'), "
            f"training_items({str(micro_world)!r}, 'retain_90'), size=6, seed=0, retain_ratio=2)\n"
            f"print([(x.item.id, x.item.question, x.is_forget) for x in b])")
    outputs = {hashlib.md5(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                          env={**os.environ, "PYTHONHASHSEED": seed}).stdout.encode()).hexdigest()
               for seed in ("1", "2", "3")}
    assert len(outputs) == 1


def test_bad_retain_ratio_fails_at_configuration_time():
    """Checked when the method's config is built, so a bad value does not cost a stage-1 run first."""
    from asru.methods.asru import BoundaryConfig

    with pytest.raises(UserError, match="retain_ratio must be > 0"):
        BoundaryConfig(retain_ratio=-1)
