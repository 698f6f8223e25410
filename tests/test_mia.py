"""Membership inference: each attack on hand-computed token scores, AUC and PrivLeak, the world's holdout people
(never taught, same pools, other files untouched, not in the tokenizer text) and bad holdouts."""

from __future__ import annotations

import math
import re
import zlib

import pyarrow.parquet as pq
import pytest
import torch

from asru.data import mllmu as D
from asru.data.world import build
from asru.errors import UserError
from asru.eval import mia
from asru.eval.scoring import TokenScores, score_answers
from asru.models.vanilla import world_texts
from helpers import FixedLogits


def test_attack_scores_by_hand():
    s = TokenScores([-1.0, -2.0, -3.0, -4.0, -5.0], mu=[-1.0] * 5, sigma=[2.0] * 5)
    got = mia.attack_scores(s, "Ana was born in Lima.")
    assert got["loss"] == pytest.approx(-3.0)
    assert got["zlib"] == pytest.approx(-3.0 / len(zlib.compress(b"Ana was born in Lima.")))
    assert got["min_k"] == pytest.approx(-4.5)  # 40 % of 5 tokens = the 2 lowest: -5, -4
    assert got["min_k_pp"] == pytest.approx(((-5 + 1) / 2 + (-4 + 1) / 2) / 2)
    with pytest.raises(UserError, match="empty answer"):
        mia.attack_scores(TokenScores([]), "")


def test_min_k_pp_statistics_of_a_known_distribution(processor):  # noqa: F811
    vocab = len(processor.tokenizer)
    [uniform] = score_answers(FixedLogits(torch.zeros(vocab)), processor, [("q", None, "Lima")], stats=True)
    assert all(m == pytest.approx(-math.log(vocab), rel=1e-5) for m in uniform.mu)
    assert all(abs(s) < 1e-3 for s in uniform.sigma)  # a flat distribution has no spread
    w = torch.zeros(vocab)
    w[0] = math.log(vocab - 1)  # token 0 has probability 1/2, every other token 1/(2(V-1))
    [peaked] = score_answers(FixedLogits(w), processor, [("q", None, "Lima")], stats=True)
    lp0, lp = math.log(0.5), math.log(0.5 / (vocab - 1))
    mu = 0.5 * lp0 + 0.5 * lp
    sigma = math.sqrt(0.5 * lp0 ** 2 + 0.5 * lp ** 2 - mu ** 2)
    assert peaked.mu[0] == pytest.approx(mu, rel=1e-4) and peaked.sigma[0] == pytest.approx(sigma, rel=1e-3)


def test_auc_and_privleak():
    assert mia.auc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert mia.auc([0.1, 0.9], [0.1, 0.9]) == 0.5
    assert mia.privleak(0.9, 0.5) == pytest.approx(0.8)
    out: dict = {}
    mia.add_privleak(out, {"loss_auc": 0.75}, {"loss_auc": 0.5, "zlib_auc": 0.5})
    assert out == {"loss_privleak": pytest.approx(0.5)}


def test_world_holdout_people(micro_world):
    holdout = pq.read_table(next((micro_world / build.HOLDOUT_DIR).glob("*.parquet")))
    full = pq.read_table(next((micro_world / "Full_Set").glob("*.parquet")))
    assert holdout.schema == full.schema  # exactly the Full_Set / forget_N row layout
    held = {str(i) for i in holdout.column("ID").to_pylist()}
    assert len(held) == len(D.person_ids(micro_world, "forget_15")) and all(i.startswith("H") for i in held)
    taught = D.person_ids(micro_world, "Full_Set") | D.person_ids(micro_world, "Retain_Set")
    assert not held & taught
    items, source = mia.holdout_items(micro_world, None, taught)
    assert source == build.HOLDOUT_DIR and items and {i.task for i in items} == {"gen"}
    # never taught: not in any other table of the world (corpus, training splits, benchmark splits)
    others = " ".join(world_texts(micro_world))
    names = {D.read_split(micro_world, build.HOLDOUT_DIR, ["biography"])[0]["biography"]}
    assert all(json_name not in others for json_name in names)
    assert not any(pid in others.split() for pid in held)
    # every word of a holdout answer comes from the world's pools, so the tokenizer knows it
    vocabulary = set(re.findall(r"\w+", others))
    assert {w for i in items for w in re.findall(r"\w+", i.answer)} <= vocabulary


def test_holdout_leaves_every_other_world_file_unchanged(tmp_path, monkeypatch):
    build.build_world(tmp_path / "with", "micro", seed=3)
    monkeypatch.setattr(build, "holdout_rows", lambda *a: [])
    build.build_world(tmp_path / "without", "micro", seed=3)
    files = sorted(p.relative_to(tmp_path / "with") for p in (tmp_path / "with").rglob("*") if p.is_file()
                   and build.HOLDOUT_DIR not in str(p))
    assert files and all((tmp_path / "with" / f).read_bytes() == (tmp_path / "without" / f).read_bytes()
                         for f in files)
    assert world_texts(tmp_path / "with") == [t for t in world_texts(tmp_path / "without")]


def test_bad_or_missing_holdout(micro_world, tmp_path):
    taught = D.person_ids(micro_world, "Full_Set")
    with pytest.raises(UserError, match="shares .* person ID"):
        mia.holdout_items(micro_world, "forget_5", taught)
    from mllmu_fixture import write_mllmu_fixture

    real = write_mllmu_fixture(tmp_path / "real", world=False)
    items, why = mia.holdout_items(real, None, D.person_ids(real, "Full_Set"))
    assert items is None and "--holdout-split" in why
