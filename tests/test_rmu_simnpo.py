"""SimNPO and RMU: the loss by hand, what each does to the micro vanilla model, their option checks and the CLI."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from transformers import AutoModelForImageTextToText

from asru.errors import UserError
from asru.methods import get_method
from asru.methods.base import UnlearnContext
from asru.methods.gradient import Reference, batch_nll, encoder, logits
from asru.models.batch import IGNORE_INDEX
from asru.models.load import load_model
from asru.pipeline import unlearn_stage
from helpers import FixedLogits, one_line_error, run

FORGET = "forget_10"


# ------------------------------------------------------------------------------------------------ SimNPO loss

def _log_softmax(w: list[float]) -> list[float]:
    z = math.log(sum(math.exp(x) for x in w))
    return [x - z for x in w]


def test_simnpo_forget_loss_is_the_papers_formula_by_hand_and_not_npos():
    """Every position predicts softmax(w), so each answer token's log-prob is log_softmax(w)[token]."""
    w = [0.5, -1.0, 2.0, 0.0, 1.0]
    lp = _log_softmax(w)
    # row 0: prompt 0 1, answer 2 3 4; row 1: prompt 0, answer 2 2 (then right padding)
    input_ids = torch.tensor([[0, 1, 2, 3, 4], [0, 2, 2, 0, 0]])
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 2, 3, 4], [IGNORE_INDEX, 2, 2, IGNORE_INDEX, IGNORE_INDEX]])
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}
    model = FixedLogits(torch.tensor(w))
    answers = [[2, 3, 4], [2, 2]]
    for beta, delta in [(4.5, 0.0), (0.7, 1.5)]:
        simnpo = get_method("simnpo")(get_method("simnpo").Config(beta=beta, delta=delta))
        # -(2/beta) * mean logsigmoid(-(beta/|y|) log p(y|x) - delta), written out
        terms = []
        for tokens in answers:
            logp = sum(lp[t] for t in tokens)
            x = -(beta / len(tokens)) * logp - delta
            terms.append(-math.log1p(math.exp(-x)))  # logsigmoid(x)
        expected = -(2 / beta) * sum(terms) / len(terms)
        with torch.no_grad():
            assert simnpo.forget_loss(model, batch, None).item() == pytest.approx(expected, rel=1e-5)

    # NPO on the same batch (reference: a different fixed distribution) is another number: no reference, and SimNPO
    # averages per token where NPO sums
    npo = get_method("npo")(get_method("npo").Config(beta=4.5))
    simnpo = get_method("simnpo")(get_method("simnpo").Config(beta=4.5))
    ref = Reference(frozen=FixedLogits(torch.zeros(5)))
    with torch.no_grad():
        assert npo.forget_loss(model, batch, ref).item() != pytest.approx(simnpo.forget_loss(model, batch, None).item(),
                                                                          rel=1e-3)
        # model == reference: NPO sits at (2/beta) log 2 whatever the answers; SimNPO still sees their likelihood
        assert npo.forget_loss(model, batch, Reference(frozen=model)).item() == pytest.approx(2 / 4.5 * math.log(2))
        assert simnpo.forget_loss(model, batch, None).item() < 2 / 4.5 * math.log(2)


def test_simnpo_defaults_and_option_checks():
    cfg = get_method("simnpo").Config()
    assert (cfg.beta, cfg.delta, cfg.gamma, cfg.alpha) == (4.5, 0.0, 0.125, 1.0)  # open-unlearning's SimNPO.yaml
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(UserError, match="simnpo beta must be > 0"):
            get_method("simnpo").Config(beta=bad)
    with pytest.raises(UserError, match="simnpo delta"):
        get_method("simnpo").Config(delta=-0.5)


# ---------------------------------------------------------------------------------------------- on the micro world

def _nll(model_dir, items) -> float:
    from asru.data.corpus import qa_examples

    model, processor = load_model(model_dir, device="cpu")
    encode, collate_fn = encoder(processor)
    batch = collate_fn(encode(qa_examples(items, seed=0), "nll"))
    with torch.no_grad():
        return batch_nll(logits(model, batch), batch["labels"]).item()


def _ctx(micro_world, vanilla, tmp_path) -> UnlearnContext:
    return UnlearnContext(model_dir=vanilla, data_dir=micro_world, forget_split=FORGET, out_dir=tmp_path / "unused")


def test_simnpo_raises_the_forget_nll_more_than_the_retain_nll(micro_world, micro_models, tmp_path):
    vanilla = micro_models[1]
    out, _ = unlearn_stage("simnpo", vanilla, micro_world, tmp_path / "run", FORGET, preset="micro")
    ctx = _ctx(micro_world, vanilla, tmp_path)
    retain = ctx.retain_items[:64]
    forget_rise = _nll(out / "model", ctx.forget_items) - _nll(vanilla, ctx.forget_items)
    retain_rise = _nll(out / "model", retain) - _nll(vanilla, retain)
    assert forget_rise > 0.05 and forget_rise > retain_rise + 0.05, (forget_rise, retain_rise)


def _states(model_dir, items, layer: int) -> torch.Tensor:
    """Layer-L states at the answer positions RMU trains, [N, H]."""
    from asru.data.corpus import qa_examples
    from asru.methods.rmu import answer_positions, layer_output

    model, processor = load_model(model_dir, device="cpu")
    encode, collate_fn = encoder(processor)
    batch = collate_fn(encode(qa_examples(items, seed=0), "states"))
    with torch.no_grad():
        return layer_output(model, layer, batch)[answer_positions(batch["labels"])]


def _state_dict(path) -> dict[str, torch.Tensor]:
    return AutoModelForImageTextToText.from_pretrained(path).state_dict()


def test_rmu_misdirects_forget_states_towards_c_u_and_trains_only_the_chosen_mlps(micro_world, micro_models, tmp_path):
    from asru.methods.rmu import control_vector

    vanilla = micro_models[1]
    runs = {alpha: unlearn_stage("rmu", vanilla, micro_world, tmp_path / f"alpha{alpha}", FORGET, preset="micro",
                                 overrides={"alpha": alpha})[0] for alpha in (10.0, 0.0)}
    result = json.loads((runs[10.0] / "manifest.json").read_text())["result"]
    layer, trained = result["layer"], result["layers_trained"]
    assert layer == 1 and trained == [0, 1]  # micro: 4 layers, num_layers // 4 = 1, the layers up to it
    ctx = _ctx(micro_world, vanilla, tmp_path)
    forget, retain = ctx.forget_items, ctx.retain_items[:64]
    before_f, before_r = _states(vanilla, forget, layer), _states(vanilla, retain, layer)
    after_f, after_r = _states(runs[10.0] / "model", forget, layer), _states(runs[10.0] / "model", retain, layer)
    u = control_vector(before_f.shape[-1], seed=0)  # the run's seed
    cos = lambda h: torch.nn.functional.cosine_similarity(h, u[None], dim=-1).mean().item()  # noqa: E731
    moved = lambda a, b: ((a - b).norm(dim=-1) / b.norm(dim=-1)).mean().item()  # noqa: E731
    assert cos(after_f) > cos(before_f) + 0.05
    # The retain term holds the retain states: without it (alpha 0) they go wherever the forget states go. (On the
    # micro model forget and retain states move about alike with it, ~0.16 of their norm each: the answers share
    # their templates and the barely trained model hardly tells the people apart, so that gap is not tested.)
    free_r = _states(runs[0.0] / "model", retain, layer)
    assert moved(after_r, before_r) < 0.5 * moved(free_r, before_r)

    before, after = _state_dict(vanilla), _state_dict(runs[10.0] / "model")
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed
    for key in changed:  # only the down_proj of the trained layers of the language model
        match = re.search(r"language_model\.layers\.(\d+)\.mlp\.down_proj\.weight$", key)
        assert match and int(match.group(1)) in trained, key


# --------------------------------------------------------------------------------------------------- bad options

def test_rmu_option_checks():
    rmu = get_method("rmu").Config
    cfg = rmu()
    assert (cfg.coeff, cfg.alpha, cfg.lr, cfg.trainable, cfg.layer, cfg.layers_trained) == \
        (6.5, 1200.0, 5e-5, "down_proj", None, None)  # WMDP's Zephyr-7B recipe
    for bad in (0, -2.0, float("inf")):
        with pytest.raises(UserError, match="rmu coeff must be a finite number > 0"):
            rmu(coeff=bad)
    with pytest.raises(UserError, match="lora"):
        rmu(lora=True)
    with pytest.raises(UserError, match="trainable"):
        rmu(trainable="attention")
    with pytest.raises(UserError, match="after layer 2"):
        rmu(layer=2, layers_trained=[1, 3])
    with pytest.raises(UserError, match="layers_trained"):
        rmu(layers_trained=[])


@pytest.mark.parametrize("method, option, message", [
    ("rmu", "layer=9", "rmu layer 9 is out of range: this model has 4 decoder layers, valid layers are 0..3"),
    ("rmu", "coeff=0", "rmu coeff must be a finite number > 0"),
    ("rmu", "layers_trained=[2,5]", "after layer"),
    ("simnpo", "beta=0", "simnpo beta must be > 0"),
])
def test_bad_options_are_one_line_before_any_weight_is_written(method, option, message, micro_world, micro_models,
                                                               tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run(["unlearn", method, "--model", micro_models[1], "--data", micro_world, "--out", out,
                        "--preset", "micro", "--set", option], capsys)
    assert code == 2 and message in one_line_error(err)
    assert not (out / "model").exists()


@pytest.mark.parametrize("method", ["rmu", "simnpo"])
def test_cli_unlearn_runs_on_micro(method, micro_world, micro_models, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run(["unlearn", method, "--model", micro_models[1], "--data", micro_world, "--out", out,
                        "--preset", "micro", "--set", "steps=2"], capsys)
    assert code == 0, err
    assert json.loads((out / "manifest.json").read_text())["status"] == "done"
    assert (out / "model" / "config.json").is_file()
