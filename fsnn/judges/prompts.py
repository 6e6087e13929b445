"""Rubric prompts of the two judges, written for this project (docs/method.md §4.2, §7).

Two tasks:

- ``simpleqa``: the SimpleQA rubric. Question, gold target and predicted answer go in;
  one letter comes out: A (CORRECT), B (INCORRECT) or C (NOT_ATTEMPTED).
- ``quality``: the 1-5 quality grade of a "strict but fair" evaluator judging factual
  correctness, relevance and completeness against the ground truth, plus a
  hallucination flag (Y/N) and short notes.

The wording below is this project's own. For exact parity with the official
simple-evals grader, :func:`official_simpleqa_template` loads that template from the
``simple-evals`` package when it is installed; it is never copied into this repository.
"""

from __future__ import annotations

import importlib
from typing import Literal

from fsnn.errors import FsnnError

__all__ = [
    "QUALITY_PREFILL",
    "QUALITY_TEMPLATE",
    "SIMPLEQA_LETTERS",
    "SIMPLEQA_TEMPLATE",
    "Task",
    "official_simpleqa_template",
    "render_quality",
    "render_simpleqa",
]

Task = Literal["simpleqa", "quality"]

# Letter -> grade name, as the SimpleQA rubric defines them.
SIMPLEQA_LETTERS: dict[str, str] = {"A": "CORRECT", "B": "INCORRECT", "C": "NOT_ATTEMPTED"}

SIMPLEQA_TEMPLATE = """\
You check answers to short factual questions. You see a question, its gold answer and \
a predicted answer, and you decide which of three grades the predicted answer earns.

A = CORRECT: the predicted answer states the information of the gold answer and \
nothing in it contradicts the gold answer. Wording, letter case, word order, small \
spelling variants of names and extra detail that does not contradict the gold answer \
are all fine. Hedging is fine as long as the answer it commits to is the gold one. \
Information that the question itself already implies may be left out. A number \
counts as correct when it agrees with the gold answer to the precision the gold \
answer is given in.
B = INCORRECT: the predicted answer states something that contradicts the gold \
answer, or offers several candidate answers of which at least one is wrong, even \
when hedged ("maybe X, or possibly Y").
C = NOT_ATTEMPTED: the predicted answer does not give the information asked for \
(it declines, says it does not know, or talks around the question) and states \
nothing that contradicts the gold answer.

Judge only whether the predicted answer agrees with the gold answer; do not judge \
whether the gold answer is right.

Question: {question}
Gold answer: {target}
Predicted answer: {predicted}

Reply with a single letter, A, B or C, and nothing else."""

QUALITY_TEMPLATE = """\
Act as a strict but fair grader. You will see a question, its ground-truth answer and \
an answer to grade. Grade the answer against the ground truth on three things: is it \
factually correct, does it address the question that was asked, and is it complete.

Scale:
5 = fully correct and complete: it gives the ground-truth answer clearly.
4 = correct, with a small omission or harmless extra detail.
3 = partly correct: part of the key fact is right, part is missing or wrong.
2 = mostly wrong or off the point; at most a fragment of the right answer.
1 = wrong, empty, or made up (hallucinated).

Also decide whether the answer asserts facts that are invented or that contradict \
the ground truth (hallucination: Y for yes, N for no).

Reply in exactly this format:
Score: <a digit from 1 to 5>
Hallucination: <Y or N>
Notes: <one or two sentences that justify the score>

Question: {question}
Ground-truth answer: {target}
Answer to grade:
<<<
{predicted}
>>>

Reply in the format given above."""

# What a local judge's answer is pre-filled with: the grade is the next token.
QUALITY_PREFILL = "Score: "


def official_simpleqa_template() -> str:
    """The grader template of openai/simple-evals, loaded from the installed package.

    Raises:
        FsnnError: the simple-evals package is not installed (it is not on PyPI;
            install it from its repository) or holds no ``GRADER_TEMPLATE``.
    """
    for name in ("simple_evals.simpleqa_eval", "simpleqa_eval"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        template = getattr(module, "GRADER_TEMPLATE", None)
        if isinstance(template, str) and "{predicted_answer}" in template:
            return template
    raise FsnnError(
        "simpleqa_template='simple-evals' needs the official simple-evals package "
        "(pip install git+https://github.com/openai/simple-evals); "
        "or use the default simpleqa_template='fsnn'"
    )


def render_simpleqa(question: str, target: str, predicted: str, *, template: str = "fsnn") -> str:
    """The SimpleQA-rubric prompt for one item.

    Args:
        template: ``"fsnn"`` (this project's wording) or ``"simple-evals"`` (the official
            template, loaded from the installed package).
    """
    if template == "simple-evals":
        return official_simpleqa_template().format(
            question=question, target=target, predicted_answer=predicted
        )
    if template != "fsnn":
        raise FsnnError(f"unknown SimpleQA template {template!r}; use 'fsnn' or 'simple-evals'")
    return SIMPLEQA_TEMPLATE.format(question=question, target=target, predicted=predicted)


def render_quality(question: str, target: str, predicted: str) -> str:
    """The 1-5 quality-grade prompt for one item."""
    return QUALITY_TEMPLATE.format(question=question, target=target, predicted=predicted)
