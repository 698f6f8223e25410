"""Text metrics of the MLLMU-Bench protocol plus the small helpers the reward and the judge share.

All functions are pure; each computes one number (or one decision) so that a protocol is a readable list of
calls and every metric can be unit-tested on hand-written strings.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping
from functools import lru_cache
from itertools import groupby

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
_PUNCT = re.compile(f"[{re.escape(string.punctuation)}\u201c\u201d\u2013\u2014]")
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")


def normalize(text: str) -> str:
    """Lower case, apostrophes dropped, other punctuation -> space, articles removed, single spaces.

    Why: "She was born in Lima." and "she was born in lima" must compare equal, and "Kell's" must still
    contain "kell" as a word (the apostrophe is deleted, "kells"; other punctuation splits words).
    """
    out = text.translate(_APOSTROPHES).lower().replace("'", "")
    out = _PUNCT.sub(" ", out)
    out = _ARTICLES.sub(" ", out)
    return " ".join(out.split())


def contains_answer(prediction: str, ground_truth: str, key: str | None = None) -> bool:
    """Whether the normalised answer (`key` when given, else the whole `ground_truth`) occurs in the prediction.

    Containment is on whole words ("Lima" is not found in "Limassol"). `key` is the attribute value of a
    one-sentence ground truth ("Lima" for "She was born in Lima."): with it, a differently worded correct
    answer ("Lima is her birthplace.") still counts. An empty target never matches.
    """
    target = normalize(key if key else ground_truth)
    if not target:
        return False
    return f" {target} " in f" {normalize(prediction)} "


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def rouge_scores(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1/2/L F-measure with Porter stemming, exactly as the MLLMU-Bench generation protocol."""
    scores = _rouge_scorer().score(reference, prediction)
    return {name: float(s.fmeasure) for name, s in scores.items()}


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure alone (the quantity the ASRU reward thresholds)."""
    return rouge_scores(prediction, reference)["rougeL"]


def sentence_bleu(prediction: str, reference: str) -> float:
    """NLTK sentence BLEU on whitespace tokens with smoothing method1 (the MLLMU-Bench protocol); 0 if empty."""
    from nltk.translate.bleu_score import SmoothingFunction
    from nltk.translate.bleu_score import sentence_bleu as _bleu

    hyp, ref = prediction.split(), reference.split()
    if not hyp or not ref:
        return 0.0
    return float(_bleu([ref], hyp, smoothing_function=SmoothingFunction().method1))


def mc_letter(reply: str, options: Mapping[str, str] | Iterable[str]) -> str | None:
    """The chosen option as the official MLLMU-Bench script reads it: the reply's first character, upper-cased,
    if it is an option key, else None (no answer). Leading whitespace is ignored (decoding usually strips it).
    """
    keys = {str(k).upper() for k in options}
    first = reply.lstrip()[:1].upper()
    return first if first and first in keys else None


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits, inner apostrophes); curly apostrophes made ASCII."""
    return re.findall(r"\w+(?:'\w+)*", text.translate(_APOSTROPHES).lower())


def longest_run(toks: list[str]) -> int:
    """Length of the longest run of one repeated token ("sorry sorry sorry" -> 3); 0 for no tokens."""
    return max((len(list(group)) for _, group in groupby(toks)), default=0)


def bigram_repeat_share(toks: list[str]) -> float:
    """Share of bigrams that repeat an earlier one (0.0 when there are none): how much a text loops."""
    bigrams = list(zip(toks, toks[1:]))
    return 1 - len(set(bigrams)) / len(bigrams) if bigrams else 0.0


def distinct_n(texts: Iterable[str], n: int) -> float:
    """Distinct-n: unique n-grams / all n-grams over `texts` (lower-cased word tokens); 0.0 if none.

    Why: a rigid model repeats one template, so its distinct-n over many answers is low.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams = [tuple(toks[i : i + n]) for t in texts for toks in [words(t)] for i in range(len(toks) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


# Function words: they carry no answer, so leakage and context overlap ignore them.
STOPWORDS = frozenset(
    """a an the and or but so if then than that this these those there here it its is are was were be been being
    am do does did done doing have has had having i me my mine we us our you your he him his she her hers they them
    their theirs who whom whose which what when where why how in on at to of for from by with about as into onto
    over under up down out off not no nor yes can could will would shall should may might must just also very too
    only any some all each such both either neither other another own same s t don't can't won't isn't i'm it's
    that's there's does not""".split()
)


@lru_cache(maxsize=1)
def _stemmer():
    from nltk.stem import PorterStemmer

    return PorterStemmer()


def stem(word: str) -> str:
    """Porter stem (no NLTK data needed): "born"/"birth" stay apart, "works"/"working" meet."""
    return _stemmer().stem(word)


def content_words(text: str) -> list[str]:
    """Word tokens that are not function words, in order (duplicates kept)."""
    return [w for w in words(text) if w not in STOPWORDS]
