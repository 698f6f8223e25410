"""The attack suite on micro models whose answers are known.

`knowing`: the micro vanilla fine-tuned on the forget people's QA until it states some held-out facts.
`hider`: the same weights plus a planted test-time steering vector at the last layer, along the direction that makes
the turn-closing token win (scaled far above the residual norm), so it answers nothing: the fact is in the weights,
hidden behind one direction. Ablation must bring it back; the retain-only oracle, which never knew, must stay at 0.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from asru.attacks import attack_names, expand_attacks
from asru.attacks.base import Target
from asru.attacks.facts import IDENTITY, attacker_items, attribute_of, held_out_items, split_facts
from asru.attacks.measure import recovered_share
from asru.attacks.prefill import prefix_of
from asru.attacks.probe import probe_accuracy
from asru.attacks.run import attack_target, configure, make_env, results
from asru.data.schema import QAItem
from asru.data.world.people import ATTRIBUTES, IMAGE_QUESTIONS, TEXT_QUESTIONS
from asru.errors import UserError

SPLIT = "forget_10"


@pytest.fixture(scope="session")
def micro_oracle(micro_world, micro_models, tmp_path_factory):
    from asru.pipeline import oracle_stage

    out, _ = oracle_stage(micro_models[0], micro_world, tmp_path_factory.mktemp("oracle") / "oracle", SPLIT, "micro")
    return out


@pytest.fixture(scope="session")
def knowing(micro_world, micro_models, tmp_path_factory):
    from asru.data.corpus import qa_examples
    from asru.data.mllmu import training_items
    from asru.models.load import load_model, save_model
    from asru.training import TrainConfig, encode_examples, sft

    model, processor = load_model(micro_models[1], for_training=True)
    encoded = encode_examples(processor, qa_examples(training_items(micro_world, SPLIT)))
    sft(model, processor, encoded, TrainConfig(steps=100, batch_size=8, lr=1e-2, warmup_steps=5))
    return save_model(model, processor, tmp_path_factory.mktemp("knowing") / "model")


@pytest.fixture(scope="session")
def hider(knowing, tmp_path_factory):
    from asru.models.load import load_model
    from asru.steering.runtime import STEERING_FILE, GatedSteering

    model, processor = load_model(knowing)
    closing = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    norm = model.model.language_model.norm.weight
    direction = (model.lm_head.weight[closing] * norm).detach().float()
    hidden = direction.shape[0]
    basis, _ = torch.linalg.qr(torch.randn(hidden, 2, generator=torch.Generator().manual_seed(0)))
    out = tmp_path_factory.mktemp("hider") / "model"
    shutil.copytree(knowing, out)
    layer = model.config.get_text_config().num_hidden_layers - 1
    GatedSteering(vector=direction / direction.norm() * 2e4, layer=layer, scale=1.0, retain_basis=basis[:, :1],
                  forget_basis=basis[:, 1:], center=-10.0, temperature=1.0).save(out / STEERING_FILE)  # gate ~1
    return out


@pytest.fixture(scope="session")
def env(micro_world, knowing):
    return make_env(micro_world, SPLIT, knowing, "micro", 0)


def run_three(names, env, model, oracle, vanilla, **options):
    attacks = configure(names, "micro", **options)
    for attack in attacks:
        attack.check(env)
    raws = {role: attack_target(attacks, Target(Path(path), role), env)
            for role, path in (("model", model), ("oracle", oracle), ("vanilla", vanilla))}
    return results(attacks, raws, env, {})


# ------------------------------------------------------------------------------------------------ facts, arithmetic

def test_every_world_question_has_its_attribute():
    for attribute, wordings in IMAGE_QUESTIONS.items():
        assert all(attribute_of(w) == attribute for w in wordings)
    for attribute, wordings in TEXT_QUESTIONS.items():
        assert all(attribute_of(w.format(name="Ana Barton")) == attribute for w in wordings)
    assert attribute_of("What colour is the shirt?") is None


def test_fact_split_is_disjoint_deterministic_and_covers_every_attribute(micro_world):
    a, again, other = (split_facts(micro_world, SPLIT, s) for s in (0, 0, 1))
    assert a == again and a.record() == again.record()
    assert a.labels == "attribute"
    for pid in a.attacker:
        assert not a.attacker[pid] & a.held_out[pid]
        assert a.attacker[pid] | a.held_out[pid] == set(ATTRIBUTES) | {IDENTITY}
        assert IDENTITY in a.attacker[pid] and len(a.held_out[pid]) == 2
    assert any(a.held_out[p] != other.held_out[p] for p in a.held_out) or len(a.held_out) < 3
    held = held_out_items(micro_world, SPLIT, a)
    train = attacker_items(micro_world, SPLIT, a)
    assert held and train
    assert all(attribute_of(i.question) in a.held_out[i.id] for i in held)
    assert all(attribute_of(i.question) in a.attacker[i.id] for i in train)
    assert {i.split for i in held} == {SPLIT, "Test_Set"}


def test_without_attribute_labels_each_question_is_a_fact(micro_world, tmp_path):
    data = tmp_path / "real_like"
    shutil.copytree(micro_world, data)
    shutil.rmtree(data / "world" / "answer_keys")  # real MLLMU-Bench: no attribute values
    facts = split_facts(data, SPLIT, 0)
    assert facts.labels == "question"
    for pid in facts.attacker:
        assert facts.attacker[pid] and facts.held_out[pid] and not facts.attacker[pid] & facts.held_out[pid]
    assert all(facts.in_held_out(i) for i in held_out_items(data, SPLIT, facts))


@pytest.mark.parametrize("attacked, oracle, vanilla, share", [
    (0.5, 0.1, 0.9, 0.5), (0.05, 0.1, 0.9, 0.0), (1.0, 0.1, 0.9, 1.0), (0.3, 0.3, 0.3, None), (None, 0.1, 0.9, None)])
def test_recovered_share(attacked, oracle, vanilla, share):
    got = recovered_share(attacked, oracle, vanilla)
    assert got == share if share is None else got == pytest.approx(share)


def test_attack_names_expand_and_refuse_unknown():
    assert expand_attacks(["all"]) == attack_names()
    assert expand_attacks(["probe,ablate"]) == ["ablate", "probe"]
    with pytest.raises(UserError, match="known attacks: relearn"):
        expand_attacks(["ablate", "jailbreak"])


def test_prefix_stops_before_the_fact():
    item = QAItem("F1", "Where was the person in the image born?", "She was born in Lima.", "gen", "image",
                  meta={"key": "Lima"})
    assert prefix_of(item) == "She was born in"
    no_key = QAItem("F1", "What does Ana Bar do for a living?", "Ana Bar works as a baker.", "gen", "text")
    assert prefix_of(no_key) == "Ana Bar works as a"  # real-data fallback: up to the first answer word
    assert prefix_of(QAItem("F1", "Name?", "Lima.", "gen", "text", meta={"key": "Lima"})) == ""


def test_probe_picks_the_informative_layer():
    rng = np.random.default_rng(0)
    values = np.array(["lima", "oslo", "cairo"])
    y = values[rng.integers(3, size=120)]
    codes = {v: rng.normal(size=8) * 4 for v in values}
    informative = np.stack([codes[v] for v in y]) + rng.normal(size=(120, 8))
    x = np.stack([rng.normal(size=(120, 8)), informative])  # layer 0 noise, layer 1 the value
    attrs = ["birthplace"] * 120
    acc = probe_accuracy(x[:, :90], attrs[:90], y[:90], x[:, 90:], attrs[90:], y[90:])
    assert acc[1] == 1.0 and acc[0] < 0.7


# ------------------------------------------------------------------------------------------------ attacks on models

def test_ablation_recovers_a_planted_direction_and_the_controls_hold(env, hider, knowing, micro_oracle):
    body = run_three(["ablate"], env, hider, micro_oracle, knowing)
    plain = body["plain"]
    assert plain["model"]["gen_contains"] == 0.0 < plain["vanilla"]["gen_contains"]  # hidden, yet in the weights
    ablate = body["attacks"]["ablate"]
    # the difference of means finds the planted direction and brings every hidden answer back (one more than the
    # knowing model on an AVX-512 CPU: removing the direction also removes the model's own component along it)
    v = ablate["variants"]["vs_vanilla"]
    assert v["model"]["gen_contains"] >= plain["vanilla"]["gen_contains"]
    assert v["recovered_share"]["gen_contains"] == 1.0
    # the shipped vector is projected out of *every* layer; it is the closing token's read-out direction, which the
    # knowing model also uses itself, so removing it everywhere brings back part of the answers, not all (equal on
    # sessions 4-6's CPUs, 1 of 3 on this AVX-512 one)
    own = ablate["variants"]["own_vector"]
    assert 0 < own["model"]["gen_contains"] <= plain["vanilla"]["gen_contains"] + 0.1
    for v in (ablate["variants"]["vs_vanilla"], own):
        assert v["oracle"]["gen_contains"] == 0.0  # the oracle never knew: nothing to bring back
    assert ablate["variants"]["random"]["recovered_share"]["gen_contains"] == 0.0
    assert ablate["headline"] in ("vs_vanilla", "own_vector") and ablate["recovered_share"] == 1.0
    # the vanilla model against itself: a zero direction, nothing ablated, figures unchanged
    assert not ablate["variants"]["vs_vanilla"]["vanilla"]["ablated"]


def test_decoding_and_weight_attacks_on_a_model_that_knows(env, knowing, micro_oracle):
    body = run_three(["prefill", "sample", "quantize"], env, knowing, micro_oracle, knowing, k=4, quant=["int8"])
    plain = body["plain"]["model"]["gen_contains"]
    assert plain > 0
    prefill = body["attacks"]["prefill"]["variants"]["prefill"]
    assert prefill["oracle"]["gen_contains"] == 0.0  # the prefix itself never states the fact
    assert prefill["model"]["n_prefilled"] == prefill["model"]["n_gen"]
    sample = body["attacks"]["sample"]["variants"]["k4"]
    assert sample["model"]["leak_at_k"] >= sample["model"]["gen_contains"] > 0  # any-of-k >= per-sample rate
    assert sample["oracle"]["leak_at_k"] == 0.0
    int8 = body["attacks"]["quantize"]["variants"]["int8"]
    assert abs(int8["model"]["gen_contains"] - plain) <= 0.125  # int8 keeps an intact model intact (2 of 16)
    assert int8["oracle"]["gen_contains"] == 0.0


def test_relearning_the_oracle_teaches_no_held_out_fact(env, knowing, micro_oracle, micro_world):
    body = run_three(["relearn", "probe"], env, micro_oracle, micro_oracle, knowing, steps=[10])
    variant = body["attacks"]["relearn"]["variants"]["steps_10"]
    assert variant["model"]["n_train"] == len(attacker_items(micro_world, SPLIT, env.facts))
    assert variant["model"]["gen_contains"] <= body["plain"]["model"]["gen_contains"] + 0.05
    probe = body["attacks"]["probe"]["variants"]["probe"]["model"]
    assert len(probe["per_layer"]) == 4 and 0 <= probe["probe_acc"] <= 1


def test_bad_settings_are_refused(env):
    with pytest.raises(UserError, match="relearning budget"):
        configure(["relearn"], "micro", steps=[0])[0].check(env)
    from asru.attacks.quantize import missing_backend

    if missing_backend("nf4"):
        with pytest.raises(UserError, match="--quant nf4 cannot run here"):
            configure(["quantize"], "micro", quant=["nf4"])[0].check(env)
        quantize = configure(["quantize"], "micro")[0]
        quantize.check(env)  # by default an unavailable backend is a note, not an error


def test_report_heat_map_and_table(tmp_path):
    from asru.attacks.report import write_attack_report

    def body(share):
        figures = {"model": {"gen_contains": 0.4}, "oracle": {"gen_contains": 0.1}, "vanilla": {"gen_contains": 0.7}}
        return {"notes": [], "attacks": {"ablate": {"headline": "vs_vanilla", "metric": "gen_contains",
                                                    "recovered_share": share, "notes": ["a note"],
                                                    "variants": {"vs_vanilla": figures}}}}

    png, md = write_attack_report({"asru": [body(0.5), body(0.7)], "vanilla": [body(None)]}, tmp_path)
    assert png.read_bytes()[:4] == b"\x89PNG"
    text = md.read_text()
    assert "| asru | ablate | vs_vanilla | gen_contains | 0.400 | 0.100 | 0.700 | 0.600 |" in text
    assert "| vanilla | ablate | vs_vanilla | gen_contains | 0.400 | 0.100 | 0.700 | – |" in text
    assert "- a note" in text


# ------------------------------------------------------------------------------------------------ CLI contract

def _cli(args):
    from typer.testing import CliRunner

    from asru.cli import app

    return CliRunner().invoke(app, args)


def _main(args, capsys):
    import sys

    from asru import cli

    old = sys.argv
    sys.argv = ["asru", *args]
    try:
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
    finally:
        sys.argv = old
    return exit_info.value.code, capsys.readouterr().err


def _args(world, model, oracle, vanilla, out, *extra):
    return ["attack", *extra, "--model", str(model), "--data", str(world), "--forget-split", SPLIT,
            "--oracle", str(oracle), "--vanilla", str(vanilla), "--out", str(out), "--preset", "micro"]


def test_cli_writes_results_and_manifest(micro_world, micro_models, micro_oracle, tmp_path):
    out = tmp_path / "atk"
    result = _cli(_args(micro_world, micro_models[1], micro_oracle, micro_models[1], out, "prefill"))
    assert result.exit_code == 0, result.output
    body = json.loads((out / "attacks.json").read_text())
    assert set(body) == {"attacks", "plain", "facts", "notes", "meta"}
    prefill = body["attacks"]["prefill"]
    assert set(prefill) >= {"headline", "recovered_share", "variants", "metric", "notes", "config", "seconds"}
    assert set(prefill["variants"]["prefill"]) == {"model", "oracle", "vanilla", "recovered_share"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"] == "attack" and manifest["status"] == "done"
    mc = body["plain"]["model"]["mc_lik"]  # option-likelihood MC of the held-out forget facts
    assert mc is not None and 0.0 <= mc <= 1.0


@pytest.mark.parametrize("case", ["unknown", "steps", "oracle", "split", "steering", "lineage", "exists"])
def test_cli_bad_input_is_one_line_exit_2_nothing_lost(case, micro_world, micro_models, micro_oracle, tmp_path,
                                                       capsys):
    vanilla = micro_models[1]
    model, oracle, extra, out = vanilla, micro_oracle, ["relearn"], tmp_path / "out"
    expected = {"unknown": "unknown attack 'jailbreak'; known attacks", "steps": "relearning budget",
                "oracle": "is not a retain-only oracle", "split": "leaves out forget_10, not forget_5",
                "steering": "was made for another model", "lineage": "was unlearned from /elsewhere/vanilla",
                "exists": "already exists"}[case]
    if case == "unknown":
        extra = ["ablate,jailbreak"]
    elif case == "steps":
        extra = ["relearn", "--steps", "0"]
    elif case == "oracle":
        oracle = vanilla
    elif case == "steering":
        from asru.steering.runtime import STEERING_FILE, GatedSteering

        model = tmp_path / "model"
        shutil.copytree(vanilla, model)
        GatedSteering(vector=torch.ones(7), layer=9, scale=1.0, retain_basis=torch.eye(7)[:, :1],
                      forget_basis=torch.eye(7)[:, 1:2], center=0.0, temperature=1.0).save(model / STEERING_FILE)
    elif case == "lineage":
        model = tmp_path / "run" / "model"
        shutil.copytree(vanilla, model)
        (model.parent / "manifest.json").write_text(json.dumps(
            {"command": "unlearn ga", "config": {"model": "/elsewhere/vanilla", "forget_split": SPLIT}}))
    elif case == "exists":
        out.mkdir()
        (out / "keep.txt").write_text("precious")
    args = _args(micro_world, model, oracle, vanilla, out, *extra)
    if case == "split":
        args[args.index(SPLIT)] = "forget_5"
    code, err = _main(args, capsys)
    assert code == 2
    assert expected in err and "Traceback" not in err
    if case == "exists":
        assert (out / "keep.txt").read_text() == "precious" and len(list(out.iterdir())) == 1
    else:
        assert not out.exists()


def test_compare_hook_writes_attacks_next_to_each_run_and_the_heat_map(micro_world, micro_models, micro_oracle,
                                                                       tmp_path):
    from rich.console import Console

    from asru.attacks.run import compare_attacks

    run_model = tmp_path / "runs" / "copy" / "seed0" / "model"
    shutil.copytree(micro_models[1], run_model)
    rows = compare_attacks(Console(quiet=True), tmp_path, micro_world, micro_models[1], micro_oracle, SPLIT,
                           "micro", ["prefill"], [("copy", run_model)])
    assert list(rows) == ["vanilla", "oracle", "copy"]
    body = json.loads((run_model.parent / "attacks.json").read_text())
    assert body["meta"]["label"] == "copy" and "prefill" in body["attacks"]
    assert (tmp_path / "attacks" / "oracle" / "attacks.json").exists()
    assert (tmp_path / "report" / "attacks.png").exists()
    assert "| copy | prefill |" in (tmp_path / "report" / "attacks.md").read_text()


def test_compare_rerun_reuses_finished_attacks_and_redoes_a_retrained_model(micro_world, micro_models, micro_oracle,
                                                                            tmp_path, monkeypatch):
    """A second compare call attacks nothing it has attacked with the same attacks and weights; a model whose weight
    file was rewritten (a retrained run) or a changed attack config is attacked again."""
    import os

    from rich.console import Console

    from asru.attacks import run as attack_run

    run_model = tmp_path / "runs" / "copy" / "seed0" / "model"
    shutil.copytree(micro_models[1], run_model)
    args = (Console(quiet=True), tmp_path, micro_world, micro_models[1], micro_oracle, SPLIT, "micro", ["prefill"],
            [("copy", run_model)])
    first = attack_run.compare_attacks(*args)
    attacked = []
    real = attack_run.attack_target
    monkeypatch.setattr(attack_run, "attack_target", lambda attacks, target, *a, **k: attacked.append(target.role)
                        or real(attacks, target, *a, **k))
    again = attack_run.compare_attacks(*args)
    assert attacked == [] and again["copy"][0]["attacks"] == first["copy"][0]["attacks"]
    weights = next(run_model.glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1_000_000))
    attack_run.compare_attacks(*args)
    assert attacked == ["model"]
    attack_run.compare_attacks(*args[:7], ["sample"], args[8])
    assert sorted(attacked) == ["model", "model", "oracle", "vanilla"]


def test_compare_attacks_without_any_oracle_is_refused(micro_world, micro_models, tmp_path, capsys):
    """A vanilla model that `asru vanilla` did not build has no base to build the oracle from: refused up front."""
    import shutil

    vanilla = tmp_path / "foreign_vanilla"
    shutil.copytree(micro_models[1], vanilla)
    (vanilla / "manifest.json").unlink()
    code, err = _main(["compare", "--data", str(micro_world), "--model", str(vanilla), "--methods", "ga",
                       "--out", str(tmp_path / "cmp"), "--preset", "micro", "--attacks", "all"], capsys)
    assert code == 2 and "--attacks needs a retain-only oracle" in err and "--oracle" in err
    assert not (tmp_path / "cmp").exists()
