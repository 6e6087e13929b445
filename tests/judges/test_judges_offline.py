"""The offline judge: features, calibration file, split leak, bad input, no network, CLI JSON."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fsnn.judges import make_judge
from fsnn.judges import offline as O


@pytest.fixture(scope="module")
def release():
    folder = os.environ.get("FSNN_RELEASE_DIR")
    if not folder or not Path(folder).is_dir():
        pytest.skip("FSNN_RELEASE_DIR is not set (CI sets it to the shared release folder)")
    return folder


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network use in an offline test")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


# --------------------------------------------------------------------------- features


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


# --------------------------------------------------------------------------- calibration


def test_shipped_calibration_loads_and_round_trips(tmp_path):
    cal = O.load_calibration()
    assert cal.judge_id == f"offline-{cal.version}"
    assert cal.features == O.FEATURES
    path = tmp_path / "cal.json"
    cal.save(path)
    again = O.load_calibration(path)
    assert again == cal
    assert json.loads(path.read_text())["coef"] == list(cal.coef)


def test_bad_calibration_is_a_clear_error(tmp_path):
    from fsnn.errors import FsnnError

    data = O.load_calibration().to_dict()
    data["cuts"] = [1, 0, 2, 3]
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(FsnnError, match="cuts"):
        O.load_calibration(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(FsnnError, match="calibration"):
        O.load_calibration(tmp_path / "broken.json")


def test_fit_ordinal_recovers_order():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2))
    z = 2.0 * x[:, 0]
    y = 1 + np.searchsorted(np.array([-2.0, -0.5, 0.5, 2.0]), z + rng.logistic(size=400))
    coef, cuts = O.fit_ordinal(x, y, l2=1e-4)
    assert coef[0] > 1.0 and abs(coef[1]) < 0.5
    assert np.all(np.diff(cuts) > 0)
    probs = O.ordinal_probs(x @ coef, cuts)
    assert np.allclose(probs.sum(1), 1.0)


def test_split_is_by_prompt_and_deterministic():
    train, held = O.split_prompts()
    assert (train, held) == O.split_prompts()
    assert not set(train) & set(held)
    assert sorted(train + held) == list(range(O.N_PROMPTS))
    cal = O.load_calibration()
    assert list(cal.train_prompts) == train
    assert not set(cal.train_prompts) & set(held)


def test_no_heldout_row_reaches_the_fit(release):
    """Refit with every held-out grade scrambled: the coefficients must not move."""
    from fsnn.analysis.release_grades import graded_rows

    cal = O.load_calibration()
    rows = graded_rows(release)
    held = ~rows.prompt_id.isin(set(cal.train_prompts))
    scrambled = rows.copy()
    rng = np.random.default_rng(1)
    scrambled.loc[held, "mistral_score"] = rng.integers(1, 6, int(held.sum()))
    scrambled.loc[held, "predicted"] = "garbage " * 5
    refit = O.fit_calibration(
        scrambled, train_prompts=cal.train_prompts, l2=cal.l2, decode=cal.decode
    )
    # against a fit of the unscrambled rows in this same environment: the shipped
    # coefficients agree only to the optimiser's tolerance across library versions
    clean = O.fit_calibration(rows, train_prompts=cal.train_prompts, l2=cal.l2, decode=cal.decode)
    np.testing.assert_array_equal(refit.coef, clean.coef)
    np.testing.assert_array_equal(refit.cuts, clean.cuts)
    np.testing.assert_allclose(clean.coef, cal.coef, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(refit.mean, cal.mean, rtol=1e-9, atol=1e-12)
    assert refit.simpleqa_correct == cal.simpleqa_correct


# --------------------------------------------------------------------------- the judge


def test_judge_grades_without_network(no_network):
    judge = make_judge("offline")
    assert judge.id == O.load_calibration().judge_id
    items = [
        ("Capital of France?", "Paris", "Capital of France?\nThe capital is **Paris**."),
        ("Capital of France?", "Paris", "Capital of France?\n,,,,,,,,,, ji ji ji ji ji ji ji"),
    ]
    q = judge.grade_quality(items)
    assert [g.judge_id for g in q] == [judge.id] * 2
    assert all(g.value in (1, 2, 3, 4, 5) for g in q)
    assert q[0].expected > q[1].expected  # the right answer ranks above the garbage
    assert sum(q[0].probs.values()) == pytest.approx(1.0)
    s = judge.grade_simpleqa(items)
    assert all(g.value in ("CORRECT", "INCORRECT", "NOT_ATTEMPTED") for g in s)


def test_bad_input_gives_a_grade_with_a_reason(no_network):
    judge = make_judge("offline")
    long_answer = "word " * 12_000
    items = [
        ("Q?", "Paris", ""),
        ("Q?", "Paris", b"Q?\n\xff\xfe Paris"),
        ("Q?", "Paris", long_answer),
        ("Q?", "Paris", None),
        ("Q?", "", "Q?\nParis"),
    ]
    q = judge.grade_quality(items)
    assert all(g.value in (1, 2, 3, 4, 5) for g in q)
    assert q[0].value == 1 and "empty answer" in q[0].notes
    assert "UTF-8" in q[1].notes
    assert "truncated" in q[2].notes
    assert "missing text" in q[3].notes
    s = judge.grade_simpleqa(items)
    assert s[0].value == "NOT_ATTEMPTED" and "empty answer" in s[0].notes


def test_bad_item_shape_is_a_grade_not_a_crash():
    judge = make_judge("offline")
    (g,) = judge.grade_quality([("only two", "fields")])
    assert g.value == 1 and "triple" in g.notes


# --------------------------------------------------------------------------- CLI


def test_cli_heldout_json_keys(release, tmp_path):
    env = {**os.environ, "FSNN_RELEASE_DIR": release, "PYTHONPATH": str(Path(__file__).parents[2])}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "fsnn",
            "judge-agreement",
            "--judge",
            "offline",
            "--split",
            "heldout",
            "--json",
            "--no-cache",
            "--n-boot",
            "50",
            "--out",
            str(tmp_path / "rep"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=True,
    )
    report = json.loads(out.stdout)
    table = report["table"]
    for key in ("spearman", "kappa", "exact", "within_1"):
        assert set(table[key]) == {"value", "ci95"}
    for method in ("baseline", "full", "segmented"):
        for key in ("composite_offline", "composite_reference"):
            lo, hi = table[method][key]["ci95"]
            assert lo <= table[method][key]["value"] <= hi
    held = set(range(260)) - set(O.load_calibration().train_prompts)
    assert table["n_prompts"] == len(held)
    assert set(report["table"]["baselines"]) == {"always_2", "containment_only"}
    assert (tmp_path / "rep.json").is_file()
    for method in ("baseline", "full", "segmented"):
        m = table[method]
        assert m["verdicts_agree_where_grade_decides"] <= m["n_grade_decides"] <= m["n_prompts"]
    assert report["simpleqa"]["heldout_incorrect_csv"]["n"] == len(held)

    from fsnn.analysis.judge_agreement import split_markdown

    md = split_markdown(report).splitlines()
    assert len(md) == 2 + 1 + 1 + 2  # header, Mistral, the judge, two baselines
    assert md[3].startswith(f"| `{report['judge_id']}` |")
