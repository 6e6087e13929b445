"""Judging and scoring text: the judges, and every rule that scores a completion
(docs/method.md §3 eq. (7), §5, §7, §8).

- :mod:`~fsnn.judges.metrics`: token overlap (the paper's TO) and perplexity;
- :mod:`~fsnn.judges.degeneration`: repetition measures and the ``readable`` guard;
- :mod:`~fsnn.judges.scoring`: thresholds, the composite S_eval (eq. 7), the scored text,
  the offline proxy grade;

- :mod:`~fsnn.judges.prompts`: the SimpleQA rubric (A/B/C) and the 1-5 quality grade,
  in this project's words (the official simple-evals template loads when installed);
- :mod:`~fsnn.judges.parse`: grades read from answer text by regex;
- backends: :class:`HttpJudge` (OpenAI-compatible chat completions: Mistral, OpenAI,
  vLLM, Ollama, llama.cpp) and :class:`LocalJudge` (a transformers model, graded from
  constrained next-token scores), both behind :func:`make_judge`
  (:mod:`~fsnn.judges.factory`, which also holds :func:`check_judge_spec`);
- :class:`JudgeCache`: answers on disk keyed by (:attr:`JudgeConfig.cache_key`, prompt
  sha256); the key holds every setting that changes an answer;
- :mod:`fsnn.judges.scoring` (re-exported here): composite S_eval and SimpleQA metrics;
- :mod:`~fsnn.analysis.judge_agreement` (in analysis/): ``fsnn judge-agreement`` against
  the released grades.

May import: :mod:`fsnn.errors`, :mod:`fsnn.store`, :mod:`fsnn.models`, :mod:`fsnn.backends`.

Example:
    >>> from fsnn.judges import make_judge
    >>> judge = make_judge("local:smollm2-135m")                      # doctest: +SKIP
    >>> judge.grade_quality([("Capital of France?", "Paris", "Paris.")])  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import MISTRAL, Grade, Item, Judge, JudgeConfig
from .cache import JudgeCache, prompt_sha256
from .factory import check_judge_spec, make_judge
from .parse import parse_quality, parse_simpleqa
from .prompts import render_quality, render_simpleqa
from .scoring import (
    SimpleQAMetrics,
    accurate,
    composite,
    composite_accuracy,
    scored_texts,
    simpleqa_metrics,
)

if TYPE_CHECKING:
    from .http import HttpJudge
    from .local import LocalJudge
    from .offline import OfflineJudge

__all__ = [
    "MISTRAL",
    "Grade",
    "HttpJudge",
    "Item",
    "Judge",
    "JudgeCache",
    "JudgeConfig",
    "LocalJudge",
    "OfflineJudge",
    "SimpleQAMetrics",
    "accurate",
    "check_judge_spec",
    "composite",
    "composite_accuracy",
    "make_judge",
    "parse_quality",
    "parse_simpleqa",
    "prompt_sha256",
    "render_quality",
    "render_simpleqa",
    "scored_texts",
    "simpleqa_metrics",
]


def __getattr__(name: str) -> Any:
    # The backends import httpx / torch; load them only when asked for.
    if name == "HttpJudge":
        from .http import HttpJudge

        return HttpJudge
    if name == "LocalJudge":
        from .local import LocalJudge

        return LocalJudge
    if name == "OfflineJudge":
        from .offline import OfflineJudge

        return OfflineJudge
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
