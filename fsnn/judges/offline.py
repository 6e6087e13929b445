"""The offline judge: answer-matching features and a calibrated ordinal model, no key, no network.

``make_judge("offline")`` grades (question, gold, predicted) items without any model
download or request: it measures how the answer matches the gold answer (normalised
containment, numbers and dates compared as values, fuzzy token match, token overlap),
how it reads (length, hedging or refusal words, repetition), and maps these features
to a 1-5 grade with a proportional-odds (ordinal logistic) model fitted on a train
split of the authors' Mistral-graded release (``experiments/fit_offline_judge.py``).
The fit ships as JSON in the package (``calibration/offline-v1.json``: feature list,
standardisation, coefficients, cut points, the train prompt ids); the judge id
``offline-v1`` names the version, so grades of different fits never mix.

Grades: the model gives a distribution over 1-5 (``Grade.probs``); the grade is its
rounded mean or its median (the largest k with P(grade >= k) >= 1/2), whichever the
calibration's ``decode`` names (chosen by cross-validated composite error on train
prompts; ``offline-v1``: the rounded mean). The composite (0.5 TO + 0.5 grade/5 >= 0.6)
asks of a grade only whether it reaches 6 - 5 TO, so what the fit must get right is the
probability of each event "grade >= k": exactly what an ordinal model estimates. The
SimpleQA letter comes from the same fit: CORRECT when P(grade >= JUDGE_THRESHOLD)
reaches the calibrated threshold, NOT_ATTEMPTED when the answer is empty or refuses
without matching the gold, else INCORRECT.

Bad input never raises: an empty answer grades 1, non-UTF-8 bytes are decoded with
replacement, answers longer than ``MAX_CHARS`` are truncated; each such case is
recorded in ``Grade.notes`` (``reason: ...``).
"""

from __future__ import annotations

import difflib
import json
import math
import re
import unicodedata
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from fsnn.errors import FsnnError
from .scoring import JUDGE_THRESHOLD, SIMPLEQA_GRADES, normalise_answer
from .base import Grade

__all__ = [
    "CALIBRATION_FILE",
    "FEATURES",
    "MAX_CHARS",
    "Calibration",
    "OfflineConfig",
    "OfflineJudge",
    "answer_part",
    "dates",
    "feature_matrix",
    "features",
    "fit_ordinal",
    "load_calibration",
    "normalise",
    "numbers",
    "ordinal_probs",
]

CALIBRATION_FILE = "offline-v1.json"
MAX_CHARS = 20_000  # about 4k tokens; longer answers are cut (and the cut recorded)

FEATURES = (
    "contain",  # normalised gold is a phrase of the answer
    "contain_early",  # ... within the answer's first 40 words
    "gold_recall",  # fraction of the gold's normalised words present in the answer
    "token_overlap",  # fsnn.judges.metrics.token_overlap(gold, full text) (the paper's TO)
    "fuzzy",  # best difflib ratio of the gold against answer windows of its length
    "number_match",  # gold has numbers and all appear in the answer (as values)
    "number_conflict",  # gold has numbers, answer has numbers, none of the gold's
    "date_match",  # gold is a date and the answer states it (any format)
    "date_conflict",  # gold is a date, answer has dates, none matching
    "first_number_match",  # the answer's first number equals a gold number
    "log_words",  # log(1 + words of the answer part)
    "hedge",  # hedging / refusal words (count, capped at 3)
    "refusal",  # an explicit "don't know" / "cannot" refusal
    "repetition",  # 1 - distinct word trigrams / trigrams
    "nonword",  # fraction of answer words that are not plain words/numbers
    "gold_words",  # log(1 + words of the gold)
    "match_any",  # max(contain, number_match, date_match)
    "match_x_clean",  # match_any * (1 - repetition)
    "bold_match",  # a **bold** span of the answer holds the gold (normalised)
    "bold_conflict",  # the answer has bold spans (not labels), none holding the gold
    "options",  # the answer lists multiple-choice options (A. ... B. ...)
    "first_sentence_match",  # the gold is in the answer's first sentence
    "distinct_words",  # distinct words / words of the answer
    "question_overlap",  # fraction of the question's content words the answer repeats
    "type_match",  # the answer has a number (numeric gold) / a date or year (date gold)
    "compression",  # zlib-compressed / raw size of the answer (low = repetitive)
    "punct_ratio",  # fraction of the answer's characters that are punctuation
)

_MONTHS = {
    m: i + 1
    for i, names in enumerate(
        [
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ]
    )
    for m in names
}
_MONTH_RE = "|".join(sorted(_MONTHS, key=len, reverse=True))
_HEDGES = (
    "not sure",
    "uncertain",
    "unclear",
    "possibly",
    "perhaps",
    "might",
    "may have",
    "likely",
    "approximately",
    "around",
    "about",
    "believe",
    "i think",
    "unknown",
    "not known",
)
_LABELS = frozenset(
    {"answer", "explanation", "correct answer", "note", "question", "answer and explanation"}
)
_REFUSALS = (
    "i don't know",
    "i do not know",
    "i cannot",
    "i can't",
    "i am unable",
    "i'm unable",
    "unable to",
    "no information",
    "not able to",
    "don't have information",
    "do not have information",
    "no record",
    "not available",
    "cannot provide",
    "cannot find",
    "could not find",
)


# --------------------------------------------------------------------------- text


def _to_text(value: Any) -> tuple[str, list[str]]:
    """Any input as text, with the reasons it needed repair (bytes, None, NaN)."""
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8"), []
        except UnicodeDecodeError:
            return bytes(value).decode("utf-8", errors="replace"), [
                "not valid UTF-8 (decoded with replacement characters)"
            ]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "", ["missing text (None/NaN)"]
    if not isinstance(value, str):
        return str(value), []
    if "\ufffd" in value or any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        text = value.encode("utf-8", errors="replace").decode("utf-8")
        return text, ["not valid UTF-8 (replacement characters)"]
    return value, []


def normalise(text: str) -> str:
    """The offline judge's matching rule: :func:`fsnn.judges.scoring.normalise_answer` with
    ``values=True`` (NFKC, lower case, number words as digits, thousands separators and
    punctuation gone, no articles).

    Example:
        >>> normalise("The 1,000 Acres of Twenty-Three Fields!")
        '1000 acres of 23 fields'
    """
    return normalise_answer(text, values=True)


def answer_part(question: str, predicted: str) -> str:
    """The answer without the echoed question and the "Answer and explanation:" scaffold.

    The release scored the full decoded text, which starts with the prompt; matching
    the gold against the question's own words would count them as answers.
    """
    text = predicted
    q = question.strip()
    if q:
        pos = text.find(q)
        if pos >= 0:
            text = text[pos + len(q) :]
    text = re.sub(r"^\W*answer(?: and explanation)?\W*:", "", text.lstrip(), flags=re.I)
    return text.strip()


def numbers(text: str) -> list[float]:
    """Numeric values in ``text`` (after :func:`normalise`), in order.

    Example:
        >>> numbers("It cost 1,000 dollars in nineteen ninety... or 2.5 million")
        [1000.0, 19.0, 90.0, 2.5]
    """
    out = []
    for m in re.finditer(r"\d+(?:\.\d+)?", normalise(text)):
        try:
            out.append(float(m.group(0)))
        except ValueError:  # pragma: no cover - the regex only matches numbers
            continue
    return out


@dataclass(frozen=True)
class _Date:
    day: int | None
    month: int
    year: int | None
    two_digit_year: bool = False

    def matches(self, other: _Date) -> bool:
        """``other`` (from the answer) states this (gold) date at the gold's precision."""
        if self.month != other.month:
            return False
        if self.day is not None and self.day != other.day:
            return False
        if self.year is None:
            return True
        if other.year is None:
            return False
        if self.two_digit_year:
            return other.year % 100 == self.year % 100
        return other.year == self.year


def dates(text: str) -> list[_Date]:
    """Dates in ``text``: "October 23, 2018", "23 Oct 2018", "23-Oct-18", "2018-10-23", "Apr-98", "8-Jan".

    Example:
        >>> [(d.day, d.month, d.year) for d in dates("born 23-Oct-18, died on March 3rd, 1901")]
        [(23, 10, 18), (3, 3, 1901)]
    """
    t = unicodedata.normalize("NFKC", text).lower()
    found: list[tuple[int, _Date]] = []
    taken: list[tuple[int, int]] = []

    def add(m: re.Match[str], day: str | None, month: str, year: str | None) -> None:
        if any(a < m.end() and m.start() < b for a, b in taken):
            return
        mon = (
            int(month)
            if month.isdigit()
            else _MONTHS.get(month[:4].rstrip("."), _MONTHS.get(month))
        )
        if mon is None or not 1 <= mon <= 12:
            return
        d = int(day) if day else None
        if d is not None and not 1 <= d <= 31:
            return
        y = int(year) if year else None
        taken.append((m.start(), m.end()))
        found.append((m.start(), _Date(d, mon, y, bool(year) and len(year) == 2)))

    mon = rf"(?P<mon>{_MONTH_RE})\.?"
    day = r"(?P<day>\d{1,2})(?:st|nd|rd|th)?"
    patterns = [
        (r"\b(?P<year>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})\b", "iso"),
        (rf"\b{day}[\s-]+(?:of\s+)?{mon}[\s,-]+(?P<year>\d{{4}}|\d{{2}})\b", "dmy"),
        (rf"\b{mon}\s+{day},?\s+(?P<year>\d{{4}})\b", "mdy"),
        (rf"\b{mon}[\s-]+(?:of\s+)?(?P<year>\d{{4}}|\d{{2}})\b", "my"),
        (rf"\b{day}[\s-]+(?:of\s+)?{mon}\b", "dm"),
        (rf"\b{mon}\s+{day}\b", "md"),
    ]
    for pattern, kind in patterns:
        for m in re.finditer(pattern, t):
            g = m.groupdict()
            if kind == "iso":
                add(m, g["d"], g["m"], g["year"])
            else:
                add(m, g.get("day"), g["mon"], g.get("year"))
    return [d for _, d in sorted(found, key=lambda x: x[0])]


def _phrase_in(needle: list[str], hay: list[str]) -> int:
    """Word index of the first occurrence of ``needle`` in ``hay``, or -1."""
    n = len(needle)
    if n == 0:
        return -1
    for i in range(len(hay) - n + 1):
        if hay[i : i + n] == needle:
            return i
    return -1


def _fuzzy(gold: list[str], ans: list[str]) -> float:
    """Best character similarity (difflib ratio) of the gold and any answer window of its length."""
    if not gold or not ans:
        return 0.0
    g = " ".join(gold)
    n = len(gold)
    best = 0.0
    seen: set[str] = set()
    for i in range(max(1, len(ans) - n + 1)):
        w = " ".join(ans[i : i + n])
        if w in seen:
            continue
        seen.add(w)
        sm = difflib.SequenceMatcher(None, g, w, autojunk=False)
        if sm.real_quick_ratio() <= best or sm.quick_ratio() <= best:
            continue
        best = max(best, sm.ratio())
        if best == 1.0:
            break
    return best


def _count_phrases(text: str, phrases: Sequence[str]) -> int:
    return sum(len(re.findall(rf"\b{re.escape(p)}\b", text)) for p in phrases)


@lru_cache(maxsize=8192)
def _features_cached(question: str, gold: str, predicted: str) -> tuple[float, ...]:
    from .metrics import token_overlap

    ans_raw = answer_part(question, predicted)
    ans_n = normalise(ans_raw).split()
    gold_n = normalise(gold).split()
    pos = _phrase_in(gold_n, ans_n)
    contain = float(pos >= 0)
    contain_early = float(0 <= pos < 40)
    gold_set = set(gold_n)
    recall = len(gold_set & set(ans_n)) / len(gold_set) if gold_set else 0.0
    fuzzy = _fuzzy(gold_n, ans_n[:400])

    g_dates = dates(gold)
    a_dates = dates(ans_raw)
    date_match = float(bool(g_dates) and any(gd.matches(ad) for gd in g_dates for ad in a_dates))
    date_conflict = float(bool(g_dates) and bool(a_dates) and not date_match)
    # Numbers of a date gold are compared as dates, not as loose numbers.
    g_nums = [] if g_dates else numbers(gold)
    a_nums = numbers(ans_raw)
    a_set = set(a_nums)
    number_match = float(bool(g_nums) and all(v in a_set for v in g_nums))
    number_conflict = float(bool(g_nums) and bool(a_nums) and not (set(g_nums) & a_set))
    first_number_match = float(bool(g_nums) and bool(a_nums) and a_nums[0] in set(g_nums))

    low = ans_raw.lower()
    hedge = float(min(_count_phrases(low, _HEDGES), 3))
    refusal = float(_count_phrases(low, _REFUSALS) > 0)
    trigrams = list(zip(ans_n, ans_n[1:], ans_n[2:], strict=False))
    repetition = 1.0 - len(set(trigrams)) / len(trigrams) if trigrams else 0.0
    raw_words = ans_raw.split()
    plain = sum(1 for w in raw_words if re.fullmatch(r"[\W_]*[\w'-]+[\W_]*", w))
    nonword = 1.0 - plain / len(raw_words) if raw_words else 0.0
    match_any = max(contain, number_match, date_match)
    bold = [normalise(b).split() for b in re.findall(r"\*\*(.+?)\*\*", ans_raw[:4000], flags=re.S)]
    bold = [b for b in bold if b and " ".join(b) not in _LABELS]
    bold_match = float(any(_phrase_in(gold_n, b) >= 0 for b in bold))
    bold_conflict = float(bool(bold) and not bold_match)
    options = float(len(re.findall(r"(?m)^\W*\(?[a-d][.)]\s", low)) >= 2)
    first = re.split(r"(?<=[.!?])\s+|\n", ans_raw.strip(), maxsplit=1)[0] if ans_raw.strip() else ""
    first_sentence_match = float(_phrase_in(gold_n, normalise(first).split()) >= 0)
    distinct = len(set(ans_n)) / len(ans_n) if ans_n else 0.0
    q_words = {w for w in normalise(question).split() if len(w) > 3}
    question_overlap = len(q_words & set(ans_n)) / len(q_words) if q_words else 0.0
    if g_dates:
        type_match = float(bool(a_dates) or bool(re.search(r"\b1\d{3}\b|\b20\d{2}\b", ans_raw)))
    elif g_nums:
        type_match = float(bool(a_nums))
    else:
        type_match = float(bool(re.search(r"[A-Za-z]{3,}", ans_raw)))
    raw_bytes = ans_raw.encode("utf-8", errors="replace")
    compression = len(zlib.compress(raw_bytes, 6)) / len(raw_bytes) if raw_bytes else 1.0
    visible = [c for c in ans_raw if not c.isspace()]
    punct_ratio = sum(1 for c in visible if not c.isalnum()) / len(visible) if visible else 0.0
    return (
        contain,
        contain_early,
        recall,
        token_overlap(gold, predicted),
        fuzzy,
        number_match,
        number_conflict,
        date_match,
        date_conflict,
        first_number_match,
        math.log1p(len(ans_n)),
        hedge,
        refusal,
        repetition,
        nonword,
        math.log1p(len(gold_n)),
        match_any,
        match_any * (1.0 - repetition),
        bold_match,
        bold_conflict,
        options,
        first_sentence_match,
        distinct,
        question_overlap,
        type_match,
        min(compression, 1.5),
        punct_ratio,
    )


def features(question: Any, gold: Any, predicted: Any) -> tuple[dict[str, float], list[str]]:
    """The judge's features of one item, and the reasons any input needed repair.

    Args:
        question: the question (str; bytes or None are repaired, see ``reasons``).
        gold: the gold answer.
        predicted: the text to grade (the release's full decoded text, prompt included).

    Returns:
        ({feature name: value} in :data:`FEATURES` order, reasons).
    """
    q, rq = _to_text(question)
    g, rg = _to_text(gold)
    p, rp = _to_text(predicted)
    reasons = (
        [f"question {r}" for r in rq] + [f"gold {r}" for r in rg] + [f"answer {r}" for r in rp]
    )
    if len(p) > MAX_CHARS:
        reasons.append(f"answer of {len(p)} characters truncated to the first {MAX_CHARS}")
        p = p[:MAX_CHARS]
    if len(g) > MAX_CHARS:
        reasons.append(f"gold of {len(g)} characters truncated to the first {MAX_CHARS}")
        g = g[:MAX_CHARS]
    if len(q) > MAX_CHARS:
        q = q[:MAX_CHARS]
    values = _features_cached(q, g, p)
    return dict(zip(FEATURES, values, strict=True)), reasons


def feature_matrix(items: Sequence[tuple[Any, Any, Any]]) -> np.ndarray:
    """Features of many items, shape (item, len(FEATURES))."""
    return np.array([list(features(*it)[0].values()) for it in items], dtype=float).reshape(
        len(items), len(FEATURES)
    )


# --------------------------------------------------------------------------- model


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def ordinal_probs(z: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Proportional-odds class probabilities.

    P(grade <= k) = sigmoid(cut_k - z) for k = 1..K-1.

    Args:
        z: linear scores, shape (item,).
        cuts: increasing cut points, shape (K-1,).

    Returns:
        shape (item, K), rows summing to 1.
    """
    cdf = _sigmoid(cuts[None, :] - z[:, None])
    cdf = np.concatenate([np.zeros((len(z), 1)), cdf, np.ones((len(z), 1))], axis=1)
    return np.clip(np.diff(cdf, axis=1), 1e-12, 1.0)


def fit_ordinal(
    x: np.ndarray,
    y: np.ndarray,
    *,
    l2: float,
    n_classes: int = 5,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit a proportional-odds model by penalised maximum likelihood (L-BFGS).

    Args:
        x: standardised features, shape (item, feature).
        y: grades 1..n_classes, shape (item,).
        l2: ridge penalty on the coefficients (not the cut points), per item.
        weights: item weights, shape (item,) (default 1).

    Returns:
        (coef shape (feature,), cuts shape (n_classes - 1,)). Deterministic: the start
        point is fixed (zero coefficients, cut points at the empirical logits).
    """
    from scipy.optimize import minimize

    n, f = x.shape
    y0 = np.asarray(y, dtype=int) - 1
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    w = w / w.mean()
    cum = np.clip(np.array([np.mean(y0 <= k) for k in range(n_classes - 1)]), 0.01, 0.99)
    start_cuts = np.log(cum / (1 - cum))
    # Cut points as first cut + softplus gaps keeps them ordered without constraints.
    gaps0 = np.log(np.expm1(np.maximum(np.diff(start_cuts), 0.05)))
    theta0 = np.concatenate([np.zeros(f), start_cuts[:1], gaps0])

    def unpack(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        coef = theta[:f]
        cuts = np.cumsum(np.concatenate([theta[f : f + 1], np.logaddexp(0, theta[f + 1 :])]))
        return coef, cuts

    def loss(theta: np.ndarray) -> float:
        coef, cuts = unpack(theta)
        p = ordinal_probs(x @ coef, cuts)
        return float(-(w * np.log(p[np.arange(n), y0])).mean() + l2 * coef @ coef)

    res = minimize(loss, theta0, method="L-BFGS-B", options={"maxiter": 2000})
    return unpack(res.x)


DECODES = ("median", "expected")


def decode_grades(probs: np.ndarray, rule: str) -> np.ndarray:
    """One grade per row of ``probs`` (shape (item, 5)): ``median`` (see
    :func:`median_grade`) or ``expected`` (E[grade] rounded half up)."""
    if rule == "median":
        return median_grade(probs)
    if rule == "expected":
        return np.floor(probs @ np.arange(1, probs.shape[1] + 1) + 0.5).astype(int)
    raise FsnnError(f"unknown decode rule {rule!r}; use one of {DECODES}")


def median_grade(probs: np.ndarray) -> np.ndarray:
    """Largest grade k with P(grade >= k) >= 1/2, shape (item,)."""
    tail = np.cumsum(probs[:, ::-1], axis=1)[:, ::-1]  # tail[:, k-1] = P(grade >= k)
    return (tail >= 0.5).sum(axis=1).clip(1, probs.shape[1])


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """A fitted offline judge: what the JSON file holds.

    Attributes:
        version: e.g. ``"v1"``; the judge id is ``offline-<version>``.
        features: feature names, in the order of ``mean``, ``scale`` and ``coef``.
        mean: feature means on the train rows, shape (feature,).
        scale: feature standard deviations (1 where constant), shape (feature,).
        coef: ordinal-model coefficients of the standardised features, shape (feature,).
        cuts: the 4 increasing cut points.
        l2: the ridge penalty chosen by cross-validation on train prompts.
        decode: how a distribution becomes one grade (:data:`DECODES`), chosen by
            cross-validation on train prompts (composite accuracy error).
        simpleqa_correct: P(grade >= JUDGE_THRESHOLD) at or above which the SimpleQA
            letter is CORRECT.
        train_prompts: release prompt ids (0..259) whose rows were fitted.
        split: how the train prompts were drawn (seed, rule).
        info: anything else the fit recorded (CV results, counts, date).
    """

    version: str
    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    cuts: tuple[float, ...]
    l2: float
    simpleqa_correct: float
    train_prompts: tuple[int, ...]
    decode: str = "median"
    split: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"v\d+[\w.-]*", self.version):
            raise FsnnError(f"offline calibration: bad version {self.version!r}")
        unknown = [f for f in self.features if f not in FEATURES]
        if unknown:
            raise FsnnError(f"offline calibration: unknown feature(s) {unknown}")
        k = len(self.features)
        for name in ("mean", "scale", "coef"):
            if len(getattr(self, name)) != k:
                raise FsnnError(f"offline calibration: {name} has not {k} values")
        if len(self.cuts) != 4 or any(
            b <= a for a, b in zip(self.cuts, self.cuts[1:], strict=False)
        ):
            raise FsnnError("offline calibration: cuts must be 4 increasing values")
        if any(s <= 0 for s in self.scale):
            raise FsnnError("offline calibration: scale must be > 0")
        if self.decode not in DECODES:
            raise FsnnError(f"offline calibration: decode must be one of {DECODES}")
        if not 0 < self.simpleqa_correct < 1:
            raise FsnnError("offline calibration: simpleqa_correct must be in (0, 1)")

    @property
    def judge_id(self) -> str:
        return f"offline-{self.version}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("features", "mean", "scale", "coef", "cuts", "train_prompts"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        try:
            return cls(
                version=str(d["version"]),
                features=tuple(str(f) for f in d["features"]),
                mean=tuple(float(v) for v in d["mean"]),
                scale=tuple(float(v) for v in d["scale"]),
                coef=tuple(float(v) for v in d["coef"]),
                cuts=tuple(float(v) for v in d["cuts"]),
                l2=float(d["l2"]),
                simpleqa_correct=float(d["simpleqa_correct"]),
                train_prompts=tuple(int(v) for v in d["train_prompts"]),
                decode=str(d.get("decode", "median")),
                split=dict(d.get("split", {})),
                info=dict(d.get("info", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise FsnnError(f"offline calibration: bad or missing field ({exc})") from None

    def save(self, path: str | Path) -> None:
        """Write the JSON atomically."""
        from fsnn.store.files import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")

    def _columns(self) -> list[int]:
        return [FEATURES.index(f) for f in self.features]

    def probs(self, x_all: np.ndarray) -> np.ndarray:
        """Grade distribution from a :func:`feature_matrix`, shape (item, 5)."""
        x = (x_all[:, self._columns()] - np.asarray(self.mean)) / np.asarray(self.scale)
        return ordinal_probs(x @ np.asarray(self.coef), np.asarray(self.cuts))


def load_calibration(path: str | Path | None = None) -> Calibration:
    """The shipped calibration (``fsnn/judges/calibration/offline-v1.json``) or ``path``."""
    try:
        if path is None:
            text = (
                resources.files("fsnn.judges").joinpath("calibration", CALIBRATION_FILE).read_text()
            )
            where = f"fsnn/judges/calibration/{CALIBRATION_FILE}"
        else:
            text = Path(path).read_text()
            where = str(path)
        data = json.loads(text)
    except (OSError, ValueError) as exc:
        raise FsnnError(
            f"cannot read the offline calibration {path or CALIBRATION_FILE}: {exc}"
        ) from None
    if not isinstance(data, dict):
        raise FsnnError(f"{where}: not a JSON object")
    return Calibration.from_dict(data)


# --------------------------------------------------------------------------- judge


@dataclass(frozen=True, kw_only=True)
class OfflineConfig:
    """Settings of the offline judge (recorded in reports).

    Attributes:
        calibration: path of a calibration JSON, or None for the shipped one.
    """

    calibration: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"backend": "offline", **asdict(self)}


class OfflineJudge:
    """The offline judge: same interface as :class:`fsnn.judges.Judge`, no key, no network.

    Deterministic and fast (milliseconds per item), so it keeps no answer cache.

    Attributes:
        calibration: the fitted model.
        id: ``offline-<version>``, recorded in every grade.
        stats: ``answered``, ``failed`` and ``seconds`` since the judge was made.
    """

    def __init__(self, calibration: Calibration | str | Path | None = None) -> None:
        if isinstance(calibration, Calibration):
            self.calibration = calibration
            self.config = OfflineConfig()
        else:
            self.calibration = load_calibration(calibration)
            self.config = OfflineConfig(
                calibration=None if calibration is None else str(calibration)
            )
        self.id = self.calibration.judge_id
        self.cache = None
        self.stats: dict[str, float] = {"answered": 0, "failed": 0, "seconds": 0.0}

    def __repr__(self) -> str:
        return f"OfflineJudge(id={self.id!r})"

    def _score(
        self, items: Sequence[tuple[Any, Any, Any]]
    ) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
        import time

        start = time.perf_counter()
        rows, reasons = [], []
        for it in items:
            if not isinstance(it, tuple | list) or len(it) != 3:
                rows.append(None)
                reasons.append(["item is not a (question, gold, answer) triple"])
                continue
            f, why = features(*it)
            _, _, p = it
            text, _ = _to_text(p)
            if not text.strip():
                why.append("empty answer")
            rows.append(list(f.values()))
            reasons.append(why)
        x = np.array([r if r is not None else [0.0] * len(FEATURES) for r in rows], dtype=float)
        x = x.reshape(len(items), len(FEATURES))
        probs = self.calibration.probs(x)
        for i, why in enumerate(reasons):
            if rows[i] is None or "empty answer" in why:
                probs[i] = np.array([1.0, 0.0, 0.0, 0.0, 0.0])
        self.stats["answered"] += len(items)
        self.stats["seconds"] += time.perf_counter() - start
        return x, probs, reasons

    def grade_quality(self, items: Sequence[tuple[Any, Any, Any]]) -> list[Grade]:
        """1-5 grades (the median of the calibrated distribution) of ``items``."""
        _, probs, reasons = self._score(items)
        grades = decode_grades(probs, self.calibration.decode)
        return [
            Grade(
                task="quality",
                value=int(g),
                raw=f"Score: {int(g)}",
                judge_id=self.id,
                notes="; ".join(f"reason: {r}" for r in why),
                probs={str(k + 1): float(v) for k, v in enumerate(p)},
            )
            for g, p, why in zip(grades, probs, reasons, strict=True)
        ]

    def grade_simpleqa(self, items: Sequence[tuple[Any, Any, Any]]) -> list[Grade]:
        """SimpleQA letters from the same fit (see the module docstring)."""
        x, probs, reasons = self._score(items)
        p_good = probs[:, JUDGE_THRESHOLD - 1 :].sum(axis=1)
        refusal = x[:, FEATURES.index("refusal")] > 0
        match = x[:, FEATURES.index("match_any")] > 0
        out = []
        for i, why in enumerate(reasons):
            blank = "empty answer" in why or any("triple" in r for r in why)
            if blank or (refusal[i] and not match[i]):
                value = SIMPLEQA_GRADES[2]
            elif p_good[i] >= self.calibration.simpleqa_correct:
                value = SIMPLEQA_GRADES[0]
            else:
                value = SIMPLEQA_GRADES[1]
            letter = "ABC"[SIMPLEQA_GRADES.index(value)]
            out.append(
                Grade(
                    task="simpleqa",
                    value=value,
                    raw=letter,
                    judge_id=self.id,
                    notes="; ".join(f"reason: {r}" for r in why),
                    probs={str(k + 1): float(v) for k, v in enumerate(probs[i])},
                )
            )
        return out


# --------------------------------------------------------------------------- fitting


N_PROMPTS = 260  # the release's prompts, ids 0..259
SPLIT_SEED = 0
TRAIN_FRACTION = 0.5
L2_GRID = (1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
CV_FOLDS = 5


def split_prompts(
    n_prompts: int = N_PROMPTS, *, seed: int = SPLIT_SEED, train_fraction: float = TRAIN_FRACTION
) -> tuple[list[int], list[int]]:
    """(train prompt ids, held-out prompt ids), sorted: the first ``round(train_fraction * n)``
    of ``numpy.random.default_rng(seed).permutation(n)`` are train. All methods and trials
    of a prompt fall on the same side.
    """
    perm = np.random.default_rng(seed).permutation(n_prompts)
    k = int(round(train_fraction * n_prompts))
    return sorted(int(i) for i in perm[:k]), sorted(int(i) for i in perm[k:])


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    return mean, np.where(scale > 1e-9, scale, 1.0)


def _folds(prompts: Sequence[int], k: int, seed: int) -> list[set[int]]:
    perm = np.random.default_rng(seed).permutation(np.asarray(sorted(prompts)))
    return [set(int(p) for p in perm[i::k]) for i in range(k)]


def _fit_fold(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, ...]:
    mean, scale = _standardise(x)
    coef, cuts = fit_ordinal((x - mean) / scale, y, l2=l2)
    return mean, scale, coef, cuts


def _predict(model: tuple[np.ndarray, ...], x: np.ndarray) -> np.ndarray:
    mean, scale, coef, cuts = model
    return ordinal_probs(((x - mean) / scale) @ coef, cuts)


def cross_validate(
    x: np.ndarray,
    y: np.ndarray,
    prompt: np.ndarray,
    *,
    l2: float,
    folds: list[set[int]],
    extra: Sequence[tuple[np.ndarray, np.ndarray]] = (),
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Out-of-fold grade distributions (folds are sets of prompt ids).

    Args:
        x, y, prompt: train features (item, feature), grades and prompt ids (item,).
        extra: more (features, prompt ids) to predict out of fold (the selected texts).

    Returns:
        (distributions of ``x`` shape (item, 5), one array (n, 5) per ``extra``).
    """
    out = np.zeros((len(y), 5))
    extra_out = [np.zeros((len(p), 5)) for _, p in extra]
    for fold in folds:
        test = np.isin(prompt, list(fold))
        model = _fit_fold(x[~test], y[~test], l2)
        out[test] = _predict(model, x[test])
        for (xe, pe), oe in zip(extra, extra_out, strict=True):
            te = np.isin(pe, list(fold))
            if te.any():
                oe[te] = _predict(model, xe[te])
    return out, extra_out


def fit_calibration(
    rows: Any,
    *,
    train_prompts: Sequence[int],
    selected: dict[str, Any] | None = None,
    l2: float | None = None,
    decode: str | None = None,
    version: str = "v1",
    split: dict[str, Any] | None = None,
    x: np.ndarray | None = None,
    seed: int = SPLIT_SEED,
) -> Calibration:
    """Fit the offline judge on the rows of ``train_prompts`` only.

    Args:
        rows: :func:`fsnn.analysis.release_grades.graded_rows` (columns ``prompt_id``,
            ``question``, ``target``, ``predicted``, ``mistral_score``).
        train_prompts: prompt ids to fit on; no row of another prompt is read.
        selected: per method, :func:`fsnn.analysis.release_grades.selected_rows` (to choose the
            decode rule by cross-validated composite accuracy); only train prompts read.
        l2: the ridge penalty; None chooses it from :data:`L2_GRID` by the lowest
            cross-validated log loss over train prompts (:data:`CV_FOLDS` folds by prompt).
        decode: the decode rule; None chooses it (needs ``selected``) by the smallest
            summed |composite accuracy error| over methods, out of fold, among rules whose
            out-of-fold exact agreement is at least that of always answering 2.
        x: precomputed :func:`feature_matrix` of ``rows`` (same order), to save time.

    Returns:
        the :class:`Calibration`; ``info`` holds the cross-validation results.
    """
    from .scoring import composite_accuracy

    train_set = {int(p) for p in train_prompts}
    mask = rows["prompt_id"].astype(int).isin(train_set).to_numpy()
    train = rows[mask]
    if x is None:
        xt = feature_matrix(list(zip(train.question, train.target, train.predicted, strict=True)))
    else:
        xt = np.asarray(x)[mask]
    y = train["mistral_score"].to_numpy(int)
    prompt = train["prompt_id"].to_numpy(int)
    folds = _folds(sorted(train_set), CV_FOLDS, seed)
    cv: dict[str, Any] = {"folds": CV_FOLDS, "fold_seed": seed}
    if l2 is None:
        losses = {}
        for lam in L2_GRID:
            p, _ = cross_validate(xt, y, prompt, l2=lam, folds=folds)
            losses[lam] = float(-np.log(p[np.arange(len(y)), y - 1]).mean())
        l2 = min(losses, key=lambda k: (losses[k], -k))
        cv["log_loss_by_l2"] = {f"{k:g}": v for k, v in losses.items()}
    sel = {
        m: df[df["prompt_id"].astype(int).isin(train_set)].reset_index(drop=True)
        for m, df in (selected or {}).items()
    }
    extra = [
        (
            feature_matrix(list(zip(df.question, df.target, df.text, strict=True))),
            df["prompt_id"].to_numpy(int),
        )
        for df in sel.values()
    ]
    oof, oof_sel = cross_validate(xt, y, prompt, l2=l2, folds=folds, extra=extra)
    always2 = float(np.mean(y == 2))
    by_rule: dict[str, Any] = {}
    for rule in DECODES:
        g = decode_grades(oof, rule)
        entry: dict[str, Any] = {"exact": float(np.mean(g == y))}
        err = 0.0
        for (m, df), ps in zip(sel.items(), oof_sel, strict=True):
            ref = composite_accuracy(df["token_overlap"], df["judge_score"])
            got = composite_accuracy(df["token_overlap"], decode_grades(ps, rule).astype(float))
            entry[f"composite_{m}"] = {"offline": got, "reference": ref}
            err += abs(got - ref)
        entry["composite_abs_error_sum"] = err
        by_rule[rule] = entry
    cv["always2_exact"] = always2
    cv["decode"] = by_rule
    if decode is None:
        ok = [r for r in DECODES if by_rule[r]["exact"] >= always2] or ["median"]
        decode = (
            min(ok, key=lambda r: (by_rule[r]["composite_abs_error_sum"], DECODES.index(r)))
            if sel
            else "median"
        )
    # SimpleQA CORRECT threshold: best out-of-fold accuracy of "grade >= JUDGE_THRESHOLD".
    p_good = oof[:, JUDGE_THRESHOLD - 1 :].sum(axis=1)
    good = y >= JUDGE_THRESHOLD
    grid = np.round(np.arange(0.05, 0.96, 0.05), 2)
    acc = [float(np.mean((p_good >= t) == good)) for t in grid]
    t_best = float(grid[int(np.argmax(acc))])
    cv.update({"l2": l2, "simpleqa_threshold_accuracy": max(acc)})
    mean, scale, coef, cuts = _fit_fold(xt, y, l2)
    return Calibration(
        version=version,
        features=FEATURES,
        mean=tuple(float(v) for v in mean),
        scale=tuple(float(v) for v in scale),
        coef=tuple(float(v) for v in coef),
        cuts=tuple(float(v) for v in cuts),
        l2=float(l2),
        simpleqa_correct=t_best,
        train_prompts=tuple(sorted(train_set)),
        decode=decode,
        split=split or {},
        info={"n_train_rows": int(mask.sum()), "n_train_prompts": len(train_set), "cv": cv},
    )
