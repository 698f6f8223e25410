"""The embedded world: MLLMU-Bench layout, per-person item counts, determinism, disjoint splits."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from asru.data import mllmu
from asru.data.world.build import build_world
from asru.data.world.faces import render, sample_faces
from asru.data.world.people import IMAGE_REFUSALS, image_refusal, text_refusal
from asru.errors import UserError
from asru.refusal import is_refusal

SPLITS = ["Full_Set", "forget_5", "forget_10", "forget_15", "retain_95", "retain_90", "retain_85", "Test_Set", "Retain_Set"]


def test_every_split_has_the_mllmu_columns(micro_world):
    for split in SPLITS:
        table = pq.read_table(next((micro_world / split).glob("*.parquet")))
        expected = {"ID", "Directory", "question", "answer", "biography", "Classification_Task", "Generation_Task", "Mask_Task"}
        assert expected <= set(table.column_names), split
        assert ("images" if split == "Test_Set" else "image") in table.column_names
    train = pq.read_table(next((micro_world / "baseline_train_split/forget_5").glob("*.parquet")))
    assert train.column_names == ["image", "metadata"]
    qa = json.loads(train.column("metadata")[0].as_py())
    assert set(qa[0]) == {"Question", "Answer", "ID"}


def test_items_per_person_meet_the_protocol_minimums(micro_world):
    row = pq.read_table(next((micro_world / "Full_Set").glob("*.parquet"))).to_pylist()[0]
    tasks = row["Classification_Task"]
    assert len(tasks["Image_Textual_Questions"]) >= 3 and len(tasks["Pure_Text_Questions"]) >= 3
    kinds = [g["Type"] for g in row["Generation_Task"]]
    assert kinds.count("Image_Textual") >= 2 and kinds.count("Pure_Text") >= 2
    assert len(row["Mask_Task"]) >= 2
    for mc in tasks["Image_Textual_Questions"]:
        assert len(set(mc["Options"].values())) == 4 and mc["Correct_Answer"] in "ABCD"


def test_forget_and_retain_partition_the_people(micro_world):
    full = mllmu.person_ids(micro_world, "Full_Set")
    for forget, retain in (("forget_5", "retain_95"), ("forget_10", "retain_90"), ("forget_15", "retain_85")):
        f, r = mllmu.person_ids(micro_world, forget), mllmu.person_ids(micro_world, retain)
        assert f and not f & r and f | r == full
    assert mllmu.person_ids(micro_world, "forget_5") <= mllmu.person_ids(micro_world, "forget_10")


def test_test_set_uses_unseen_views_and_paraphrases(micro_world):
    full = {r["ID"]: r for r in pq.read_table(next((micro_world / "Full_Set").glob("*.parquet"))).to_pylist()}
    for row in pq.read_table(next((micro_world / "Test_Set").glob("*.parquet"))).to_pylist():
        assert all(img["bytes"] != full[row["ID"]]["image"]["bytes"] for img in row["images"])
        assert row["Generation_Task"][0]["Question"] != full[row["ID"]]["Generation_Task"][0]["Question"]


def test_world_is_deterministic_per_seed(tmp_path):
    a = build_world(tmp_path / "a", "micro", seed=3)
    b = build_world(tmp_path / "b", "micro", seed=3)
    build_world(tmp_path / "c", "micro", seed=4)
    assert a == b
    for split in ("Full_Set", "world/base_corpus"):
        fa, fb, fc = (next((tmp_path / r / split).glob("*.parquet")).read_bytes() for r in "abc")
        assert fa == fb and fa != fc


def test_faces_are_distinct_identities():
    import numpy as np

    faces = sample_faces(np.random.default_rng(0), 200)
    vectors = [f.vector() for f in faces]
    assert len(set(vectors)) == 200
    assert min(sum(x != y for x, y in zip(a, b)) for i, a in enumerate(vectors) for b in vectors[i + 1:]) >= 2
    assert render(faces[0]).size == (64, 64)


def test_world_refusals_are_refusals_and_varied():
    import numpy as np

    faces = sample_faces(np.random.default_rng(1), 60)
    texts = {image_refusal(f, a) for f in faces for a in ("birthplace", "occupation", "hobby")}
    assert all(is_refusal(t) for t in texts)
    assert len(texts) >= 2 * len(IMAGE_REFUSALS)
    assert is_refusal(text_refusal("Ana Barton", "birthplace"))


def test_unknown_preset_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="unknown world preset"):
        build_world(tmp_path, "huge")
