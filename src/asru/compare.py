"""`asru compare`: every method on the same vanilla model, data and protocol, then one report.

Runs and evaluations already finished in the compare directory are reused, so a comparison can be extended
(more seeds, more methods) or resumed after a crash. A compare directory is bound to one world and one vanilla
model (`compare.json`); mixing runs of different origins would make the table meaningless, so it is refused.
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path
from typing import Sequence

from asru import pipeline
from asru.config import load_preset
from asru.errors import UserError
from asru.manifest import read_manifest
from asru.steering.direction import model_fingerprint

BASELINE_FOR_CLAIMS = "asru"


def bind(out: Path, data: Path, vanilla: Path, forget_split: str, preset: str) -> dict:
    """Record (or check) what this compare directory is about."""
    identity = {"data": str(Path(data).resolve()), "world_fingerprint": _world_fingerprint(data),
                "vanilla": str(Path(vanilla).resolve()), "vanilla_fingerprint": model_fingerprint(vanilla),
                "forget_split": forget_split, "preset": preset}
    path = out / "compare.json"
    if path.exists():
        previous = json.loads(path.read_text())
        for key in ("world_fingerprint", "vanilla_fingerprint", "forget_split"):
            if previous.get(key) != identity[key]:
                raise UserError(f"{out} holds runs made with another {key.split('_')[0]} "
                                f"({previous.get(key)} vs {identity[key]}); use a new --out for this comparison")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(identity, indent=2))
    return identity


def _world_fingerprint(data: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    for split in ("Full_Set", "forget_5", "forget_10", "forget_15"):
        for file in sorted((Path(data) / split).glob("*.parquet")):
            digest.update(file.read_bytes()[:1 << 20])
    return digest.hexdigest()[:16]


def expand_methods(spec: str) -> list[str]:
    from asru.methods import method_names

    names = method_names() if spec == "all" else [m.strip() for m in spec.split(",") if m.strip()]
    for name in names:
        if name not in method_names():
            raise UserError(f"unknown method '{name}'; known methods: {', '.join(method_names())}")
    return names


def run_compare(console, data: Path, vanilla: Path, base: Path | None, out: Path, forget_split: str,
                methods: Sequence[str], seeds: int, preset: str, limit: int | None = None,
                vanilla_results: Path | None = None, retain_fractions: Sequence[float] = (1.0,),
                oracle: Path | None = None, attacks: Sequence[str] = ()) -> dict:
    """Unlearn + evaluate every (method, retain budget, seed), evaluate the vanilla model, write the report.

    `vanilla_results`: an evaluation of the same vanilla model with the same settings (the demo's), copied
    instead of evaluating the vanilla model a second time. `retain_fractions`: retain budgets
    (docs/compare.md); a run at budget F < 1 is labelled `<method>@<F>`, at 1.0 plainly `<method>`.
    `oracle`: the retain-only oracle's model directory (`asru oracle`; built under `out/oracle` from the vanilla's
    base when not given); it is evaluated as a row of its own and every run gets Forget Quality / PrivLeak against
    it plus a distance-to-oracle view. `attacks`: those attacks on every run, the vanilla model and the oracle
    (asru.attacks.run.compare_attacks; docs/robustness.md)."""
    from asru.eval.report import load_run, write_report

    out = Path(out)
    # bad input is refused before anything is written or hours of unlearning start
    if attacks:
        from asru.attacks.run import configure

        configure(attacks, preset)
    if oracle is not None:
        pipeline.check_oracle(oracle, vanilla, forget_split)
    elif attacks and read_manifest(vanilla).get("command") != "vanilla":
        raise UserError("--attacks needs a retain-only oracle (every attack's control): pass --oracle DIR from "
                        "`asru oracle --forget-split SPLIT`")
    bind(out, data, vanilla, forget_split, preset)
    if oracle is None:
        oracle = default_oracle(console, vanilla, data, out, forget_split, preset)
    runs, attacked = [], []
    own_vanilla = out / "results" / "vanilla.json"
    if vanilla_results is not None and limit is None and not own_vanilla.exists():
        _copy_results(Path(vanilla_results), own_vanilla)
    pipeline.eval_stage(vanilla, data, own_vanilla, forget_split, preset, limit=limit, reuse=True)
    runs.append(load_run(own_vanilla, label="vanilla"))
    plan = budget_labels(console, methods, retain_fractions)
    for method, fraction, label in plan:
        for seed in range(seeds):
            run_dir = out / "runs" / label / f"seed{seed}"
            console.print(f"[bold]{label}[/bold] seed {seed}")
            check_budget(run_dir, label, fraction)
            _, retrained = pipeline.unlearn_stage(method, vanilla, data, run_dir, forget_split, base=base,
                                                  preset=preset, seed=seed, reuse=True, force=True,
                                                  retain_fraction=fraction)
            results = out / "results" / label / f"seed{seed}.json"
            # a retrained run (its configuration changed) must not keep the evaluation of the model it replaced
            pipeline.eval_stage(run_dir, data, results, forget_split, preset, limit=limit, reference=vanilla,
                                reuse=not retrained, force=retrained)
            manifest = json.loads((run_dir / "manifest.json").read_text())
            runs.append(load_run(results, label=label, manifest=manifest))
            attacked.append((label, pipeline.resolve_model_dir(run_dir)))
    oracle_notes = ""
    if oracle is not None:
        own_oracle = out / "results" / "oracle.json"
        pipeline.eval_stage(oracle, data, own_oracle, forget_split, preset, limit=limit, judge="none", reuse=True)
        oracle_run = load_run(own_oracle, label="oracle")
        add_oracle_comparison(runs, oracle_run.results)
        runs.insert(1, oracle_run)
    claims = relative_claims(runs)
    if oracle is not None:
        claims["distance_to_oracle"] = distance_to_oracle(runs)
        oracle_notes = distance_markdown(claims["distance_to_oracle"]) + "\n\n"
    budget = budget_claim(claims["per_method"], plan, budgets(retain_fractions))
    if budget:
        claims["retain_budget"] = budget
    (out / "claims.json").write_text(json.dumps(claims, indent=2))
    notes = claims_markdown(claims) + "\n\n" + oracle_notes + (budget_markdown(budget) + "\n\n" if budget else "") + \
        tuning_markdown(load_preset(preset), methods)
    md, html = write_report(runs, out / "report", title=f"Unlearning comparison ({forget_split})", notes_md=notes,
                            retain_budget=budget_curves(budget, plan, runs) if budget else None)
    if attacks:
        from asru.attacks.run import compare_attacks

        compare_attacks(console, out, Path(data), Path(vanilla), Path(oracle), forget_split, preset, attacks, attacked)
    return {"report_md": str(md), "report_html": str(html), "claims": claims}


def default_oracle(console, vanilla: Path, data: Path, out: Path, forget_split: str, preset: str) -> Path | None:
    """The retain-only oracle of the compared split, built (or reused) under `out/oracle` from the vanilla model's
    own base and recipe; None, with a note, for a vanilla model that `asru vanilla` did not build."""
    manifest = read_manifest(vanilla)
    if manifest.get("command") != "vanilla" or not (manifest.get("config") or {}).get("base"):
        console.print(f"note: {vanilla} has no `asru vanilla` manifest, so no retain-only oracle is built; "
                      "pass --oracle DIR (from `asru oracle`) for the oracle row, Forget Quality and PrivLeak")
        return None
    path, fresh = pipeline.oracle_stage(manifest["config"]["base"], data, out / "oracle", forget_split, preset,
                                        reuse=True, force=True)
    console.print(f"retain-only oracle {'built in' if fresh else 'reused from'} {path}")
    return path


def budgets(fractions: Sequence[float]) -> list[float]:
    """The retain budgets of a comparison, checked and without repeats (the full budget when none is given)."""
    from asru.data.budget import FULL, check_fraction

    return list(dict.fromkeys(check_fraction(f) for f in fractions)) or [FULL]


def budget_labels(console, methods: Sequence[str], fractions: Sequence[float]) -> list[tuple[str, float, str]]:
    """(method, fraction, label) for every run of the sweep; a method that reads no retain data runs once."""
    from asru.data.budget import FULL
    from asru.methods import get_method

    fractions = budgets(fractions)
    plan = []
    for method in methods:
        if not get_method(method).uses_retain:
            if fractions != [FULL]:
                console.print(f"{method} uses no retain data: one run serves every retain budget")
            plan.append((method, FULL, method))
            continue
        plan += [(method, f, method if f == FULL else f"{method}@{f:g}") for f in fractions]
    return plan


def check_budget(run_dir: Path, label: str, fraction: float) -> None:
    """A compare directory never swaps a run of one retain budget for another under the same label."""
    from asru.manifest import read_manifest

    config = read_manifest(run_dir).get("config")
    if config is None:
        return
    previous = config.get("retain_fraction", 1.0)
    if previous != fraction:
        raise UserError(f"{run_dir} holds a '{label}' run made with retain fraction {previous:g}, not {fraction:g}; "
                        "use a new --out for this comparison, or move that run away")


def budget_runs(plan: Sequence[tuple[str, float, str]], fractions: Sequence[float], labels) -> dict[str, dict]:
    """Per method, the label of its run at each budget (only labels in `labels`): the one mapping the budget table,
    the fourth claim and the budget plot share. A method without retain data ran once; that run counts at every
    budget (a flat line in the plot)."""
    table: dict[str, dict[float, str]] = {}
    for method in dict.fromkeys(m for m, _, _ in plan):
        runs = {f: label for m, f, label in plan if m == method and label in labels}
        if set(runs) != set(fractions) and list(runs) == [1.0]:
            runs = dict.fromkeys(fractions, runs[1.0])
        table[method] = runs
    return table


def budget_claim(per_method: dict, plan: Sequence[tuple[str, float, str]], fractions: Sequence[float]) -> dict | None:
    """The fourth claim ("only a small amount of retained supervision data"): ASRU's utility change at the
    smallest budget against the baselines' at the same and at the largest budget; plus every method's
    effectiveness and utility change per budget. None unless the sweep has two budgets or more."""
    fractions = sorted(set(fractions))
    if len(fractions) < 2:
        return None
    table = {method: {f"{f:g}": {k: per_method[label][k] for k in ("effectiveness", "utility_change_points")}
                      for f, label in runs.items()}
             for method, runs in budget_runs(plan, fractions, per_method).items()}
    low, high = f"{fractions[0]:g}", f"{fractions[-1]:g}"

    def utility(method: str, at: str) -> float | None:
        return table.get(method, {}).get(at, {}).get("utility_change_points")

    baselines = [m for m in table if not m.startswith(BASELINE_FOR_CLAIMS)]
    at_low = {m: utility(m, low) for m in baselines if utility(m, low) is not None}
    at_high = {m: utility(m, high) for m in baselines if utility(m, high) is not None}
    return {"fractions": fractions, "per_method": table, "smallest": fractions[0], "largest": fractions[-1],
            "asru_utility_change_at_smallest": utility(BASELINE_FOR_CLAIMS, low),
            "baselines_utility_change_at_smallest": at_low, "baselines_utility_change_at_largest": at_high,
            "mean_baseline_at_smallest": statistics.mean(at_low.values()) if at_low else None,
            "mean_baseline_at_largest": statistics.mean(at_high.values()) if at_high else None}


def budget_markdown(budget: dict) -> str:
    """The retain-budget table (effectiveness / utility change per budget) and the fourth-claim line."""
    fractions = [f"{f:g}" for f in budget["fractions"]]
    lines = ["**Retain budget** (share of retain people each method may use; docs/compare.md). Cells: "
             "effectiveness / utility change (points).", "",
             "| method | " + " | ".join(f"F = {f}" for f in fractions) + " |", "|---|" + "---|" * len(fractions)]
    for method, cells in budget["per_method"].items():
        lines.append(f"| {method} | " + " | ".join(
            f"{cells[f]['effectiveness']:.3f} / {cells[f]['utility_change_points']:+.1f}" if f in cells else "-"
            for f in fractions) + " |")
    ours = budget["asru_utility_change_at_smallest"]
    low, high = budget["mean_baseline_at_smallest"], budget["mean_baseline_at_largest"]
    fmt = lambda v: "n/a" if v is None else f"{v:+.1f} points"  # noqa: E731
    lines += ["", f"- Fourth claim (little retain data): ASRU's utility change at F = {budget['smallest']:g}: "
              f"{fmt(ours)}; the baselines' on average {fmt(low)} at F = {budget['smallest']:g} and {fmt(high)} "
              f"at F = {budget['largest']:g}."]
    return "\n".join(lines)


FORGET_LIKELIHOOD = ("forget.mc_image_lik_acc", "forget.mc_text_lik_acc")


def forget_likelihood(results: Sequence[dict]) -> float | None:
    """Forget likelihood MC, mean over seeds and both settings: whether the knowledge left the weights, which
    effectiveness (mostly generated answers) cannot tell from a model that only refuses. None when not reported."""
    values = [v for r in results for p in FORGET_LIKELIHOOD if (v := _get(r, p)) is not None]
    return statistics.mean(values) if values else None


def budget_curves(budget: dict, plan: Sequence[tuple[str, float, str]], runs) -> dict:
    """The retain-budget figure's numbers (asru.eval.report.plots.budget_png): per method and budget the
    effectiveness and utility change of `budget_claim`, the forget likelihood MC of its runs, and that of the
    vanilla model and the oracle as references; None where a method has no run at a budget."""
    fractions = budget["fractions"]
    results = {label: [r.results for r in runs if r.label == label] for label in dict.fromkeys(r.label for r in runs)}
    methods = {}
    for method, labels in budget_runs(plan, fractions, results).items():
        cells = budget["per_method"].get(method, {})
        methods[method] = {key: [cells.get(f"{f:g}", {}).get(key) for f in fractions]
                           for key in ("effectiveness", "utility_change_points")}
        methods[method]["forget_likelihood"] = [forget_likelihood(results[labels[f]]) if f in labels else None
                                                for f in fractions]
    references = {name: forget_likelihood(results.get(name, [])) for name in ("vanilla", "oracle")}
    return {"fractions": fractions, "methods": methods,
            "references": {name: v for name, v in references.items() if v is not None}}


def add_oracle_comparison(runs, oracle_results: dict) -> None:
    """Forget Quality and PrivLeak against the oracle for every run, in place (results["oracle"]); runs evaluated
    without likelihood metrics (older results) get none."""
    from asru.eval.mllmu import oracle_comparison

    for run in runs:
        if run.results.get("forget_truth_ratios"):
            run.results["oracle"] = oracle_comparison(run.results, oracle_results)


DISTANCE_METRICS = ("mc_lik_acc", "mc_image_lik_acc", "mc_text_lik_acc", "mc_image_acc", "gen_contains", "truth_ratio")
DISTANCE_SPLITS = ("forget", "retain")


def distance_to_oracle(runs) -> dict:
    """Per label: mean over seeds of |metric - oracle| on forget and retain (0 = behaves like the oracle)."""
    oracle = next(r.results for r in runs if r.label == "oracle")
    out: dict = {}
    for label in dict.fromkeys(r.label for r in runs if r.label != "oracle"):
        rs = [r.results for r in runs if r.label == label]
        row = {}
        for path in (f"{s}.{m}" for s in DISTANCE_SPLITS for m in DISTANCE_METRICS):
            values = [abs(_get(r, path) - _get(oracle, path)) for r in rs
                      if _get(r, path) is not None and _get(oracle, path) is not None]
            row[path] = statistics.mean(values) if values else None
        out[label] = row
    return out


def distance_markdown(distance: dict) -> str:
    paths = [p for p in (f"{s}.{m}" for s in DISTANCE_SPLITS for m in DISTANCE_METRICS)
             if any(row.get(p) is not None for row in distance.values())]
    if not paths:
        return "**Distance to the oracle:** no run reports the likelihood metrics."
    lines = ["**Distance to the retain-only oracle** (|metric - oracle|, mean over seeds; 0 = indistinguishable from "
             "a model that never saw the forget people; accuracies in points).", "",
             "| method | " + " | ".join(paths) + " |", "|---|" + "---|" * len(paths)]
    for label, row in distance.items():
        cells = ["–" if row[p] is None else (f"{row[p]:.3f}" if p.endswith("truth_ratio") else f"{100 * row[p]:.1f}")
                 for p in paths]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _copy_results(source: Path, target: Path) -> None:
    """results.json with its items JSONL and manifest (the files `eval_stage` writes), if all are there."""
    files = [source, source.with_suffix(".items.jsonl"), source.parent / (source.stem + ".manifest.json")]
    if all(f.exists() for f in files):
        target.parent.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copyfile(f, target.parent / f.name.replace(source.stem, target.stem, 1))


def _get(results: dict, path: str) -> float | None:
    node = results
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, (int, float)) else None


def forget_metrics() -> list[tuple[str, object]]:
    """(results path, metric) of every registered number on forget/test that enters effectiveness."""
    from asru.eval import registry

    return registry.claim_paths(registry.FORGET_SIDE)


def utility_metrics() -> list[tuple[str, object]]:
    """(results path, metric) of every registered number on retain/celebrity (+ run level) that enters utility."""
    from asru.eval import registry

    return registry.claim_paths(registry.UTILITY_SIDE)


def _split_of(path: str) -> str | None:
    return path.split(".", 1)[0] if "." in path else None


def effectiveness(results: dict, vanilla: dict) -> float:
    """Unlearning effectiveness: mean move from the vanilla model, in each metric's forgetting direction
    (asru.eval.registry), over the forget/test knowledge metrics both runs report."""
    from asru.eval.registry import knowledge_drop

    drops = [knowledge_drop(m, _split_of(p), _get(results, p), _get(vanilla, p)) for p, m in forget_metrics()
             if _get(vanilla, p) is not None and _get(results, p) is not None]
    return statistics.mean(drops) if drops else 0.0


def generation_quality(results: dict) -> float:
    """Generation quality on forget items: mean of the judge's three axes, each scaled to [0, 1]."""
    q = (results.get("forget") or {}).get("quality") or {}
    if not q:
        return 0.0
    return statistics.mean([q["mean_contextual_refusal"] / 5, q["mean_leakage"] / 5, (q["mean_naturalness"] - 1) / 4])


def utility_change(results: dict, vanilla: dict) -> float:
    """Mean change (in points, positive = better) of the retain/celebrity/general-VQA metrics from the vanilla model."""
    from asru.eval.registry import utility_delta

    deltas = [100 * utility_delta(m, _split_of(p), _get(results, p), _get(vanilla, p)) for p, m in utility_metrics()
              if _get(vanilla, p) is not None and _get(results, p) is not None]
    return statistics.mean(deltas) if deltas else 0.0


CLAIM_KEYS = ("effectiveness", "generation_quality", "utility_change_points")


def relative_claims(runs) -> dict:
    """ASRU against each baseline, in the paper's terms (+% effectiveness, x generation quality, utility points)."""
    vanilla = next(r.results for r in runs if r.label == "vanilla")
    per_method: dict[str, dict] = {}
    for label in dict.fromkeys(r.label for r in runs if r.label not in ("vanilla", "oracle")):
        rs = [r.results for r in runs if r.label == label]
        values = {"effectiveness": [effectiveness(r, vanilla) for r in rs],
                  "generation_quality": [generation_quality(r) for r in rs],
                  "utility_change_points": [utility_change(r, vanilla) for r in rs]}
        per_method[label] = {key: statistics.mean(v) for key, v in values.items()}
        per_method[label]["seeds"] = len(rs)
        # spread over seeds: a gain smaller than it is not a finding
        per_method[label]["std"] = {key: statistics.stdev(v) if len(v) > 1 else None for key, v in values.items()}
    claims: dict = {"per_method": per_method, "definitions": {
        "effectiveness": "mean drop from vanilla over " + ", ".join(p for p, _ in forget_metrics()),
        "generation_quality": "mean of forget contextual_refusal/5, leakage/5, (naturalness-1)/4 (offline judge)",
        "utility_change_points": "mean change in points over " + ", ".join(p for p, _ in utility_metrics())}}
    if BASELINE_FOR_CLAIMS in per_method:
        ours = per_method[BASELINE_FOR_CLAIMS]
        baselines = {k: v for k, v in per_method.items() if not k.startswith("asru")}
        claims["asru_vs"] = {k: _relative(ours, v) for k, v in baselines.items()}
        if baselines:
            average = {key: statistics.mean(v[key] for v in baselines.values()) for key in CLAIM_KEYS}
            claims["asru_vs_average_baseline"] = _relative(ours, average)
    return claims


def _relative(ours: dict, theirs: dict) -> dict:
    eff = theirs["effectiveness"]
    gq = theirs["generation_quality"]
    return {"effectiveness_gain_pct": 100 * (ours["effectiveness"] - eff) / abs(eff) if eff else None,
            "generation_quality_ratio": ours["generation_quality"] / gq if gq else None,
            "utility_change_points": ours["utility_change_points"]}


def mean_std(mean: float, std: float | None, digits: int) -> str:
    return f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")


def claim_cells(method: dict) -> list[str]:
    """One method's claim figures as "mean ± std" strings (utility in points with 1 decimal, the rest with 3)."""
    std = method.get("std") or {}
    return [mean_std(method[key], std.get(key), 1 if key == "utility_change_points" else 3) for key in CLAIM_KEYS]


def claims_markdown(claims: dict) -> str:
    lines = ["**Paper claims checked on this data** (ASRU vs baselines: +24.6 % effectiveness, 5.8x generation "
             "quality, utility within 3 points).", ""]
    average = claims.get("asru_vs_average_baseline")
    if average:
        eff, gq = average["effectiveness_gain_pct"], average["generation_quality_ratio"]
        lines.append(f"- vs the average baseline: effectiveness {eff:+.1f} %" if eff is not None else "- effectiveness: n/a")
        lines.append(f"- generation quality x{gq:.2f}" if gq is not None else "- generation quality: n/a")
        lines.append(f"- ASRU utility change: {average['utility_change_points']:+.1f} points")
    lines += ["", "| method | seeds | effectiveness | generation quality | utility change (pts) |", "|---|---|---|---|---|"]
    for name, m in claims["per_method"].items():
        lines.append(f"| {name} | {m['seeds']} | " + " | ".join(claim_cells(m)) + " |")
    lines.append("")
    for name, rel in (claims.get("asru_vs") or {}).items():
        eff, gq = rel["effectiveness_gain_pct"], rel["generation_quality_ratio"]
        lines.append(f"- vs {name}: effectiveness {'n/a' if eff is None else f'{eff:+.1f} %'}, "
                     f"generation quality {'n/a' if gq is None else f'x{gq:.2f}'}")
    lines += ["", "Definitions: " + "; ".join(f"{k} = {v}" for k, v in claims["definitions"].items())]
    return "\n".join(lines)


def tuning_markdown(preset: dict, methods: Sequence[str]) -> str:
    """The preset's equal-budget tuning record: each method's swept knob, the values tried and the one chosen.

    Why in the report: a comparison is only fair if every method had the same tuning budget, and a reader of
    the report must be able to see that without digging through configs."""
    tuning = preset.get("tuning") or {}
    knobs = tuning.get("knobs") or {}
    if not knobs:
        return "**Tuning:** this preset carries no tuning record; methods ran with their configured defaults."
    lines = [f"**Tuning budget** (the same for every method: {len(next(iter(knobs.values()))['values'])} values of one "
             f"knob on {tuning.get('split', '?')}; chosen = utility change >= {tuning.get('utility_floor', '?')} "
             "points, then the highest effectiveness + generation quality; `benchmarks/baseline_sweep.py`).", "",
             "| method | knob | values tried | chosen |", "|---|---|---|---|"]
    for name in methods:
        knob = knobs.get(name)
        if knob is None:
            lines.append(f"| {name} | - | not tuned | configured default |")
            continue
        chosen = _get((preset.get("methods") or {}).get(name) or {}, knob["option"])
        lines.append(f"| {name} | {knob['option']} | {', '.join(f'{v:g}' for v in knob['values'])} | "
                     f"{'default' if chosen is None else f'{chosen:g}'} |")
    return "\n".join(lines)
