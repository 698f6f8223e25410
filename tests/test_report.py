"""The comparison report: table values (mean ± std over seeds), plots, gallery, the self-contained HTML, refusal of
old results files, and a headless-Chromium screenshot of report.html (skipped when Chromium is not installed)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import statistics
import subprocess
from dataclasses import asdict
from pathlib import Path

import pytest
from PIL import Image

from asru.data.mllmu import eval_items
from asru.errors import UserError
from asru.eval import report
from asru.eval.judge import aggregate, judge_answer
from mllmu_fixture import write_mllmu_fixture

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

# method -> seed -> (forget MC image acc, retain MC image acc); the rest of each split block derives from these.
MC = {"vanilla": [(0.9, 0.95)], "ga": [(0.2, 0.5), (0.4, 0.7)], "asru": [(0.1, 0.9), (0.3, 0.8)]}
REFUSAL = "I'm sorry, I can't share details about the person in this image."


def answer(method: str, split: str, item, k: int) -> str:
    """Each fake method's characteristic answer: vanilla knows, GA collapses or invents, ASRU refuses."""
    if method == "vanilla" or (split == "retain" and method == "asru"):
        return item.answer
    if method == "asru":
        return REFUSAL
    if split == "retain":
        return item.answer if k % 2 else "This person works as an astronaut."
    return "the the the born born the the" if item.setting == "image" else "Ana Q1son was born in Paris."


def block(forget_mc: float, shift: float) -> dict:
    return {"mc_image_acc": forget_mc, "mc_text_acc": forget_mc + shift, "gen_rougeL": forget_mc / 2,
            "gen_rouge1": forget_mc / 2, "gen_rouge2": forget_mc / 3, "gen_bleu": 0.1, "gen_contains": forget_mc,
            "gen_refusal_rate": 1 - forget_mc, "cloze_acc": forget_mc, "n_items": {"mc_image": 4, "gen": 4}}


def gen_records(data: Path, method: str) -> list[dict]:
    sources = {"forget": ("forget_10", None), "test": ("Test_Set", {"1", "2"}), "retain": ("retain_90", None)}
    records = []
    for split, (source, ids) in sources.items():
        for k, item in enumerate(i for i in eval_items(data, source, ids=ids) if i.task == "gen"):
            records.append({"split": split, "task": "gen", "setting": item.setting, "id": item.id, "source": source,
                            "question": item.question, "prompt": item.question, "ground_truth": item.answer,
                            "prediction": answer(method, split, item, k), "options": None, "correct": None,
                            **({"key": item.meta["key"]} if item.meta.get("key") else {})})
    return records


def write_run(root: Path, data: Path, method: str, seed: int, *, judged: bool, manifest: dict | None = None) -> Path:
    """results.json + results.items.jsonl in `asru eval`'s format; `judged` = the judge already ran at eval time."""
    forget_mc, retain_mc = MC[method][seed]
    records = gen_records(data, method)
    records.append({"split": "forget", "task": "mc", "setting": "image", "id": "1", "question": "q", "prompt": "q",
                    "ground_truth": "A", "prediction": "A", "options": {"A": "x", "B": "y"}, "correct": True})
    results = {"forget": block(forget_mc, 0.05), "test": block(forget_mc, 0.0), "retain": block(retain_mc, -0.05),
               "celebrity": block(0.8, 0.0), "general_vqa_acc": 0.5 + 0.1 * seed, "unseen_refusal_rate_image": 1.0,
               "unseen_refusal_rate_text": 0.5, "unseen_distinct_refusals": 0.5,
               "meta": {"model": f"runs/{method}/model", "data": str(data), "forget_split": "forget_10",
                        "retain_split": "retain_90", "splits": list(report.SPLITS)}}
    if judged:
        for r in records:
            if r["task"] == "gen":
                r["judge"] = asdict(judge_answer(r["question"], r["prediction"], r["ground_truth"], key=r.get("key")))
        for split in ("forget", "test", "retain"):
            gen = [r for r in records if r["task"] == "gen" and r["split"] == split]
            quality = aggregate([judge_answer(r["question"], r["prediction"], r["ground_truth"], key=r.get("key"))
                                 for r in gen], [r["prediction"] for r in gen])
            results[split]["quality"] = {**quality, "mean_naturalness": 4.0 + seed}  # a marker: read, not recomputed
    out = root / f"{method}-s{seed}"
    out.mkdir(parents=True)
    (out / "results.json").write_text(json.dumps(results))
    (out / "results.items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if manifest is not None:
        (out / "manifest.json").write_text(json.dumps(manifest))
    return out / "results.json"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Three methods (vanilla: 1 seed; ga, asru: 2 seeds each), the report written once."""
    root = tmp_path_factory.mktemp("report")
    data = write_mllmu_fixture(root / "data", n_people=6, seed=0)
    cost = lambda s: {"stages": {"unlearn": {"seconds": 100.0 + 20 * s, "peak_memory_mb": 1000.0 + s},
                                 "save": {"seconds": 10.0, "peak_memory_mb": 900.0}}}
    paths = [("vanilla", write_run(root / "runs", data, "vanilla", 0, judged=False))]
    paths += [("ga", write_run(root / "runs", data, "ga", s, judged=False)) for s in (0, 1)]
    paths += [("asru", write_run(root / "runs", data, "asru", s, judged=True, manifest=cost(s))) for s in (0, 1)]
    runs = [report.load_run(path, label) for label, path in paths]
    md, html = report.write_report(runs, root / "out", title="Fake unlearning comparison",
                                   notes_md="Three **fake** methods on the fixture.")
    return {"root": root, "runs": runs, "rows": report.results_table(runs), "md": md, "html": html}


def row(built, label: str) -> dict:
    return next(r for r in built["rows"] if r["label"] == label)


# ----------------------------------------------------------------------------------------------- table

def test_table_has_mean_and_std_over_seeds(built):
    assert [r["label"] for r in built["rows"]] == ["vanilla", "ga", "asru"]
    ga, asru, vanilla = row(built, "ga"), row(built, "asru"), row(built, "vanilla")
    assert ga["n_runs"] == 2 and vanilla["n_runs"] == 1
    assert ga["forget.mc_image_acc"].mean == pytest.approx(0.3)
    assert ga["forget.mc_image_acc"].std == pytest.approx(statistics.stdev([0.2, 0.4]))
    assert asru["retain.mc_image_acc"].mean == pytest.approx(0.85)
    assert asru["forget.mc_text_acc"].mean == pytest.approx(0.25)
    assert vanilla["forget.mc_image_acc"].std == 0.0 and vanilla["forget.mc_image_acc"].n == 1
    assert ga["general_vqa_acc"].mean == pytest.approx(0.55)
    assert vanilla["unseen_refusal_rate"].mean == pytest.approx(0.75)
    assert ga["forget.mc_image_acc"].format("pct") == "30.0 ± 14.1"
    assert vanilla["forget.mc_image_acc"].format("pct") == "90.0"


def test_quality_read_when_present_and_judged_when_absent(built):
    asru, ga, vanilla = row(built, "asru"), row(built, "ga"), row(built, "vanilla")
    assert asru["forget.quality.mean_naturalness"].mean == pytest.approx(4.5)  # the stored marker values
    assert ga["forget.quality.gibberish_rate"].mean == pytest.approx(0.5)  # image answers collapse
    assert ga["forget.quality.hallucination_rate"].mean == pytest.approx(0.5)  # text answers invent
    assert vanilla["forget.quality.mean_leakage"].mean == 0.0  # the ground truth stated everywhere
    assert vanilla["retain.quality.refusal_rate"].mean == 0.0
    assert all("judge" in r for run in built["runs"] for r in run.records if r["task"] == "gen")


def test_costs_from_manifest_or_caller(built):
    asru = row(built, "asru")
    assert asru["wall_seconds"].mean == pytest.approx(120.0)  # (110 + 130) / 2
    assert asru["peak_memory_mb"].mean == pytest.approx(1000.5)
    assert row(built, "ga")["wall_seconds"] is None
    rows = report.results_table(built["runs"], costs={"ga": {"wall_seconds": 50.0, "peak_memory_mb": 10.0}})
    assert next(r for r in rows if r["label"] == "ga")["wall_seconds"].mean == 50.0


def test_pareto_front():
    points = [(0.1, 0.9), (0.3, 0.95), (0.2, 0.5), (0.9, 0.99), (0.5, 0.6)]
    assert report.pareto_front(points) == [0, 1, 3]
    assert report.pareto_front([(0.5, 0.5)]) == [0]


# ----------------------------------------------------------------------------------------------- files

def test_files_and_markdown(built):
    out = built["md"].parent
    for name in ("report.md", "report.html", "pareto.png", "bars_mc.png", "bars_gen.png", "bars_refusal.png",
                 "bars_quality.png"):
        assert (out / name).is_file(), name
    with Image.open(out / "pareto.png") as img:
        assert img.size[0] > 600
    md = built["md"].read_text()
    assert "# Fake unlearning comparison" in md and "Three **fake** methods" in md
    assert "![" in md and "(pareto.png)" in md
    table = md.split("### Forget set")[1].split("###")[0]
    lines = [l for l in table.splitlines() if l.startswith("| ")]
    assert [l.split("|")[1].strip() for l in lines[1:]] == ["vanilla", "ga (n=2)", "asru (n=2)"]
    assert "| asru (n=2) | **20.0 ± 14.1** |" in table  # asru has the lowest forget MC image accuracy
    portraits = re.findall(r"\((gallery/[^)]+\.png)\)", md)
    assert portraits and all((out / p).is_file() for p in portraits)


def test_html_is_self_contained_with_images(built):
    text = built["html"].read_text()
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), "external URL in report.html"
    assert "<link" not in text and "<script" not in text
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) >= 5 + 6  # five plots + six portraits
    assert text.count('class="answer"') == 6 * 3
    for colour in (report.CATEGORY_COLOURS[c] for c in ("correct", "refusal", "hallucination", "gibberish")):
        assert colour in text


def test_gallery_same_questions_for_all_runs(built):
    rows = report.gallery_rows(built["runs"], n=6)
    assert [r.split for r in rows] == ["forget"] * 3 + ["retain"] * 3
    assert len({r.id for r in rows if r.split == "forget"}) == 2  # spread over both forget people
    assert all(list(r.answers) == ["vanilla", "ga", "asru"] and r.image for r in rows)
    asru = [r.answers["asru"] for r in rows if r.split == "forget"]
    assert {cat for _, cat in asru} == {"refusal"}


def test_missing_data_dir_gives_gallery_without_images(built, tmp_path):
    src = built["runs"][0].path
    results = json.loads(src.read_text())
    results["meta"]["data"] = str(tmp_path / "gone")
    (tmp_path / "results.json").write_text(json.dumps(results))
    shutil.copy(report.items_path(src), tmp_path / "results.items.jsonl")
    run = report.load_run(tmp_path / "results.json", "moved")
    rows = report.gallery_rows([run], n=4)
    assert rows and all(r.image is None for r in rows)
    _, html = report.write_report([run], tmp_path / "out")
    assert "no image" in html.read_text()


# ----------------------------------------------------------------------------------------------- retain budget

BUDGET_PLAN = [("ga", 1.0, "ga"), ("asru", 0.05, "asru@0.05"), ("asru", 0.25, "asru@0.25"), ("asru", 1.0, "asru")]
# label -> (forget MC, retain MC, forget likelihood MC image; text is 0.1 higher)
BUDGET_RUNS = {"vanilla": (0.9, 0.9, 0.8), "oracle": (0.3, 0.9, 0.2), "ga": (0.2, 0.4, 0.5),
               "asru@0.05": (0.1, 0.7, 0.7), "asru@0.25": (0.1, 0.8, 0.6), "asru": (0.1, 0.85, 0.4)}


def budget_runs(likelihood: bool) -> list:
    """Hand-made report runs of a sweep (no training, no records): ASRU at three budgets, GA once (no retain data)."""
    def results(forget, retain, lik):
        split = lambda acc: {"mc_image_acc": acc, "mc_text_acc": acc, "gen_contains": acc}  # noqa: E731
        out = {"forget": split(forget), "retain": split(retain), "meta": {"data": "none"}}
        if likelihood:
            out["forget"].update(mc_image_lik_acc=lik, mc_text_lik_acc=lik + 0.1)
        return out

    return [report.Run(label, Path(f"{label}.json"), results(*v), []) for label, v in BUDGET_RUNS.items()]


def budget_curves(runs):
    from asru.compare import budget_claim, budget_curves

    fig = lambda eff, util: {"effectiveness": eff, "utility_change_points": util}  # noqa: E731
    per_method = {"ga": fig(0.5, -30.0), "asru@0.05": fig(0.6, -8.0), "asru@0.25": fig(0.6, -4.0),
                  "asru": fig(0.62, -2.0)}
    return budget_curves(budget_claim(per_method, BUDGET_PLAN, [0.05, 0.25, 1.0]), BUDGET_PLAN, runs)


def test_retain_budget_plot_in_both_reports_only_for_a_sweep(tmp_path):
    runs = budget_runs(likelihood=True)
    curves = budget_curves(runs)
    assert curves["fractions"] == [0.05, 0.25, 1.0]
    assert curves["methods"]["ga"]["utility_change_points"] == [-30.0] * 3  # no retain data: a flat line
    assert curves["methods"]["asru"]["effectiveness"] == [0.6, 0.6, 0.62]
    assert curves["methods"]["asru"]["forget_likelihood"] == pytest.approx([0.75, 0.65, 0.45])  # mean of both settings
    assert curves["references"] == pytest.approx({"vanilla": 0.85, "oracle": 0.25})
    fig = report.budget_figure(curves, {})
    assert [ax.get_title() for ax in fig.axes] == ["Forgetting", "Utility", "Forget likelihood MC (in the weights)"]
    assert all(ax.get_xscale() == "log" and list(ax.get_xticks()) == [0.05, 0.25, 1.0] for ax in fig.axes)
    assert [line.get_linewidth() for line in fig.axes[0].get_lines()[:2]] == [1.5, 3.2]  # ga, then asru thicker

    md, html = report.write_report(runs, tmp_path / "sweep", retain_budget=curves)
    png = (md.parent / "retain_budget.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert "(retain_budget.png)" in md.read_text()
    page = html.read_text()
    assert "<h2>Retain budget</h2>" in page and base64.b64encode(png).decode() in page

    md, html = report.write_report(runs, tmp_path / "one", retain_budget=None)  # one budget: budget_claim is None
    assert not (md.parent / "retain_budget.png").exists()
    assert "retain_budget" not in md.read_text() and "Retain budget" not in html.read_text()


def test_retain_budget_plot_has_no_likelihood_panel_without_likelihood_numbers():
    curves = budget_curves(budget_runs(likelihood=False))
    assert curves["references"] == {} and curves["methods"]["asru"]["forget_likelihood"] == [None] * 3
    assert [ax.get_title() for ax in report.budget_figure(curves, {}).axes] == ["Forgetting", "Utility"]
    assert report.all_plots(report.results_table(budget_runs(False)), curves)["retain_budget.png"][:4] == b"\x89PNG"


# ----------------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.pop("meta"), "meta.data"),
    (lambda r: r.pop("retain"), "'retain' block"),
    (lambda r: r["forget"].pop("mc_image_acc"), "'forget' block"),
])
def test_old_results_format_is_a_user_error(built, tmp_path, mutate, message):
    results = json.loads(built["runs"][0].path.read_text())
    mutate(results)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    with pytest.raises(UserError, match="asru eval") as err:
        report.load_run(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_unreadable_inputs_are_user_errors(built, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        report.load_run(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        report.load_run(tmp_path / "bad.json")
    shutil.copy(built["runs"][0].path, tmp_path / "results.json")
    with pytest.raises(UserError, match="items.jsonl"):
        report.load_run(tmp_path / "results.json")
    (tmp_path / "results.items.jsonl").write_text('{"split": "forget"}\n')
    with pytest.raises(UserError, match="line 1"):
        report.load_run(tmp_path / "results.json")
    with pytest.raises(UserError, match="no runs"):
        report.results_table([])


# ----------------------------------------------------------------------------------------------- browser

@pytest.mark.e2e
def test_report_renders_in_headless_chromium(built, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed; run scripts/ensure_chromium.sh to enable the screenshot test")
    shot = tmp_path / "report.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,2000",
           built["html"].resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), f"no screenshot (rc {proc.returncode}): {proc.stderr[-2000:]}"
    with Image.open(shot) as img:
        assert img.size == (1280, 2000)
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 200, "screenshot looks blank"
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "report-screenshot.png")


def test_notes_and_answers_are_escaped():
    assert "<script>" not in report.notes_html("hi <script>alert(1)</script> **bold**")
    assert "<strong>bold</strong>" in report.notes_html("**bold**")
    assert "&lt;b&gt;" in report._answer_html("<b>x</b>", "other")


@pytest.mark.e2e
def test_ensure_chromium_is_idempotent():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed; the script would install it (slow)")
    script = Path(__file__).resolve().parents[1] / "scripts" / "ensure_chromium.sh"
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""
