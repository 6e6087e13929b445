"""The offline judge's features: how an answer matches the gold answer, and how it reads.

Normalised containment (:func:`normalise`, the ``values=True`` rule of
:func:`fsnn.judges.scoring.normalise_answer`), numbers and dates compared as values, fuzzy
token match, token overlap; length, hedging or refusal words, repetition. Bad input never
raises: non-UTF-8 bytes are decoded with replacement and answers longer than
:data:`MAX_CHARS` are truncated, each case returned as a reason.
"""

from __future__ import annotations

import difflib
import math
import re
import unicodedata
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from fsnn.judges.normalise import MONTHS as _MONTHS
from fsnn.judges.normalise import normalise_answer

__all__ = [
    "FEATURES",
    "MAX_CHARS",
    "answer_part",
    "dates",
    "feature_matrix",
    "features",
    "normalise",
    "numbers",
]

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
    """The offline judge's matching rule: :func:`fsnn.judges.normalise.normalise_answer` with
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
        found.append((m.start(), _Date(d, mon, y, year is not None and len(year) == 2)))

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
    from fsnn.judges.metrics import token_overlap

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
