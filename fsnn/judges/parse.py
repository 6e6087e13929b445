"""Read grades out of a judge's answer text (regex, never eval).

- SimpleQA rubric: the first letter A, B or C; none found -> C (NOT_ATTEMPTED), as
  simple-evals does. Two letter rules: ``"word"`` (default) takes the first A/B/C that
  stands alone as a word, so "After checking: B" reads B; ``"simple-evals"`` takes the
  first capital A/B/C anywhere, exactly like simple-evals' ``re.search(r"(A|B|C)", ...)``.
- Quality grade: ``Score: <1-5>`` (markdown around the label is fine), else an answer
  that *starts* with a digit 1-5; ``Hallucination: Y/N`` (or yes/no); ``Notes: ...``.
  No grade found -> missing (None) with the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from .prompts import SIMPLEQA_LETTERS

__all__ = ["LetterRule", "QualityParse", "SimpleQAParse", "parse_quality", "parse_simpleqa"]

LetterRule = Literal["word", "simple-evals"]

_LETTER_WORD = re.compile(r"(?<![A-Za-z0-9])([ABC])(?![A-Za-z0-9])")
_LETTER_ANY = re.compile(r"(A|B|C)")
_SCORE = re.compile(r"(?i)\bscore\b[\s*_:=#\-]*(?:is\s*)?([1-5])(?![0-9.])")
_LEADING = re.compile(r"^[\s*_#>\"'`]*([1-5])(?![0-9])")
_HALLU = re.compile(r"(?i)\bhallucinat\w*\b[\s*_:=#\-?]*(yes|no|y|n)\b")
_NOTES = re.compile(r"(?is)\bnotes?\b[\s*_:#\-]*(.*)")


@dataclass(frozen=True, kw_only=True)
class SimpleQAParse:
    """A parsed SimpleQA-rubric answer.

    Attributes:
        grade: ``CORRECT``, ``INCORRECT`` or ``NOT_ATTEMPTED``.
        letter: the letter read, or ``""`` when none was found.
        defaulted: True when no letter was found and the grade defaulted to C.
    """

    grade: str
    letter: str
    defaulted: bool


@dataclass(frozen=True, kw_only=True)
class QualityParse:
    """A parsed 1-5 quality answer.

    Attributes:
        score: 1..5, or None when the answer holds no grade.
        hallucination: True (Y), False (N), or None when not stated.
        notes: the text after ``Notes:`` (stripped), or ``""``.
        error: why ``score`` is None, else None.
    """

    score: int | None
    hallucination: bool | None
    notes: str
    error: str | None = None


def parse_simpleqa(text: str, *, rule: LetterRule = "word") -> SimpleQAParse:
    """The SimpleQA grade of a judge answer: first A|B|C, default C (NOT_ATTEMPTED).

    Example:
        >>> parse_simpleqa("B").grade
        'INCORRECT'
        >>> parse_simpleqa("I cannot tell.").defaulted
        True
    """
    if rule not in ("word", "simple-evals"):
        raise ValueError(f"unknown letter rule {rule!r}")
    pattern = _LETTER_WORD if rule == "word" else _LETTER_ANY
    match = pattern.search(text or "")
    if match is None:
        return SimpleQAParse(grade=SIMPLEQA_LETTERS["C"], letter="", defaulted=True)
    letter = match.group(1)
    return SimpleQAParse(grade=SIMPLEQA_LETTERS[letter], letter=letter, defaulted=False)


def parse_quality(text: str) -> QualityParse:
    """Score 1-5, hallucination flag and notes of a quality-grade answer.

    Example:
        >>> p = parse_quality("**Score:** 4\\nHallucination: N\\nNotes: Right name.")
        >>> (p.score, p.hallucination, p.notes)
        (4, False, 'Right name.')
    """
    text = text or ""
    match = _SCORE.search(text) or _LEADING.search(text)
    score = int(match.group(1)) if match else None
    hallu_match = _HALLU.search(text)
    hallucination = None
    if hallu_match:
        hallucination = hallu_match.group(1).lower().startswith("y")
    notes_match = _NOTES.search(text)
    notes = notes_match.group(1).strip().strip("*").strip() if notes_match else ""
    error = None
    if score is None:
        error = (
            "unparseable: no grade 1-5 in the judge's answer"
            if text.strip()
            else ("unparseable: empty answer")
        )
    return QualityParse(score=score, hallucination=hallucination, notes=notes, error=error)
