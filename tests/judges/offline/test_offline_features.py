"""fsnn.judges.offline.features: normalisation, dates, numbers, the features, against oracles."""

from __future__ import annotations

import pytest

from fsnn.judges import offline as O


def test_normalise_oracle():
    assert O.normalise("The 1,000 Acres of Twenty-Three Fields!") == "1000 acres of 23 fields"
    assert O.normalise("An Apple; a PEAR.") == "apple pear"
    assert O.normalise("the fifteenth place, 15th") == "15 place 15"
    assert O.normalise("pi is 3.14.") == "pi is 3.14"


def test_dates_oracle():
    got = [
        (d.day, d.month, d.year) for d in O.dates("23-Oct-18 and October 23, 2018 and 2018-10-23")
    ]
    assert got == [(23, 10, 18), (23, 10, 2018), (23, 10, 2018)]
    gold = O.dates("23-Oct-18")[0]
    assert gold.two_digit_year
    assert gold.matches(O.dates("on October 23rd, 2018")[0])
    assert not gold.matches(O.dates("on October 24, 2018")[0])
    assert O.dates("Apr-98")[0].matches(O.dates("in April 1998")[0])
    assert O.dates("8-Jan")[0].matches(O.dates("January 8, 2019")[0])


def test_numbers_oracle():
    assert O.numbers("about 1,000 acres, three times, 2.5 km") == [1000.0, 3.0, 2.5]


def test_answer_part_strips_echoed_question():
    q = "Who won the 2010 prize?"
    text = f"Question: {q}\nAnswer and explanation: **Michio Sugeno** won it."
    assert O.answer_part(q, text) == "**Michio Sugeno** won it."


def test_features_oracle():
    q = "When was X born?"
    f, why = O.features(q, "23-Oct-18", f"{q}\nX was born on **October 23, 2018** in Paris.")
    assert why == []
    assert f["date_match"] == 1.0 and f["date_conflict"] == 0.0 and f["match_any"] == 1.0
    f, _ = O.features(q, "23-Oct-18", f"{q}\nX was born on October 24, 2018.")
    assert f["date_match"] == 0.0 and f["date_conflict"] == 1.0
    f, _ = O.features("How many acres?", "168", "How many acres?\nIt bought 1,000 acres.")
    assert (
        f["number_match"] == 0.0 and f["number_conflict"] == 1.0 and f["first_number_match"] == 0.0
    )
    f, _ = O.features("How many?", "three", "How many?\n3 of them, not 4.")
    assert f["number_match"] == 1.0 and f["first_number_match"] == 1.0
    f, _ = O.features("Who?", "The Coast Guard", "Who?\nIt was the U.S. coast guard, then others.")
    assert f["contain"] == 1.0 and f["contain_early"] == 1.0 and f["gold_recall"] == 1.0
    assert f["fuzzy"] == 1.0
    f, _ = O.features("Who?", "Michio Sugeno", "Who?\nMichio Sugeni")
    assert f["contain"] == 0.0 and f["gold_recall"] == 0.5 and 0.9 < f["fuzzy"] < 1.0
    f, _ = O.features("Q?", "Paris", "Q?\nbass bass bass bass bass")
    assert f["repetition"] == pytest.approx(1 - 1 / 3)
    assert f["distinct_words"] == pytest.approx(1 / 5)
    f, _ = O.features("Q?", "Paris", "Q?\nI don't know, possibly Lyon.")
    assert f["refusal"] == 1.0 and f["hedge"] == 1.0
    assert list(f) == list(O.FEATURES)
