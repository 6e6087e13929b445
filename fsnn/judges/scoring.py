"""Scoring rules in one place: thresholds, the composite S_eval (eq. 7), the scored text, SimpleQA rates.

Every threshold a summary, figure or judge uses is defined here and nowhere else:
``COMPOSITE_THRESHOLD`` (0.6), ``TOKEN_OVERLAP_THRESHOLD`` (0.5), ``JUDGE_THRESHOLD`` (4);
so are the weights of eq. (7), ``W_TO``, ``W_JUDGE`` and ``JUDGE_MAX`` (0.5, 0.5, 5), and its
text ``COMPOSITE_FORMULA``; and so is the answer normalisation of SimpleQA's containment rule, :func:`normalise_answer`
(defined with the other strictnesses in :mod:`fsnn.judges.normalise`).

Pure functions on numpy arrays; a missing judge score is NaN, a missing SimpleQA grade
is ``""`` or None.

Parity switches (docs/method.md §8), never silent:

- ``missing``: the release counted a missing judge score as 0 (``"zero"``, default);
  ``"exclude"`` drops those prompts from the denominator instead.
- :func:`scored_texts` picks what TO and the judges see: ``"full"`` (the decoded text
  with the echoed prompt, as the release scored it) or ``"completion"`` (the generated
  part only).

SimpleQA metrics follow openai/simple-evals: the rates of CORRECT, INCORRECT and
NOT_ATTEMPTED; ``given_attempted`` = correct + incorrect;
``accuracy_given_attempted`` = correct / given_attempted (0 when nothing was
attempted); F1 = harmonic mean of the correct rate and accuracy-given-attempted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal, cast

import numpy as np
import numpy.typing as npt

from .normalise import normalise_answer

__all__ = [
    "COMPOSITE_FORMULA",
    "COMPOSITE_THRESHOLD",
    "JUDGE_MAX",
    "JUDGE_THRESHOLD",
    "TOKEN_OVERLAP_THRESHOLD",
    "SIMPLEQA_GRADES",
    "W_JUDGE",
    "W_TO",
    "MissingJudge",
    "SimpleQAMetrics",
    "TextMode",
    "accurate",
    "composite",
    "composite_accuracy",
    "normalise_answer",
    "proxy_grade",
    "scored_texts",
    "simpleqa_metrics",
]

MissingJudge = Literal["zero", "exclude"]
TextMode = Literal["full", "completion"]
SIMPLEQA_GRADES = ("CORRECT", "INCORRECT", "NOT_ATTEMPTED")

COMPOSITE_THRESHOLD = 0.6  # S_eval >= this counts as accurate (paper)
TOKEN_OVERLAP_THRESHOLD = 0.5  # TO >= this counts as reaching the answer
JUDGE_THRESHOLD = 4  # 1-5 grade >= this counts as a good answer
W_TO = 0.5  # weight of TO in S_eval (paper)
W_JUDGE = 0.5  # weight of the judge grade in S_eval (paper)
JUDGE_MAX = 5.0  # the judge's top grade, which S_eval divides by
COMPOSITE_FORMULA = f"{W_TO:g}*TO + {W_JUDGE:g}*judge/{JUDGE_MAX:g}"  # eq. (7) as text, for labels


def composite(
    to: np.ndarray | Sequence[float],
    judge: np.ndarray | Sequence[float | None],
    *,
    w_to: float = W_TO,
    w_judge: float = W_JUDGE,
    judge_max: float = JUDGE_MAX,
    missing: MissingJudge = "zero",
) -> np.ndarray:
    """S_eval = w_to * TO + w_judge * judge / judge_max  (paper: 0.5, 0.5, 5).

    Args:
        to: token overlap, shape (prompt,).
        judge: 1-5 judge scores, shape (prompt,); NaN/None = missing.
        missing: ``"zero"`` scores a missing judge as 0 (the release); ``"exclude"``
            gives NaN for that prompt.

    Returns:
        float array, shape (prompt,).

    Example:
        >>> composite([1.0, 0.5], [4, None]).tolist()
        [0.9, 0.25]
    """
    to_arr = np.asarray(to, dtype=float)
    # None entries make an object array at run time; numpy's stubs reject None in ArrayLike
    judge_like = cast("npt.ArrayLike", judge)
    j = np.asarray([np.nan if v is None else v for v in np.ravel(judge_like)], dtype=float)
    j = j.reshape(np.shape(judge_like))
    if missing == "zero":
        j = np.nan_to_num(j, nan=0.0)
    elif missing != "exclude":
        raise ValueError(f"missing must be 'zero' or 'exclude', not {missing!r}")
    return w_to * to_arr + w_judge * j / judge_max


def accurate(
    scores: np.ndarray | Sequence[float], threshold: float = COMPOSITE_THRESHOLD
) -> np.ndarray:
    """Boolean mask S_eval >= threshold (paper 0.6); NaN is not accurate."""
    s = np.asarray(scores, dtype=float)
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(s), False, s >= threshold)


def composite_accuracy(
    to: np.ndarray | Sequence[float],
    judge: np.ndarray | Sequence[float | None],
    *,
    threshold: float = COMPOSITE_THRESHOLD,
    w_to: float = W_TO,
    w_judge: float = W_JUDGE,
    judge_max: float = JUDGE_MAX,
    missing: MissingJudge = "zero",
) -> float:
    """Fraction of prompts with S_eval >= threshold.

    With ``missing="exclude"`` the denominator counts only prompts with a judge score
    (NaN when there is none).
    """
    s = composite(to, judge, w_to=w_to, w_judge=w_judge, judge_max=judge_max, missing=missing)
    valid = ~np.isnan(s)
    if not valid.any():
        return float("nan")
    return float(accurate(s[valid], threshold).mean())


@dataclass(frozen=True, kw_only=True)
class SimpleQAMetrics:
    """SimpleQA aggregate metrics as simple-evals defines them.

    Attributes:
        n: grades counted (the denominator).
        n_missing: grades that were missing (excluded, or counted as not attempted).
        correct / incorrect / not_attempted: rates over ``n``.
        given_attempted: correct + incorrect.
        accuracy_given_attempted: correct / given_attempted (0 when nothing attempted).
        f1: harmonic mean of ``correct`` and ``accuracy_given_attempted`` (0 when both 0).
    """

    n: int
    n_missing: int
    correct: float
    incorrect: float
    not_attempted: float
    given_attempted: float
    accuracy_given_attempted: float
    f1: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def simpleqa_metrics(
    grades: np.ndarray | Sequence[str | None],
    *,
    missing: Literal["exclude", "not_attempted"] = "exclude",
) -> SimpleQAMetrics:
    """Rates, accuracy-given-attempted and F1 of SimpleQA grades.

    Args:
        grades: ``CORRECT`` / ``INCORRECT`` / ``NOT_ATTEMPTED`` per item, shape
            (prompt,); ``""``/None/NaN = missing.
        missing: drop missing grades from the denominator (``"exclude"``) or count
            them as NOT_ATTEMPTED.

    Example:
        >>> m = simpleqa_metrics(["CORRECT", "INCORRECT", "NOT_ATTEMPTED", "CORRECT"])
        >>> (m.correct, round(m.accuracy_given_attempted, 4), round(m.f1, 4))
        (0.5, 0.6667, 0.5714)
    """
    values = [_grade_str(g) for g in np.ravel(np.asarray(grades, dtype=object))]
    bad = sorted({v for v in values if v and v not in SIMPLEQA_GRADES})
    if bad:
        raise ValueError(f"unknown SimpleQA grade(s) {bad}; expected {SIMPLEQA_GRADES}")
    n_missing = sum(1 for v in values if not v)
    if missing == "not_attempted":
        values = [v or "NOT_ATTEMPTED" for v in values]
    elif missing != "exclude":
        raise ValueError(f"missing must be 'exclude' or 'not_attempted', not {missing!r}")
    kept = [v for v in values if v]
    n = len(kept)
    if n == 0:
        return SimpleQAMetrics(
            n=0,
            n_missing=n_missing,
            correct=0.0,
            incorrect=0.0,
            not_attempted=0.0,
            given_attempted=0.0,
            accuracy_given_attempted=0.0,
            f1=0.0,
        )
    correct = kept.count("CORRECT") / n
    incorrect = kept.count("INCORRECT") / n
    not_attempted = kept.count("NOT_ATTEMPTED") / n
    attempted = correct + incorrect
    acc_att = correct / attempted if attempted > 0 else 0.0
    f1 = 2 * acc_att * correct / (acc_att + correct) if (acc_att + correct) > 0 else 0.0
    return SimpleQAMetrics(
        n=n,
        n_missing=n_missing,
        correct=correct,
        incorrect=incorrect,
        not_attempted=not_attempted,
        given_attempted=attempted,
        accuracy_given_attempted=acc_att,
        f1=f1,
    )


def _grade_str(value: object) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value)


def scored_texts(
    full: Sequence[str], completion: Sequence[str], mode: TextMode = "full"
) -> list[str]:
    """The text TO and the judges score: decoded text with the echoed prompt, or not.

    Args:
        full: prompt + completion as decoded (what the release scored), shape (prompt,).
        completion: the generated part only, shape (prompt,).
        mode: ``"full"`` (release parity) or ``"completion"``.
    """
    if mode == "full":
        return [str(t) for t in full]
    if mode == "completion":
        return [str(t) for t in completion]
    raise ValueError(f"text mode must be 'full' or 'completion', not {mode!r}")


def proxy_grade(answer: str, completion: str) -> str:
    """Offline stand-in for the SimpleQA rubric: normalised answer containment.

    CORRECT when the normalised answer occurs in the normalised completion,
    NOT_ATTEMPTED for an empty completion, else INCORRECT. Stored as grade source
    ``proxy:containment``, never mixed up with a judge's grade.
    """
    comp = normalise_answer(completion)
    if not comp:
        return "NOT_ATTEMPTED"
    ans = normalise_answer(answer)
    return "CORRECT" if ans and f" {ans} " in f" {comp} " else "INCORRECT"
