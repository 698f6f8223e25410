"""The MLLMU-Bench loader on a fixture written in the hub's exact layout, and every error a user can hit."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asru.data import mllmu as M
from asru.errors import UserError
from mllmu_fixture import fixture_names, write_mllmu_fixture


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    return write_mllmu_fixture(tmp_path_factory.mktemp("mllmu"))


@pytest.fixture
def bench_copy(bench, tmp_path) -> Path:
    """A private copy for tests that damage the data."""
    return Path(shutil.copytree(bench, tmp_path / "copy"))


def _rewrite(path: Path, column: str, values: list) -> None:
    """Replace one column of a parquet file (keeping its type), to plant a defect."""
    table = pq.read_table(path)
    index = table.schema.get_field_index(column)
    pq.write_table(table.set_column(index, table.schema.field(index), pa.array(values, type=table.schema.field(index).type)), path)


# ----------------------------------------------------------------------------------------------- happy path

def test_eval_items_counts_tasks_and_settings(bench):
    items = M.eval_items(bench, "forget_10")
    assert {i.id for i in items} == {"1", "2"}
    assert Counter((i.task, i.setting) for i in items) == {
        ("mc", "image"): 4, ("mc", "text"): 4, ("gen", "image"): 2, ("gen", "text"): 2,
        ("cloze", "image"): 2, ("cloze", "text"): 2}
    assert all(i.split == "forget_10" for i in items)


def test_image_and_text_items(bench):
    items = M.eval_items(bench, "forget_5")
    assert all(i.image is None for i in items if i.setting == "text")
    assert all(i.image and i.image.startswith(b"\x89PNG") for i in items if i.setting == "image")


def test_mc_items_have_options_and_correct_letter(bench):
    mc = [i for i in M.eval_items(bench, "Full_Set") if i.task == "mc"]
    for item in mc:
        assert sorted(item.options) == ["A", "B", "C", "D"]
        assert item.answer in item.options
    names = fixture_names()
    assert mc[2].options[mc[2].answer] == "baker" and names["1"] in mc[2].question  # text question names the person


def test_gen_items_carry_answer_key_when_world_present(bench, tmp_path):
    gen = [i for i in M.eval_items(bench, "forget_5") if i.task == "gen"]
    assert [i.meta["key"] for i in gen] == ["baker", "Lima"]
    assert all(i.meta["key"] in i.answer for i in gen)
    plain = write_mllmu_fixture(tmp_path / "real", world=False)
    assert all(i.meta == {} for i in M.eval_items(plain, "forget_5"))


def test_cloze_items(bench):
    cloze = [i for i in M.eval_items(bench, "forget_5") if i.task == "cloze"]
    assert [(i.setting, i.answer) for i in cloze] == [("image", "baker"), ("text", "Lima")]
    assert all("__" in i.question for i in cloze)


def test_test_set_reads_shards_and_picks_a_stable_image(bench):
    rows = M.read_split(bench, "Test_Set")
    assert len(rows) == 6  # two shards
    first = M.eval_items(bench, "Test_Set", ids={"1", "2"})
    again = M.eval_items(bench, "Test_Set", ids={"1", "2"})
    assert {i.id for i in first} == {"1", "2"}
    assert [i.image for i in first] == [i.image for i in again]
    by_id = {str(r["ID"]): r for r in rows}
    chosen = {i.id: i.image for i in first if i.image}
    for pid, image in chosen.items():
        assert image in [s["bytes"] for s in by_id[pid]["images"]]
    assert M.pick_test_image(["a", "b", "c"], "7") == M.pick_test_image(["a", "b", "c"], "7")


def test_single_file_layout(bench_copy):
    shutil.move(bench_copy / "forget_5" / M.split_files(bench_copy, "forget_5")[0].name, bench_copy / "forget_5.parquet")
    (bench_copy / "forget_5").rmdir()
    assert M.person_ids(bench_copy, "forget_5") == {"1"}


def test_splits_and_retain_mapping(bench):
    assert M.retain_split_for("forget_5") == "retain_95"
    assert M.retain_split_for("forget_10") == "retain_90"
    assert M.retain_split_for("forget_15") == "retain_85"
    for forget in M.FORGET_SPLITS:
        forget_ids, retain_ids = M.person_ids(bench, forget), M.person_ids(bench, M.retain_split_for(forget))
        M.check_disjoint(forget_ids, retain_ids)
        assert forget_ids | retain_ids == M.person_ids(bench, "Full_Set")
    assert M.person_ids(bench, "Retain_Set") == {"C1", "C2"}


def test_training_items_name_rule(bench):
    items = M.training_items(bench, "forget_10")
    names = fixture_names()
    assert len(items) == 4 and all(i.task == "qa" and i.split == "forget_10" for i in items)
    for item in items:
        named = names[item.id] in item.question
        assert item.setting == ("text" if named else "image")
        assert (item.image is None) == named
    assert {i.id for i in M.training_items(bench, "retain_90")} == {"3", "4", "5", "6"}


def test_few_shot_example_is_deterministic_and_not_a_forget_person(bench):
    shot = M.few_shot_example(bench)
    assert shot == M.few_shot_example(bench)
    assert (shot.task, shot.setting, shot.split, shot.image) == ("mc", "image", "Full_Set", None)
    assert shot.id == "4"  # smallest ID outside forget_15 (people 1-3)
    assert shot.answer in shot.options
    text = M.few_shot_example(bench, "text")
    assert text.setting == "text" and text.id == "4" and fixture_names()["4"] in text.question


def test_world_extras(bench, tmp_path):
    vqa = M.general_vqa_items(bench)
    assert [(i.task, i.meta["key"]) for i in vqa] == [("vqa", "red"), ("vqa", "blue")]
    unseen = M.unseen_face_items(bench)
    assert Counter(i.setting for i in unseen) == {"image": 2, "text": 2}
    assert all((i.image is None) == (i.setting == "text") for i in unseen)
    assert all(i.task == "refusal" and i.attribute for i in unseen)
    plain = write_mllmu_fixture(tmp_path / "real", world=False)
    assert M.general_vqa_items(plain) == [] and M.unseen_face_items(plain) == []


# ----------------------------------------------------------------------------------------------- errors

def test_missing_data_dir(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        M.eval_items(tmp_path / "nowhere", "forget_10")


def test_missing_split(bench_copy):
    shutil.rmtree(bench_copy / "forget_10")
    with pytest.raises(UserError) as err:
        M.eval_items(bench_copy, "forget_10")
    msg = str(err.value)
    assert "no split 'forget_10'" in msg and "forget_10/*.parquet" in msg and "forget_10.parquet" in msg
    assert "MLLMU-Bench directory" in msg and "\n" not in msg


def test_missing_training_split(bench_copy):
    shutil.rmtree(bench_copy / "baseline_train_split")
    with pytest.raises(UserError, match="baseline_train_split/forget_5"):
        M.training_items(bench_copy, "forget_5")


def test_missing_column(bench_copy):
    path = M.split_files(bench_copy, "forget_5")[0]
    pq.write_table(pq.read_table(path).drop_columns(["Mask_Task"]), path)
    with pytest.raises(UserError) as err:
        M.eval_items(bench_copy, "forget_5")
    msg = str(err.value)
    assert "forget_5" in msg and "'Mask_Task'" in msg and "expected columns: image, ID" in msg


def test_undecodable_image(bench_copy):
    path = M.split_files(bench_copy, "forget_10")[0]
    _rewrite(path, "image", [{"bytes": b"not a png", "path": "x.png"}, {"bytes": b"\x89PNG broken", "path": "y.png"}])
    with pytest.raises(UserError) as err:
        M.eval_items(bench_copy, "forget_10")
    msg = str(err.value)
    assert "forget_10" in msg and "'1'" in msg and "do not decode" in msg and "re-download" in msg


def test_missing_image_bytes(bench_copy):
    path = M.split_files(bench_copy, "forget_5")[0]
    _rewrite(path, "image", [{"bytes": None, "path": "x.png"}])
    with pytest.raises(UserError, match="no image bytes"):
        M.eval_items(bench_copy, "forget_5")


def test_overlapping_forget_and_retain(bench):
    with pytest.raises(UserError) as err:
        M.check_disjoint({"1", "2", "10"}, {"2", "10", "11"})
    assert "2 person ID(s): 2, 10" in str(err.value)


def test_unknown_forget_split():
    with pytest.raises(UserError, match="forget_5, forget_10, forget_15"):
        M.retain_split_for("forget_20")


def test_bad_training_metadata(bench_copy):
    path = M.split_files(bench_copy, "baseline_train_split/forget_5")[0]
    _rewrite(path, "metadata", ["{not json"])
    with pytest.raises(UserError, match="metadata is not JSON"):
        M.training_items(bench_copy, "forget_5")


def test_bad_question_type(bench_copy):
    path = M.split_files(bench_copy, "forget_5")[0]
    table = pq.read_table(path)
    rows = table.to_pylist()
    rows[0]["Generation_Task"][0]["Type"] = "Audio"
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    with pytest.raises(UserError, match="Type 'Audio'"):
        M.eval_items(bench_copy, "forget_5")


def test_other_tables_read_every_column(bench_copy):
    rows = M.read_split(bench_copy, "world/general_vqa")
    assert set(rows[0]) == {"image", "ID", "question", "answer", "key"}
    (bench_copy / "world" / "refusal_probe").mkdir()
    pq.write_table(pa.table({"a": [1], "b": ["x"]}), bench_copy / "world" / "refusal_probe" / "part.parquet")
    assert M.read_split(bench_copy, "world/refusal_probe") == [{"a": 1, "b": "x"}]
