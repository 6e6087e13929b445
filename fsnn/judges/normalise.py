"""Answer normalisation, the one place: how an answer and a text are made comparable.

Three strictnesses of one rule, each used where its name says, sharing one vocabulary
(number words, ordinals, months, articles):

- **containment** (:func:`normalise_answer`): lower case, ASCII punctuation deleted, no
  articles, single spaces. SimpleQA's containment rule: :func:`fsnn.judges.scoring.proxy_grade`
  and the label-free search's self-consistency vote.
- **values** (``normalise_answer(text, values=True)``): containment plus NFKC, number
  words as digits, thousands separators and ordinal suffixes gone, every non-word
  character a word break (a decimal point between digits stays). The offline judge's
  matching rule (:mod:`fsnn.judges.offline.features`).
- **tokens** (:func:`answer_tokens`, :func:`normalise_answer_text`): a pipeline of its
  own on the same vocabulary, the richest: casefolding and diacritics off, possessives,
  thousands separators, number words, scales ("3.5 million") and decimals ("3.50" =
  "3.5") as one number token, aliases ("Univ." = "University"), "%" = "percent", every
  date as one token ("April 2, 1985" = "1985-04-02"); :func:`answer_tokens` keeps the
  articles, :func:`normalise_answer_text` drops them. The states-the-answer check
  (:mod:`fsnn.judges.states_answer`, which documents each step).

The three are not merged into one because each is part of a result already on record:
containment decides the proxy grades of every run (and the golden run), values the
offline judge's fitted features; only the states-the-answer check was written after them
and could take the richest form.

May import: :mod:`fsnn.errors` (nothing else: a leaf).
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

from fsnn.errors import FsnnError

__all__ = [
    "ARTICLES",
    "DATE_TOKEN",
    "MONTHS",
    "answer_tokens",
    "drop_articles",
    "fold",
    "normalise_answer",
    "normalise_answer_text",
]

# --------------------------------------------------------------------------- vocabulary

_UNITS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINAL_UNITS = (
    "zeroth first second third fourth fifth sixth seventh eighth ninth tenth eleventh "
    "twelfth thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth"
).split()
_ORDINAL_TENS = (
    "twentieth thirtieth fortieth fiftieth sixtieth seventieth eightieth ninetieth".split()
)
_SMALL = {w: i for i, w in enumerate(_UNITS)} | {w: 20 + 10 * i for i, w in enumerate(_TENS)}
_ORDINAL = {w: i for i, w in enumerate(_ORDINAL_UNITS) if i} | {
    w: 20 + 10 * i for i, w in enumerate(_ORDINAL_TENS)
}
_ARTICLES = frozenset({"a", "an", "the"})
_SCALES = {"hundred": 100, "thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000}
_MONTHS = {
    name: i + 1
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
            ("september", "sept", "sep"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ]
    )
    for name in names
}
_FOLD = str.maketrans(
    {
        "ø": "o",
        "ß": "ss",
        "æ": "ae",
        "œ": "oe",
        "ł": "l",
        "đ": "d",
        "ð": "d",
        "þ": "th",
        "ı": "i",
        "’": "'",
        "‘": "'",
        "`": "'",
        "–": "-",
        "—": "-",
        "‐": "-",
        "‑": "-",
    }
)

_MON = rf"(?P<mon>{'|'.join(sorted(_MONTHS, key=len, reverse=True))})\.?"
_DAY = r"(?P<day>[0-3]?\d)(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>[12]\d{3})"
_DATE_PATTERNS = (
    re.compile(r"\b(?P<year>[12]\d{3})[-/](?P<month>[01]?\d)[-/](?P<day>[0-3]?\d)\b"),
    re.compile(rf"\b(?:the\s+)?{_DAY}\s*(?:of\s+)?{_MON}[\s,]+{_YEAR}\b"),
    re.compile(rf"\b{_MON}\s+(?:the\s+)?{_DAY},?\s+{_YEAR}\b"),
    re.compile(rf"\b{_MON},?\s+(?:of\s+)?{_YEAR}\b"),
    re.compile(rf"\b(?:the\s+)?{_DAY}\s*(?:of\s+)?{_MON}\b"),
    re.compile(rf"\b{_MON}\s+(?:the\s+)?{_DAY}\b(?![.,]?\d)"),
)
_DATE_TOKEN = re.compile(r"(?P<y>\d{4})(?:-(?P<m>\d\d)(?:-(?P<d>\d\d))?)?")
_MARK = "\x00"  # wraps a date token inside the text so no later step splits it
_MARKED = re.compile("(\x00[^\x00]*\x00)")
_DIGITS = re.compile(r"\d+(?:\.\d+)?")
_ALIASES = {
    "univ": "university",
    "st": "saint",
    "mt": "mount",
    "ft": "fort",
    "dr": "doctor",
    "prof": "professor",
    "jr": "junior",
    "sr": "senior",
}
# containment/values: number words as digits; ordinals keep a "th" the next step drops
_TENS_VALUE = {w: 20 + 10 * i for i, w in enumerate(_TENS)}
_ORDINALS = [*_ORDINAL_UNITS, _ORDINAL_TENS[0]]  # "zeroth" .. "twentieth"
_WORD_NUMBERS = {w: str(i) for i, w in enumerate(_UNITS)} | {
    w: str(v) for w, v in _TENS_VALUE.items()
}
_WORD_NUMBERS |= {w: str(i) for i, w in enumerate(_ORDINALS) if i}
_ASCII_PUNCTUATION = str.maketrans("", "", string.punctuation)


# --------------------------------------------------------------------------- containment and values


def _number_words(text: str) -> str:
    # "twenty-three" -> "23", "three" -> "3", "fifteenth" -> "15th" (ordinals keep "th").
    def compound(m: re.Match[str]) -> str:
        return str(_TENS_VALUE[m.group(1)] + _UNITS.index(m.group(2)))

    text = re.sub(rf"\b({'|'.join(_TENS)})[\s-]({'|'.join(_UNITS[1:10])})\b", compound, text)

    def single(m: re.Match[str]) -> str:
        w = m.group(0)
        return _WORD_NUMBERS[w] + ("th" if w in _ORDINALS else "")

    return re.sub(rf"\b({'|'.join(_WORD_NUMBERS)})\b", single, text)


def normalise_answer(text: str, *, values: bool = False) -> str:
    """An answer as compared with another: lower case, no punctuation, no articles
    (a, an, the), single spaces. The one normalisation rule of fsnn.

    Args:
        text: the answer or text.
        values: ``False`` (the SimpleQA containment rule of :func:`proxy_grade` and the
            self-consistency vote): ASCII punctuation is deleted (``"don't"`` ->
            ``"dont"``). ``True`` (the offline judge, which compares numbers and dates as
            values): NFKC first, number words become digits (``"twenty-three"`` ->
            ``"23"``, ``"fifteenth"`` -> ``"15"``), thousands separators and ordinal
            suffixes go, every other non-word character of any script is a word break
            (``"don't"`` -> ``"don t"``) except a decimal point between digits.

    Example:
        >>> normalise_answer("The 1,000 Acres of Twenty-Three Fields!")
        '1000 acres of twentythree fields'
        >>> normalise_answer("The 1,000 Acres of Twenty-Three Fields!", values=True)
        '1000 acres of 23 fields'
    """
    if values:
        text = unicodedata.normalize("NFKC", text).lower()
        text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,000 -> 1000
        text = _number_words(text)
        text = re.sub(r"(\d)(st|nd|rd|th)\b", r"\1", text)  # 15th -> 15
        text = re.sub(r"[^\w\s.]|_", " ", text)
        text = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", text)  # keep decimal points only
    else:
        text = text.lower().translate(_ASCII_PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


# --------------------------------------------------------------------------- tokens


def _date_token(m: re.Match[str]) -> str:
    g = m.groupdict()
    month = int(g["month"]) if g.get("month") else _MONTHS[g["mon"]]
    day = int(g["day"]) if g.get("day") else None
    if not 1 <= month <= 12 or (day is not None and not 1 <= day <= 31):
        return m.group(0)
    if g.get("year"):
        token = g["year"] + f"-{month:02d}" + (f"-{day:02d}" if day else "")
    elif day is not None:
        token = f"--{month:02d}-{day:02d}"
    else:  # pragma: no cover - every pattern has a day or a year
        return m.group(0)
    return f" {_MARK}{token}{_MARK} "


def _dates(text: str) -> str:
    """Replace every date by its canonical token (the most precise pattern first)."""
    for pattern in _DATE_PATTERNS:
        parts = _MARKED.split(text)
        # patterns never look inside an earlier date token
        text = "".join(p if p.startswith(_MARK) else pattern.sub(_date_token, p) for p in parts)
    return text


def _fold(text: str) -> str:
    """Casefold, compatibility forms, diacritics off."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_FOLD)
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text if not unicodedata.combining(c))


def _number(token: str) -> str:
    """A digit token in one spelling: trailing decimal zeros dropped ("3.50" -> "3.5")."""
    if "." in token:
        whole, frac = token.split(".", 1)
        frac = frac.rstrip("0")
        return whole + ("." + frac if frac else "")
    return token


def _numbers(tokens: list[str]) -> list[str]:
    """Number words and scales to digits: "twenty three" -> "23", "3.5 million" -> "3500000",
    "two hundred and five" -> "205", "twenty first" -> "21", "first" -> "1"."""
    out: list[str] = []
    i, n = 0, len(tokens)
    while i < n:
        tok = tokens[i]
        if tok in _ORDINAL:
            out.append(str(_ORDINAL[tok]))
            i += 1
        elif _DIGITS.fullmatch(tok):
            value, i = float(tok), i + 1
            scaled = False
            while i < n and tokens[i] in _SCALES:  # "3.5 million"
                value, i, scaled = value * _SCALES[tokens[i]], i + 1, True
            out.append(_number(tok) if not scaled else _format(value))
        elif tok in _SMALL:
            total, current, prev, j = 0.0, 0.0, "", i
            while j < n:
                t = tokens[j]
                if t in _SMALL:
                    v = _SMALL[t]
                    if prev in ("unit", "teen") or (prev == "tens" and v >= 10):
                        break  # "three four", "twenty thirty": two numbers
                    current += v
                    prev = "tens" if v >= 20 else "teen" if v >= 10 else "unit"
                elif t in _SCALES and prev:
                    if t == "hundred":
                        current = (current or 1) * 100
                    else:
                        total, current = total + (current or 1) * _SCALES[t], 0.0
                    prev = "scale"
                elif t in _ORDINAL and prev == "tens" and _ORDINAL[t] < 10:
                    current += _ORDINAL[t]  # "twenty first"
                    j += 1
                    break
                elif t == "and" and prev == "scale" and j + 1 < n and tokens[j + 1] in _SMALL:
                    pass  # "two hundred and five"
                else:
                    break
                j += 1
            out.append(_format(total + current))
            i = j
        else:
            out.append(tok)
            i += 1
    return out


def _format(value: float) -> str:
    return str(int(value)) if value == int(value) else _number(f"{value:.6f}")


@lru_cache(maxsize=65536)
def _tokens(text: str) -> tuple[str, ...]:
    text = _fold(text)
    text = re.sub(r"(?<=\w)'s\b|(?<=s)'(?=\s|$)", "", text)  # possessives
    text = re.sub(r"(?<=\w)'(?=\w)", "", text)  # O'Brien -> obrien
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)  # 1,000,000 -> 1000000
    text = re.sub(r"(?<=\d)(?:st|nd|rd|th)\b", "", text)  # 21st -> 21 (dates first see it)
    text = _dates(text)
    text = text.replace("%", " percent ").replace("per cent", "percent")
    parts = _MARKED.split(text)
    tokens: list[str] = []
    for part in parts:
        if part.startswith(_MARK):
            tokens.append(part.strip(_MARK))
            continue
        part = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", part)  # keep decimal points only
        words = re.findall(r"[^\W_]+(?:\.\d+)?", part)
        tokens.extend(_numbers([_ALIASES.get(w, w) for w in words]))
    return tuple(tokens)


def answer_tokens(text: str) -> tuple[str, ...]:
    """The normalised tokens of ``text``, in order.

    Example:
        >>> answer_tokens("The 1,000 Acres of St. Mary's, twenty-three on April 2nd, 1985")
        ('the', '1000', 'acres', 'of', 'saint', 'mary', '23', 'on', '1985-04-02')
    """
    if not isinstance(text, str):
        raise FsnnError(f"expected text, got {type(text).__name__}: {text!r}")
    return _tokens(text)


def normalise_answer_text(text: str) -> str:
    """``text`` normalised for answer matching: :func:`answer_tokens` without the articles
    "a", "an", "the", joined by spaces.

    Example:
        >>> normalise_answer_text("Sugéno's Univ. of Tokyo, 3rd")
        'sugeno university of tokyo 3'
    """
    return " ".join(_no_articles(answer_tokens(text)))


def _no_articles(tokens: Sequence[str]) -> tuple[str, ...]:
    return tuple(t for t in tokens if t not in _ARTICLES)


# public names of what the states-the-answer check shares
ARTICLES = _ARTICLES
MONTHS = _MONTHS
DATE_TOKEN = _DATE_TOKEN
fold = _fold
drop_articles = _no_articles
