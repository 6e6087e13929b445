"""fsnn.judges.scoring: thresholds, the composite S_eval (eq. 7), answer normalisation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fsnn.judges import offline, scoring
from fsnn.search import label_free

# (text, the SimpleQA containment rule, the offline judge's value rule), recorded from the
# three copies of the rule before they became one function (issue 23)
CASES = [
    ("", "", ""),
    ("   ", "", ""),
    ("The Eiffel Tower", "eiffel tower", "eiffel tower"),
    ("AN apple a day", "apple day", "apple day"),
    ("the the the", "", ""),
    ("Théâtre", "théâtre", "théâtre"),
    ("a.b.c", "abc", "b c"),
    ("U.S.A.", "usa", "u s"),
    ("don't", "dont", "don t"),
    ("Rock-'n'-roll", "rocknroll", "rock n roll"),
    ("1,000 acres", "1000 acres", "1000 acres"),
    ("1,000,000", "1000000", "1000000"),
    ("12,34", "1234", "12 34"),
    ("3.14", "314", "3.14"),
    ("v2.0.", "v20", "v2.0"),
    ("end.", "end", "end"),
    (".5", "5", "5"),
    ("Twenty-three", "twentythree", "23"),
    ("twenty three", "twenty three", "23"),
    ("fifteenth", "fifteenth", "15"),
    ("the 21st century", "21st century", "21 century"),
    ("2nd", "2nd", "2"),
    ("First Lady", "first lady", "1 lady"),
    ("zero", "zero", "0"),
    ("ninety-nine", "ninetynine", "99"),
    ("nineteen ninety", "nineteen ninety", "19 90"),
    ("ﬁve", "ﬁve", "5"),
    ("ＡＢＣ １２", "ａｂｃ １２", "abc 12"),
    ("snake_case_name", "snakecasename", "snake case name"),
    ("—the answer—", "— answer—", "answer"),
    ("«Paris»", "«paris»", "paris"),
    ("Hello,\tworld!\n", "hello world", "hello world"),
    ("A\xa0B", "b", "b"),
    ("café au lait", "café au lait", "café au lait"),
    ("ß", "ß", "ß"),
    ("İstanbul", "i̇stanbul", "i stanbul"),
    ("x=y+z", "xyz", "x y z"),
    ("(a) option", "option", "option"),
    ("Théa's", "théas", "théa s"),
    ("ONE", "one", "1"),
    ("One-third", "onethird", "1 3"),
    ("$1,234.56", "123456", "1234.56"),
    ("50%", "50", "50"),
    ("3rd-party", "3rdparty", "3 party"),
    ("an", "", ""),
    ("Anne", "anne", "anne"),
    ("them", "them", "them"),
    ("12th-century", "12thcentury", "12 century"),
    ("e.g.", "eg", "e g"),
]


@pytest.mark.parametrize(("text", "plain", "values"), CASES)
def test_normalisation_is_pinned(text, plain, values):
    assert scoring.normalise_answer(text) == plain
    assert scoring.normalise_answer(text, values=True) == values
    assert offline.normalise(text) == values  # the offline judge's name for its rule


def test_the_users_of_the_plain_rule():
    # the self-consistency vote groups answers by the plain rule
    assert (
        label_free.majority_answer(["The Eiffel tower.", "Paris", "eiffel Tower!", "paris"])
        == "The Eiffel tower."
    )
    assert label_free.majority_answer(["", " the ", "a"]) == ""
    # proxy_grade: whole normalised words of the answer inside the completion
    assert scoring.proxy_grade("U.S.A.", "It is the USA, of course") == "CORRECT"
    assert scoring.proxy_grade("Paris", "Parisian food") == "INCORRECT"
    assert scoring.proxy_grade("Paris", " !? ") == "NOT_ATTEMPTED"
    assert (
        scoring.proxy_grade("The", "the answer") == "INCORRECT"
    )  # an empty answer matches nothing


def test_thresholds_and_the_weights_of_eq_7():
    assert (
        scoring.COMPOSITE_THRESHOLD,
        scoring.TOKEN_OVERLAP_THRESHOLD,
        scoring.JUDGE_THRESHOLD,
    ) == (0.6, 0.5, 4)
    assert (scoring.W_TO, scoring.W_JUDGE, scoring.JUDGE_MAX) == (0.5, 0.5, 5.0)
    assert scoring.COMPOSITE_FORMULA == "0.5*TO + 0.5*judge/5"


def test_composite_exact_values_and_the_threshold_edge():
    # S_eval = 0.5 TO + 0.5 judge / 5; a missing judge counts 0 (the release) or gives NaN
    s = scoring.composite([1.0, 0.5, 0.0, 0.25], [5, 4, None, float("nan")])
    assert s.tolist() == [1.0, 0.65, 0.0, 0.125]
    assert math.isnan(scoring.composite([0.5], [None], missing="exclude")[0])
    # the edge: TO 0.2 with grade 5 is exactly 0.6, which counts as accurate
    assert scoring.composite([0.2], [5]).tolist() == [0.6]
    assert scoring.accurate([0.6, 0.5999999, math.nan]).tolist() == [True, False, False]
    assert scoring.composite_accuracy([1.0, 0.0], [5, 1]) == 0.5
    assert math.isnan(scoring.composite_accuracy([1.0], [None], missing="exclude"))
    with pytest.raises(ValueError, match="missing must be"):
        scoring.composite([1.0], [5], missing="drop")
    assert scoring.composite(np.ones((2, 3)), np.full((2, 3), 5.0)).shape == (2, 3)
