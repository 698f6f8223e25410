"""Export the embedded world in the CLEAR (therem/CLEAR) layout, so the CLEAR protocol runs end to end offline.

Mapping (the world's forget splits are 5/10/15 %, CLEAR's 1/5/10 %): forget01 <- forget_5, forget05 <- forget_10,
forget10 <- forget_15, retainNN the complements. A caption states the person's whole profile; the paraphrase
says it another way; perturbed captions swap in other people's values; perturbed names are other people's names.
`real_faces` are the world's celebrities (answer = name, options = wrong names), `real_world` its general
visual questions (answer = the value, options = wrong values).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from asru.data.mllmu import general_vqa_items, read_split
from asru.data.world.build import IMAGE, PART

SPLIT_MAP = {"01": ("forget_5", "retain_95"), "05": ("forget_10", "retain_90"), "10": ("forget_15", "retain_85")}
RETAIN_NN = {"01": "99", "05": "95", "10": "90"}


def caption(bio: dict) -> str:
    return (f"{bio['Name']} was born in {bio['Born']} in {bio['Birth_Year']}, works as a {bio['Occupation']} "
            f"and enjoys {bio['Hobby']}.")


def paraphrase(bio: dict) -> str:
    return (f"Born in {bio['Born']} in {bio['Birth_Year']}, {bio['Name']} is a {bio['Occupation']} who likes "
            f"{bio['Hobby']}.")


def _people(world: Path, split: str) -> list[dict]:
    rows = read_split(world, split, columns=["ID", "image", "biography"])
    return [{"id": r["ID"], "image": r["image"], "bio": json.loads(r["biography"])} for r in rows]


def _caption_rows(people: list[dict], everyone: list[dict], rng: random.Random, perturbed: bool) -> list[dict]:
    rows = []
    for person in people:
        bio = person["bio"]
        row = {"image": person["image"], "caption": caption(bio), "name": bio["Name"]}
        if perturbed:
            others = [p["bio"] for p in everyone if p["id"] != person["id"]]
            fakes = rng.sample(others, 3)
            row["perturbed_captions"] = [caption({**bio, "Born": f["Born"], "Occupation": f["Occupation"],
                                                  "Hobby": f["Hobby"]}) for f in fakes]
            row["paraphrased_caption"] = paraphrase(bio)
            row["perturbed_names"] = [f["Name"] for f in rng.sample(others, 3)]
        rows.append(row)
    return rows


def _write(out: Path, config: str, rows: list[dict]) -> None:
    (out / config).mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows)
    schema = pa.schema([pa.field(f.name, IMAGE if f.name == "image" else f.type) for f in table.schema])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), out / config / PART)


def export_clear(world: str | Path, out: str | Path, seed: int = 0) -> dict:
    world, out = Path(world), Path(out)
    rng = random.Random(seed)
    everyone = _people(world, "Full_Set")
    _write(out, "full", _caption_rows(everyone, everyone, rng, perturbed=False))
    counts = {"full": len(everyone)}
    for nn, (forget, retain) in SPLIT_MAP.items():
        for config, split in ((f"forget{nn}", forget), (f"retain{RETAIN_NN[nn]}", retain)):
            people = _people(world, split)
            _write(out, config, _caption_rows(people, everyone, rng, perturbed=False))
            _write(out, f"{config}_perturbed", _caption_rows(people, everyone, rng, perturbed=True))
            counts[config] = len(people)
    celebs = _people(world, "Retain_Set")
    names = [c["bio"]["Name"] for c in celebs]
    _write(out, "real_faces", [{"image": c["image"], "answer": c["bio"]["Name"],
                                "options": rng.sample([n for n in names if n != c["bio"]["Name"]], 3)} for c in celebs])
    vqa = general_vqa_items(world)
    keys = sorted({i.meta["key"] for i in vqa})
    _write(out, "real_world", [{"image": {"bytes": i.image, "path": f"{i.id}.png"}, "question": i.question,
                                "answer": i.meta["key"],
                                "options": rng.sample([k for k in keys if k != i.meta["key"]], 3)} for i in vqa])
    counts.update(real_faces=len(celebs), real_world=len(vqa))
    return counts
