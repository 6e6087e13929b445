"""The one summary: rates with intervals, denominators, judge failures, readable, JSON = table."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from run_fixtures import make_results

from fsnn.analysis.summary import format_summary, summarize, summary_table, write_summary
from fsnn.judges.scoring import COMPOSITE_THRESHOLD, TOKEN_OVERLAP_THRESHOLD

TO_KEY = f"token_overlap_ge_{TOKEN_OVERLAP_THRESHOLD:g}"
COMP_KEY = f"composite_ge_{COMPOSITE_THRESHOLD:g}"


def _by_method(summary):
    return {e["method"]: e for e in summary["methods"]}


def test_rates_counts_and_intervals_match_a_hand_count():
    to = np.array([[0, 0, 0, 1, 0, 0], [1, 1, 0, 1, 0, 1], [1, 1, 1, 1, 1, 1]], float)
    s = _by_method(summarize(make_results(to=to)))
    for m, k in (("baseline", 1), ("full", 4), ("segmented", 6)):
        r = s[m]["rates"][TO_KEY]
        assert (r["k"], r["n"]) == (k, 6)
        assert r["estimate"] == pytest.approx(k / 6)
        assert r["low"] <= r["estimate"] <= r["high"]
    assert (s["segmented"]["rates"][TO_KEY]["low"], s["segmented"]["rates"][TO_KEY]["high"]) == (
        1.0,
        1.0,
    )
    d = s["segmented"]["vs_baseline"][TO_KEY]
    assert d["estimate"] == pytest.approx(5 / 6)
    assert (d["better"], d["worse"]) == (5, 0)
    assert d["mcnemar_p"] == pytest.approx(2 / 2**5)  # exact: 2 * P[Binom(5, .5) <= 0]
    assert s["baseline"]["vs_baseline"] is None


def test_judge_missing_exclude_drops_prompts_from_the_composite_denominator():
    """Issue 12 defect: with exclude, a NaN judge score stayed in the denominator (k/6, not k/5)."""
    to = np.ones((3, 6))
    judge = np.full((3, 6), 5.0)
    judge[1, 0] = np.nan  # full: one prompt without a judge score
    excl = _by_method(summarize(make_results(to=to, judge=judge, judge_missing="exclude")))["full"]
    assert (excl["rates"][COMP_KEY]["k"], excl["rates"][COMP_KEY]["n"]) == (5, 5)
    assert excl["rates"][COMP_KEY]["estimate"] == 1.0
    assert excl["rates"]["judge_ge_4"]["n"] == 5
    assert excl["judge_missing"] == 1
    zero = _by_method(summarize(make_results(to=to, judge=judge, judge_missing="zero")))["full"]
    # the release's rule: 0.5 * TO + 0 < 0.6, a failure that stays in the denominator
    assert (zero["rates"][COMP_KEY]["k"], zero["rates"][COMP_KEY]["n"]) == (5, 6)
    assert zero["rates"]["judge_ge_4"]["n"] == 6


def test_failed_judge_calls_are_counted_and_shown():
    """Issue 12 defect: a failed judge call left a question without trace; now counted and named."""
    judge = np.full((3, 6), 4.0)
    errors = np.full((3, 6), "", dtype=object)
    judge[2, [1, 4]] = np.nan
    errors[2, [1, 4]] = "HTTP 503 after 3 tries"
    res = make_results(judge=judge, judge_error=errors, judge_missing="exclude")
    s = _by_method(summarize(res))
    assert [s[m]["judge_failures"] for m in ("baseline", "full", "segmented")] == [0, 0, 2]
    assert s["segmented"]["rates"][COMP_KEY]["n"] == 4
    text = format_summary(res)
    assert "segmented: 2 judge failures (left out of" in text
    assert "judge failures" in text.splitlines()[9]  # a row of the main table too


def test_readable_rate_comes_first_and_is_optional():
    to = np.array([[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], float)
    readable = np.array([[1, 0, 1, 1, 1, 1], [1, 1, 0, 0, 1, 1], [1, 1, 1, 1, 1, 0]])
    s = summarize(make_results(to=to, readable=readable))
    keys = [m["key"] for m in s["metrics"]]
    assert keys[:4] == ["states_answer", f"readable_{TO_KEY}", "mean_token_overlap", TO_KEY]
    rates = {e["method"]: e["rates"][f"readable_{TO_KEY}"]["k"] for e in s["methods"]}
    assert rates == {"baseline": 1, "full": 2, "segmented": 5}
    labels = [line.split("  ")[0] for line in format_summary(s).splitlines()]
    assert labels[3:7] == [
        "states the answer",
        "TO >= 0.5 & readable",
        "mean TO",
        "TO >= 0.5",
    ]  # after header, rule, prompts
    plain = summarize(make_results(to=to))
    assert f"readable_{TO_KEY}" not in [m["key"] for m in plain["metrics"]]
    assert "readable" not in format_summary(plain)


def test_unjudged_run_says_n_a_not_zero():
    s = _by_method(summarize(make_results(judged=False)))
    assert s["full"]["rates"][COMP_KEY] is None and s["full"]["rates"]["judge_ge_4"] is None
    assert s["full"]["judge_missing"] is None
    assert "n/a" in format_summary(make_results(judged=False))
    assert "no judge" in summary_table(make_results(judged=False))


def test_json_holds_the_table_numbers(tmp_path):
    res = make_results(n=8, seed=5)
    s = write_summary(res, tmp_path)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved == json.loads(json.dumps(s))
    md = (tmp_path / "summary.md").read_text()
    for e in saved["methods"]:
        r = e["rates"][COMP_KEY]
        cell = (
            f"{r['k']} ({100 * r['estimate']:.1f}%) [{100 * r['low']:.1f}, {100 * r['high']:.1f}]"
        )
        assert cell in md
    assert summarize(res) == s  # seeded: the same numbers every time


def test_release_summary_keeps_the_paper_numbers_with_intervals():
    folder = os.environ.get("FSNN_RELEASE_DIR")
    if not folder:
        pytest.skip("FSNN_RELEASE_DIR is not set")
    from fsnn.analysis.release import import_release

    res = import_release(folder).results
    s = _by_method(summarize(res))
    assert [s[m]["rates"][COMP_KEY]["k"] for m in ("baseline", "full", "segmented")] == [9, 42, 66]
    seg = s["segmented"]["vs_baseline"][COMP_KEY]
    assert seg["low"] > 0 and seg["mcnemar_p"] < 1e-4  # the paper's gain is not noise
    assert "66 (25.4%) [" in format_summary(res)


def test_json_holds_a_wilson_cross_check_where_the_bootstrap_collapses():
    to = np.array([[0, 0, 0, 0, 0, 0], [1, 1, 0, 1, 0, 1], [1, 1, 1, 1, 1, 1]], float)
    res = make_results(to=to)
    s = _by_method(summarize(res))
    base = s["baseline"]["rates"][TO_KEY]
    assert (base["low"], base["high"]) == (0.0, 0.0)
    assert base["wilson"][0] == pytest.approx(0.0, abs=1e-12) and 0.3 < base["wilson"][1] < 0.5
    assert "its Wilson interval is in summary.json" in format_summary(res)


def test_states_the_answer_leads_and_is_read_from_the_completions():
    """The fixture's completion names the gold answer exactly where TO >= 0.5 ("full says
    Canberra because ..."), and says "something else" elsewhere: the headline rate is the
    share of those prompts, computed from the stored text (no variable holds it)."""
    to = np.array([[1, 0, 0, 0, 0, 0], [1, 1, 0.25, 1, 0, 0], [1, 1, 1, 1, 1, 0.5]], float)
    res = make_results(to=to)
    assert "states_answer" not in res
    s = summarize(res)
    assert s["metrics"][0] == {"key": "states_answer", "label": "states the answer"}
    got = {
        e["method"]: (e["rates"]["states_answer"]["k"], e["rates"]["states_answer"]["n"])
        for e in s["methods"]
    }
    assert got == {"baseline": (1, 6), "full": (3, 6), "segmented": (6, 6)}
    # an echo of the question is not an answer: replace one hit by the question's own words
    comp = res.completion.values.copy()
    comp[1, 0] = "full says the IEEE Frank Rosenblatt Award in 2010."
    res["completion"] = (("method", "prompt"), comp)
    assert _by_method(summarize(res))["full"]["rates"]["states_answer"]["k"] == 2
