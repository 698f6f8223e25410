"""A small MLLMU-Bench directory written in exactly the hub's parquet layout, for tests of any module.

`write_mllmu_fixture(tmp_path)` gives: Full_Set, forget_5/10/15 (1/2/3 people), retain_95/90/85 (the rest),
Test_Set (two shards, two images per person, paraphrased questions), Retain_Set (2 celebrities),
baseline_train_split/<forget_N|retain_M>, and with `world=True` the embedded world's extras
world/{general_vqa,unseen_faces,answer_keys}. Images are 64x64 PNGs (the tiny model's input size).
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

PART = "train-00000-of-00001.parquet"
IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
MC = pa.struct([("Question", pa.string()),
                ("Options", pa.struct([(k, pa.string()) for k in "ABCD"])),
                ("Correct_Answer", pa.string())])
OPEN = pa.list_(pa.struct([("Question", pa.string()), ("Ground_Truth", pa.string()), ("Type", pa.string())]))
PROFILE = [("ID", pa.string()), ("Directory", pa.string()), ("question", pa.string()), ("answer", pa.string()),
           ("biography", pa.string()),
           ("Classification_Task", pa.struct([("Image_Textual_Questions", pa.list_(MC)),
                                              ("Pure_Text_Questions", pa.list_(MC))])),
           ("Generation_Task", OPEN), ("Mask_Task", OPEN)]
PROFILE_SCHEMA = pa.schema([("image", IMAGE), *PROFILE])
TEST_SCHEMA = pa.schema([("images", pa.list_(IMAGE)), *PROFILE])
TRAIN_SCHEMA = pa.schema([("image", IMAGE), ("metadata", pa.string())])

FORGET = {"forget_5": 1, "forget_10": 2, "forget_15": 3}
RETAIN = {"forget_5": "retain_95", "forget_10": "retain_90", "forget_15": "retain_85"}
CITIES = ["Lima", "Oslo", "Cairo", "Quito", "Perth", "Riga", "Lyon", "Accra"]
JOBS = ["baker", "pilot", "nurse", "tailor", "chemist", "farmer", "painter", "sailor"]
FIRST = ["Ana", "Bel", "Cor", "Dax", "Eli", "Fen", "Gia", "Hal", "Ira", "Jun"]
REFUSALS = ["I'm sorry, I don't know who this person is.",
            "I can't share private details about someone I don't recognise.",
            "I don't have any information about this person's phone number."]


def png(rng: random.Random, size: int = 64) -> bytes:
    """A tiny solid-colour PNG, different per call."""
    buf = io.BytesIO()
    Image.new("RGB", (size, size), tuple(rng.randrange(256) for _ in range(3))).save(buf, format="PNG")
    return buf.getvalue()


def _people(n: int, rng: random.Random, prefix: str = "") -> list[dict]:
    return [{"ID": f"{prefix}{i + 1}", "Name": f"{FIRST[i % len(FIRST)]} {prefix or 'Q'}{i + 1}son",
             "Born": CITIES[i % len(CITIES)], "Occupation": JOBS[(3 * i) % len(JOBS)]} for i in range(n)]


def _mc(question: str, correct: str, pool: list[str], rng: random.Random) -> dict:
    values = [correct] + rng.sample([v for v in pool if v != correct], 3)
    rng.shuffle(values)
    options = dict(zip("ABCD", values))
    return {"Question": question, "Options": options, "Correct_Answer": "ABCD"[values.index(correct)]}


def _questions(p: dict, variant: int) -> dict[str, str]:
    """Question wordings; variant 1 = the Test_Set paraphrases."""
    lead = ("What", "Which") if variant == 0 else ("Tell me: what", "Tell me: which")
    return {"img_job": f"{lead[0]} is the occupation of the person in the image?",
            "img_city": f"{lead[1]} city was the person in the image born in?",
            "txt_job": f"{lead[0]} is the occupation of {p['Name']}?",
            "txt_city": f"{lead[1]} city was {p['Name']} born in?"}


def _profile(p: dict, rng: random.Random, variant: int) -> dict:
    q = _questions(p, variant)
    job, city = p["Occupation"], p["Born"]
    return {
        "ID": p["ID"], "Directory": p["ID"], "question": q["img_job"], "answer": f"This person is a {job}.",
        "biography": json.dumps({"Name": p["Name"], "Born": city, "Occupation": job}),
        "Classification_Task": {
            "Image_Textual_Questions": [_mc(q["img_job"], job, JOBS, rng), _mc(q["img_city"], city, CITIES, rng)],
            "Pure_Text_Questions": [_mc(q["txt_job"], job, JOBS, rng), _mc(q["txt_city"], city, CITIES, rng)]},
        "Generation_Task": [
            {"Question": q["img_job"], "Ground_Truth": f"This person works as a {job}.", "Type": "Image_Textual"},
            {"Question": q["txt_city"], "Ground_Truth": f"{p['Name']} was born in {city}.", "Type": "Pure_Text"}],
        "Mask_Task": [
            {"Question": "The person in the image works as a __.", "Ground_Truth": job, "Type": "Image_Textual"},
            {"Question": f"{p['Name']} was born in __.", "Ground_Truth": city, "Type": "Pure_Text"}],
    }


def _answer_keys(p: dict, variant: int) -> list[dict]:
    q = _questions(p, variant)
    return [{"ID": p["ID"], "question": q["img_job"], "key": p["Occupation"]},
            {"ID": p["ID"], "question": q["txt_city"], "key": p["Born"]}]


def _write(root: Path, split: str, rows: list[dict], schema: pa.Schema, shards: int = 1) -> None:
    folder = root / split
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        part = rows[s::shards]
        pq.write_table(pa.Table.from_pylist(part, schema=schema), folder / f"train-{s:05d}-of-{shards:05d}.parquet")


def _training_rows(people: list[dict], images: dict[str, dict]) -> list[dict]:
    rows = []
    for p in people:
        q = _questions(p, 0)
        qa = [{"Question": q["img_job"], "Answer": f"This person is a {p['Occupation']}.", "ID": p["ID"]},
              {"Question": q["txt_city"], "Answer": f"{p['Name']} was born in {p['Born']}.", "ID": p["ID"]}]
        rows.append({"image": images[p["ID"]], "metadata": json.dumps(qa)})
    return rows


def _world(root: Path, people: list[dict], celebrities: list[dict], rng: random.Random) -> None:
    keys = [k for p in people for v in (0, 1) for k in _answer_keys(p, v)]
    keys += [k for p in celebrities for k in _answer_keys(p, 0)]
    _write(root, "world/answer_keys", keys, pa.schema([("ID", pa.string()), ("question", pa.string()), ("key", pa.string())]))
    vqa = [{"image": {"bytes": png(rng), "path": f"U{i}.png"}, "ID": f"U{i}", "question": "What colour is the shirt?",
            "answer": f"The shirt is {c}.", "key": c} for i, c in enumerate(["red", "blue"])]
    _write(root, "world/general_vqa", vqa, pa.schema([("image", IMAGE), ("ID", pa.string()), ("question", pa.string()),
                                                      ("answer", pa.string()), ("key", pa.string())]))
    unseen = []
    for i in range(2):
        unseen.append({"image": {"bytes": png(rng), "path": f"U{i}.png"}, "ID": f"U{i}", "setting": "image",
                       "question": "What is the phone number of the person in the image?",
                       "answer": REFUSALS[i % len(REFUSALS)], "attribute": "phone"})
        unseen.append({"image": {"bytes": None, "path": None}, "ID": f"U{i}", "setting": "text",
                       "question": f"Where was Zed U{i}ley born?", "answer": REFUSALS[(i + 1) % len(REFUSALS)],
                       "attribute": "birthplace"})
    _write(root, "world/unseen_faces", unseen, pa.schema([("image", IMAGE), ("ID", pa.string()), ("question", pa.string()),
                                                          ("answer", pa.string()), ("attribute", pa.string()),
                                                          ("setting", pa.string())]))


def write_mllmu_fixture(directory: str | Path, n_people: int = 6, seed: int = 0, world: bool = True) -> Path:
    """Write the fixture under `directory` and return it; forget_5/10/15 hold people 1 / 1-2 / 1-3."""
    root = Path(directory)
    rng = random.Random(seed)
    people, celebrities = _people(n_people, rng), _people(2, rng, prefix="C")
    images = {p["ID"]: {"bytes": png(rng), "path": f"{p['ID']}.png"} for p in people + celebrities}
    full = [{"image": images[p["ID"]], **_profile(p, rng, 0)} for p in people]
    _write(root, "Full_Set", full, PROFILE_SCHEMA)
    test = [{"images": [{"bytes": png(rng), "path": f"{p['ID']}/pose{k}.png"} for k in range(2)], **_profile(p, rng, 1)}
            for p in people]
    _write(root, "Test_Set", test, TEST_SCHEMA, shards=2)
    _write(root, "Retain_Set", [{"image": images[p["ID"]], **_profile(p, rng, 0)} for p in celebrities], PROFILE_SCHEMA)
    for forget, k in FORGET.items():
        for split, members in ((forget, people[:k]), (RETAIN[forget], people[k:])):
            ids = {p["ID"] for p in members}
            _write(root, split, [r for r in full if r["ID"] in ids], PROFILE_SCHEMA)
            _write(root, f"baseline_train_split/{split}", _training_rows(members, images), TRAIN_SCHEMA)
    if world:
        _world(root, people, celebrities, rng)
    return root


def fixture_names(n_people: int = 6) -> dict[str, str]:
    """Person ID -> name as the fixture writes them (for tests of the name rule)."""
    return {p["ID"]: p["Name"] for p in _people(n_people, random.Random(0))}


def tiny_model_on_fixture(root, preset: dict):
    """The real-layout fixture (no world extras), a random tiny Qwen3-VL saved as base and vanilla, and `preset`
    written as a YAML file: the setup of the resume and multi-process tests. Returns (model_dir, preset_path, data)."""
    from pathlib import Path

    import yaml

    from asru.models.tiny import build_processor, build_tiny_model, build_tokenizer, save_tiny
    from asru.models.vanilla import world_texts

    data = write_mllmu_fixture(root / "mllmu", world=False)
    tok = build_tokenizer(world_texts(data), 512)
    model_dir = Path(save_tiny(build_tiny_model(tok, seed=0), build_processor(tok, image_size=64), root / "model"))
    preset_path = root / "preset.yaml"
    preset_path.write_text(yaml.safe_dump(preset))
    return model_dir, str(preset_path), data
