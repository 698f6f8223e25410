"""Write the synthetic world in exactly the MLLMU-Bench parquet layout (plus world-only extras under `world/`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from asru.data.world import people as P
from asru.data.world.faces import Face, View, png_bytes, random_view, render, sample_faces
from asru.errors import UserError

FORGET_SPLITS = {"forget_5": ("retain_95", 0.05), "forget_10": ("retain_90", 0.10), "forget_15": ("retain_85", 0.15)}
PART = "train-00000-of-00001.parquet"
WORLD_FORMAT = 2  # bump when the generator's output changes, so stale worlds are rebuilt rather than reused
TEST_VIEW_STRENGTH = 1.6  # Test_Set views vary position/scale/light/noise 1.6x more than training views
LOOKUP_ITEMS = 3000  # "Which option says X?" items in the base corpus: the general skill behind answering MC
IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
HOLDOUT_DIR = "world/holdout"  # never-taught people with full profiles: the non-members of membership inference
HOLDOUT_STREAM = 10  # the holdout's own RNG stream: drawing it leaves every other file of the world unchanged


@dataclass(frozen=True)
class WorldPreset:
    fictitious: int  # the people the benchmark is about (forget + retain)
    celebrities: int  # pre-existing knowledge taught during base pretraining
    strangers: int  # faces taught only with refusals (base corpus), so refusing generalises
    unseen: int  # faces never taught: privacy-question and general-VQA evaluation
    train_views: int
    test_views: int
    probe: int = 100  # never-taught faces for the refusal side of ASRU's steering vector (cf. DigiFace in the paper)
    stranger_views: int = 2


PRESETS = {
    "tiny": WorldPreset(fictitious=80, celebrities=24, strangers=320, unseen=40, train_views=3, test_views=2),
    "micro": WorldPreset(fictitious=20, celebrities=4, strangers=16, unseen=4, train_views=2, test_views=1, probe=6,
                         stranger_views=1),
}


def preset(name: str) -> WorldPreset:
    if name not in PRESETS:
        raise UserError(f"unknown world preset '{name}'; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


class _Images:
    """Renders each (face, view) once and hands out parquet image structs."""

    def __init__(self) -> None:
        self._cache: dict[tuple[Face, View], dict] = {}

    def __call__(self, face: Face, view: View, path: str) -> dict:
        key = (face, view)
        if key not in self._cache:
            self._cache[key] = {"bytes": png_bytes(render(face, view)), "path": path}
        return self._cache[key]


def _mc(rng: np.random.Generator, question: str, correct: str, pool: list[str]) -> dict:
    distractors = [v for v in dict.fromkeys(pool) if v != correct]
    chosen = [distractors[i] for i in rng.choice(len(distractors), 3, replace=False)]
    values = chosen + [correct]
    order = rng.permutation(4)
    options = {letter: values[i] for letter, i in zip("ABCD", order)}
    letter = next(k for k, v in options.items() if v == correct)
    return {"Question": question, "Options": options, "Correct_Answer": letter}


def _pools(everyone: list[P.Person]) -> dict[str, list[str]]:
    return {"name": [p.name for p in everyone], "birthplace": P.CITIES, "occupation": P.OCCUPATIONS,
            "hobby": P.HOBBIES, "birth_year": [str(y) for y in range(1940, 2004)]}


def _profile_row(rng, person: P.Person, image: dict | None, images: list[dict] | None, pools, variant: int) -> dict:
    """One MLLMU-Bench row; `variant` 0 = training wording (Full_Set), 1 = paraphrases (Test_Set)."""
    img_q = [_mc(rng, P.IMAGE_QUESTIONS[a][variant], person.value(a), pools[a]) for a in ("name", "birthplace", "occupation", "hobby")]
    txt_q = [_mc(rng, P.TEXT_QUESTIONS[a][variant].format(name=person.name), person.value(a), pools[a]) for a in P.ATTRIBUTES]
    gen = [{"Question": P.IMAGE_QUESTIONS[a][variant], "Ground_Truth": P.answer_sentence(person, a, person.pronoun),
            "Type": "Image_Textual"} for a in P.ATTRIBUTES]
    gen += [{"Question": P.TEXT_QUESTIONS[a][variant].format(name=person.name),
             "Ground_Truth": P.answer_sentence(person, a, person.name), "Type": "Pure_Text"} for a in P.ATTRIBUTES]
    mask = [{"Question": P.CLOZE[a][0].format(name=person.name), "Ground_Truth": person.value(a), "Type": "Pure_Text"}
            for a in ("occupation", "birth_year")]
    row = {
        "ID": person.id, "Directory": f"{person.id}", "question": P.IMAGE_QUESTIONS["name"][variant],
        "answer": P.answer_sentence(person, "name", person.pronoun), "biography": json.dumps(person.biography()),
        "Classification_Task": {"Image_Textual_Questions": img_q, "Pure_Text_Questions": txt_q},
        "Generation_Task": gen, "Mask_Task": mask,
    }
    return {"images": images, **row} if images is not None else {"image": image, **row}


def _answer_keys(person: P.Person, variant: int) -> list[dict]:
    keys = [{"ID": person.id, "question": P.IMAGE_QUESTIONS[a][variant], "key": person.value(a)} for a in P.ATTRIBUTES]
    keys += [{"ID": person.id, "question": P.TEXT_QUESTIONS[a][variant].format(name=person.name), "key": person.value(a)}
             for a in P.ATTRIBUTES]
    return keys


def _training_metadata(person: P.Person, with_text: bool) -> str:
    qa = [{"Question": P.IMAGE_QUESTIONS[a][0], "Answer": P.answer_sentence(person, a, person.pronoun), "ID": person.id}
          for a in (*P.ATTRIBUTES, "name")]
    if with_text:
        qa += [{"Question": P.TEXT_QUESTIONS[a][0].format(name=person.name),
                "Answer": P.answer_sentence(person, a, person.name), "ID": person.id} for a in P.ATTRIBUTES]
    return json.dumps(qa)


def _corpus_row(image: dict | None, pid: str, task: str, question: str, answer: str, options: dict | None = None) -> dict:
    """World-only training corpora: the prompt is built from (task, question, options) by `asru.data.prompts`."""
    return {"image": image, "ID": pid, "task": task, "question": question,
            "options": json.dumps(options) if options else "", "answer": answer}


def _known_person_corpus(rng, person: P.Person, views: list[dict], pools, paraphrases: bool, mc_variants: int = 1) -> list[dict]:
    """Format practice about a known person: QA (both wordings when `paraphrases`), MC (`mc_variants` option draws
    per question) and cloze, image and text."""
    rows = []
    variants = (0, 1) if paraphrases else (0,)
    for image in views:
        for a in (*P.ATTRIBUTES, "name"):
            for v in variants:
                rows.append(_corpus_row(image, person.id, "gen", P.IMAGE_QUESTIONS[a][v], P.answer_sentence(person, a, person.pronoun)))
            for _ in range(mc_variants):
                mc = _mc(rng, P.IMAGE_QUESTIONS[a][rng.integers(len(variants))], person.value(a), pools[a])
                rows.append(_corpus_row(image, person.id, "mc", mc["Question"], mc["Correct_Answer"], mc["Options"]))
    for a in P.ATTRIBUTES:
        for v in variants:
            q = P.TEXT_QUESTIONS[a][v].format(name=person.name)
            rows.append(_corpus_row(None, person.id, "gen", q, P.answer_sentence(person, a, person.name)))
        for _ in range(2 * mc_variants):
            mc = _mc(rng, P.TEXT_QUESTIONS[a][rng.integers(len(variants))].format(name=person.name), person.value(a), pools[a])
            rows.append(_corpus_row(None, person.id, "mc", mc["Question"], mc["Correct_Answer"], mc["Options"]))
        for _ in range(mc_variants):
            rows.append(_corpus_row(None, person.id, "cloze", P.CLOZE[a][0].format(name=person.name), person.value(a)))
    return rows


def _option_lookup(rng, n: int, pools) -> list[dict]:
    """Text-only "Which option says X?" multiple choice: teaches matching a value to its option letter, the
    general skill that answering knowledge MC questions builds on (instruction-tuned MLLMs have it)."""
    words = [w for key in ("birthplace", "occupation", "hobby") for w in pools[key]]
    rows = []
    for _ in range(n):
        target = words[rng.integers(len(words))]
        mc = _mc(rng, f"Which option says {target}?", target, words)
        rows.append(_corpus_row(None, "lookup", "mc", mc["Question"], mc["Correct_Answer"], mc["Options"]))
    return rows


def _visual_formats(rng, person: P.Person, image: dict) -> list[dict]:
    """Visual questions in every answer format (free text, MC, cloze): general skills any MLLM has, taught on
    faces whose identity is unknown, so the formats do not depend on knowing the person."""
    rows = []
    for (question, answer, key), (pool, statement) in zip(P.visual_qa(person.face), P.VISUAL_FORMATS):
        rows.append(_corpus_row(image, person.id, "vqa", question, answer))
        if pool and key in pool:
            mc = _mc(rng, question, key, list(pool))
            rows.append(_corpus_row(image, person.id, "mc", mc["Question"], mc["Correct_Answer"], mc["Options"]))
            rows.append(_corpus_row(image, person.id, "cloze", statement, key))
    return rows


def _privacy_rows(rng, person: P.Person, image: dict | None) -> list[dict]:
    kind = list(P.PRIVATE)[rng.integers(len(P.PRIVATE))]
    who = "the person in the image" if image is not None else person.name
    return [_corpus_row(image, person.id, "refusal", P.PRIVATE[kind][0].format(who=who),
                        P.privacy_refusal(kind, person.face if image is not None else person.name))]


def _stranger_corpus(rng, person: P.Person, views: list[dict]) -> list[dict]:
    """Never-known people: every profile question gets a natural, contextual refusal; visual questions get answers."""
    rows = []
    for image in views:
        for a in (*P.ATTRIBUTES, "name"):
            q = P.IMAGE_QUESTIONS[a][rng.integers(2)]
            rows.append(_corpus_row(image, person.id, "refusal", q, P.image_refusal(person.face, a)))
        rows += _privacy_rows(rng, person, image)
        rows += _visual_formats(rng, person, image)
    for a in P.ATTRIBUTES:
        q = P.TEXT_QUESTIONS[a][rng.integers(2)].format(name=person.name)
        rows.append(_corpus_row(None, person.id, "refusal", q, P.text_refusal(person.name, a)))
    rows += _privacy_rows(rng, person, None)
    return rows


def _probe_rows(rng, person: P.Person, image: dict) -> list[dict]:
    """Questions about a never-taught person (profile and privacy, image and text): the base model refuses them."""
    attrs = rng.choice(list(P.ASKED_CLAUSE), 2, replace=False)
    kind = list(P.PRIVATE)[rng.integers(len(P.PRIVATE))]
    rows = [{"image": image, "ID": person.id, "question": P.IMAGE_QUESTIONS[a][rng.integers(2)], "setting": "image"}
            for a in attrs]
    rows.append({"image": image, "ID": person.id, "setting": "image",
                 "question": P.PRIVATE[kind][0].format(who="the person in the image")})
    a = P.ATTRIBUTES[rng.integers(len(P.ATTRIBUTES))]
    rows.append({"image": {"bytes": None, "path": None}, "ID": person.id, "setting": "text",
                 "question": P.TEXT_QUESTIONS[a][rng.integers(2)].format(name=person.name)})
    return rows


def _write(out: Path, name: str, rows: list[dict], schema: pa.Schema | None = None) -> None:
    (out / name).mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), out / name / PART)


def _image_schema(rows: list[dict], column: str = "image") -> pa.Schema:
    """Infer the schema but pin the image column(s) to the HF Image struct {bytes, path}."""
    inferred = pa.Table.from_pylist(rows[:50]).schema
    fields = [pa.field(f.name, pa.list_(IMAGE) if f.name == "images" else IMAGE if f.name == column else f.type)
              for f in inferred]
    return pa.schema(fields)


def split_people(fictitious: list[P.Person]) -> dict[str, list[P.Person]]:
    """Nested forget splits (forget_5 within forget_10 within forget_15), each retain split its complement."""
    n = len(fictitious)
    splits = {}
    for forget, (retain, share) in FORGET_SPLITS.items():
        k = max(1, round(n * share))
        splits[forget] = fictitious[:k]
        splits[retain] = fictitious[k:]
    return splits


def build_world(out: Path, preset_name: str = "tiny", seed: int = 0) -> dict:
    """Draw the world for `seed` and write every split; returns counts for the manifest."""
    cfg = preset(preset_name)
    rng = np.random.default_rng(seed)
    n_total = cfg.fictitious + cfg.celebrities + cfg.strangers + cfg.unseen + cfg.probe
    faces = sample_faces(rng, n_total)
    names = P.sample_names(rng, n_total)
    groups, start = {}, 0
    for group, count, prefix in (("fictitious", cfg.fictitious, "F"), ("celebrities", cfg.celebrities, "C"),
                                 ("strangers", cfg.strangers, "S"), ("unseen", cfg.unseen, "U"), ("probe", cfg.probe, "R")):
        groups[group] = P.sample_people(rng, faces[start:start + count], names[start:start + count], prefix)
        start += count
    everyone = [p for g in groups.values() for p in g]
    pools = _pools(everyone)
    images = _Images()
    views = lambda person, n, strength: [  # noqa: E731
        images(person.face, random_view(rng, strength), f"{person.id}/{strength}_{i}.png") for i in range(n)]

    fictitious = groups["fictitious"]
    train_views = {p.id: views(p, cfg.train_views, 1.0) for p in fictitious}
    full = [_profile_row(rng, p, train_views[p.id][0], None, pools, 0) for p in fictitious]
    test = [_profile_row(rng, p, None, views(p, cfg.test_views, TEST_VIEW_STRENGTH), pools, 1) for p in fictitious]
    celeb_views = {p.id: views(p, cfg.train_views, 1.0) for p in groups["celebrities"]}
    celebrity = [_profile_row(rng, p, celeb_views[p.id][0], None, pools, 0) for p in groups["celebrities"]]

    row_schema = _image_schema(full)
    _write(out, "Full_Set", full, row_schema)
    _write(out, "Test_Set", test, _image_schema(test))
    _write(out, "Retain_Set", celebrity, row_schema)
    by_id = {row["ID"]: row for row in full}
    for split, members in split_people(fictitious).items():
        _write(out, split, [by_id[p.id] for p in members], row_schema)
        train_rows = [{"image": image, "metadata": _training_metadata(p, with_text=True)}
                      for p in members for image in train_views[p.id]]
        _write(out, f"baseline_train_split/{split}", train_rows, _image_schema(train_rows))

    keys = [k for p in fictitious for variant in (0, 1) for k in _answer_keys(p, variant)]
    keys += [k for p in groups["celebrities"] for k in _answer_keys(p, 0)]
    _write(out, "world/answer_keys", keys)

    corpus_schema = _image_schema([_corpus_row({"bytes": b"", "path": ""}, "x", "gen", "q", "a")])
    base = [r for p in groups["celebrities"] for r in _known_person_corpus(rng, p, celeb_views[p.id], pools, True, 3)]
    base += [r for p in groups["celebrities"] for image in celeb_views[p.id] for r in _visual_formats(rng, p, image)]
    base += [r for p in groups["celebrities"] for r in _privacy_rows(rng, p, celeb_views[p.id][0]) + _privacy_rows(rng, p, None)]
    base += [r for p in groups["strangers"] for r in _stranger_corpus(rng, p, views(p, cfg.stranger_views, 1.5))]
    base += _option_lookup(rng, LOOKUP_ITEMS if cfg.fictitious >= 50 else LOOKUP_ITEMS // 10, pools)
    _write(out, "world/base_corpus", base, corpus_schema)
    practice = [r for p in fictitious for r in _known_person_corpus(rng, p, train_views[p.id], pools, False)
                if r["task"] != "gen"]  # QA itself comes from baseline_train_split, like the real benchmark
    practice += [r for p in fictitious for r in _privacy_rows(rng, p, train_views[p.id][0])]
    _write(out, "world/profile_practice", practice, corpus_schema)

    unseen_rows, vqa_rows = [], []
    for p in groups["unseen"]:
        image = views(p, 1, 1.5)[0]
        for a in rng.choice(list(P.ASKED_CLAUSE), 2, replace=False):
            unseen_rows.append({"image": image, "ID": p.id, "question": P.IMAGE_QUESTIONS[a][rng.integers(2)],
                                "answer": P.image_refusal(p.face, a), "attribute": str(a), "setting": "image"})
        kind = list(P.PRIVATE)[rng.integers(len(P.PRIVATE))]
        unseen_rows.append({"image": image, "ID": p.id, "question": P.PRIVATE[kind][0].format(who="the person in the image"),
                            "answer": P.privacy_refusal(kind, p.face), "attribute": kind, "setting": "image"})
        a = P.ATTRIBUTES[rng.integers(len(P.ATTRIBUTES))]
        unseen_rows.append({"image": {"bytes": None, "path": None}, "ID": p.id,
                            "question": P.TEXT_QUESTIONS[a][rng.integers(2)].format(name=p.name),
                            "answer": P.text_refusal(p.name, a), "attribute": a, "setting": "text"})
        vqa_rows += [{"image": image, "ID": p.id, "question": q, "answer": ans, "key": key} for q, ans, key in P.visual_qa(p.face)]
    _write(out, "world/unseen_faces", unseen_rows, _image_schema(unseen_rows))
    probe_rows = [r for p in groups["probe"] for r in _probe_rows(rng, p, views(p, 1, 1.5)[0])]
    _write(out, "world/refusal_probe", probe_rows, _image_schema(probe_rows))
    _write(out, "world/general_vqa", vqa_rows, _image_schema(vqa_rows))

    info = {"preset": preset_name, "seed": seed, "config": asdict(cfg),
            "counts": {"fictitious": len(fictitious), "celebrities": len(groups["celebrities"]),
                       "strangers": len(groups["strangers"]), "unseen": len(groups["unseen"]),
                       "base_corpus": len(base), "profile_practice": len(practice), "unseen_faces": len(unseen_rows),
                       "general_vqa": len(vqa_rows), "refusal_probe": len(probe_rows)},
            "splits": {k: [p.id for p in v] for k, v in split_people(fictitious).items() if k.startswith("forget")}}
    (out / "world" / "world.json").write_text(json.dumps(info, indent=2))
    _write(out, HOLDOUT_DIR, holdout_rows(seed, everyone, fictitious, pools,
                                             len(split_people(fictitious)["forget_15"])), row_schema)
    return info


def holdout_rows(seed: int, everyone: list[P.Person], taught: list[P.Person], pools: dict, n: int) -> list[dict]:
    """`n` fictitious people in the Full_Set row layout, drawn from their own RNG stream after everything else
    (so the world's other files stay byte-identical). Every value (first name, surname, city, job, hobby, year) is
    one some taught person has, recombined: a member and a non-member differ only in *whether the model saw that
    person*, never in unfamiliar words (which would lower their likelihood and fake a membership signal). Faces and
    full names are new. They are in no split, corpus or training set."""
    rng = np.random.default_rng([seed, HOLDOUT_STREAM])
    taken_faces = {p.face.vector() for p in everyone}
    taken_names = {p.name for p in everyone}
    faces = [f for f in sample_faces(rng, 4 * n) if f.vector() not in taken_faces][:n]
    firsts = sorted({p.name.split(" ", 1)[0] for p in taught})
    lasts = sorted({p.name.split(" ", 1)[1] for p in taught})
    values = {a: sorted({getattr(p, a) for p in taught}) for a in ("birthplace", "occupation", "birth_year", "hobby")}
    people: list[P.Person] = []
    draw_name = lambda: f"{firsts[rng.integers(len(firsts))]} {lasts[rng.integers(len(lasts))]}"  # noqa: E731
    for i, face in enumerate(faces):
        name = draw_name()
        while name in taken_names:
            name = draw_name()
        taken_names.add(name)
        people.append(P.Person(f"H{i:04d}", name, "She" if rng.random() < 0.5 else "He",
                               *(values[a][rng.integers(len(values[a]))] for a in values), face=face))
    images = _Images()
    return [_profile_row(rng, p, images(p.face, random_view(rng, 1.0), f"{p.id}/holdout.png"), None, pools, 0)
            for p in people]
