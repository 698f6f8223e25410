"""The stages the CLI runs, each writing one artifact directory with a manifest; reused when already finished."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from asru.config import apply_threads, load_preset, section, to_dict
from asru.errors import UserError, fresh_output_dir
from asru.manifest import Manifest, is_main_process, read_manifest


def finished(out: Path, command: str, config: dict[str, Any]) -> bool:
    """A stage is reusable when its manifest says it finished the same command with the same config."""
    m = read_manifest(out)
    return m.get("status") == "done" and m.get("command") == command and m.get("config") == json.loads(json.dumps(config, default=str))


def _fresh(out: Path, force: bool) -> Path:
    """`fresh_output_dir` on the main process; the other processes of a multi-process run only need it to exist."""
    if is_main_process():
        return fresh_output_dir(out, force=force)
    out.mkdir(parents=True, exist_ok=True)
    return out


def check_resumable(out: Path, command: str, config: dict[str, Any]) -> None:
    """`--resume` needs a run of the same command and configuration in `out` that left a checkpoint (or, for
    ASRU/RULE, a finished stage); anything else is refused before a byte is written."""
    from asru.trainer import has_checkpoint

    previous = read_manifest(out)
    if not previous:
        raise UserError(f"--resume: {out} holds no run to resume (no manifest.json); run without --resume")
    if previous.get("command") != command or previous.get("config") != json.loads(json.dumps(config, default=str)):
        raise UserError(f"--resume: {out} holds a run of another method or configuration ({previous.get('command')}); "
                        "resume only the same command, or choose another --out")
    if not has_checkpoint(out) and not any(out.glob("stage*.json")):
        raise UserError(f"--resume: {out} has no checkpoint to continue from (killed before the first save); "
                        "run again without --resume, with --force")


def run_stage(out: str | Path, command: str, config: dict[str, Any], work: Callable[[Path, Manifest], dict],
              force: bool = False, reuse: bool = False, seed: int | None = None, resume: bool = False) -> tuple[Path, bool]:
    """Run `work(out, manifest)` into a fresh `out`; with `reuse`, skip when an identical finished run is there;
    with `resume`, continue the same run's last checkpoint in `out`."""
    out = Path(out)
    if reuse and finished(out, command, config):
        return out, False
    if resume:
        check_resumable(out, command, config)
    else:
        out = _fresh(out, force)
    manifest = Manifest(command=command, config=config, seed=seed)
    manifest.extra["status"] = "running"
    manifest.write(out)
    with manifest.stage(command):
        result = work(out, manifest)
    manifest.extra.update(status="done", result=result)
    manifest.write(out)
    return out, True


def world_stage(out, preset: str = "tiny", seed: int = 0, force=False, reuse=False):
    from asru.data.world.build import WORLD_FORMAT, build_world, preset as check_preset

    check_preset(preset)
    config = {"preset": preset, "seed": seed, "format": WORLD_FORMAT}
    return run_stage(out, "world", config, lambda o, m: build_world(o, preset, seed)["counts"], force, reuse, seed)


def require_world(data: str | Path) -> Path:
    data = Path(data)
    if not (data / "Full_Set").exists():
        raise UserError(f"{data} is not a benchmark directory (no Full_Set/); create one with `asru world --out {data}`")
    return data


def base_config(world: Path, preset: str):
    """The base stage's recipe object and the config its manifest records."""
    from asru.models.vanilla import BaseConfig

    settings = load_preset(preset)
    cfg = section(settings, "base", BaseConfig)
    return cfg, {"preset": preset, "world": str(world.resolve()), "threads": apply_threads(settings), "base": to_dict(cfg)}


def vanilla_config(base, world: Path, preset: str, without: str | None = None, seed: int | None = None):
    """The vanilla stage's (or, with `without`, the retain-only oracle's) recipe object and manifest config."""
    from asru.models.vanilla import VanillaConfig

    settings = load_preset(preset)
    cfg = section(settings, "vanilla", VanillaConfig)
    if seed is not None:
        cfg.train.seed = seed
    config = {"preset": preset, "world": str(world.resolve()), "base": str(Path(base).resolve()),
              "threads": apply_threads(settings), "vanilla": to_dict(cfg)}
    return cfg, ({**config, "without": without} if without else config)


def _train_or_install(out, command: str, config: dict, train: Callable[[Path, Manifest], dict], shipped,
                      force: bool, reuse: bool, seed: int | None, resume: bool) -> tuple[Path, bool]:
    """Run a training stage, or, given a shipped model whose recipe equals `config`'s, install its weights instead
    (the run manifest is the one training would write, plus where the weights came from)."""
    if shipped is None or shipped.mismatch(config) is not None:
        return run_stage(out, command, config, train, force, reuse, seed, resume=resume)

    def install(o: Path, m: Manifest) -> dict:
        m.extra["shipped"] = shipped.install(o)
        return m.extra["shipped"]["trained"]["result"]

    return run_stage(out, command, config, install, force, reuse, seed)


def base_stage(world, out, preset: str = "tiny", force=False, reuse=False, resume=False, shipped=None):
    from asru.models.vanilla import build_base

    world = require_world(world)
    cfg, config = base_config(world, preset)
    return _train_or_install(out, "base", config, lambda o, m: build_base(world, o, cfg, resume=resume), shipped,
                             force, reuse, cfg.train.seed, resume)


def vanilla_stage(base, world, out, preset: str = "tiny", force=False, reuse=False, resume=False, shipped=None):
    from asru.models.vanilla import build_vanilla

    world, base = require_world(world), resolve_model_dir(base)
    cfg, config = vanilla_config(base, world, preset)
    return _train_or_install(out, "vanilla", config, lambda o, m: build_vanilla(base, world, o, cfg, resume=resume),
                             shipped, force, reuse, cfg.train.seed, resume)


def oracle_stage(base, world, out, forget_split: str = "forget_10", preset: str = "tiny", force=False, reuse=False,
                 resume=False, seed: int | None = None, shipped=None):
    """The retain-only oracle: the base fine-tuned with the vanilla recipe on everyone but `forget_split`'s people,
    the "never saw them" reference every forgetting figure is compared with. `seed` replaces the recipe's training
    seed (data order): two oracles of different seeds tell the Forget Quality test's noise floor."""
    from asru.data.mllmu import retain_split_for
    from asru.models.vanilla import build_vanilla

    world, base = require_world(world), resolve_model_dir(base)
    retain_split_for(forget_split)  # validates the split name
    cfg, config = vanilla_config(base, world, preset, without=forget_split, seed=seed)
    return _train_or_install(out, "oracle", config,
                             lambda o, m: build_vanilla(base, world, o, cfg, without=forget_split, resume=resume),
                             shipped, force, reuse, cfg.train.seed, resume)


def check_oracle(oracle, vanilla, forget_split: str | None = None) -> str:
    """Refuse an oracle that is not the vanilla model's counterpart (other base, world, recipe or forget split):
    a distance to the wrong yardstick would be meaningless. Returns the oracle's forget split."""
    oracle, vanilla = Path(oracle), Path(vanilla)
    o, v = read_manifest(oracle).get("config") or {}, read_manifest(vanilla).get("config") or {}
    if read_manifest(oracle).get("command") != "oracle":
        raise UserError(f"{oracle} is not a retain-only oracle (no `asru oracle` manifest); build one with "
                        f"`asru oracle --base BASE --data DIR --forget-split SPLIT --out {oracle}`")
    for key, what in (("base", "base model"), ("world", "benchmark directory"), ("vanilla", "vanilla recipe"),
                      ("threads", "thread count")):
        if v and _unseeded(key, o.get(key)) != _unseeded(key, v.get(key)):
            raise UserError(f"oracle {oracle} was built from another {what} than the vanilla model {vanilla} "
                            f"({o.get(key)!r} vs {v.get(key)!r}); rebuild the oracle from the vanilla's base and data")
    if forget_split is not None and o.get("without") != forget_split:
        raise UserError(f"oracle {oracle} leaves out {o.get('without')}, not {forget_split}; "
                        f"build the oracle of {forget_split} with `asru oracle --forget-split {forget_split}`")
    return o["without"]


def _unseeded(key: str, value):
    """The vanilla recipe without its training seed: an oracle of another seed is still the same recipe."""
    if key != "vanilla" or not isinstance(value, dict) or not isinstance(value.get("train"), dict):
        return value
    return {**value, "train": {k: v for k, v in value["train"].items() if k != "seed"}}


def check_results_path(out: Path, force: bool) -> None:
    """Results go to a .json path that is new, or replaced only with --force."""
    if out.suffix != ".json":
        raise UserError(f"--out must be a .json path for the results, got {out}")
    if out.exists() and not force:
        raise UserError(f"{out} already exists; pass --force to overwrite it or choose another --out")


def resolve_model_dir(model: str | Path) -> Path:
    """Accept a model directory or a run directory holding `model/` (what `asru unlearn` writes)."""
    path = Path(model)
    if not path.is_dir():
        raise UserError(f"model directory {path} does not exist; pass a directory written by save_pretrained "
                        "(or a run directory holding model/)")
    if (path / "model" / "config.json").exists() and not (path / "config.json").exists():
        return path / "model"
    return path


def eval_stage(model, data, out, forget_split: str = "forget_10", preset: str = "tiny", *, limit=None,
               judge: str = "offline", reference=None, llm: dict | None = None, force=False, reuse=False,
               holdout: str | None = None, oracle=None) -> dict:
    """Evaluate a model on the MLLMU-Bench protocol and write results.json + results.items.jsonl + manifest.

    `holdout`: the split of never-taught people for membership inference (default: the world's holdout).
    `oracle`: the retain-only oracle's results.json, or its model directory (then evaluated first, with the same
    settings, into `<out stem>.oracle.json`), for Forget Quality and PrivLeak."""
    from asru.eval.mllmu import evaluate, write_results
    from asru.eval.quality import add_llm_quality
    from asru.models.load import load_model

    out = Path(out)
    if judge not in ("offline", "llm", "none"):
        raise UserError(f"--judge must be offline, llm or none, got '{judge}'")
    data = require_world(data)
    preset_data = load_preset(preset)
    threads = apply_threads(preset_data)
    settings = preset_data.get("eval", {})
    model_dir = resolve_model_dir(model)
    reference_dir = (reference or _vanilla_of(model_dir)) if judge != "none" else None
    identity = eval_identity(model_dir, data, forget_split, limit, judge, reference_dir, llm,
                             {**settings, "threads": threads, "holdout": holdout})
    if reuse:
        previous = _previous_results(out)
        if previous is not None and previous.get("meta", {}).get("identity") == identity:
            return previous
        force = True  # reuse mode owns `out`: a result of another model, data or config is stale, so replaced
    check_results_path(out, force)
    oracle_results = oracle_results_of(oracle, data, out, forget_split, preset, limit, holdout, model_dir)
    loaded, processor = load_model(model_dir)
    steering = _maybe_steering(loaded, model_dir)
    llm_judge = _llm_judge(llm, out) if judge == "llm" else None
    reference_model = None
    if reference_dir is not None:
        reference_model = loaded if Path(reference_dir).resolve() == model_dir.resolve() else load_model(reference_dir)[0]
    manifest = Manifest(command="eval", config=identity)
    try:
        with manifest.stage("eval"):
            results, records = evaluate(loaded, processor, data, forget_split, limit=limit,
                                        max_new_tokens=settings.get("max_new_tokens", 32),
                                        batch_size=settings.get("batch_size", 64), judge=judge != "none",
                                        reference=reference_model, holdout=holdout, oracle=oracle_results)
        if llm_judge is not None:
            with manifest.stage("llm_judge"):
                add_llm_quality(results, records, llm_judge)
    finally:
        if steering is not None:
            steering.close()
    results["meta"]["identity"] = identity
    write_results(results, records, out)
    manifest.extra["status"] = "done"
    manifest.write(out.parent, name=out.stem + ".manifest.json")
    return results


def eval_identity(model_dir: Path, data: Path, forget_split: str, limit, judge: str, reference_dir,
                  llm: dict | None, settings: dict) -> dict:
    """What an evaluation's numbers depend on: the model (and perplexity reference) by path and content
    fingerprint, the data by path and fingerprint, the split, the judge and the protocol settings. Stored in
    results.json `meta.identity`; a result is reused only when all of it matches (a file that merely exists
    may be another model's, an older checkpoint's or another preset's)."""
    from asru.manifest import tree_fingerprint

    def model_id(path):
        if path is None:
            return None
        path = Path(path)
        digest = tree_fingerprint(path) if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        return {"path": str(path.resolve()), "fingerprint": digest}

    return json.loads(json.dumps({
        "model": model_id(model_dir), "data": {"path": str(data.resolve()), "fingerprint": tree_fingerprint(data)},
        "forget_split": forget_split, "limit": limit, "judge": judge, "reference": model_id(reference_dir),
        "llm_judge": {k: (llm or {}).get(k) for k in ("url", "model")} if judge == "llm" else None,
        "settings": settings}, default=str))


def _previous_results(out: Path) -> dict | None:
    """The results JSON at `out` with its items file, or None (absent, torn, or not a results file)."""
    try:
        results = json.loads(out.read_text())
    except (OSError, ValueError):
        return None
    items = out.with_name(out.stem + ".items.jsonl")
    return results if isinstance(results, dict) and items.exists() else None


def oracle_results_of(oracle, data: Path, out: Path, forget_split: str, preset: str, limit, holdout,
                      model_dir: Path | None = None) -> dict | None:
    """The oracle's results: read a results.json, or evaluate an oracle model directory once (reused after).
    The oracle must be the counterpart of the evaluated model's vanilla (`check_oracle`), whichever form it has."""
    if oracle is None:
        return None
    path = Path(oracle)
    if path.is_dir():
        _check_oracle_of(path, model_dir, forget_split)
        target = out.with_name(out.stem + ".oracle.json")
        return eval_stage(path, data, target, forget_split, preset, limit=limit, judge="none", holdout=holdout,
                          reuse=True)
    if path.suffix != ".json" or not path.is_file():
        raise UserError(f"--oracle {path} is neither a results.json nor a model directory; pass the oracle's "
                        "`asru eval` results or the model `asru oracle` wrote")
    try:
        results = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"--oracle {path} is not valid JSON ({exc}); re-create it with `asru eval`") from exc
    if not isinstance(results, dict) or not results.get("forget_truth_ratios"):
        raise UserError(f"--oracle {path} has no forget_truth_ratios; evaluate the oracle with this asru version")
    if (results.get("meta") or {}).get("forget_split") not in (None, forget_split):
        raise UserError(f"--oracle {path} was evaluated on {results['meta']['forget_split']}, not {forget_split}; "
                        "evaluate the oracle of this split")
    evaluated = (((results.get("meta") or {}).get("identity") or {}).get("model") or {}).get("path")
    if evaluated and Path(evaluated).is_dir():
        _check_oracle_of(Path(evaluated), model_dir, forget_split)
    return results


def _check_oracle_of(oracle_dir: Path, model_dir: Path | None, forget_split: str) -> None:
    """Refuse an oracle that is not the evaluated model's vanilla counterpart (a Forget Quality against the
    oracle of another base, world, recipe or split is meaningless). Models with no vanilla lineage (a base, an
    oracle) are not checked."""
    if model_dir is None:
        return
    vanilla = model_dir if read_manifest(model_dir).get("command") == "vanilla" else _vanilla_of(model_dir)
    if vanilla is not None and read_manifest(vanilla).get("command") == "vanilla":
        check_oracle(oracle_dir, vanilla, forget_split)


def _llm_judge(llm: dict | None, out: Path):
    """An LLM judge for `--judge llm`; its cache sits next to the results so re-runs cost nothing."""
    from asru.eval.llm_judge import LLMJudge

    if not llm or not llm.get("url") or not llm.get("model"):
        raise UserError("--judge llm needs --judge-url (an OpenAI-compatible endpoint) and --judge-model")
    return LLMJudge(llm["url"], llm["model"], api_key_env=llm.get("key_env") or "OPENAI_API_KEY",
                    cache_path=out.with_name(out.stem + ".llm_cache.jsonl"))


def _vanilla_of(model_dir: Path) -> Path | None:
    """The reference for perplexity: the vanilla model a run started from, else the model itself."""
    for candidate in (model_dir, model_dir.parent):
        start = read_manifest(candidate).get("config", {}).get("model")
        if start and Path(start).exists():
            return Path(start)
    return model_dir


def _maybe_steering(model, model_dir: Path):
    """Test-time steering saved with a model (MLLMEraser) is applied while it is evaluated."""
    try:
        from asru.steering.runtime import apply_saved_steering
    except ImportError:
        return None
    return apply_saved_steering(model, model_dir)


def summary_keys() -> list[str]:
    """The split metrics the CLI table shows (registered with summary=True in asru.eval.registry)."""
    from asru.eval.registry import metrics

    return [m.name for m in metrics("split") if m.summary]


def print_results(console, results: dict) -> None:
    from rich.table import Table

    keys = [k for k in summary_keys() if any(isinstance(results.get(s), dict) and k in results[s]
                                              for s in ("forget", "test", "retain", "celebrity"))]
    table = Table(title="MLLMU-Bench protocol")
    table.add_column("split")
    for key in keys:
        table.add_column(key, justify="right")
    for split in ("forget", "test", "retain", "celebrity"):
        if split in results:
            row = results[split]
            table.add_row(split, *[("-" if row.get(k) is None else f"{row[k]:.3f}") for k in keys])
    console.print(table)
    extras = {k: v for k, v in results.items() if not isinstance(v, (dict, list))}
    if extras:
        console.print("  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in extras.items()))
    note = (results.get("meta") or {}).get("mia")
    if note:
        console.print(f"membership inference: {note}")
    for key, value in results.items():
        if key in ("mia", "oracle") and isinstance(value, dict):
            flat = {k: v for k, v in value.items() if isinstance(v, (int, float, str)) or v is None}
            if flat:
                console.print(f"{key}: " + "  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                                     for k, v in flat.items()))


DEMO_METHODS = ("asru", "ga_diff", "npo")
DEMO_MARKER = "demo.json"


def _claim_demo_dir(out: Path, rebuild: bool, force: bool) -> None:
    """A rebuild trains for an hour into `out`: refuse a directory that holds other runs unless `force` (a
    rebuild's own directory is continued, its finished stages reused)."""
    mode = "rebuild" if rebuild else "shipped"
    previous = read_manifest(out, DEMO_MARKER).get("mode") if out.is_dir() else None
    if rebuild and not force and out.is_dir() and any(out.iterdir()) and previous != "rebuild":
        raise UserError(f"--rebuild: {out} already holds other runs ({previous or 'not a rebuild'}); choose another "
                        "--out, or pass --force to retrain every stage in it")
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        (out / DEMO_MARKER).write_text(json.dumps({"mode": mode if rebuild else previous or mode}))


def demo_testbed(preset: str, seed: int, forget_split: str, rebuild: bool):
    """The shipped testbed the demo starts from (verified), or None for `--rebuild`; refuses a preset or seed
    asru ships no testbed for before anything is written."""
    from asru.data.mllmu import retain_split_for
    from asru.testbed import available, shipped_testbed

    retain_split_for(forget_split)  # validates the split name
    if rebuild:
        return None
    testbed = shipped_testbed(preset, seed)
    if testbed is None:
        raise UserError(f"asru ships a trained testbed for {', '.join(available()) or 'no preset'}, not for preset "
                        f"{preset} with world seed {seed}; add --rebuild to train its models on this machine")
    for stage in ("base", "vanilla", f"oracle_{forget_split}"):
        testbed.model(stage).verify()
    return testbed


def demo(console, out, forget_split: str = "forget_10", preset: str = "tiny", seed: int = 0, force: bool = False,
         compare_methods: tuple[str, ...] = (), rebuild: bool = False) -> dict:
    """world -> base -> vanilla -> oracle -> eval on the embedded default, from the shipped testbed (installed when
    the world and recipes match the code, else trained, with the reason printed) or, with `rebuild`, trained from
    scratch (every shipped stage: base, vanilla and the oracle of each forget split). Finished stages with the same
    config are reused; a stage whose config changed is refused unless `force` (then it and what follows is redone)."""
    from asru.testbed import TESTBED_SPLITS, world_fingerprint

    out = Path(out)
    testbed = demo_testbed(preset, seed, forget_split, rebuild)
    _claim_demo_dir(out, rebuild, force)
    world_preset = "micro" if preset == "micro" else "tiny"
    world, fresh = world_stage(out / "world", world_preset, seed, reuse=True, force=force)
    console.print(f"world: {world}")
    fingerprint = world_fingerprint(world) if testbed is not None else None
    if testbed is not None and fingerprint != testbed.world_fingerprint:
        console.print(f"[yellow]the world this code builds differs from the shipped testbed's (content fingerprint "
                      f"{fingerprint} vs {testbed.world_fingerprint}): training every stage[/yellow]")
        testbed = None

    def shipped(stage: str, config: dict):
        """The shipped model to install for `stage`, or None (then it trains, and says why when it was shipped)."""
        if testbed is None:
            return None
        why = testbed.model(stage).mismatch(config)
        if why is not None:
            console.print(f"[yellow]shipped {stage} no longer matches the code's recipe ({why}): training it"
                          f"{' and everything trained from it' if stage == 'base' else ''}[/yellow]")
            return None
        return testbed.model(stage)

    redo = force or fresh
    base, fresh_base = base_stage(world, out / "base", preset, reuse=not redo, force=redo,
                                  shipped=shipped("base", base_config(world, preset)[1]))
    console.print(f"base model: {base}{_provenance(base)}")
    if not read_manifest(base).get("shipped"):
        testbed = None  # weights trained from another base are not the shipped ones
    redo = force or fresh_base
    vanilla, _ = vanilla_stage(base, world, out / "vanilla", preset, reuse=not redo, force=redo,
                               shipped=shipped("vanilla", vanilla_config(base, world, preset)[1]))
    console.print(f"vanilla model: {vanilla}{_provenance(vanilla)}")
    oracles = {}
    for split in (TESTBED_SPLITS if rebuild else (forget_split,)):
        oracles[split], _ = oracle_stage(base, world, out / f"oracle_{split}", split, preset, reuse=not redo,
                                         force=redo, shipped=shipped(f"oracle_{split}",
                                                                     vanilla_config(base, world, preset, split)[1]))
        console.print(f"retain-only oracle ({split}): {oracles[split]}{_provenance(oracles[split])}")
    oracle = oracles[forget_split]
    # evaluations are reused only when model, data and settings match (eval_stage's identity)
    oracle_eval = out / "eval" / f"oracle_{forget_split}.json"
    eval_stage(oracle, world, oracle_eval, forget_split, preset, reuse=True)
    results = eval_stage(vanilla, world, out / "eval" / "vanilla.json", forget_split, preset, reuse=True,
                         oracle=oracle_eval)
    # the base model's own figures: what the fine-tune must add (profiles) and must not erode (celebrities, refusals)
    eval_stage(base, world, out / "eval" / "base.json", forget_split, preset, judge="none", reuse=True,
               oracle=oracle_eval)
    print_results(console, results)
    if compare_methods:
        from asru.compare import run_compare

        summary = run_compare(console, world, vanilla, base, out / f"compare_{forget_split}", forget_split,
                              list(compare_methods), 1, preset, vanilla_results=out / "eval" / "vanilla.json",
                              oracle=oracle)
        console.print(f"[green]comparison report[/green] {summary['report_html']} (and report.md beside it)")
    return results


def _provenance(run_dir: Path) -> str:
    shipped = read_manifest(run_dir).get("shipped")
    return f" (shipped testbed, trained {shipped['trained'].get('created', '?')[:10]})" if shipped else " (trained here)"


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """`--set key=value` pairs (dotted keys for nested options, YAML values) into a nested dict."""
    import yaml

    result: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise UserError(f"--set expects key=value, got '{pair}'")
        key, raw = pair.split("=", 1)
        node = result
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _number_or(yaml.safe_load(raw))
    return result


def _number_or(value: Any) -> Any:
    """YAML 1.1 reads '3e-05' as a string; a user typing it means the number."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _merge(merged.get(key) or {}, value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def method_config(method_name: str, preset: str, overrides: dict[str, Any] | None = None):
    """The method's dataclass config: preset `methods.<name>` section, then --set overrides."""
    from asru.config import from_dict
    from asru.methods import get_method

    cls = get_method(method_name)
    section_data = (load_preset(preset).get("methods") or {}).get(method_name) or {}
    return cls, from_dict(cls.Config, _merge(section_data, overrides or {}), where=f"methods.{method_name}")


def unlearn_stage(method_name: str, model, data, out, forget_split: str = "forget_10", *, base=None,
                  preset: str = "tiny", overrides: dict[str, Any] | None = None, seed: int = 0,
                  resume: bool = False, force: bool = False, reuse: bool = False,
                  retain_fraction: float = 1.0) -> tuple[Path, bool]:
    """Run one unlearning method from the vanilla model; the run directory holds `model/` and a manifest.

    `retain_fraction` < 1: the method sees only that share of the retain people (asru.data.budget); it enters
    the run's config only then, and only for methods that read retain data, so full-budget runs stay reusable."""
    from asru.data.budget import FULL, check_fraction
    from asru.data.mllmu import retain_split_for
    from asru.methods import UnlearnContext

    data = require_world(data)
    retain_split_for(forget_split)  # validates the split name
    cls, cfg = method_config(method_name, preset, overrides)
    fraction = check_fraction(retain_fraction)  # validated for every method, so a typo never passes silently
    fraction = fraction if cls.uses_retain else FULL
    config = {"method": method_name, "preset": preset, "model": str(Path(model).resolve()), "data": str(data.resolve()),
              "forget_split": forget_split, "base": str(Path(base).resolve()) if base else None, "seed": seed,
              "threads": apply_threads(load_preset(preset)), "method_config": to_dict(cfg),
              **({"retain_fraction": fraction} if fraction != FULL else {})}
    out = Path(out)
    if reuse and finished(out, f"unlearn {method_name}", config):
        return out, False
    ctx = UnlearnContext(model_dir=resolve_model_dir(model), data_dir=data, forget_split=forget_split, out_dir=out,
                         base_dir=Path(base) if base else None, seed=seed, resume=resume, retain_fraction=fraction)
    ctx.retain_items  # noqa: B018 - validate the data (non-empty forget, disjoint people, budget) before writing
    if resume:
        check_resumable(out, f"unlearn {method_name}", config)
    else:
        out = _fresh(out, force)
    manifest = Manifest(command=f"unlearn {method_name}", config=config, seed=seed)
    manifest.extra["retain_budget"] = {**ctx.retain_budget.record(), "used": cls.uses_retain}
    manifest.extra["status"] = "running"
    manifest.write(out)
    ctx.out_dir, ctx.manifest = out, manifest
    with manifest.stage("unlearn"):
        result = cls(cfg).unlearn(ctx)
    manifest.extra.update(status="done", result=result)
    manifest.write(out)
    return out, True


def export_clear_stage(world, out, force: bool = False) -> dict:
    """The world in the CLEAR layout (see asru.data.world.clear_export)."""
    from asru.data.world.clear_export import export_clear

    world = require_world(world)
    out = fresh_output_dir(out, force=force)
    return export_clear(world, out)


def clear_eval_stage(model, data, out, forget_config: str = "forget05", *, reference=None, max_items=None,
                     force: bool = False) -> dict:
    """The CLEAR protocol on a model; `reference` = results JSON of a retain-only model (for Forget Quality)."""
    from asru.eval.clear import run_clear_protocol
    from asru.models.load import load_model

    out = Path(out)
    check_results_path(out, force)
    ratios = None
    if reference is not None:
        ref = json.loads(Path(reference).read_text()) if Path(reference).exists() else None
        if not ref or "forget_truth_ratios" not in ref:
            raise UserError(f"--reference {reference} is not a CLEAR results file with forget_truth_ratios; "
                            "evaluate the retain-only model with `asru eval-clear` first")
        ratios = ref["forget_truth_ratios"]
    model_dir = resolve_model_dir(model)
    loaded, processor = load_model(model_dir)
    manifest = Manifest(command="eval-clear", config={"model": str(model_dir), "data": str(data),
                                                      "forget_config": forget_config, "max_items": max_items})
    with manifest.stage("eval-clear"):
        results = run_clear_protocol(loaded, processor, data, forget_config, ratios, max_items=max_items)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    manifest.extra["status"] = "done"
    manifest.write(out.parent, name=out.stem + ".manifest.json")
    return results
