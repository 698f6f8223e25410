"""The MLLMU-Bench evaluation protocol: forget / test / retain / celebrity splits, MC + generation + cloze.

The protocol follows the benchmark's official eval script (see docs/evaluation.md for each rule and the few
places where this implementation decides something the script leaves open). Every prompt of a run goes
through one batched `generate` call, so evaluation costs one pass of greedy decoding.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from asru.data import mllmu as data
from asru.data.prompts import CLOZE_INSTRUCTION, GEN_INSTRUCTION, MC_INSTRUCTION, cloze_prompt, gen_prompt, mc_prompt
from asru.data.schema import QAItem
from asru.errors import UserError
from asru.eval import likelihood as lik
from asru.eval import mia
from asru.eval import registry
from asru.eval.metrics import contains_answer, mc_letter, rouge_scores, sentence_bleu
from asru.eval.quality import add_quality, answer_perplexities, judged_indices
from asru.models.generate import decoding, generate
from asru.refusal import is_refusal, refusal_phrase_key

SPLITS = ("forget", "test", "retain", "celebrity")
FEW_SHOT_SPLITS = ("forget", "test", "retain")  # the official script gives celebrities no demonstration
PROTOCOL_MAX_NEW_TOKENS = 50  # the official script's value; smaller is fine for short-answer models
RECORD_TASK = {"mc": "mc", "gen": "gen", "cloze": "cloze", "vqa": "vqa", "refusal": "unseen"}


# ----------------------------------------------------------------------------------------------- protocol

def prompt_for(item: QAItem, shot: QAItem | None = None) -> str:
    """The user text of one item; `shot` (an MC item) is the 1-shot demonstration for MC questions."""
    if item.task == "mc":
        example = (shot.question, shot.options or {}, shot.answer) if shot is not None else None
        return mc_prompt(item.question, item.options or {}, example)
    if item.task == "cloze":
        return cloze_prompt(item.question)
    if item.task in ("gen", "refusal"):
        return gen_prompt(item.question)
    return item.question


def mc_prediction(reply: str, options: dict[str, str]) -> str | None:
    """The official rule: the reply's first character, upper-cased, if it is an option key, else no answer."""
    return mc_letter(reply, options)


def blank_correct(reply: str, ground_truth: str) -> bool:
    """The official rule: the lower-cased ground truth is a substring of the lower-cased reply."""
    return ground_truth.lower() in reply.lower()


def score_item(item: QAItem, reply: str) -> dict[str, Any]:
    """Per-item metrics of one reply; `correct` is the item's headline decision (None where there is none)."""
    if item.task == "mc":
        letter = mc_prediction(reply, item.options or {})
        return {"predicted_letter": letter, "correct": letter == item.answer}
    if item.task == "cloze":
        return {"correct": blank_correct(reply, item.answer)}
    if item.task == "gen":
        contains = contains_answer(reply, item.answer, key=item.meta.get("key"))
        return {**rouge_scores(reply, item.answer), "bleu": sentence_bleu(reply, item.answer),
                "contains": contains, "refusal": is_refusal(reply), "correct": contains}
    if item.task == "vqa":
        return {"correct": item.meta.get("key", item.answer).lower() in reply.lower()}
    if item.task == "refusal":
        refused = is_refusal(reply)
        return {"refusal": refused, "correct": refused}
    raise ValueError(f"no scoring rule for task {item.task!r}")


def make_record(split: str, item: QAItem, prompt: str, reply: str) -> dict[str, Any]:
    """One line of results.items.jsonl: what was asked, what came back, how it was scored."""
    record = {"split": split, "task": RECORD_TASK[item.task], "setting": item.setting, "id": item.id,
              "source": item.split, "question": item.question, "prompt": prompt, "ground_truth": item.answer,
              "prediction": reply, "options": item.options, "correct": None}
    if item.meta.get("key"):
        record["key"] = item.meta["key"]
    if item.attribute:
        record["attribute"] = item.attribute
    record.update(score_item(item, reply))
    return record


# ----------------------------------------------------------------------------------------------- items

def _first_people(items: list[QAItem], limit: int | None) -> list[QAItem]:
    if limit is None:
        return items
    keep = set(sorted({i.id for i in items}, key=data.natural_key)[:limit])
    return [i for i in items if i.id in keep]


def collect_items(data_dir: str | Path, forget_split: str, splits: Iterable[str] = SPLITS,
                  limit: int | None = None, extras: bool = True) -> dict[str, list[QAItem]]:
    """Items per evaluation split: forget, test (Test_Set of the forget people), retain (first `limit` people),
    celebrity (Retain_Set), and the world's general_vqa / unseen_faces when `extras` and present."""
    splits = tuple(splits)
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise UserError(f"unknown evaluation split(s) {', '.join(unknown)}; choose from {', '.join(SPLITS)}")
    if limit is not None and limit < 1:
        raise UserError(f"limit must be a positive number of retain people, got {limit}")
    retain_split = data.retain_split_for(forget_split)
    forget_ids = data.person_ids(data_dir, forget_split)
    data.check_disjoint(forget_ids, data.person_ids(data_dir, retain_split))
    loaders = {
        "forget": lambda: data.eval_items(data_dir, forget_split),
        "test": lambda: data.eval_items(data_dir, "Test_Set", ids=forget_ids),
        "retain": lambda: _first_people(data.eval_items(data_dir, retain_split), limit),
        "celebrity": lambda: data.eval_items(data_dir, "Retain_Set"),
    }
    out = {s: loaders[s]() for s in SPLITS if s in splits}
    if extras:
        out["general_vqa"] = data.general_vqa_items(data_dir)
        out["unseen_faces"] = data.unseen_face_items(data_dir)
    return out


def few_shots(data_dir: str | Path) -> dict[str, QAItem]:
    """The 1-shot MC demonstrations, one per setting (image questions get an image-question example)."""
    return {s: data.few_shot_example(data_dir, s) for s in ("image", "text")}


def plan_prompts(items: dict[str, list[QAItem]], shots: dict[str, QAItem]) -> list[tuple[str, QAItem, str]]:
    """(split, item, prompt) for every scored item; the demonstration question itself is not scored
    (as in the official script), since its answer is in the prompt."""
    plan = []
    for split, split_items in items.items():
        for item in split_items:
            shot = shots.get(item.setting) if item.task == "mc" and split in FEW_SHOT_SPLITS else None
            if shot is not None and (item.id, item.question) == (shot.id, shot.question):
                continue
            plan.append((split, item, prompt_for(item, shot)))
    return plan


# ----------------------------------------------------------------------------------------------- summaries

def _mean(values: list[float]) -> float | None:
    """Mean, or None when there is nothing to average (a missing number must not read as 0)."""
    return sum(values) / len(values) if values else None


def split_summary(records: list[dict], split: str = "forget") -> dict[str, Any]:
    """The numbers of one split, all registered in `asru.eval.registry` (fractions in [0, 1] unless a metric says
    otherwise), plus the item counts per task."""
    def pick(task: str, setting: str | None = None) -> list[dict]:
        return [r for r in records if r["task"] == task and (setting is None or r["setting"] == setting)]

    return {**registry.summarize_split(records, split),
            "n_items": {"mc_image": len(pick("mc", "image")), "mc_text": len(pick("mc", "text")),
                        "gen": len(pick("gen")), "cloze": len(pick("cloze"))}}


def distinct_refusal_ratio(replies: list[str]) -> float | None:
    """Distinct refusals / refusals (case and punctuation ignored): 1.0 = every refusal worded differently,
    near 0 = one rigid template everywhere; None when nothing was refused."""
    refusals = [refusal_phrase_key(r) for r in replies if is_refusal(r)]
    return len(set(refusals)) / len(refusals) if refusals else None


def world_summary(records: list[dict]) -> dict[str, Any]:
    """Top-level numbers of the embedded world's extras (None when the data has no extras)."""
    vqa = [r for r in records if r["task"] == "vqa"]
    unseen = {s: [r for r in records if r["task"] == "unseen" and r["setting"] == s] for s in ("image", "text")}
    return {
        "general_vqa_acc": _mean([float(r["correct"]) for r in vqa]),
        "unseen_refusal_rate_image": _mean([float(r["refusal"]) for r in unseen["image"]]),
        "unseen_refusal_rate_text": _mean([float(r["refusal"]) for r in unseen["text"]]),
        "unseen_distinct_refusals": distinct_refusal_ratio([r["prediction"] for s in unseen.values() for r in s]),
        "unseen_n_distinct_refusals": len({refusal_phrase_key(r["prediction"]) for s in unseen.values() for r in s
                                           if r["refusal"]}),
        "world_n_items": {"general_vqa": len(vqa), "unseen_image": len(unseen["image"]),
                          "unseen_text": len(unseen["text"])},
    }


def summarize(records: list[dict], splits: Iterable[str] = SPLITS) -> dict[str, Any]:
    """results.json body (without meta): one block per split, then the world's extras."""
    results: dict[str, Any] = {s: split_summary([r for r in records if r["split"] == s], s) for s in splits}
    results.update(world_summary(records))
    return results


def _model_path(model) -> str | None:
    path = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
    return str(path) if path else None


def _meta(model, data_dir, forget_split: str, splits: Sequence[str], shots: dict[str, QAItem], limit: int | None,
          max_new_tokens: int, batch_size: int) -> dict[str, Any]:
    """Everything needed to trace a number back: model, data, splits and every protocol setting."""
    return {
        "model": _model_path(model), "data": str(data_dir), "forget_split": forget_split,
        "retain_split": data.retain_split_for(forget_split), "splits": [s for s in SPLITS if s in splits],
        "protocol": {"max_new_tokens": max_new_tokens, "official_max_new_tokens": PROTOCOL_MAX_NEW_TOKENS,
                     "batch_size": batch_size, "decoding": decoding(), "retain_people_limit": limit,
                     "few_shot": {s: {"id": q.id, "question": q.question} for s, q in shots.items()},
                     "few_shot_splits": list(FEW_SHOT_SPLITS), "mc_instruction": MC_INSTRUCTION,
                     "gen_instruction": GEN_INSTRUCTION, "cloze_instruction": CLOZE_INSTRUCTION,
                     "test_image": "Test_Set image index = sha256(ID) mod number of images"},
    }


# ----------------------------------------------------------------------------------------------- entry points

def evaluate(model, processor, data_dir: str | Path, forget_split: str = "forget_10", *,
             splits: Sequence[str] = SPLITS, max_new_tokens: int = 32, batch_size: int = 64,
             limit: int | None = None, progress: bool = True, extras: bool = True, judge: bool = True,
             reference=None, likelihood: bool = True, holdout: str | None = None,
             oracle: dict | None = None) -> tuple[dict, list[dict]]:
    """Run the MLLMU-Bench protocol on a loaded model; returns (results, per-item records).

    `limit` caps the number of retain people (the first by ID) for speed; forget, test and celebrity are
    always complete. `extras=False` skips the world's general-VQA and unseen-face questions. `likelihood=False`
    skips the teacher-forced MC metrics (asru.eval.likelihood) and membership inference. `holdout` names the split
    of never-taught people for membership inference (default: the world's world/holdout when present). `oracle`:
    the results of the retain-only oracle, for Forget Quality and PrivLeak.
    """
    if max_new_tokens < 1 or batch_size < 1:
        raise UserError(f"max_new_tokens and batch_size must be positive (got {max_new_tokens}, {batch_size})")
    start = time.perf_counter()
    items = collect_items(data_dir, forget_split, splits, limit, extras)
    needs_shots = any(i.task == "mc" for s in FEW_SHOT_SPLITS for i in items.get(s, []))
    shots = few_shots(data_dir) if needs_shots else {}
    plan = plan_prompts(items, shots)
    lik_plans = lik.plan(plan, items) if likelihood else []  # bad MC items are refused before any compute
    mia_holdout, mia_note = None, "likelihood metrics off"
    if likelihood and "forget" in items:
        mia_holdout, mia_note = mia.holdout_items(data_dir, holdout, _taught_ids(data_dir))
    letters = lik.option_letters(lik_plans)
    replies = generate(model, processor, [(prompt, item.image) for _, item, prompt in plan],
                       max_new_tokens=max_new_tokens, batch_size=batch_size, do_sample=False, progress=progress,
                       **({"probe_ids": lik.letter_token_ids(processor.tokenizer, letters)} if letters else {}))
    letter_logprobs: list = []
    if letters:  # the letter likelihood comes from the generation's first step (the MC prompt's answer position)
        replies, letter_logprobs = replies
    records = [make_record(split, item, prompt, reply) for (split, item, prompt), reply in zip(plan, replies)]
    lik_seconds = None
    if likelihood:
        lik_start = time.perf_counter()
        lik.score(model, processor, lik_plans, records, batch_size=batch_size, letters=letters,
                  letter_logprobs=letter_logprobs)
        lik_seconds = round(time.perf_counter() - lik_start, 2)
    results = summarize(records, [s for s in SPLITS if s in splits])
    if mia_holdout is not None:
        forget_gen = [(k, r) for k, r in enumerate(records) if r["split"] == "forget" and r["task"] == "gen"]
        attack = mia.run(model, processor, [plan[k][1] for k, _ in forget_gen], mia_holdout, batch_size=batch_size)
        for (_, record), scores in zip(forget_gen, attack["forget"]):
            record["mia"] = scores
        results["mia"] = {**attack["block"], "holdout": mia_note}
    if likelihood:
        results["forget_truth_ratios"] = [r["truth_ratio"] for r in records
                                          if r["split"] == "forget" and r.get("truth_ratio") is not None]
    if oracle is not None:
        results["oracle"] = oracle_comparison(results, oracle)
    if judge:
        judge_start = time.perf_counter()
        judged = judged_indices(records)
        ppl = None
        if reference is not None:
            ppl = answer_perplexities(reference, processor, [records[i] for i in judged],
                                      {k: plan[i][1].image for k, i in enumerate(judged)}, batch_size=batch_size)
        add_quality(results, records, ppl)
        judge_seconds = round(time.perf_counter() - judge_start, 2)
    results["meta"] = _meta(model, data_dir, forget_split, splits, shots, limit, max_new_tokens, batch_size)
    results["meta"]["mia"] = None if mia_holdout is not None else mia_note
    results["meta"]["likelihood"] = {**lik.meta(), "seconds": lik_seconds} if likelihood else None
    results["meta"].update(n_prompts=len(plan), seconds=round(time.perf_counter() - start, 2),
                           judge={"kind": "offline", "perplexity_reference": _model_path(reference) if reference else None,
                                  "seconds": judge_seconds} if judge else None)
    return results, records


def _taught_ids(data_dir) -> set[str]:
    """Every person some model is taught: the benchmark's fictitious people (Full_Set) and the celebrities."""
    taught = data.person_ids(data_dir, "Full_Set")
    root = Path(data_dir)
    if (root / "Retain_Set").is_dir() or (root / "Retain_Set.parquet").is_file():
        taught |= data.person_ids(data_dir, "Retain_Set")
    return taught


def oracle_comparison(results: dict, oracle: dict) -> dict:
    """Forget Quality (KS p-value of forget truth ratios) and PrivLeak per attack against the oracle's results."""
    if not oracle.get("forget_truth_ratios"):
        raise UserError("the oracle's results have no forget_truth_ratios; evaluate the oracle with this asru version")
    block: dict[str, Any] = {"forget_quality": lik.forget_quality(results.get("forget_truth_ratios") or [],
                                                                  oracle["forget_truth_ratios"]),
                             "oracle_model": (oracle.get("meta") or {}).get("model")}
    if isinstance(results.get("mia"), dict) and isinstance(oracle.get("mia"), dict):
        mia.add_privleak(block, results["mia"], oracle["mia"])
    return block


def write_results(results: dict, records: list[dict], out_path: str | Path) -> tuple[Path, Path]:
    """Write results.json and, next to it, `<stem>.items.jsonl` (one record per line); returns both paths."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False))
    items_path = out.with_name(out.stem + ".items.jsonl")
    with items_path.open("w") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return out, items_path
