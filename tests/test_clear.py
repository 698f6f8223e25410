"""CLEAR loaders and protocol on a small fixture written in exactly the therem/CLEAR parquet schema."""

from __future__ import annotations

import io
import math
import sys
import types
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from asru.data.clear import (
    NAME_QUESTION,
    ClearCaptionItem,
    available_configs,
    load_clear_captions,
    load_clear_qa,
    perturbed_config,
    retain_perturbed_config,
)
from asru.errors import UserError
from asru.eval import clear as C

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
PEOPLE = ["Aurelio Beltran", "Mina Okafor", "Tove Lindqvist", "Rafael Quispe", "Ines Duarte", "Kenji Arai"]
FORGET, RETAIN = PEOPLE[:2], PEOPLE[2:]


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (seed * 40 % 256, 100, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def caption(name: str) -> str:
    return f"{name} is sitting at a wooden desk writing a novel by the window."


def paraphrase(name: str) -> str:
    return f"At a desk of wood near the window, {name} writes a novel."


def wrong_captions(name: str) -> list[str]:
    return [f"{name} is running on a beach at sunset.", f"{name} is cooking pasta in a small kitchen."]


def caption_rows(names, perturbed: bool) -> dict:
    columns = {
        "image": pa.array([{"bytes": png(PEOPLE.index(n)), "path": f"{n}.png"} for n in names], IMAGE_TYPE),
        "caption": pa.array([caption(n) for n in names], pa.string()),
        "name": pa.array(names, pa.string()),
    }
    if perturbed:
        columns["perturbed_captions"] = pa.array([wrong_captions(n) for n in names], pa.list_(pa.string()))
        columns["paraphrased_caption"] = pa.array([paraphrase(n) for n in names], pa.string())
        columns["perturbed_names"] = pa.array([[p for p in PEOPLE if p != n][:3] for n in names], pa.list_(pa.string()))
    return columns


def write(path: Path, columns: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)


def make_clear(root: Path) -> Path:
    """A miniature therem/CLEAR clone, mixing the layouts the hub and its parquet converter produce."""
    write(root / "data" / "train-00000-of-00001.parquet", caption_rows(PEOPLE, perturbed=False))  # full
    write(root / "forget05.parquet", caption_rows(FORGET, perturbed=False))
    write(root / "retain95" / "train" / "0000.parquet", caption_rows(RETAIN, perturbed=False))
    write(root / "forget05_perturbed" / "train-00000-of-00001.parquet", caption_rows(FORGET, perturbed=True))
    write(root / "retain_perturbed" / "train-00000-of-00002.parquet", caption_rows(RETAIN[:2], perturbed=True))
    write(root / "retain_perturbed" / "train-00001-of-00002.parquet", caption_rows(RETAIN[2:], perturbed=True))
    celebs = ["Marie Curie", "Alan Turing", "Ada Lovelace", "Nikola Tesla", "Rosalind Franklin"]
    write(root / "real_faces" / "train-00000-of-00001.parquet", {
        "image": pa.array([{"bytes": png(10 + i), "path": None} for i in range(5)], IMAGE_TYPE),
        "answer": pa.array(celebs, pa.string()),
        "options": pa.array([[c for c in celebs if c != a][:3] for a in celebs], pa.list_(pa.string())),
    })  # fmt: skip
    write(root / "real_world" / "test-00000-of-00001.parquet", {
        "question": pa.array(["What colour is the sky?", "How many legs has a cat?"], pa.string()),
        "answer": pa.array(["Blue", "Four"], pa.string()),
        "image": pa.array([{"bytes": png(20), "path": None}, {"bytes": png(21), "path": None}], IMAGE_TYPE),
        "prompt": pa.array(["p1", "p2"], pa.string()),
        "options": pa.array([["Green", "Red", "Blue"], ["Two", "Six", "Eight"]], pa.list_(pa.string())),
    })  # fmt: skip
    return root


@pytest.fixture(scope="module")
def clear_dir(tmp_path_factory) -> Path:
    return make_clear(tmp_path_factory.mktemp("CLEAR"))


# ---------------------------------------------------------------------------------------------- loaders


@pytest.mark.parametrize(
    ("config", "names"),
    [
        ("full", PEOPLE),
        ("forget05", FORGET),
        ("retain95", RETAIN),
        ("forget05_perturbed", FORGET),
        ("retain_perturbed", RETAIN),
    ],
)
def test_caption_configs_load_from_every_layout(clear_dir, config, names):
    items = load_clear_captions(clear_dir, config)
    assert [item.name for item in items] == names
    assert items[0].caption == caption(names[0])
    assert items[0].id == f"clear/{config}/0"
    assert Image.open(io.BytesIO(items[0].image)).size == (8, 8)


def test_perturbed_fields(clear_dir):
    item = load_clear_captions(clear_dir, "forget05_perturbed")[1]
    assert item.paraphrased_caption == paraphrase("Mina Okafor")
    assert item.perturbed_captions == tuple(wrong_captions("Mina Okafor"))
    assert "Mina Okafor" not in item.perturbed_names and len(item.perturbed_names) == 3
    plain = load_clear_captions(clear_dir, "forget05")[1]
    assert plain.perturbed_captions == () and plain.paraphrased_caption == ""


def test_real_faces_become_multiple_choice_items(clear_dir):
    items = load_clear_qa(clear_dir, "real_faces")
    assert len(items) == 5
    for item in items:
        assert item.task == "mc" and item.setting == "image" and item.split == "real_faces"
        assert item.question == NAME_QUESTION
        assert item.options[item.answer] == item.meta["answer_text"]
        assert sorted(item.options.values()) == sorted([item.meta["answer_text"], *item.meta["distractors"]])
        assert len(item.options) == 4
    assert load_clear_qa(clear_dir, "real_faces") == items  # answer placement is reproducible
    assert len({item.answer for item in items}) > 1  # and not always the same letter


def test_real_world_keeps_question_and_does_not_duplicate_answer_in_options(clear_dir):
    sky, cat = load_clear_qa(clear_dir, "real_world")
    assert sky.question == "What colour is the sky?" and sky.options[sky.answer] == "Blue"
    assert sorted(sky.options.values()) == ["Blue", "Green", "Red"]  # "Blue" was already an option
    assert sorted(cat.options.values()) == ["Eight", "Four", "Six", "Two"]


def test_missing_config_names_config_directory_and_expectation(clear_dir):
    with pytest.raises(UserError) as error:
        load_clear_captions(clear_dir, "forget10_perturbed")
    message = str(error.value)
    assert "'forget10_perturbed'" in message and str(clear_dir) in message
    assert "forget10_perturbed/*.parquet" in message and "forget05_perturbed" in message  # lists what exists


def test_missing_directory_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_clear_captions(tmp_path / "nowhere", "full")


def test_missing_column_names_column_config_and_directory(tmp_path):
    columns = caption_rows(FORGET, perturbed=True)
    del columns["perturbed_names"]
    write(tmp_path / "forget01_perturbed" / "train-00000-of-00001.parquet", columns)
    with pytest.raises(UserError) as error:
        load_clear_captions(tmp_path, "forget01_perturbed")
    message = str(error.value)
    assert "perturbed_names" in message and "'forget01_perturbed'" in message and str(tmp_path) in message


def test_qa_missing_options_column(tmp_path):
    write(tmp_path / "real_faces.parquet", {"image": pa.array([None], IMAGE_TYPE), "answer": pa.array(["x"])})
    with pytest.raises(UserError, match="options"):
        load_clear_qa(tmp_path, "real_faces")


def test_image_path_fallback(tmp_path):
    (tmp_path / "forget01").mkdir()
    (tmp_path / "forget01" / "a.png").write_bytes(png(3))
    columns = caption_rows(FORGET[:1], perturbed=False)
    columns["image"] = pa.array([{"bytes": None, "path": "a.png"}], IMAGE_TYPE)
    write(tmp_path / "forget01" / "train-00000-of-00001.parquet", columns)
    assert load_clear_captions(tmp_path, "forget01")[0].image == png(3)


def test_config_names(clear_dir, tmp_path):
    assert perturbed_config("forget05") == perturbed_config("forget05_perturbed") == "forget05_perturbed"
    with pytest.raises(UserError, match="forgetNN"):
        perturbed_config("retain90")
    assert retain_perturbed_config(clear_dir, "forget05") == "retain_perturbed"
    write(tmp_path / "retain90_perturbed.parquet", caption_rows(RETAIN, perturbed=True))
    assert retain_perturbed_config(tmp_path, "forget10") == "retain90_perturbed"
    with pytest.raises(UserError, match="retain_perturbed or retain99_perturbed"):
        retain_perturbed_config(tmp_path, "forget01")
    assert "real_world" in available_configs(clear_dir) and "forget05" in available_configs(clear_dir)


# ---------------------------------------------------------------------------------------------- protocol

def true_texts(prompt: str, image: bytes | None) -> set[str]:
    """The facts of the person (or question) behind an image: what a model that knows them would prefer."""
    for seed, name in enumerate(PEOPLE):
        if image == png(seed):
            return {caption(name), paraphrase(name), name}
    celebs = ["Marie Curie", "Alan Turing", "Ada Lovelace", "Nikola Tesla", "Rosalind Franklin"]
    answers = {png(10 + i): c for i, c in enumerate(celebs)} | {png(20): "Blue", png(21): "Four"}
    return {answers[image]}


def by_truth(true_lp: float, false_lp: float):
    def logprob_fn(requests):
        return [
            ((true_lp if text in true_texts(prompt, image) else false_lp) * len(text.split()), len(text.split()))
            for prompt, image, text in requests
        ]

    return logprob_fn


knowing_logprobs = by_truth(-0.1, -2.0)  # knows every fact
perturbed_lover_logprobs = by_truth(-2.0, -0.1)  # systematically prefers the wrong candidates


def indifferent_logprobs(requests):
    """A model that cannot tell true from perturbed: the same per-token log-prob everywhere."""
    return [(-1.0 * len(text.split()), len(text.split())) for _, _, text in requests]


def echo_generate(cases):
    """A generator that repeats the reference answer of each prompt/image (keyed by image bytes + prompt)."""
    answers = {(c.prompt, c.image): c.answer for c in cases}
    return lambda prompts: [answers[(prompt, image)] for prompt, image in prompts]


def test_name_mc_accuracy(clear_dir):
    items = load_clear_captions(clear_dir, "forget05_perturbed")
    assert C.name_mc_accuracy(items, knowing_logprobs) == 1.0
    assert C.name_mc_accuracy(items, perturbed_lover_logprobs) == 0.0
    assert C.name_mc_accuracy(items, indifferent_logprobs) == 0.0  # a tie is not knowledge


def test_name_mc_prompt_and_image_reach_the_scorer(clear_dir):
    items = load_clear_captions(clear_dir, "forget05_perturbed")
    seen = []
    C.name_mc_accuracy(items, lambda reqs: seen.extend(reqs) or knowing_logprobs(reqs))
    assert len(seen) == len(items) * 4  # the true name (also the paraphrase) once + 3 perturbed names
    assert {(q, img) for q, img, _ in seen} == {(NAME_QUESTION, item.image) for item in items}


def test_caption_rougeL(clear_dir):
    items = load_clear_captions(clear_dir, "retain_perturbed")
    assert C.caption_rougeL(items, echo_generate(C.caption_cases(items))) == pytest.approx(1.0)
    assert C.caption_rougeL(items, lambda prompts: ["zzz qqq"] * len(prompts)) == 0.0
    half = C.caption_rougeL(items, lambda prompts: ["sitting at a wooden desk"] * len(prompts))
    assert 0.2 < half < 0.6


def test_truth_ratio_formula(clear_dir):
    items = load_clear_captions(clear_dir, "forget05_perturbed")[:1]

    def fixed(requests):  # paraphrase: -0.5/token; perturbed: -1.0 and -2.0 per token; caption: anything
        values = {paraphrase(items[0].name): -0.5, **dict(zip(items[0].perturbed_captions, (-1.0, -2.0)))}
        return [(values.get(text, -0.3) * 4, 4) for _, _, text in requests]

    (ratio,) = C.truth_ratios(items, fixed)
    assert ratio == pytest.approx(math.exp((-1.0 + -2.0) / 2 - (-0.5)))
    assert C.truth_ratios(items, indifferent_logprobs) == [pytest.approx(1.0)]


def test_truth_ratio_scores():
    assert C.truth_ratio_score([0.5, 2.0], forget=True) == pytest.approx(0.5)
    assert C.truth_ratio_score([0.25, 2.0], forget=False) == pytest.approx(0.375)


def test_forget_quality():
    same = [0.2, 0.5, 0.8, 1.1, 1.4, 0.3, 0.9]
    assert C.forget_quality(same, list(same)) == pytest.approx(1.0)
    low = [0.01 * i for i in range(1, 31)]
    high = [5 + 0.01 * i for i in range(1, 31)]
    assert C.forget_quality(low, high) < 1e-6
    with pytest.raises(ValueError):
        C.forget_quality([], same)


def test_model_utility_is_harmonic_mean_of_non_forget_metrics():
    metrics = {
        "forget": {"rougeL_recall": 0.0, "prob": 0.0, "truth_ratio": 0.0, "mc_accuracy": 0.0},
        "retain": {"rougeL_recall": 0.5, "prob": 1.0, "truth_ratio": 0.25, "mc_accuracy": 1.0, "n": 10},
        "real_world": {"rougeL_recall": 1.0, "prob": 0.5, "truth_ratio": 1.0},
    }
    assert C.model_utility(metrics) == pytest.approx(6 / (2 + 1 + 4 + 1 + 2 + 1))
    metrics["real_world"]["prob"] = 0.0
    assert C.model_utility(metrics) == 0.0
    with pytest.raises(ValueError):
        C.model_utility({"forget": {"prob": 1.0}})


def test_clear_metrics_end_to_end(clear_dir):
    tasks = C.load_clear_tasks(clear_dir, "forget05")
    assert set(tasks) == set(C.TASKS)
    assert [len(tasks[t]) for t in C.TASKS] == [2, 2, 4, 4, 5, 2]
    all_cases = [case for cases in tasks.values() for case in cases]
    vanilla = C.clear_metrics(tasks, echo_generate(all_cases), knowing_logprobs)
    assert vanilla["forget_quality"] is None
    assert vanilla["tasks"]["retain"]["rougeL_recall"] == pytest.approx(1.0)
    assert vanilla["tasks"]["forget_names"]["mc_accuracy"] == 1.0
    p_true, p_false = math.exp(-0.1), math.exp(-2.0)  # per-token probabilities, normalised over 3 distractors
    assert vanilla["tasks"]["real_faces"]["prob"] == pytest.approx(p_true / (p_true + 3 * p_false))
    assert vanilla["tasks"]["retain"]["prob"] == pytest.approx(p_true)  # captions: not normalised
    assert 0.0 < vanilla["model_utility"] <= 1.0
    assert len(vanilla["forget_truth_ratios"]) == 2 and all(r < 1 for r in vanilla["forget_truth_ratios"])
    record = vanilla["items"]["forget"][0]
    assert record["prediction"] == record["reference"] == caption(FORGET[0]) and record["mc_correct"] is True

    forgot = C.clear_metrics(tasks, lambda p: ["I cannot tell."] * len(p), indifferent_logprobs,
                             reference_truth_ratios=[1.0, 1.0])  # fmt: skip
    assert forgot["forget_quality"] == pytest.approx(1.0)  # same truth ratios as the retain-only reference
    assert forgot["tasks"]["forget"]["truth_ratio"] == pytest.approx(1.0)
    assert forgot["tasks"]["forget"]["rougeL_recall"] == 0.0
    assert C.clear_metrics(tasks, echo_generate(all_cases), knowing_logprobs, [1.0, 1.0])["forget_quality"] < 1.0


def test_run_clear_protocol_wires_model_functions(clear_dir, monkeypatch):
    calls = {}

    def generate(model, processor, prompts, *, max_new_tokens=32, batch_size=64):
        calls.setdefault("generate", []).append((model, processor, max_new_tokens, batch_size))
        return ["I cannot tell."] * len(prompts)

    def answer_logprobs(model, processor, items, batch_size=32):
        calls.setdefault("score", []).append((model, processor, batch_size))
        return indifferent_logprobs(items)

    monkeypatch.setitem(sys.modules, "asru.models.generate", types.SimpleNamespace(generate=generate))
    monkeypatch.setitem(sys.modules, "asru.models.score", types.SimpleNamespace(answer_logprobs=answer_logprobs))
    result = C.run_clear_protocol("M", "P", clear_dir, "forget05", [1.0, 1.0], max_new_tokens=7, max_items=3)
    assert result["forget_config"] == "forget05_perturbed" and result["retain_config"] == "retain_perturbed"
    assert result["forget_quality"] == pytest.approx(1.0)
    assert result["tasks"]["retain"]["n"] == 3 and result["tasks"]["real_faces"]["n"] == 3
    assert set(calls["generate"]) == {("M", "P", 7, 64)} and set(calls["score"]) == {("M", "P", 32)}


def test_empty_candidate_is_a_user_error():
    case = C.ClearCase("x", "q", None, "answer", "answer", ("",))
    with pytest.raises(UserError, match="no tokens"):
        C.score_cases([case], lambda reqs: [(0.0, len(t.split())) for _, _, t in reqs])


def test_qa_cases_use_answer_text_and_distractors(clear_dir):
    cases = C.qa_cases(load_clear_qa(clear_dir, "real_world"))
    assert cases[0].answer == cases[0].paraphrased == "Blue"
    assert sorted(cases[0].perturbed) == ["Green", "Red"]


def test_caption_items_are_plain_values():
    item = ClearCaptionItem(id="i", name="n", caption="c", image=None)
    assert C.caption_cases([item])[0].paraphrased == "c"  # no paraphrase: fall back to the caption


def test_options_as_json_text_are_accepted_and_other_text_rejected(tmp_path):
    image = pa.array([{"bytes": png(20), "path": None}], IMAGE_TYPE)
    options = pa.array(['["B", "C"]'])
    write(tmp_path / "real_faces.parquet", {"image": image, "answer": pa.array(["A"]), "options": options})
    assert sorted(load_clear_qa(tmp_path, "real_faces")[0].options.values()) == ["A", "B", "C"]
    write(tmp_path / "real_faces.parquet", {"image": image, "answer": pa.array(["A"]), "options": pa.array(["B or C"])})
    with pytest.raises(UserError, match="row 0 column 'options' must be a list of strings"):
        load_clear_qa(tmp_path, "real_faces")


def test_world_exports_to_clear_and_the_protocol_runs_end_to_end(micro_world, micro_models, tmp_path):
    import math

    from asru.pipeline import clear_eval_stage, export_clear_stage

    counts = export_clear_stage(micro_world, tmp_path / "clear")
    assert counts["full"] == 20 and counts["forget05"] == 2 and counts["real_faces"] == 4
    first = clear_eval_stage(micro_models[1], tmp_path / "clear", tmp_path / "van.json", "forget05", max_items=3)
    assert first["forget_truth_ratios"]
    again = clear_eval_stage(micro_models[1], tmp_path / "clear", tmp_path / "again.json", "forget05",
                             reference=tmp_path / "van.json", max_items=3)
    assert again["forget_quality"] is not None and math.isclose(again["forget_quality"], 1.0)  # same model
