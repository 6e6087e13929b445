"""Degeneration measures, the readable guard and the guarded objective."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from fsnn.judges.degeneration import distinct_2, longest_repeat, readable, words
from fsnn.search.objective import guarded_objective

LABELS = Path(__file__).parents[1] / "data" / "readable_labels.csv"


def test_words_split_on_punctuation():
    assert words("Bredo-Bredo, BREDO!") == ["bredo", "bredo", "bredo"]


def test_distinct_2_hand_cases():
    assert distinct_2("a b a b a b") == pytest.approx(2 / 5)
    assert distinct_2("the cat sat on the mat") == 1.0
    assert distinct_2("one") == 1.0  # too short to repeat
    assert distinct_2("") == 1.0


def test_longest_repeat_hand_cases():
    assert longest_repeat("Cricket\nCricket\nCricket\nCricket") == 4
    assert longest_repeat("x a b a b a b y") == 3  # a bigram at an odd phase
    assert longest_repeat("the cat sat") == 1
    assert longest_repeat("") == 0


def test_guard_flags_planted_repetition_and_passes_fluent_text():
    fluent = (
        "Michio Sugeno received the award in 2010 for his pioneering work on fuzzy logic "
        "and its applications to control systems."
    )
    assert readable(fluent)
    assert not readable("Cricket\nCricket\nCricket\nCricket\nCricket\nCricket")
    assert not readable("Bredo-Bredo-Bredo-Bredo-Bredo")
    assert not readable(
        "The answer is Paris. The answer is Paris. The answer is Paris. The answer is Paris."
    )
    assert not readable("")  # answers nothing


def test_guarded_objective_never_prefers_degenerate_at_equal_overlap():
    # repetition lowers perplexity: the degenerate text gets the smaller eq. (6) penalty
    for to in (0.0, 0.5, 1.0):
        for ppl_bad, ppl_good in ((1.0, 500.0), (2.0, 99.0), (float("nan"), 10.0)):
            degenerate = guarded_objective(to, ppl_bad, False)
            fluent = guarded_objective(to, ppl_good, True)
            assert fluent > degenerate
    # penalty 0 is eq. (6): the paper's objective does prefer the degenerate text
    assert guarded_objective(1.0, 2.0, False, penalty=0.0) > guarded_objective(
        1.0, 99.0, True, penalty=0.0
    )
    with pytest.raises(ValueError, match="penalty"):
        guarded_objective(1.0, 2.0, True, penalty=-1)


def test_guard_agrees_with_hand_labels():
    """The stored hand labels (docs/strength_study.md) and the guard agree on most completions."""
    with open(LABELS, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 100
    labels = [int(r["human_readable"]) for r in rows]
    assert 0 < sum(labels) < len(labels)  # both classes present
    agree = sum(int(readable(r["completion"])) == y for r, y in zip(rows, labels, strict=True))
    assert agree / len(rows) >= 0.8
