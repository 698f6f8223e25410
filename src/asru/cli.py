"""The `asru` command: parse options, call one function, print a short Rich summary. No logic lives here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from asru import pipeline
from asru.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Machine unlearning for multimodal LLMs: ASRU, baselines, generation-quality evaluation.")
console = Console()
err_console = Console(stderr=True)

PRESET = typer.Option("tiny", "--preset", help="config preset name (see asru/configs) or a YAML file")
FORCE = typer.Option(False, "--force", help="overwrite an existing output")
DATA_HELP = "benchmark directory (MLLMU-Bench layout, e.g. from `asru world`)"
# `--world` was the name on base/vanilla/export-clear; kept, hidden, so old scripts still run
OLD_WORLD = typer.Option(None, "--world", hidden=True, help="deprecated name of --data")


def _data_dir(data: Optional[Path], world: Optional[Path]) -> Path:
    """One name for the benchmark directory on every command: --data (the old --world still accepted)."""
    if data is not None and world is not None and data != world:
        raise UserError(f"--data {data} and --world {world} disagree; pass only --data (--world is its old name)")
    if data is None and world is None:
        raise UserError("missing option --data: the benchmark directory (e.g. from `asru world --out DIR`)")
    if data is None:
        err_console.print("[yellow]note:[/yellow] --world is deprecated; use --data", highlight=False)
    return data if data is not None else world


RESUME = typer.Option(False, "--resume", help="continue a killed run from its last checkpoint in --out")


def _done(what: str, out: Path, fresh: bool) -> None:
    console.print(f"[green]{what}[/green] {'written to' if fresh else 'reused from'} [bold]{out}[/bold]")


@app.command()
def world(out: Path = typer.Option(..., "--out", help="directory to write the world into"),
          preset: str = typer.Option("tiny", "--preset", help="world size: tiny or micro"),
          seed: int = typer.Option(0, "--seed"), force: bool = FORCE) -> None:
    """Write the synthetic fictitious-profile world in the MLLMU-Bench parquet layout."""
    path, fresh = pipeline.world_stage(out, preset, seed, force=force)
    _done("world", path, fresh)


@app.command()
def base(data: Optional[Path] = typer.Option(None, "--data", help="world directory from `asru world`"),
         out: Path = typer.Option(..., "--out"), preset: str = PRESET, force: bool = FORCE,
         world: Optional[Path] = OLD_WORLD, resume: bool = RESUME) -> None:
    """Build the tiny Qwen3-VL (tokenizer, processor, model) and pretrain it on the world's base corpus."""
    path, fresh = pipeline.base_stage(_data_dir(data, world), out, preset, force=force, resume=resume)
    _done("base model", path, fresh)


@app.command()
def vanilla(base: Path = typer.Option(..., "--base", help="base model directory"),
            data: Optional[Path] = typer.Option(None, "--data", help=DATA_HELP), out: Path = typer.Option(..., "--out"),
            preset: str = PRESET, force: bool = FORCE, world: Optional[Path] = OLD_WORLD, resume: bool = RESUME) -> None:
    """Fine-tune the base model on every fictitious profile (the model unlearning starts from)."""
    path, fresh = pipeline.vanilla_stage(base, _data_dir(data, world), out, preset, force=force, resume=resume)
    _done("vanilla model", path, fresh)


@app.command()
def oracle(base: Path = typer.Option(..., "--base", help="base model directory (the vanilla model's base)"),
           data: Path = typer.Option(..., "--data", help="benchmark directory"),
           forget_split: str = typer.Option("forget_10", "--forget-split", help="the people the oracle never sees"),
           out: Path = typer.Option(..., "--out"), preset: str = PRESET, force: bool = FORCE,
           resume: bool = RESUME,
           seed: Optional[int] = typer.Option(None, "--seed", help="training seed instead of the recipe's (a second oracle: Forget Quality's noise floor)")) -> None:
    """Fine-tune the base with the vanilla recipe on everyone except the forget split: the retain-only oracle."""
    path, fresh = pipeline.oracle_stage(base, data, out, forget_split, preset, force=force, resume=resume, seed=seed)
    _done("retain-only oracle", path, fresh)


@app.command("eval")
def evaluate(model: Path = typer.Option(..., "--model"), data: Path = typer.Option(..., "--data", help=DATA_HELP),
             forget_split: str = typer.Option("forget_10", "--forget-split"),
             out: Path = typer.Option(..., "--out", help="results JSON path (items go to <stem>.items.jsonl)"),
             preset: str = PRESET, limit: Optional[int] = typer.Option(None, "--limit", help="retain people evaluated"),
             judge: str = typer.Option("offline", "--judge", help="generation-quality judge: offline, llm (adds an LLM judge) or none"),
             judge_url: Optional[str] = typer.Option(None, "--judge-url", help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1"),
             judge_model: Optional[str] = typer.Option(None, "--judge-model", help="judge model name, e.g. gpt-4o-mini"),
             judge_key_env: str = typer.Option("OPENAI_API_KEY", "--judge-key-env", help="env variable holding the API key"),
             reference: Optional[Path] = typer.Option(None, "--reference", help="perplexity reference (default: the vanilla model of a run)"),
             holdout_split: Optional[str] = typer.Option(None, "--holdout-split", help="split of never-taught people for membership inference (default: the world's world/holdout)"),
             oracle: Optional[Path] = typer.Option(None, "--oracle", help="retain-only oracle: its results.json or model dir (Forget Quality, PrivLeak)"),
             force: bool = FORCE) -> None:
    """Run the MLLMU-Bench protocol (+ the world's utility and refusal checks) on a model."""
    llm = {"url": judge_url, "model": judge_model, "key_env": judge_key_env}
    results = pipeline.eval_stage(model, data, out, forget_split, preset, limit=limit, judge=judge,
                                  reference=reference, llm=llm, force=force, holdout=holdout_split, oracle=oracle)
    pipeline.print_results(console, results)


@app.command()
def unlearn(method: str = typer.Argument(..., help="method name (see `asru methods`)"),
            model: Path = typer.Option(..., "--model", help="vanilla model directory"),
            data: Path = typer.Option(..., "--data", help=DATA_HELP),
            forget_split: str = typer.Option("forget_10", "--forget-split"),
            out: Path = typer.Option(..., "--out", help="run directory (the model goes to <out>/model)"),
            base: Optional[Path] = typer.Option(None, "--base", help="base model (ASRU's refusal side)"),
            preset: str = PRESET, stage: Optional[int] = typer.Option(None, "--stage", help="ASRU: run only stage 1 or 2"),
            set_: Optional[list[str]] = typer.Option(None, "--set", help="method option override key=value (repeatable)"),
            seed: int = typer.Option(0, "--seed"), resume: bool = RESUME,
            retain_fraction: float = typer.Option(1.0, "--retain-fraction",
                                                  help="share (0, 1] of the retain people the method may use (seeded)"),
            force: bool = FORCE) -> None:
    """Unlearn the forget split from the vanilla model with METHOD."""
    from asru.methods import get_method

    overrides = pipeline.parse_overrides(set_)
    if retain_fraction != 1.0 and not get_method(method).uses_retain:
        err_console.print(f"[yellow]note:[/yellow] {method} uses no retain data; --retain-fraction is ignored",
                          highlight=False)
    if stage is not None:
        from asru.methods.asru import ASRU

        if not issubclass(get_method(method), ASRU):
            raise UserError(f"--stage applies to the two-stage methods (asru, asru_robust, rule) only, not '{method}'")
        if stage not in (1, 2):
            raise UserError(f"--stage must be 1 or 2, got {stage}")
        overrides["stages"] = [stage]
    path, fresh = pipeline.unlearn_stage(method, model, data, out, forget_split, base=base, preset=preset,
                                         overrides=overrides, seed=seed, resume=resume, force=force,
                                         retain_fraction=retain_fraction)
    _done(f"{method} model", path / "model", fresh)


@app.command()
def attack(names: list[str] = typer.Argument(..., help="attack names (see `asru attacks`), comma-separated or repeated; all = every one"),
           model: Path = typer.Option(..., "--model", help="model (or run) directory to attack"),
           data: Path = typer.Option(..., "--data", help=DATA_HELP),
           forget_split: str = typer.Option("forget_10", "--forget-split"),
           oracle: Path = typer.Option(..., "--oracle", help="retain-only oracle of the split (`asru oracle`): the control"),
           vanilla: Path = typer.Option(..., "--vanilla", help="the vanilla model the run started from"),
           out: Path = typer.Option(..., "--out", help="directory for attacks.json + manifest.json"),
           steps: Optional[str] = typer.Option(None, "--steps", help="relearning budget(s) in steps, e.g. 10,50,100 (default 50)"),
           quant: Optional[str] = typer.Option(None, "--quant", help="quantizations: int8, nf4, bnb8 (default: those available)"),
           k: Optional[int] = typer.Option(None, "--k", help="samples per question for Leak@k (default 16)"),
           preset: str = PRESET, seed: int = typer.Option(0, "--seed", help="seed of the A/B fact split, fine-tunes and sampling"),
           force: bool = FORCE) -> None:
    """Attack a model's forgetting (relearning, direction ablation, prefilling, sampling, quantization, probing);
    the same attacks on the oracle (control) and the vanilla model give the recovered share."""
    from asru.attacks.run import attack_stage

    body = attack_stage(names, model, data, forget_split, oracle, vanilla, out, preset=preset, seed=seed,
                        steps=_ints(steps, "--steps") if steps is not None else None,
                        quant=[q.strip() for q in quant.split(",") if q.strip()] if quant is not None else None,
                        k=k, force=force, console=console)
    for name, result in body["attacks"].items():
        share = result["recovered_share"]
        console.print(f"[bold]{name}[/bold] ({result['headline']}): recovered share "
                      f"{'n/a' if share is None else f'{share:.2f}'}")
        for note in result["notes"]:
            console.print(f"  note: {note}", highlight=False)
    for note in body["notes"]:
        console.print(f"note: {note}", highlight=False)
    _done("attack results", out / "attacks.json", True)


def _ints(text: str, option: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{option} takes whole numbers, comma-separated (e.g. 10,50,100); got {text}") from None


@app.command()
def attacks() -> None:
    """List the attacks."""
    from asru.attacks import attack_names, get_attack

    for name in attack_names():
        console.print(f"[bold]{name}[/bold]  {get_attack(name).description}")


@app.command()
def methods() -> None:
    """List the unlearning methods."""
    from asru.methods import get_method, method_names

    for name in method_names():
        console.print(f"[bold]{name}[/bold]  {get_method(name).description}")


@app.command()
def compare(data: Path = typer.Option(..., "--data", help=DATA_HELP), model: Path = typer.Option(..., "--model", help="vanilla model"),
            base: Optional[Path] = typer.Option(None, "--base", help="base model (needed by asru/rule)"),
            forget_split: str = typer.Option("forget_10", "--forget-split"),
            methods: str = typer.Option("all", "--methods", help="comma-separated method names, or all"),
            seeds: int = typer.Option(1, "--seeds", min=1), out: Path = typer.Option(..., "--out"),
            preset: str = PRESET, limit: Optional[int] = typer.Option(None, "--limit", help="retain people evaluated"),
            retain_fraction: Optional[list[str]] = typer.Option(
                None, "--retain-fraction", help="retain budget(s) in (0, 1], comma-separated or repeated, e.g. 0.05,0.25,1"),
            oracle: Optional[Path] = typer.Option(None, "--oracle", help="retain-only oracle model dir (`asru oracle`; default: built from the vanilla's base): a row of its own, Forget Quality, PrivLeak, distance to it, the attacks' control"),
            attacks: Optional[str] = typer.Option(None, "--attacks", help="attacks run on every model (comma-separated, or all)")) -> None:
    """Run (or reuse) every method x retain budget x seed, evaluate them all, and write the comparison report."""
    from asru.compare import expand_methods, run_compare

    attack_names = []
    if attacks:
        from asru.attacks import expand_attacks

        attack_names = expand_attacks([attacks])
    summary = run_compare(console, data, pipeline.resolve_model_dir(model), base, out, forget_split,
                          expand_methods(methods), seeds, preset, limit,
                          retain_fractions=_fractions(retain_fraction or ["1"]),
                          oracle=pipeline.resolve_model_dir(oracle) if oracle else None, attacks=attack_names)
    console.print(f"[green]report[/green] {summary['report_html']}")


def _fractions(values: list[str]) -> list[float]:
    try:
        return [float(v) for value in values for v in value.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--retain-fraction takes numbers in (0, 1], e.g. 0.05,0.25,1; got {','.join(values)}") from None


@app.command()
def report(results: list[Path] = typer.Argument(..., help="results JSON files (label=path to name a run)"),
           out: Path = typer.Option(..., "--out", help="report directory"), force: bool = FORCE) -> None:
    """Write report.md + report.html comparing evaluated models."""
    from asru.errors import fresh_output_dir
    from asru.eval.report import load_run, write_report

    runs = []
    for item in map(str, results):
        label, _, path = item.rpartition("=") if "=" in item else (Path(item).stem, "", item)
        runs.append(load_run(Path(path), label=label))
    fresh_output_dir(out, force=force)
    md, html = write_report(runs, out)
    console.print(f"[green]report[/green] {md}  {html}")


@app.command("export-clear")
def export_clear(data: Optional[Path] = typer.Option(None, "--data", help="world directory from `asru world`"),
                 out: Path = typer.Option(..., "--out"), force: bool = FORCE,
                 world: Optional[Path] = OLD_WORLD) -> None:
    """Write the embedded world in the CLEAR layout (so the CLEAR protocol runs offline)."""
    counts = pipeline.export_clear_stage(_data_dir(data, world), out, force=force)
    console.print(f"[green]CLEAR layout[/green] written to [bold]{out}[/bold]: {counts}")


@app.command("eval-clear")
def eval_clear(model: Path = typer.Option(..., "--model"), data: Path = typer.Option(..., "--data", help="CLEAR directory"),
               forget_config: str = typer.Option("forget05", "--forget-config", help="forget01, forget05 or forget10"),
               out: Path = typer.Option(..., "--out"),
               reference: Optional[Path] = typer.Option(None, "--reference", help="eval-clear results of a retain-only model (Forget Quality)"),
               max_items: Optional[int] = typer.Option(None, "--max-items"), force: bool = FORCE) -> None:
    """Run the CLEAR protocol (name MC, caption ROUGE-L, truth ratios, Forget Quality, Model Utility)."""
    results = pipeline.clear_eval_stage(model, data, out, forget_config, reference=reference, max_items=max_items,
                                        force=force)
    shown = {k: v for k, v in results.items() if isinstance(v, (int, float)) or v is None}
    console.print(shown)


@app.command()
def demo(out: Path = typer.Option(Path("runs/demo"), "--out"), forget_split: str = typer.Option("forget_10", "--forget-split"),
         preset: str = PRESET, seed: int = typer.Option(0, "--seed"),
         force: bool = typer.Option(False, "--force", help="redo stages whose configuration changed"),
         rebuild: bool = typer.Option(False, "--rebuild", help="train every shipped model (base, vanilla, the three "
                                      "oracles) from scratch instead of installing the shipped testbed"),
         compare: str = typer.Option(",".join(pipeline.DEMO_METHODS), "--compare",
                                     help="methods compared at the end (comma-separated; empty to skip)")) -> None:
    """The main job on the embedded default: world -> base -> vanilla -> oracle (the shipped testbed, or trained
    with --rebuild) -> evaluation -> unlearning comparison (ASRU vs GA-Diff and NPO) -> report. Finished stages
    are reused."""
    from asru.compare import expand_methods

    methods = tuple(expand_methods(compare)) if compare else ()
    pipeline.demo(console, out, forget_split, preset, seed, force=force, compare_methods=methods, rebuild=rebuild)


def main() -> None:
    try:
        app()
    except UserError as err:
        err_console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[red]interrupted[/red]")
        sys.exit(130)


if __name__ == "__main__":
    main()
