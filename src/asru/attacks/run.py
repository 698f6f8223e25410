"""`asru attack` and the compare hook: every attack on the model, on the retain-only oracle (the control: what the
attack teaches or guesses by itself) and on the vanilla model (everything known), then the recovered share."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from asru.attacks import expand_attacks, get_attack
from asru.attacks.base import Attack, AttackEnv, Target, check_steering
from asru.attacks.facts import held_out_items, split_facts
from asru.attacks.measure import METRICS, Settings, measure, recovered_share
from asru.errors import UserError
from asru.manifest import Manifest, read_manifest

RESULTS = "attacks.json"
RAW_RESULTS = "attacks.raw.json"  # one model's unshared figures, reused by compare reruns (cached_target)
ROLES = ("model", "oracle", "vanilla")


def configure(names: Sequence[str], preset: str = "tiny", steps: Sequence[int] | None = None,
              quant: Sequence[str] | None = None, k: int | None = None) -> list[Attack]:
    """The named attacks with their configs: dataclass defaults, then the preset's `attacks.<name>` section, then
    the CLI options; each config checked."""
    from asru.config import from_dict, load_preset

    sections = load_preset(preset).get("attacks") or {}
    attacks = []
    for name in expand_attacks(names):
        cls = get_attack(name)
        data = dict(sections.get(name) or {})
        if steps is not None and name.startswith("relearn"):
            data["steps"] = list(steps)
        if quant is not None and name == "quantize":
            data.update(kinds=list(quant), explicit=True)
        if k is not None and name == "sample":
            data["k"] = k
        attacks.append(cls(from_dict(cls.Config, data, where=f"attacks.{name}")))
    return attacks


def make_env(data: Path, forget_split: str, vanilla: Path, preset: str, seed: int) -> AttackEnv:
    from asru.config import apply_threads, load_preset

    settings = load_preset(preset)
    apply_threads(settings)
    ev = settings.get("eval") or {}
    facts = split_facts(data, forget_split, seed)
    held_out = held_out_items(data, forget_split, facts)
    if not held_out:
        raise UserError(f"no held-out forget facts in {data} ({forget_split}); the split needs generation/MC items")
    return AttackEnv(data_dir=Path(data), forget_split=forget_split, facts=facts, held_out=held_out,
                     settings=Settings(ev.get("max_new_tokens", 32), ev.get("batch_size", 32)),
                     vanilla_dir=Path(vanilla), seed=seed)


def check_inputs(model: Path, data: Path, forget_split: str, oracle: Path, vanilla: Path) -> None:
    """One line for each way the four inputs can disagree (before anything is computed or written)."""
    from asru.pipeline import check_oracle, require_world

    require_world(data)
    for path, what in ((model, "--model"), (oracle, "--oracle"), (vanilla, "--vanilla")):
        if not (Path(path) / "config.json").is_file():
            raise UserError(f"{what} {path} is not a model directory (no config.json); pass a directory written by "
                            "save_pretrained (or a run directory holding model/)")
    check_oracle(oracle, vanilla, forget_split)
    world = (read_manifest(oracle).get("config") or {}).get("world")
    if world and Path(world).resolve() != Path(data).resolve():
        raise UserError(f"oracle {oracle} was built on {world}, not on --data {data}; pass the oracle's benchmark "
                        "directory or build an oracle on this one")
    for directory in (model, model.parent):
        manifest = read_manifest(directory)
        if not str(manifest.get("command", "")).startswith("unlearn"):
            continue
        config = manifest.get("config") or {}
        for key, expected, what in (("model", vanilla, "--vanilla"), ("data", data, "--data")):
            if config.get(key) and Path(config[key]).resolve() != Path(expected).resolve():
                raise UserError(f"{model} was unlearned from {config[key]}, not from {what} {expected}; attack it "
                                f"with the {key} it started from (the oracle must be that vanilla's counterpart)")
        if config.get("forget_split") not in (None, forget_split):
            raise UserError(f"{model} forgot {config['forget_split']}, not --forget-split {forget_split}")
    for target in (Target(model), Target(oracle), Target(vanilla)):
        check_steering(target, Path(vanilla))


def attack_target(attacks: Sequence[Attack], target: Target, env: AttackEnv, console=None) -> dict:
    """The unattacked figures and every attack's variants of one model (no shares: those need all three roles)."""
    start = time.perf_counter()
    with target.loaded() as (model, processor):
        plain = measure(model, processor, env.held_out, env.settings)
    raw: dict[str, Any] = {"model_dir": str(target.model_dir), "plain": plain,
                           "plain_seconds": round(time.perf_counter() - start, 2), "attacks": {}}
    for attack in attacks:
        if console is not None:
            console.print(f"  {attack.name} on {target.role} {target.model_dir}")
        notes: list[str] = []
        start = time.perf_counter()
        variants = attack.run(target, env, notes)
        raw["attacks"][attack.name] = {"variants": variants, "notes": notes,
                                       "seconds": round(time.perf_counter() - start, 2)}
    return raw


def _target_key(attacks: Sequence[Attack], target: Target, env: AttackEnv, preset: str) -> dict:
    """What an attack result depends on: the attacks and their configs, the protocol, and the weights on disk (size
    and modification time of every weight file, the steering the model ships included: a retrained run differs)."""
    from asru.attacks.base import RUN_STEERING

    model_dir = Path(target.model_dir)
    files = sorted(model_dir.glob("*.safetensors")) + [model_dir.parent / RUN_STEERING]
    key = {"attacks": {a.name: _plain(a.config) for a in attacks}, "preset": preset, "seed": env.seed,
           "role": target.role, "forget_split": env.forget_split, "data": str(env.data_dir.resolve()),
           "facts": env.facts.record(),
           "weights": {str(f.resolve()): [f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.exists()}}
    return json.loads(json.dumps(key, default=str))


def cached_target(attacks: Sequence[Attack], target: Target, env: AttackEnv, preset: str, directory: Path,
                  console=None) -> dict:
    """`attack_target`, reused from `<directory>/attacks.raw.json` when nothing it depends on changed: a compare
    rerun (more seeds, more methods) attacks only the models it has not attacked yet."""
    cache = Path(directory) / RAW_RESULTS
    key = _target_key(attacks, target, env, preset)
    if cache.exists():
        saved = json.loads(cache.read_text())
        if saved.get("key") == key:
            if console is not None:
                console.print(f"  attacks on {target.role} {target.model_dir}: reused ({cache})")
            return saved["raw"]
    raw = json.loads(json.dumps(attack_target(attacks, target, env, console), default=str))
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"key": key, "raw": raw}, indent=2))
    return raw


def combine(attacks: Sequence[Attack], raws: dict[str, dict]) -> dict:
    """Per attack and variant: the three roles' figures side by side and the recovered share of every metric; the
    attack's headline = its (non-control) variant with the largest recovered share on its `metric`."""
    out = {}
    for attack in attacks:
        per_role = {role: raws[role]["attacks"][attack.name] for role in ROLES}
        variants = {}
        for variant in per_role["model"]["variants"]:
            figures = {role: per_role[role]["variants"].get(variant) or {} for role in ROLES}
            metrics = [m for m in (attack.metric, *METRICS) if m in figures["model"]]
            shares = {m: recovered_share(*(figures[r].get(m) for r in ROLES)) for m in dict.fromkeys(metrics)}
            variants[variant] = {**figures, "recovered_share": shares}
        ranked = [(v["recovered_share"].get(attack.metric), name) for name, v in variants.items()
                  if name not in attack.controls and v["recovered_share"].get(attack.metric) is not None]
        headline = max(ranked)[1] if ranked else next((n for n in variants if n not in attack.controls), None)
        notes = list(dict.fromkeys(n for role in ROLES for n in per_role[role]["notes"]))
        out[attack.name] = {
            "description": attack.description, "config": _plain(attack.config), "metric": attack.metric,
            "headline": headline,
            "recovered_share": variants[headline]["recovered_share"].get(attack.metric) if headline else None,
            "variants": variants, "notes": notes,
            "seconds": {role: per_role[role]["seconds"] for role in ROLES}}
    return out


def _plain(config) -> dict:
    from dataclasses import asdict, is_dataclass

    return asdict(config) if is_dataclass(config) else {}


def results(attacks: Sequence[Attack], raws: dict[str, dict], env: AttackEnv, meta: dict) -> dict:
    notes: list[str] = []
    return {"attacks": combine(attacks, raws),
            "plain": {role: raws[role]["plain"] for role in ROLES},
            "facts": {**env.facts.record(), "n_held_out_gen": sum(i.task == "gen" for i in env.held_out),
                      "n_held_out_mc": sum(i.task == "mc" for i in env.held_out)},
            "notes": notes,
            "meta": {**meta, "models": {role: raws[role]["model_dir"] for role in ROLES},
                     "forget_split": env.forget_split, "data": str(env.data_dir), "seed": env.seed,
                     "settings": {"max_new_tokens": env.settings.max_new_tokens,
                                  "batch_size": env.settings.batch_size, "decoding": "greedy"},
                     "definition": "recovered_share = clip((attacked - oracle attacked) / "
                                   "(vanilla attacked - oracle attacked), 0, 1)"}}


def attack_stage(names: Sequence[str], model, data, forget_split: str, oracle, vanilla, out, *, preset: str = "tiny",
                 seed: int = 0, steps=None, quant=None, k=None, force: bool = False, console=None) -> dict:
    """`asru attack`: checks every input first (nothing is written on a mistake), then writes
    <out>/attacks.json and <out>/manifest.json."""
    from asru.errors import fresh_output_dir
    from asru.pipeline import resolve_model_dir

    model, oracle, vanilla, data = (resolve_model_dir(model), resolve_model_dir(oracle), resolve_model_dir(vanilla),
                                    Path(data))
    attacks = configure(names, preset, steps, quant, k)
    check_inputs(model, data, forget_split, oracle, vanilla)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory; choose another --out")
    if out.exists() and any(out.iterdir()) and not force:
        raise UserError(f"output directory {out} already exists and is not empty; pass --force to overwrite it "
                        "or choose another --out")
    env = make_env(data, forget_split, vanilla, preset, seed)
    for attack in attacks:
        attack.check(env)
    out = fresh_output_dir(out, force=force)
    config = {"attacks": [a.name for a in attacks], "model": str(model.resolve()), "oracle": str(oracle.resolve()),
              "vanilla": str(vanilla.resolve()), "data": str(data.resolve()), "forget_split": forget_split,
              "preset": preset, "configs": {a.name: _plain(a.config) for a in attacks}}
    manifest = Manifest(command="attack", config=config, seed=seed)
    raws: dict[str, dict] = {}
    done: dict[Path, dict] = {}  # the vanilla model attacked as --model too is attacked once
    with manifest.stage("attack"):
        for role, path in zip(ROLES, (model, oracle, vanilla)):
            key = path.resolve()
            raws[role] = done[key] if key in done else attack_target(attacks, Target(path, role), env, console)
            done[key] = raws[role]
    body = results(attacks, raws, env, {"preset": preset})
    (out / RESULTS).write_text(json.dumps(body, indent=2, default=str))
    manifest.extra.update(status="done", result={a: body["attacks"][a]["recovered_share"] for a in body["attacks"]})
    manifest.write(out)
    return body


def compare_attacks(console, out: Path, data: Path, vanilla: Path, oracle: Path, forget_split: str, preset: str,
                    names: Sequence[str], runs: Sequence[tuple[str, Path]], seed: int = 0) -> dict[str, dict]:
    """The compare hook: the oracle and vanilla are attacked once; every run's attacks.json lands next to it
    (<run dir>/attacks.json) and the report directory gains the heat map and table (asru.attacks.report)."""
    from asru.attacks.report import write_attack_report

    attacks = configure(names, preset)
    env = make_env(data, forget_split, vanilla, preset, seed)
    for attack in attacks:
        attack.check(env)
    for _, model_dir in runs:
        check_inputs(model_dir, data, forget_split, oracle, vanilla)
    shared = {role: cached_target(attacks, Target(path, role), env, preset, out / "attacks" / role, console)
              for role, path in (("oracle", oracle), ("vanilla", vanilla))}
    rows = {}
    for label, model_dir, destination in [("vanilla", vanilla, out / "attacks" / "vanilla"),
                                          ("oracle", oracle, out / "attacks" / "oracle"),
                                          *[(lbl, m, m.parent) for lbl, m in runs]]:
        console.print(f"[bold]attacks[/bold] {label}")
        role = label if label in shared else "model"
        own = (shared[role] if role != "model" else
               cached_target(attacks, Target(model_dir, "model"), env, preset, destination, console))
        body = results(attacks, {"model": own, **shared}, env, {"preset": preset, "label": label})
        destination.mkdir(parents=True, exist_ok=True)
        (destination / RESULTS).write_text(json.dumps(body, indent=2, default=str))
        rows.setdefault(label, []).append(body)
    write_attack_report(rows, out / "report")
    return rows
