"""One registry of the evaluation's numbers: every metric is declared here once, and the split summary, the report's
columns and arrows, the compare claims and the CLI summary all read it.

Why: before, a new metric touched six places in four files and only the report knew whether higher was better.
A metric is now one function (record -> value, or a run-level computation elsewhere) plus one `register` call.

Two levels:
- `split` metrics are aggregated from the per-item records of each evaluation split (a key in every split block of
  results.json, e.g. `forget.mc_image_acc`);
- `run` metrics are top-level keys computed from the whole evaluation (e.g. `forget_quality`, `mia.loss_auc`); the
  registry holds only how to read and judge them, the module that computes them writes them.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

FORGET_SIDE = ("forget", "test")  # lower knowledge is the goal
UTILITY_SIDE = ("retain", "celebrity")  # knowledge must stay
SPLITS = (*FORGET_SIDE, *UTILITY_SIDE)
DIRECTIONS = ("high", "low", "target")  # higher is better, lower is better, closer to `target` is better
UNITS = ("pct", "score")


class MetricError(ValueError):
    """A metric declared wrongly (registered twice, no direction): a programming error, raised at import time."""


def mean(values: Sequence[float]) -> float | None:
    """Mean, or None when there is nothing to average (a missing number must not read as 0)."""
    return statistics.fmean(values) if values else None


@dataclass(frozen=True)
class Metric:
    """A registered number.

    `forget` / `utility`: which way is better on forget-side splits (forget, test) and on utility-side splits
    (retain, celebrity); for run-level metrics both say the same. `target`: the best value for direction "target".
    `task` / `setting`: the records a split metric reads (`setting` None = both); `value(record)` gives one
    record's number (None = skip it); `aggregate` folds them (default: mean). `splits`: where it applies.
    `claims`: the splits on which it enters the compare claims (forget side -> effectiveness, utility side ->
    utility change). `summary`: shown in the CLI's table. `report`: a column of the comparison report (a run-level
    one in table group `group`).
    """

    name: str
    header: str
    forget: str
    utility: str
    level: str = "split"
    task: str | None = None
    setting: str | None = None
    value: Callable[[dict], float | None] | None = None
    aggregate: Callable[[Sequence[float]], float | None] = mean
    splits: tuple[str, ...] = SPLITS
    claims: tuple[str, ...] = ()
    unit: str = "pct"
    target: float | None = None
    summary: bool = False
    report: bool = True
    group: str = "utility"
    doc: str = ""

    def better(self, split: str | None) -> str:
        """The direction on `split` (forget side or utility side); run-level metrics have one direction."""
        return self.forget if split in FORGET_SIDE or split is None else self.utility

    def records_of(self, records: Iterable[dict]) -> list[dict]:
        return [r for r in records if (self.task is None or r.get("task") == self.task)
                and (self.setting is None or r.get("setting") == self.setting)]

    def compute(self, records: Iterable[dict]) -> float | None:
        """The split's number from its records: `aggregate` over the non-None `value`s."""
        values = [v for r in self.records_of(records) if (v := self.value(r)) is not None]
        return self.aggregate([float(v) for v in values])


_REGISTRY: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    """Add a metric; a second metric of the same name or one without a direction is refused with a clear error."""
    if metric.name in _REGISTRY:
        raise MetricError(f"metric {metric.name!r} is registered twice; pick another name or unregister the old one")
    for side in ("forget", "utility"):
        direction = getattr(metric, side)
        if direction not in DIRECTIONS:
            raise MetricError(f"metric {metric.name!r} has no valid {side} direction ({direction!r}); "
                              f"use one of {', '.join(DIRECTIONS)}")
        if direction == "target" and metric.target is None:
            raise MetricError(f"metric {metric.name!r} is judged by closeness to a target but gives no target=")
    if metric.level not in ("split", "run"):
        raise MetricError(f"metric {metric.name!r}: level must be 'split' or 'run', got {metric.level!r}")
    if metric.level == "split" and metric.value is None:
        raise MetricError(f"split metric {metric.name!r} needs value=, the function that reads one record")
    if metric.unit not in UNITS:
        raise MetricError(f"metric {metric.name!r}: unit must be one of {', '.join(UNITS)}, got {metric.unit!r}")
    _REGISTRY[metric.name] = metric
    return metric


def unregister(name: str) -> None:
    """Remove a metric (tests that register a throwaway one clean up with this)."""
    _REGISTRY.pop(name, None)


def get(name: str) -> Metric:
    return _REGISTRY[name]


def metrics(level: str | None = None) -> list[Metric]:
    """Registered metrics in registration order (the report's column order)."""
    return [m for m in _REGISTRY.values() if level is None or m.level == level]


def split_metrics(split: str) -> list[Metric]:
    return [m for m in metrics("split") if split in m.splits]


def summarize_split(records: list[dict], split: str) -> dict[str, Any]:
    """Every registered split metric of one split's records (None where it has no records)."""
    return {m.name: m.compute(records) for m in split_metrics(split)}


def claim_paths(side: Sequence[str]) -> list[tuple[str, Metric]]:
    """("split.name", metric) of every number that enters the compare claims on `side` (FORGET_SIDE or UTILITY_SIDE);
    run-level metrics enter with their own key."""
    out = []
    for split in side:
        out += [(f"{split}.{m.name}", m) for m in split_metrics(split) if split in m.claims]
    if tuple(side) == UTILITY_SIDE:
        out += [(m.name, m) for m in metrics("run") if "run" in m.claims]
    return out


def is_better(metric: Metric, split: str | None, a: float, b: float) -> bool:
    """Whether value `a` is better than `b` for this metric on `split`."""
    direction = metric.better(split)
    if direction == "target":
        return abs(a - metric.target) < abs(b - metric.target)
    return a > b if direction == "high" else a < b


def knowledge_drop(metric: Metric, split: str, model: float, vanilla: float) -> float:
    """How much the model moved from the vanilla model in the forgetting direction (positive = forgot more)."""
    direction = metric.better(split)
    if direction == "target":
        return abs(vanilla - metric.target) - abs(model - metric.target)
    return vanilla - model if direction == "low" else model - vanilla


def utility_delta(metric: Metric, split: str | None, model: float, vanilla: float) -> float:
    """Change from the vanilla model in the better direction on a utility split (positive = improved)."""
    direction = metric.better(split if split is not None else UTILITY_SIDE[0])
    if direction == "target":
        return abs(vanilla - metric.target) - abs(model - metric.target)
    return model - vanilla if direction == "high" else vanilla - model


# ----------------------------------------------------------------------------------------------- the metrics

def _flag(key: str) -> Callable[[dict], float | None]:
    """A record's boolean `key` as 0/1 (None when absent)."""
    return lambda r: None if r.get(key) is None else float(r[key])


def tofu_truth_score(ratio: float, forget: bool) -> float:
    """One truth ratio R as TOFU scores it: min(R, 1/R) for a forget item, max(0, 1 - R) otherwise."""
    return min(ratio, 1 / ratio) if forget else max(0.0, 1 - ratio)


def _number(key: str) -> Callable[[dict], float | None]:
    return lambda r: r.get(key)


for _setting in ("image", "text"):
    register(Metric(f"mc_{_setting}_acc", f"MC {_setting} %", "low", "high", task="mc", setting=_setting,
                    value=_flag("correct"), summary=True,
                    claims=("forget", "test", "retain", "celebrity") if _setting == "image" else ("forget", "test", "retain"),
                    doc=f"generated-letter protocol accuracy on {_setting} MC questions (the official one)"))
register(Metric("gen_rougeL", "ROUGE-L ×100", "low", "high", task="gen", value=_number("rougeL"), summary=True,
                doc="ROUGE-L F of the generated answer against the ground truth"))
register(Metric("gen_rouge1", "ROUGE-1 ×100", "low", "high", task="gen", value=_number("rouge1"), report=False))
register(Metric("gen_rouge2", "ROUGE-2 ×100", "low", "high", task="gen", value=_number("rouge2"), report=False))
register(Metric("gen_bleu", "BLEU ×100", "low", "high", task="gen", value=_number("bleu"), report=False))
register(Metric("gen_contains", "answer stated %", "low", "high", task="gen", value=_flag("contains"), summary=True,
                claims=("forget", "test", "retain", "celebrity"),
                doc="the generated answer states the ground truth's key"))
register(Metric("gen_refusal_rate", "refusal % (detector)", "high", "low", task="gen", value=_flag("refusal"),
                summary=True, report=False, doc="share of generated answers the refusal detector flags"))
register(Metric("cloze_acc", "cloze %", "low", "high", task="cloze", value=_flag("correct"), summary=True,
                claims=("forget",), doc="fill-in-the-blank: the ground truth is in the reply"))
register(Metric("general_vqa_acc", "general VQA %", "high", "high", level="run", claims=("run",),
                doc="embedded world only: general visual questions answered (utility)"))

# likelihood multiple choice and truth ratio (asru.eval.likelihood); None on results written before them
for _setting in ("image", "text"):
    register(Metric(f"mc_{_setting}_lik_acc", f"MC {_setting} likelihood %", "low", "high", task="mc",
                    setting=_setting, value=_flag("lik_correct"), summary=True,
                    claims=("forget", "test", "retain", "celebrity") if _setting == "image" else ("forget", "test", "retain"),
                    doc="argmax over options of the per-token mean log-prob of the option inside the answer sentence"))
    register(Metric(f"mc_{_setting}_lik_acc_sum", f"MC {_setting} likelihood (sum) %", "low", "high", task="mc",
                    setting=_setting, value=_flag("lik_correct_sum"), report=False,
                    doc="the same with the summed log-prob (lm-eval's acc)"))
    register(Metric(f"mc_{_setting}_letter_acc", f"MC {_setting} letter logit %", "low", "high", task="mc",
                    setting=_setting, value=_flag("letter_correct"),
                    doc="argmax over the option letters' logits at the answer position of the MC protocol prompt"))
register(Metric("mc_lik_acc", "MC likelihood % (all)", "low", "high", task="mc", value=_flag("lik_correct"),
                report=False, doc="likelihood MC over image and text questions together (the oracle plot's axes)"))
register(Metric("mc_no_answer_rate", "MC no answer %", "high", "low", task="mc",
                value=lambda r: None if "predicted_letter" not in r else float(r["predicted_letter"] is None),
                report=False, doc="generated-letter protocol: the reply's first character is not an option letter"))
register(Metric("truth_ratio", "truth ratio", "high", "low", task="mc", value=_number("truth_ratio"), unit="score",
                splits=("forget", "test", "retain"),
                doc="TOFU truth ratio, mean over MC items: ~0 = knows the truth, ~1 = no preference"))
register(Metric("truth_ratio_score", "truth ratio (TOFU score)", "high", "high", task="mc", unit="score",
                value=lambda r: None if r.get("truth_ratio") is None else tofu_truth_score(
                    r["truth_ratio"], r.get("split") in FORGET_SIDE),
                splits=("forget", "test", "retain"),
                doc="TOFU's aggregate: mean min(R, 1/R) on forget people (1 = no preference), mean max(0, 1 - R) "
                    "on retain people (1 = prefers the truth); higher is better on both"))

# membership inference (asru.eval.mia) and the oracle comparison: run-level blocks `mia` and `oracle`
for _attack, _title in (("loss", "LOSS"), ("zlib", "ZLib"), ("min_k", "Min-K% (40 %)"), ("min_k_pp", "Min-K%++")):
    register(Metric(f"mia.{_attack}_auc", f"MIA {_title} AUC", "target", "target", level="run", unit="score",
                    target=0.5, group="oracle", doc=f"{_title} forget-vs-holdout AUC; 0.5 = no membership signal"))
for _attack, _title in (("loss", "LOSS"), ("min_k_pp", "Min-K%++")):
    register(Metric(f"oracle.{_attack}_privleak", f"PrivLeak ({_title})", "target", "target", level="run",
                    unit="score", target=0.0, group="oracle", doc="(AUC_model - AUC_oracle) / AUC_oracle"))
register(Metric("oracle.forget_quality", "Forget Quality (KS p)", "high", "high", level="run", unit="score",
                group="oracle", doc="KS-test p-value of forget truth ratios against the retain-only oracle"))
