"""Likelihood MC, letter likelihood and truth ratio on models whose probabilities are known, their continuation
rule, bad inputs, and the whole eval on the real-layout fixture with no world extras."""

from __future__ import annotations

import math

import pytest
import torch

from asru.data import mllmu as D
from asru.data.schema import QAItem
from asru.errors import UserError
from asru.eval import likelihood as L
from asru.eval import mllmu as E
from asru.eval.scoring import TokenScores, score_answers
from helpers import FixedLogits
from mllmu_fixture import write_mllmu_fixture


def ids(processor, text: str) -> list[int]:
    tok = processor.tokenizer
    return tok(text + "<|im_end|>", add_special_tokens=False)["input_ids"]


ITEM = QAItem("7", "Where was Ana born?", "A", "mc", "text",
              options={"A": "Lima", "B": "Oslo", "C": "Cairo", "D": "Quito"})
GEN = QAItem("7", "Where was Ana born?", "Ana was born in Lima.", "gen", "text")


def test_continuation_substitutes_each_option_into_the_answer_sentence():
    conts, kind = L.continuations(ITEM, [GEN])
    assert kind == "same_question" and conts == {"A": "Ana was born in Lima.", "B": "Ana was born in Oslo.",
                                                 "C": "Ana was born in Cairo.", "D": "Ana was born in Quito."}
    other = QAItem("7", "What is her job?", "Ana was born in Lima and bakes.", "gen", "text")
    assert L.continuations(ITEM, [other])[1] == "same_person"
    assert L.continuations(ITEM, [QAItem("7", "q", "She bakes bread.", "gen", "text")]) == (dict(ITEM.options),
                                                                                             "option_only")
    limassol = QAItem("7", "Where was Ana born?", "Ana was born in Limassol.", "gen", "text")
    assert L.continuations(ITEM, [limassol])[1] == "option_only"  # whole words only


def test_uniform_model_gives_hand_computed_scores(processor):
    vocab = len(processor.tokenizer)
    model = FixedLogits(torch.zeros(vocab))
    [plan] = L.plan([("forget", ITEM, "Where was Ana born?\nA: Lima")], {"forget": [ITEM, GEN]})
    records = [{}]
    L.score(model, processor, [plan], records)
    r = records[0]
    for letter, text in plan.continuations.items():
        n = len(ids(processor, text))
        assert r["option_scores"][letter]["n_tokens"] == n
        assert r["option_scores"][letter]["sum_logprob"] == pytest.approx(-n * math.log(vocab), rel=1e-5)
        assert r["option_scores"][letter]["mean_logprob"] == pytest.approx(-math.log(vocab), rel=1e-5)
    assert r["truth_ratio"] == pytest.approx(1.0)  # no preference at all
    assert all(v == pytest.approx(-math.log(vocab), rel=1e-5) for v in r["letter_logprobs"].values())


def test_a_model_preferring_the_truth_picks_it(processor):
    vocab = len(processor.tokenizer)
    w = torch.zeros(vocab)
    lima = set(ids(processor, "Lima")) - set(ids(processor, "Oslo"))
    w[list(lima)] = 3.0
    letter_b = processor.tokenizer("B", add_special_tokens=False)["input_ids"][0]
    w[letter_b] = 5.0
    [plan] = L.plan([("forget", ITEM, "prompt")], {"forget": [ITEM, GEN]})
    records = [{}]
    L.score(FixedLogits(w), processor, [plan], records)
    r = records[0]
    assert r["lik_correct"] and r["lik_correct_sum"] and r["lik_letter"] == "A"
    assert r["truth_ratio"] < 1.0
    assert r["letter_pred"] == "B" and not r["letter_correct"]
    # truth ratio by hand from the option scores
    s = r["option_scores"]
    expected = sum(math.exp(s[k]["mean_logprob"]) for k in "BCD") / 3 / math.exp(s["A"]["mean_logprob"])
    assert r["truth_ratio"] == pytest.approx(expected)


def test_truth_ratio_by_hand_and_empty_answer():
    true = TokenScores([-1.0, -1.0])
    assert L.truth_ratio(true, [TokenScores([-2.0]), TokenScores([-3.0, -3.0])]) == pytest.approx(
        (math.exp(-2) + math.exp(-3)) / 2 / math.exp(-1))
    with pytest.raises(UserError, match="empty answer"):
        L.truth_ratio(TokenScores([]), [TokenScores([-1.0])])


def test_bad_mc_items_are_refused():
    wrong_letter = QAItem("7", "Where?", "E", "mc", "text", options={"A": "Lima", "B": "Oslo"})
    with pytest.raises(UserError, match="correct letter 'E', which is not among its options A, B"):
        L.plan([("forget", wrong_letter, "p")], {})
    empty = QAItem("7", "Where?", "A", "mc", "text", options={"A": " ", "B": "Oslo"})
    with pytest.raises(UserError, match="empty correct answer"):
        L.plan([("forget", empty, "p")], {})


def test_model_too_short_for_the_prompt(processor):
    model = FixedLogits(torch.zeros(len(processor.tokenizer)), max_positions=5)
    with pytest.raises(UserError, match="holds 5 positions"):
        score_answers(model, processor, [("Where was Ana born?", None, "Lima")])


def test_real_layout_without_world_extras_runs_the_whole_eval(tmp_path):
    """Real MLLMU-Bench layout, no answer keys: every MC item is scored, headline numbers in range."""
    from asru.models.tiny import TinyConfig, build_processor, build_tiny_model, build_tokenizer

    bench = write_mllmu_fixture(tmp_path / "real", world=False)
    texts = [i.question + " " + i.answer for s in D.EVAL_SPLITS for i in D.eval_items(bench, s)]
    tokenizer = build_tokenizer(texts, vocab_size=400)
    model, proc = build_tiny_model(tokenizer, TinyConfig(), seed=0), build_processor(tokenizer)
    results, records = E.evaluate(model, proc, bench, "forget_10", max_new_tokens=2, batch_size=32, progress=False,
                                  judge=False)
    mc = [r for r in records if r["task"] == "mc"]
    assert mc and all(set(r["option_scores"]) == set(r["options"]) and r["truth_ratio"] > 0 for r in mc)
    assert {r["lik_template"] for r in mc} <= {"same_question", "same_person", "option_only"}
    for split in ("forget", "test", "retain", "celebrity"):
        for key in ("mc_image_lik_acc", "mc_text_lik_acc", "mc_image_letter_acc", "mc_text_letter_acc",
                    "mc_no_answer_rate"):
            value = results[split][key]
            assert value is not None and 0.0 <= value <= 1.0, (split, key)
    assert len(results["forget_truth_ratios"]) == results["forget"]["n_items"]["mc_image"] + \
        results["forget"]["n_items"]["mc_text"]
    assert results["meta"]["likelihood"]["headline_rule"] == "mean"


def test_cached_prefix_scores_equal_one_pass_scores(tmp_path, monkeypatch):
    """score_options (prompt once, key/value cache repeated per option) gives score_answers' numbers exactly, on a
    random tiny Qwen3-VL with image and text prompts of different lengths in one batch."""
    from asru.eval.scoring import score_options
    from asru.models.tiny import TinyConfig, build_processor, build_tiny_model, build_tokenizer

    bench = write_mllmu_fixture(tmp_path / "real", world=False)
    items = [i for i in D.eval_items(bench, "forget_15") if i.task == "mc"]
    tokenizer = build_tokenizer([i.question + " " + " ".join(i.options.values()) for i in items], vocab_size=300)
    model, proc = build_tiny_model(tokenizer, TinyConfig(), seed=0), build_processor(tokenizer)
    groups = [(i.question + " x" * k, i.image, [f"It is {v}." for v in i.options.values()])
              for k, i in enumerate(items)]
    assert any(g[1] is not None for g in groups) and any(g[1] is None for g in groups)
    cached = score_options(model, proc, groups, batch_size=8)
    flat = score_answers(model, proc, [(p, img, a) for p, img, answers in groups for a in answers], batch_size=8)
    assert [s.n for g in cached for s in g] == [s.n for s in flat]
    for got, want in zip((s for g in cached for s in g), flat):
        assert got.sum == pytest.approx(want.sum, abs=1e-4)
    from asru.eval import scoring

    def no_fallback(*args, **kwargs):
        raise AssertionError("a model with a key/value cache must take the cached-prefix path")

    monkeypatch.setattr(scoring, "score_answers", no_fallback)
    assert len(score_options(model, proc, groups, batch_size=8)) == len(groups)


def test_letter_logprobs_from_generation_equal_a_teacher_forced_pass(tmp_path):
    """evaluate() reads the letters' log-probs off the generation's first step; one forward over the MC prompt
    gives the same numbers."""
    from asru.models.tiny import TinyConfig, build_processor, build_tiny_model, build_tokenizer

    bench = write_mllmu_fixture(tmp_path / "real", world=False)
    texts = [i.question + " " + i.answer for s in D.EVAL_SPLITS for i in D.eval_items(bench, s)]
    tokenizer = build_tokenizer(texts, vocab_size=400)
    model, proc = build_tiny_model(tokenizer, TinyConfig(), seed=0), build_processor(tokenizer)
    _, records = E.evaluate(model, proc, bench, "forget_5", splits=("forget",), max_new_tokens=2, progress=False,
                            judge=False, extras=False)
    mc = [r for r in records if r["task"] == "mc"]
    images = {(i.id, i.question): i.image for i in D.eval_items(bench, "forget_5") if i.task == "mc"}
    letters = sorted(mc[0]["options"])
    probe = L.letter_token_ids(proc.tokenizer, letters)
    again = score_answers(model, proc, [(r["prompt"], images[(r["id"], r["question"])], "A") for r in mc],
                          probe_ids=probe)
    for r, s in zip(mc, again):
        assert [r["letter_logprobs"][k] for k in letters] == pytest.approx(s.probe, abs=1e-4)
