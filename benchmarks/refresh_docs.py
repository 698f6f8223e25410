"""Regenerate the figure tables of docs/results.md and the README status from a finished demo directory.

    python benchmarks/refresh_docs.py [--runs runs/demo] [--check]

Each generated table sits between `<!-- figures:NAME -->` and `<!-- /figures:NAME -->` markers; everything
outside the markers is prose and is left alone. The figures come only from the run directory (results JSONs and
manifests), so docs cannot drift from what the code produces: re-run `make demo` on a fresh clone, then this
script, and the docs state what that clone measured. `--check` changes nothing and exits 1 when a table is stale.
The `comparison` table needs `asru compare ... --out <runs>/compare_<split>` (docs/results.md gives the command);
the `null-edit` one `python benchmarks/null_edit.py --runs <runs>`; tables whose runs are absent are left as they are.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from asru.compare import claim_cells, generation_quality
from asru.eval.likelihood import forget_quality

ROOT = Path(__file__).resolve().parent.parent
TARGETS = (ROOT / "docs" / "results.md", ROOT / "README.md")


class NotADemo(Exception):
    pass


def _load(path: Path) -> dict:
    if not path.exists():
        raise NotADemo(f"{path} is missing; run `make demo` (or `asru demo --out DIR`) to finish the demo first")
    return json.loads(path.read_text())


def _seconds(run_dir: Path) -> float:
    manifest = _load(run_dir / "manifest.json")
    if manifest.get("status") != "done":
        raise NotADemo(f"{run_dir} did not finish (status {manifest.get('status')!r}); re-run `make demo`")
    # a stage installed from the shipped testbed: the time is its training run's, recorded when it was shipped
    stages = (manifest.get("shipped") or {}).get("trained", {}).get("stages") or manifest.get("stages", {})
    if "unlearn" in stages:  # an unlearning run: its sub-stages (ASRU's stage1/stage2) are inside this one
        return stages["unlearn"]["seconds"]
    return sum(s["seconds"] for s in stages.values())


def _f(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _row(name: str, value, target: str, met: bool | None) -> str:
    mark = "" if met is None else (" ✓" if met else " ✗")
    return f"| {name} | {_f(value) if not isinstance(value, str) else value} | {target}{mark} |"


def vanilla_table(runs: Path, split: str) -> str:
    """The testbed's vanilla and base models against the targets the embedded default is held to."""
    v = _load(runs / "eval" / "vanilla.json")
    b = _load(runs / "eval" / "base.json")
    vanilla_run = _load(runs / "vanilla" / "manifest.json")
    trained = (vanilla_run.get("shipped") or {}).get("trained") or vanilla_run
    threads = trained.get("torch_threads")
    minutes = sum(_seconds(runs / stage) for stage in ("base", "vanilla", f"oracle_{split}")) / 60
    base_mc = max(b[s][k] for s in ("forget", "retain") for k in ("mc_image_acc", "mc_text_acc"))
    rows = [
        "| figure | measured | target |", "|---|---|---|",
        _row(f"training base + vanilla + oracle_{split} (min; the rebuild, not the demo)", f"{minutes:.1f}", "<= 90",
             minutes <= 90),
        _row("generation answer-contains, training wording: forget", v["forget"]["gen_contains"], ">= 0.95",
             v["forget"]["gen_contains"] >= 0.95),
        _row("generation answer-contains, training wording: retain", v["retain"]["gen_contains"], ">= 0.95",
             v["retain"]["gen_contains"] >= 0.95),
        _row("cloze: forget / retain", f"{_f(v['forget']['cloze_acc'])} / {_f(v['retain']['cloze_acc'])}", ">= 0.95",
             min(v["forget"]["cloze_acc"], v["retain"]["cloze_acc"]) >= 0.95),
        _row("Test_Set answer-contains (unseen views, paraphrases)", v["test"]["gen_contains"], ">= 0.60",
             v["test"]["gen_contains"] >= 0.60),
        _row("celebrity answer-contains (base model)", f"{_f(v['celebrity']['gen_contains'])} "
             f"({_f(b['celebrity']['gen_contains'])})", ">= the base's",
             v["celebrity"]["gen_contains"] >= b["celebrity"]["gen_contains"]),
        _row("refusals on never-seen faces: image / text",
             f"{_f(v['unseen_refusal_rate_image'])} / {_f(v['unseen_refusal_rate_text'])}", ">= 0.80",
             min(v["unseen_refusal_rate_image"], v["unseen_refusal_rate_text"]) >= 0.80),
        _row("general VQA", v["general_vqa_acc"], ">= 0.75", v["general_vqa_acc"] >= 0.75),
        _row("generated-letter MC (official protocol): forget / retain, image / text",
             " / ".join(_f(v[s][k]) for s in ("forget", "retain") for k in ("mc_image_acc", "mc_text_acc")),
             "reported (chance on the tiny preset)", None),
        _row("base model generated-letter MC on fictitious people (max)", base_mc, "<= 0.40", base_mc <= 0.40),
    ]
    oracle_path = runs / "eval" / f"oracle_{split}.json"
    if oracle_path.exists():
        o = _load(oracle_path)
        rows.append(_row(f"retain-only oracle ({split}): forget / retain answer-contains",
                         f"{_f(o['forget']['gen_contains'])} / {_f(o['retain']['gen_contains'])}", "reported", None))
    origin = "the shipped testbed" if vanilla_run.get("shipped") else "models trained in that directory"
    note = (f"\n\nMeasured with {threads} torch threads (the preset's `threads`), from `{runs}` ({origin}). "
            "Training times are the training manifests' wall times as run: a figure over budget may come from other "
            "jobs on the same cores.")
    return "\n".join(rows) + note


def _aucs(results: dict) -> dict:
    """The membership-inference AUCs of a results file (the `mia` block also holds counts and the holdout name)."""
    return {k: v for k, v in (results.get("mia") or {}).items() if k.endswith("_auc")}


def _lik(r: dict, split: str) -> tuple[float | None, float | None]:
    return r[split].get("mc_image_lik_acc"), r[split].get("mc_text_lik_acc")


def knowledge_table(runs: Path, split: str) -> str | None:
    """Knowledge in the weights (issue 10): likelihood MC, Forget Quality against the oracle, membership inference."""
    oracle_path = runs / "eval" / f"oracle_{split}.json"
    v = _load(runs / "eval" / "vanilla.json")
    if not oracle_path.exists() or v["forget"].get("mc_image_lik_acc") is None:
        return None
    o, b = _load(oracle_path), _load(runs / "eval" / "base.json")
    cells = {name: [x for s in ("forget", "retain") for x in _lik(r, s)] for name, r in (("vanilla", v), ("base", b),
                                                                                           ("oracle", o))}
    mean = {name: sum(c) / len(c) for name, c in cells.items()}
    fq = (v.get("oracle") or {}).get("forget_quality")
    mia_v, mia_o = _aucs(v), _aucs(o)
    best_v = max((x for x in mia_v.values() if x is not None), default=None)
    oracle_aucs = [x for x in mia_o.values() if x is not None]
    show = lambda c: " / ".join(_f(x) for x in c)  # noqa: E731
    rows = ["| figure (likelihood MC: forget image / text, retain image / text) | measured | target |", "|---|---|---|",
            _row("vanilla likelihood MC", show(cells["vanilla"]), ">= 0.70 each", min(cells["vanilla"]) >= 0.70),
            _row("vanilla likelihood MC, mean", mean["vanilla"], ">= 0.80", mean["vanilla"] >= 0.80),
            _row("base likelihood MC", show(cells["base"]), "<= 0.45 each", max(cells["base"]) <= 0.45),
            _row("oracle likelihood MC, forget (image / text)", show(cells["oracle"][:2]), "<= 0.45",
                 max(cells["oracle"][:2]) <= 0.45),
            _row("oracle likelihood MC, retain (image / text)", show(cells["oracle"][2:]), ">= 0.75",
                 min(cells["oracle"][2:]) >= 0.75),
            _row("Forget Quality of the vanilla model against the oracle (KS p)",
                 "-" if fq is None else f"{fq:.2g}", "< 0.01", fq is not None and fq < 0.01),
            _row("membership inference, vanilla: best forget-vs-holdout AUC "
                 f"({', '.join(f'{k[:-4]} {x:.3f}' for k, x in mia_v.items() if x is not None)})", best_v,
                 ">= 0.80", best_v is not None and best_v >= 0.80),
            _row("membership inference, oracle: every AUC "
                 f"({', '.join(f'{k[:-4]} {x:.3f}' for k, x in mia_o.items() if x is not None)})",
                 f"{min(oracle_aucs):.3f}-{max(oracle_aucs):.3f}" if oracle_aucs else "-", "within 0.5 +- 0.1",
                 bool(oracle_aucs) and all(abs(x - 0.5) <= 0.1 for x in oracle_aucs))]
    second = runs / "eval" / f"oracle_{split}_seed1.json"  # `asru oracle --seed 1`, evaluated with --oracle
    if second.exists():
        o2 = _load(second)
        fq2 = (o2.get("oracle") or {}).get("forget_quality")
        rows.append(_row("Forget Quality of a second oracle (training seed 1) against the first (KS p)",
                         "-" if fq2 is None else f"{fq2:.3f}", ">= 0.05", fq2 is not None and fq2 >= 0.05))
        aucs2 = [x for x in _aucs(o2).values() if x is not None]
        rows.append(_row("membership inference, second oracle: every AUC "
                         f"({', '.join(f'{k[:-4]} {x:.3f}' for k, x in _aucs(o2).items() if x is not None)})",
                         f"{min(aucs2):.3f}-{max(aucs2):.3f}" if aucs2 else "-", "within 0.5 +- 0.1 (reported)",
                         bool(aucs2) and all(abs(x - 0.5) <= 0.1 for x in aucs2)))
    return "\n".join(rows)


def null_edit_table(runs: Path, split: str) -> str | None:
    path = runs / f"null_edit_{split}" / "eval.json"
    if not path.exists():
        return None
    v, e = _load(runs / "eval" / "vanilla.json"), _load(path)
    change = 100 * (e["retain"]["gen_contains"] - v["retain"]["gen_contains"])
    return "\n".join(["| figure | measured | target |", "|---|---|---|",
                      _row("null edit (50 retain-only CE steps): retain answer-contains change (points)",
                           f"{change:+.1f}", "within 2", abs(change) <= 2)])


def readme_status(runs: Path) -> str:
    v = _load(runs / "eval" / "vanilla.json")
    return (f"The vanilla model states its training facts in {v['forget']['gen_contains']:.0%} (forget people) / "
            f"{v['retain']['gen_contains']:.0%} (retain people) of generation answers, fills "
            f"{v['forget']['cloze_acc']:.0%} / {v['retain']['cloze_acc']:.0%} of cloze items, answers the Test_Set's "
            f"unseen views and paraphrases in {v['test']['gen_contains']:.0%}, refuses "
            f"{v['unseen_refusal_rate_image']:.0%} / {v['unseen_refusal_rate_text']:.0%} of privacy questions on "
            f"never-seen faces (image / text) and answers {v['general_vqa_acc']:.0%} of general visual questions.")


def _seed_files(directory: Path) -> list[Path]:
    """A results directory's per-seed results (seedN.json; not the .items/.manifest files beside them)."""
    return sorted(f for f in Path(directory).glob("seed*.json") if re.fullmatch(r"seed\d+\.json", f.name))


def _get(results: dict, path: str):
    block = results
    for key in path.split("."):
        block = block.get(key) if isinstance(block, dict) else None
    return block


def _mean_std(values: list[float], scale: float = 1.0, digits: int | str = 3) -> str:
    """mean ± sample std; `digits` decimals, or "g" for two significant digits (p-values spanning decades)."""
    values = [scale * v for v in values if v is not None]
    if not values:
        return "-"
    spec = ".2g" if digits == "g" else f".{digits}f"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:{spec}}"
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{mean:{spec}} ± {std:{spec}}"


def _lik_mean(results: dict, split: str) -> float | None:
    cells = [_get(results, f"{split}.mc_{k}_lik_acc") for k in ("image", "text")]
    return None if None in cells else sum(cells) / 2


def _best_auc(results: dict) -> float | None:
    aucs = [x for x in _aucs(results).values() if x is not None]
    return max(aucs) if aucs else None


def _forget_quality(results: dict, oracle: dict | None) -> float | None:
    """The comparison adds Forget Quality in memory only (compare.add_oracle_comparison): the same KS test from
    the saved truth ratios."""
    if not oracle or not results.get("forget_truth_ratios"):
        return None
    return forget_quality(results["forget_truth_ratios"], oracle["forget_truth_ratios"])


def _removed_share(results: dict, vanilla: dict, oracle: dict | None) -> float | None:
    """How far the forget likelihood MC moved from the vanilla's towards the oracle's: 0 = hidden, 1 = removed."""
    ends = (_lik_mean(vanilla, "forget"), _lik_mean(oracle, "forget") if oracle else None, _lik_mean(results, "forget"))
    return (ends[0] - ends[2]) / (ends[0] - ends[1]) if None not in ends and ends[0] > ends[1] else None


COMPARISON_COLUMNS = (  # (header, value of one results.json given the vanilla's and the oracle's, scale, digits)
    ("forget refusal", lambda r, v, o: _get(r, "forget.gen_refusal_rate"), 1, 3),
    ("forget answer-contains", lambda r, v, o: _get(r, "forget.gen_contains"), 1, 3),
    ("Test_Set refusal", lambda r, v, o: _get(r, "test.gen_refusal_rate"), 1, 3),
    ("retain answer-contains change (pts)",
     lambda r, v, o: _get(r, "retain.gen_contains") - _get(v, "retain.gen_contains"), 100, 1),
    ("retain refusal", lambda r, v, o: _get(r, "retain.gen_refusal_rate"), 1, 3),
    ("forget likelihood MC (image+text)", lambda r, v, o: _lik_mean(r, "forget"), 1, 3),
    ("removed share (likelihood)", lambda r, v, o: _removed_share(r, v, o), 1, 2),
    ("retain likelihood MC (image+text)", lambda r, v, o: _lik_mean(r, "retain"), 1, 3),
    ("Forget Quality (KS p)", lambda r, v, o: _forget_quality(r, o), 1, "g"),
    ("best MIA AUC", lambda r, v, o: _best_auc(r), 1, 3),
)


def comparison_table(runs: Path, split: str) -> str | None:
    """Every method of `<runs>/compare_<split>` (mean ± std over its seeds) beside the vanilla model and the
    oracle, with the columns that tell removal from hiding, and the paper's three relative claims."""
    root = runs / f"compare_{split}"
    claims_path = root / "claims.json"
    if not claims_path.exists():
        return None
    claims = _load(claims_path)
    vanilla = _load(root / "results" / "vanilla.json")
    oracle = _load(root / "results" / "oracle.json") if (root / "results" / "oracle.json").exists() else None
    seeds = {d.name: [_load(f) for f in _seed_files(d)]
             for d in sorted((root / "results").iterdir()) if d.is_dir()}
    heads = [h for h, *_ in COMPARISON_COLUMNS]
    rows = ["| model | seeds | " + " | ".join(heads) + " | effectiveness | generation quality | utility change (pts) |",
            "|---|---|" + "---|" * (len(heads) + 3)]
    per_method = claims.get("per_method", {})
    order = sorted(seeds, key=lambda m: -(per_method.get(m, {}).get("effectiveness") or 0))
    for name in order:
        cells = [_mean_std([f(r, vanilla, oracle) for r in seeds[name]], scale, digits) for _, f, scale, digits in COMPARISON_COLUMNS]
        m = per_method.get(name, {})
        claim = claim_cells(m) if m else ["-"] * 3
        label = f"**{name}**" if name == "asru" else name
        rows.append(f"| {label} | {len(seeds[name])} | " + " | ".join(cells) + " | " + " | ".join(claim) + " |")
    for name, r in (("vanilla", vanilla), ("retain-only oracle", oracle)):
        if r is not None:
            cells = [_mean_std([f(r, vanilla, oracle)], scale, digits) for _, f, scale, digits in COMPARISON_COLUMNS]
            rows.append(f"| {name} | 1 | " + " | ".join(cells) + " | - | - | - |")
    avg = claims.get("asru_vs_average_baseline")
    if avg:
        rows.append(f"\nASRU vs the average baseline: effectiveness {avg['effectiveness_gain_pct']:+.1f} % (paper "
                    f"+24.6 %), generation quality x{avg['generation_quality_ratio']:.2f} (paper x5.8), ASRU's utility "
                    f"change {avg['utility_change_points']:+.1f} points (paper: within 3).")
    return "\n".join(rows)


ATTACK_ORDER = ("relearn", "relearn_retain", "ablate", "prefill", "sample", "quantize", "probe")


def _attack_bodies(root: Path) -> dict[str, list[dict]]:
    """{label: [attacks.json of each attacked seed]} for the runs of a compare directory, then vanilla and oracle."""
    bodies: dict[str, list[dict]] = {}
    for run in sorted((root / "runs").glob("*/seed*/attacks.json")):
        bodies.setdefault(run.parent.parent.name, []).append(_load(run))
    for role in ("vanilla", "oracle"):
        if (root / "attacks" / role / "attacks.json").exists():
            bodies[role] = [_load(root / "attacks" / role / "attacks.json")]
    return bodies


def _share(body: dict, attack: str, variant: str | None = None) -> float | None:
    a = body["attacks"].get(attack) or {}
    if variant is None:
        return a.get("recovered_share")
    return ((a.get("variants") or {}).get(variant) or {}).get("recovered_share", {}).get(a.get("metric"))


def attacks_table(runs: Path, split: str) -> str | None:
    """The methods x attacks recovered shares (headline variant, mean ± std over the attacked seeds), the three
    controls of issue 11 and the time of each attack."""
    root = runs / f"compare_{split}"
    bodies = _attack_bodies(root)
    if not bodies or "vanilla" not in bodies:
        return None
    attacks = [a for a in ATTACK_ORDER if any(a in b["attacks"] for bs in bodies.values() for b in bs)]
    rows = ["| model | seeds | " + " | ".join(attacks) + " |", "|---|---|" + "---|" * len(attacks)]
    order = sorted((k for k in bodies if k not in ("vanilla", "oracle")),
                   key=lambda k: -_mean([_share(b, "ablate") for b in bodies[k]], default=-1))
    for label in [*order, "vanilla", "oracle"]:
        cells = [_mean_std([_share(b, a) for b in bodies[label]], 1, 2) for a in attacks]
        rows.append(f"| {label} | {len(bodies[label])} | " + " | ".join(cells) + " |")
    oracle, vanilla = bodies.get("oracle", [None])[0], bodies["vanilla"][0]
    lines = ["\n".join(rows), "", "Controls:", ""]
    if oracle and "relearn" in oracle["attacks"]:
        plain = oracle["plain"]["oracle"]["gen_contains"]
        after = max(v["oracle"]["gen_contains"] for v in oracle["attacks"]["relearn"]["variants"].values())
        lines.append(f"- oracle, relearning on A: held-out answer-contains {plain:.3f} -> {after:.3f} "
                     f"({100 * (after - plain):+.1f} pts; target <= +5){' ✓' if after - plain <= 0.05 else ' ✗'}")
    plain = vanilla["plain"]["vanilla"]["gen_contains"]
    moves = {f"{a}/{n}": v["vanilla"].get("gen_contains") - plain
             for a, body in vanilla["attacks"].items() for n, v in body["variants"].items()
             if v["vanilla"].get("gen_contains") is not None}
    worst = max(moves, key=lambda k: abs(moves[k])) if moves else None
    if worst:
        off = [f"{k} {100 * d:+.1f}" for k, d in moves.items() if abs(d) > 0.03]
        lines.append(f"- vanilla: unattacked held-out answer-contains {plain:.3f}; the largest move is {worst} "
                     f"{100 * moves[worst]:+.1f} pts (target: every attack within 3 pts)"
                     + (" ✓" if not off else f" ✗ ({', '.join(off)})"))
    for label in ("asru", "asru_robust"):
        if label in bodies:
            real = [_share(b, "ablate") for b in bodies[label]]
            rand = [_share(b, "ablate", "random") for b in bodies[label]]
            ratio = (_mean(rand) / _mean(real)) if _mean(real) else None
            verdict = "" if ratio is None else (" ✓" if ratio <= 0.1 else " ✗")
            lines.append(f"- {label}, random direction of the same norm: recovered share {_mean_std(rand, 1, 2)} vs "
                         f"the real direction's {_mean_std(real, 1, 2)}"
                         + ("" if ratio is None else f" ({ratio:.2f} of it; target <= 0.1){verdict}"))
    if "asru" in bodies:
        seconds = bodies["asru"][0]["attacks"]
        per = {a: seconds[a]["seconds"] for a in attacks if a in seconds}
        total = sum(sum(s.values()) for s in per.values())
        lines += ["", "Seconds per attack on asru seed 0 / the oracle / the vanilla model (2 threads): "
                  + ", ".join(f"{a} {s['model']:.0f}/{s['oracle']:.0f}/{s['vanilla']:.0f}" for a, s in per.items())
                  + f"; the suite on all three {total / 60:.1f} min (target <= 5)" + (" ✓" if total <= 300 else " ✗")]
    return "\n".join(lines)


def _mean(values, default=None):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else default


ROBUST_TARGETS = (  # (what, value of one seed given (results, attacks body), target text, test of asru_robust vs asru)
    ("direction ablation, recovered share", lambda r, a: _share(a, "ablate") if a else None, "<= 0.2 and <= ½ ASRU's",
     lambda ours, asru: ours <= 0.2 and ours <= asru / 2),
    ("relearning on A, recovered share", lambda r, a: _share(a, "relearn") if a else None, "<= ½ ASRU's",
     lambda ours, asru: ours <= asru / 2),
    ("Leak@16 on held-out facts", lambda r, a: _get(a, "attacks.sample.variants.k16.model.leak_at_k") if a else None,
     "<= ½ ASRU's", lambda ours, asru: ours <= asru / 2),
    ("generation quality", lambda r, a: generation_quality(r), "within 0.05 of ASRU's",
     lambda ours, asru: ours >= asru - 0.05),
    ("contextual refusal on forget (judge /5)", lambda r, a: _get(r, "forget.quality.mean_contextual_refusal") / 5,
     ">= 0.85", lambda ours, asru: ours >= 0.85),
    ("retain refusal (over-refusal)", lambda r, a: _get(r, "retain.gen_refusal_rate"), "<= 0.05",
     lambda ours, asru: ours <= 0.05),
)


def robust_table(runs: Path, split: str) -> str | None:
    """Issue 15's targets: asru_robust against asru on the same vanilla model and seeds."""
    root = runs / f"compare_{split}"
    labels = ("asru", "asru_robust")
    if not all((root / "results" / label).is_dir() for label in labels):
        return None
    vanilla = _load(root / "results" / "vanilla.json")
    oracle = _load(root / "results" / "oracle.json") if (root / "results" / "oracle.json").exists() else None
    per, seeds = {}, {}
    for label in labels:
        seeds[label] = [f.stem for f in _seed_files(root / "results" / label)]
        per[label] = [(_load(root / "results" / label / f"{seed}.json"),
                       _load(a) if (a := root / "runs" / label / seed / "attacks.json").exists() else None)
                      for seed in seeds[label]]
    rows = ["| figure | asru | asru_robust | target for asru_robust |", "|---|---|---|---|"]

    def cells(fn):
        return [[fn(r, a) for r, a in per[label]] for label in labels]

    for what, fn, target, ok in ROBUST_TARGETS:
        asru, ours = cells(fn)
        met = None if _mean(ours) is None or _mean(asru) is None else ok(_mean(ours), _mean(asru))
        rows.append(f"| {what} | {_mean_std(asru)} | {_mean_std(ours)} | {target}"
                    f"{'' if met is None else (' ✓' if met else ' ✗')} |")
    oracle_lik = _lik_mean(oracle, "forget") if oracle else None
    asru, ours = cells(lambda r, a: _lik_mean(r, "forget"))
    met = None if oracle_lik is None or _mean(ours) is None else abs(_mean(ours) - oracle_lik) <= 0.10
    rows.append(f"| forget likelihood MC (image+text; oracle {_f(oracle_lik)}) | {_mean_std(asru)} | {_mean_std(ours)} | "
                f"within 0.10 of the oracle's{'' if met is None else (' ✓' if met else ' ✗')} |")
    asru, ours = cells(lambda r, a: _get(r, "retain.gen_contains") - _get(vanilla, "retain.gen_contains"))
    met = bool(ours) and all(x is not None and x >= -0.03 for x in ours)
    rows.append(f"| retain answer-contains change (pts) | {_mean_std(asru, 100, 1)} | {_mean_std(ours, 100, 1)} | "
                f"within 3 of the vanilla's on every seed{' ✓' if met else ' ✗'} |")
    times = {label: [_seconds(root / "runs" / label / seed) for seed in seeds[label]] for label in labels}
    ratio = _mean(times["asru_robust"]) / _mean(times["asru"])
    rows.append(f"| wall time of the unlearning run (min) | {_mean_std(times['asru'], 1 / 60, 1)} | "
                f"{_mean_std(times['asru_robust'], 1 / 60, 1)} | <= 1.5x ASRU's ({ratio:.2f}x)"
                f"{' ✓' if ratio <= 1.5 else ' ✗'} |")
    return "\n".join(rows)


BUDGETS = (0.05, 0.25, 1.0)


def budget_table(runs: Path, split: str) -> str | None:
    """The retain-budget sweep from the runs' results (labels <method>@<F>; F = 1 is the plain run): effectiveness
    / utility change per budget (mean over the seeds present) and the fourth-claim line."""
    from asru.compare import effectiveness, utility_change

    root = runs / f"compare_{split}" / "results"
    if not (root / "asru@0.05").is_dir():
        return None
    vanilla = _load(root / "vanilla.json")

    def names(label: str) -> set[str]:
        return {f.name for f in _seed_files(root / label)}

    def label_of(method: str, f: float) -> str:
        return method if f == 1.0 or not (root / f"{method}@{f:g}").is_dir() else f"{method}@{f:g}"

    methods = sorted({d.name.split("@")[0] for d in root.iterdir() if d.is_dir() and "@" in d.name} | {"ga"})
    rows = ["| method | seeds | " + " | ".join(f"F = {f:g}" for f in BUDGETS) + " |", "|---|---|" + "---|" * len(BUDGETS)]
    utility: dict[str, dict[float, float]] = {}
    for method in methods:  # the seeds every budget of the method ran, so each row compares like with like
        common = sorted(set.intersection(*(names(label_of(method, f)) for f in BUDGETS)))
        cells, n = [], len(common)
        for f in BUDGETS:
            rs = [_load(root / label_of(method, f) / name) for name in common]
            eff, util = _mean([effectiveness(r, vanilla) for r in rs]), _mean([utility_change(r, vanilla) for r in rs])
            utility.setdefault(method, {})[f] = util
            cells.append("-" if eff is None else f"{eff:.3f} / {util:+.1f}")
        rows.append(f"| {'**asru**' if method == 'asru' else method} | {n} | " + " | ".join(cells) + " |")
    baselines = [m for m in methods if not m.startswith("asru")]
    low, high = BUDGETS[0], BUDGETS[-1]
    rows.append(f"\nFourth claim: ASRU's utility change at F = {low:g} is {utility['asru'][low]:+.1f} points "
                f"(at F = 1: {utility['asru'][high]:+.1f}); the baselines' mean is "
                f"{_mean([utility[m][low] for m in baselines]):+.1f} at F = {low:g} and "
                f"{_mean([utility[m][high] for m in baselines]):+.1f} at F = 1. Cells: effectiveness / utility change "
                "(points).")
    return "\n".join(rows)


def blocks(runs: Path, split: str) -> dict[str, str]:
    out = {"vanilla": vanilla_table(runs, split), "readme-status": readme_status(runs)}
    for name, table in (("null-edit", null_edit_table(runs, split)), ("knowledge", knowledge_table(runs, split)),
                        ("comparison", comparison_table(runs, split)), ("attacks", attacks_table(runs, split)),
                        ("robust", robust_table(runs, split)), ("retain-budget", budget_table(runs, split))):
        if table is not None:
            out[name] = table
    return out


TABLES = ("vanilla", "readme-status", "null-edit", "knowledge", "comparison", "attacks", "robust", "retain-budget")


def substitute(text: str, generated: dict[str, str]) -> str:
    for name, body in generated.items():
        pattern = re.compile(rf"(<!-- figures:{re.escape(name)} -->\n)(?:.*?\n)?(<!-- /figures:{re.escape(name)} -->)", re.S)
        text = pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)
    return text


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=Path, default=Path("runs/demo"))
    parser.add_argument("--forget-split", default="forget_10")
    parser.add_argument("--check", action="store_true", help="exit 1 if a table is stale; change nothing")
    parser.add_argument("--only", default="", help="comma-separated table names to refresh (default: every one)")
    args = parser.parse_args()
    try:
        if not (args.runs / "vanilla" / "config.json").exists():
            raise NotADemo(f"{args.runs} is not a finished demo directory (no vanilla/config.json); "
                           "run `make demo` first or pass --runs DIR")
        generated = blocks(args.runs, args.forget_split)
        only = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(only) - set(TABLES))
        if unknown:
            raise NotADemo(f"unknown table(s) {', '.join(unknown)} in --only; known: {', '.join(TABLES)}")
        generated = {k: v for k, v in generated.items() if not only or k in only}
    except NotADemo as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    stale = []
    for path in TARGETS:
        text = path.read_text()
        new = substitute(text, generated)
        if new != text:
            stale.append(path)
            if not args.check:
                path.write_text(new)
    verb = "stale" if args.check else "updated"
    print(f"{verb}: {', '.join(str(p.relative_to(ROOT)) for p in stale) or 'nothing'}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
