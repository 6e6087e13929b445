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
- :func:`char_repeat`: the largest number of back-to-back copies of any 1..8-character
  unit ("2022222221111111" -> 7 ones; "\\n" x 20 -> 20), for loops inside one word.
- :func:`readable`: the guard, thresholds :data:`MIN_DISTINCT_2`, :data:`MAX_REPEAT`
  and :data:`MAX_CHAR_COPIES`, plus two debris signs (stray closing brackets, U+FFFD), validated against 100 hand-labelled completions
  (docs/strength_study.md).
- the search's guard built on :func:`readable` is :func:`fsnn.search.objective.guarded_objective`.
"""

from __future__ import annotations

import re

__all__ = [
    "MAX_CHAR_COPIES",
    "MAX_REPEAT",
    "MIN_DISTINCT_2",
    "MIN_WORDS",
    "char_repeat",
    "degeneration",
    "distinct_2",
    "longest_repeat",
    "readable",
    "stray_closers",
    "words",
]

MIN_DISTINCT_2 = (
    0.5  # below: more than half the bigrams are repeats (issue 13's cut, kept after reading)
)
MAX_REPEAT = 2  # a word n-gram copied 3+ times back to back ("who who who", "of the of the of the") is a loop
MIN_WORDS = 1  # an empty completion answers nothing and is not readable text
MAX_NGRAM = 4
MAX_CHAR_COPIES = (
    6  # a 1-8 character unit copied 7+ times ("1111111", "#######", "ahahahah") is a loop
)
MAX_CHAR_UNIT = 8

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


def char_repeat(text: str, max_unit: int = MAX_CHAR_UNIT) -> int:
    """The most back-to-back copies of any character unit of 1..``max_unit`` characters.

    Catches loops inside one "word" that :func:`longest_repeat` cannot see:
    "2022222221111111", "#####", "\n\n\n\n", "ahahahah".

    Example:
        >>> char_repeat("12.12.12.12 ok")
        4
    """
    best = 1 if text else 0
    n = len(text)
    for unit in range(1, max_unit + 1):
        i = 0
        while i + 2 * unit <= n:
            copies = 1
            while (
                i + (copies + 1) * unit <= n
                and text[i + copies * unit : i + (copies + 1) * unit] == text[i : i + unit]
            ):
                copies += 1
            best = max(best, copies)
            i += max(1, (copies - 1) * unit) if copies > 1 else 1
    return best


def stray_closers(text: str) -> int:
    """Closing brackets with no opening one before them: ``")]]]] insider"``, ``" see) mutually"``.

    Steered small models often start with such debris before any word; fluent text
    rarely has one (an enumeration written ``a) ... b)`` does: a known false alarm).
    """
    depth, stray = 0, 0
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            if depth:
                depth -= 1
            else:
                stray += 1
    return stray


def degeneration(text: str) -> dict[str, float | int | bool]:
    """All measures of one text: ``distinct_2``, ``longest_repeat``, ``char_repeat``, ``readable``."""
    return {
        "distinct_2": distinct_2(text),
        "longest_repeat": longest_repeat(text),
        "char_repeat": char_repeat(text),
        "readable": readable(text),
    }


def readable(text: str) -> bool:
    """The guard: some words, distinct-2 >= MIN_DISTINCT_2, no word n-gram looped more than
    MAX_REPEAT times, no character unit more than MAX_CHAR_COPIES times, no stray closing
    bracket (:func:`stray_closers`) and no U+FFFD (bytes of a split character: debris).

    It judges repetition only: fluent-looking text that is wrong or off topic passes,
    and so does non-repetitive word salad (rare in the labelled sample; see
    docs/strength_study.md for its agreement with a human reading).
    """
    if len(words(text)) < MIN_WORDS:
        return False
    return (
        distinct_2(text) >= MIN_DISTINCT_2
        and longest_repeat(text) <= MAX_REPEAT
        and char_repeat(text) <= MAX_CHAR_COPIES
        and stray_closers(text) == 0
        and "\ufffd" not in text
    )
