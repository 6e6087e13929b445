"""Degeneration of generated text: repetition measures and the ``readable`` guard.

Steering too hard makes a small model repeat itself ("Cricket\\nCricket\\nCricket...",
"Bredo-Bredo-Bredo..."). Repetition *lowers* perplexity, so eq. (6) alone rewards it;
these measures let the search and the summary tell a degenerate completion from a
readable one.

Words are maximal runs of letters/digits (``\\w+``, lower-cased): splitting on
punctuation as well as spaces catches "Bredo-Bredo-Bredo", which is one
whitespace-separated word.

- :func:`distinct_2`: distinct word bigrams / word bigrams (1.0 with fewer than two
  bigrams: too short to repeat).
- :func:`longest_repeat`: the largest number of back-to-back copies of any word n-gram,
  n = 1..4 ("a b a b a b" -> 3; a text with no immediate repeat -> 1; no word -> 0).
- :func:`readable`: the guard, thresholds :data:`MIN_DISTINCT_2` and
  :data:`MAX_REPEAT`, validated against 100 hand-labelled completions
  (docs/strength_study.md).
- :func:`guarded_objective`: S_opt (eq. 6) minus a penalty for an unreadable completion,
  so a degenerate completion never beats a readable one of the same overlap.
"""

from __future__ import annotations

import math
import re

from .metrics import ObjectiveConfig, objective

__all__ = [
    "MAX_REPEAT",
    "MIN_DISTINCT_2",
    "MIN_WORDS",
    "degeneration",
    "distinct_2",
    "guarded_objective",
    "longest_repeat",
    "readable",
    "words",
]

MIN_DISTINCT_2 = 0.5  # below: more than half the bigrams are repeats (issue 13's cut, kept after reading)
MAX_REPEAT = 3  # an n-gram copied 4+ times back to back reads as a loop
MIN_WORDS = 1  # an empty completion answers nothing and is not readable text
MAX_NGRAM = 4

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """Lower-cased ``\\w+`` runs of ``text``."""
    return _WORD.findall(text.lower())


def distinct_2(text: str) -> float:
    """Distinct word bigrams / word bigrams; 1.0 when the text has fewer than two bigrams.

    Example:
        >>> distinct_2("a b a b a b")
        0.4
    """
    w = words(text)
    bigrams = list(zip(w, w[1:], strict=False))
    if len(bigrams) < 2:
        return 1.0
    return len(set(bigrams)) / len(bigrams)


def longest_repeat(text: str, max_n: int = MAX_NGRAM) -> int:
    """The most back-to-back copies of any word n-gram (n = 1..``max_n``).

    Example:
        >>> longest_repeat("Cricket Cricket Cricket is a sport")
        3
    """
    w = words(text)
    if not w:
        return 0
    best = 1
    for n in range(1, max_n + 1):
        for start in range(n):  # every phase of the n-gram grid
            run, prev = 1, None
            for i in range(start, len(w) - n + 1, n):
                gram = tuple(w[i : i + n])
                run = run + 1 if gram == prev else 1
                prev = gram
                best = max(best, run)
    return best


def degeneration(text: str) -> dict[str, float | int | bool]:
    """All measures of one text: ``distinct_2``, ``longest_repeat``, ``readable``."""
    return {"distinct_2": distinct_2(text), "longest_repeat": longest_repeat(text), "readable": readable(text)}


def readable(text: str) -> bool:
    """The guard: some words, distinct-2 >= MIN_DISTINCT_2 and no n-gram looped more than MAX_REPEAT times.

    It judges repetition only: fluent-looking text that is wrong or off topic passes,
    and so does non-repetitive word salad (rare in the labelled sample; see
    docs/strength_study.md for its agreement with a human reading).
    """
    if len(words(text)) < MIN_WORDS:
        return False
    return distinct_2(text) >= MIN_DISTINCT_2 and longest_repeat(text) <= MAX_REPEAT


def guarded_objective(
    to: float, ppl: float, is_readable: bool, config: ObjectiveConfig | None = None, penalty: float = 1.0
) -> float:
    """S = S_opt(TO, PPL) - penalty * (1 - readable).

    With ``penalty`` > w_ppl (0.3) an unreadable completion scores below any readable
    one of the same (or a lower by up to (penalty - w_ppl) / w_to) overlap, whatever its
    perplexity; ``penalty = 0`` is eq. (6) as the paper used it.
    """
    if not math.isfinite(penalty) or penalty < 0:
        raise ValueError(f"penalty must be finite and >= 0, got {penalty}")
    return objective(to, ppl, config or ObjectiveConfig()) - penalty * (0.0 if is_readable else 1.0)
