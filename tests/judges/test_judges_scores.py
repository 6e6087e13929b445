"""Scores (composite S_eval, SimpleQA metrics), parsing, prompts and the answer cache."""

from __future__ import annotations

import math
import os
import threading

import numpy as np
import pytest

from fsnn.judges import (
    JudgeCache,
    accurate,
    composite,
    composite_accuracy,
    parse_quality,
    parse_simpleqa,
    prompt_sha256,
    render_quality,
    render_simpleqa,
    scored_texts,
    simpleqa_metrics,
)


def release_dir() -> str:
    value = os.environ.get("FSNN_RELEASE_DIR")
    if not value:
        pytest.skip("FSNN_RELEASE_DIR is not set (CI sets it to the shared release folder)")
    return value


# --------------------------------------------------------------------------- composite


def test_composite_hand_cases():
    to = np.array([1.0, 0.5, 0.2, 0.0, 0.6])
    judge = np.array([5, 4, np.nan, 3, 3])
    s = composite(to, judge)
    np.testing.assert_allclose(s, [1.0, 0.65, 0.1, 0.3, 0.6])
    assert accurate(s).tolist() == [True, True, False, False, True]  # 0.6 is accurate (>=)
    assert composite_accuracy(to, judge) == pytest.approx(3 / 5)
    excluded = composite(to, judge, missing="exclude")
    assert math.isnan(excluded[2]) and excluded[0] == 1.0
    assert composite_accuracy(to, judge, missing="exclude") == pytest.approx(3 / 4)
    # configurable weights and threshold
    np.testing.assert_allclose(composite([1.0], [5], w_to=0.7, w_judge=0.3), [1.0])
    np.testing.assert_allclose(composite([0.0], [2.5], judge_max=5), [0.25])
    assert composite_accuracy(to, judge, threshold=0.65) == pytest.approx(2 / 5)
    assert composite([0.4], [None]).tolist() == [0.2]
    with pytest.raises(ValueError):
        composite(to, judge, missing="drop")


def test_composite_nothing_to_score():
    assert math.isnan(composite_accuracy([0.5], [np.nan], missing="exclude"))


@pytest.mark.parametrize(("method", "expected"), [("baseline", 9), ("full", 42), ("segmented", 66)])
def test_release_composite(method, expected):
    """The composite recomputed from the released CSVs: 9, 42, 66 of 260 (docs/method.md §10)."""
    from fsnn.analysis.release_grades import selected_rows

    rows = selected_rows(method, release_dir())
    assert len(rows) == 260 and rows.prompt_id.tolist() == list(range(260))
    s = composite(rows.token_overlap, rows.judge_score, missing="zero")
    assert int(accurate(s, 0.6).sum()) == expected
    if method == "segmented":
        assert (~rows.matched).sum() == 1 and rows.loc[~rows.matched, "prompt_id"].item() == 66


def test_release_token_overlap_matches_released_values():
    import pandas as pd

    from fsnn.analysis.release_grades import selected_rows

    folder = release_dir()
    for method in ("full", "segmented"):
        rows = selected_rows(method, folder)
        summary = pd.read_csv(f"{folder}/per_prompt_optuna_summary_{method}.csv")
        summary = summary.sort_values("prompt_idx")
        np.testing.assert_allclose(rows.token_overlap, summary.token_overlap.to_numpy(), atol=1e-4)


def test_release_graded_rows():
    from fsnn.analysis.release_grades import graded_rows

    rows = graded_rows(release_dir())
    assert len(rows) == 1045
    assert rows.groupby("method").size().to_dict() == {
        "baseline": 260,
        "full": 260,
        "segmented": 525,
    }
    assert set(rows.mistral_score) == {1, 2, 3, 4, 5}
    seg = rows[rows.method == "segmented"]
    assert seg.prompt_id.nunique() == 260 and seg.groupby("prompt_id").size().max() == 5


def test_release_dir_errors(tmp_path, monkeypatch):
    from fsnn.analysis.release_grades import release_dir as find
    from fsnn.errors import FsnnError

    monkeypatch.delenv("FSNN_RELEASE_DIR", raising=False)
    with pytest.raises(FsnnError, match="FSNN_RELEASE_DIR"):
        find()
    with pytest.raises(FsnnError, match="mistral_grader_results_baseline"):
        find(tmp_path)


# --------------------------------------------------------------------------- SimpleQA


def test_simpleqa_metrics_hand_case():
    grades = ["CORRECT"] * 3 + ["INCORRECT"] * 5 + ["NOT_ATTEMPTED"] * 2 + [None, ""]
    m = simpleqa_metrics(grades)
    assert m.n == 10 and m.n_missing == 2
    assert (m.correct, m.incorrect, m.not_attempted) == (0.3, 0.5, 0.2)
    assert m.given_attempted == pytest.approx(0.8)
    assert m.accuracy_given_attempted == pytest.approx(3 / 8)
    # simple-evals: f1 = 2 * acc_given_attempted * correct / (acc_given_attempted + correct)
    assert m.f1 == pytest.approx(2 * 0.375 * 0.3 / (0.375 + 0.3))
    m2 = simpleqa_metrics(grades, missing="not_attempted")
    assert m2.n == 12 and m2.not_attempted == pytest.approx(4 / 12) and m2.correct == 0.25


def test_simpleqa_metrics_edges():
    none = simpleqa_metrics(["NOT_ATTEMPTED"] * 4)
    assert none.accuracy_given_attempted == 0.0 and none.f1 == 0.0 and none.not_attempted == 1.0
    perfect = simpleqa_metrics(np.array(["CORRECT", "CORRECT"]))
    assert perfect.f1 == 1.0 and perfect.accuracy_given_attempted == 1.0
    empty = simpleqa_metrics([])
    assert empty.n == 0 and empty.f1 == 0.0
    assert simpleqa_metrics([float("nan"), "CORRECT"]).n_missing == 1
    with pytest.raises(ValueError, match="unknown SimpleQA grade"):
        simpleqa_metrics(["RIGHT"])
    assert set(perfect.as_dict()) >= {"correct", "f1", "accuracy_given_attempted"}


def test_scored_texts_parity_switch():
    full, completion = ["Q? A."], [" A."]
    assert scored_texts(full, completion, "full") == ["Q? A."]
    assert scored_texts(full, completion, "completion") == [" A."]
    with pytest.raises(ValueError):
        scored_texts(full, completion, "prompt")


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "grade", "defaulted"),
    [
        ("A", "CORRECT", False),
        ("B", "INCORRECT", False),
        ("C", "NOT_ATTEMPTED", False),
        (" B\n", "INCORRECT", False),
        ("After checking: B", "INCORRECT", False),  # word rule skips the A of "After"
        ("The grade is (A).", "CORRECT", False),
        ("no letter here", "NOT_ATTEMPTED", True),
        ("", "NOT_ATTEMPTED", True),
        ("a b c", "NOT_ATTEMPTED", True),  # lower case is not a grade
    ],
)
def test_parse_simpleqa(text, grade, defaulted):
    parsed = parse_simpleqa(text)
    assert parsed.grade == grade and parsed.defaulted == defaulted


def test_parse_simpleqa_simple_evals_rule():
    # simple-evals: the first capital A/B/C anywhere, even inside a word.
    assert parse_simpleqa("After checking: B", rule="simple-evals").grade == "CORRECT"
    assert parse_simpleqa("Bad. C", rule="simple-evals").grade == "INCORRECT"


@pytest.mark.parametrize(
    ("text", "score", "hallucination", "notes"),
    [
        ("Score: 4\nHallucination: N\nNotes: Right name.", 4, False, "Right name."),
        (
            "**Score:** 2\n**Hallucination:** Yes\n**Notes:** Wrong person.",
            2,
            True,
            "Wrong person.",
        ),
        ("score = 5, hallucination: no", 5, False, ""),
        ("3", 3, None, ""),
        ("Score 1/5", 1, None, ""),
        ("Score: 7", None, None, ""),
        ("Score: 2.5", None, None, ""),
        ("I refuse.", None, None, ""),
        ("", None, None, ""),
    ],
)
def test_parse_quality(text, score, hallucination, notes):
    parsed = parse_quality(text)
    assert parsed.score == score and parsed.hallucination == hallucination and parsed.notes == notes
    assert (parsed.error is None) == (score is not None)


def test_prompts_hold_the_item():
    q, t, p = "Who wrote {x}?", "Ann", "Bob"  # braces in data must survive formatting
    for text in (render_simpleqa(q, t, p), render_quality(q, t, p)):
        assert q in text and t in text and p in text
    assert "A, B or C" in render_simpleqa(q, t, p)
    assert "Score:" in render_quality(q, t, p) and "Hallucination:" in render_quality(q, t, p)


# --------------------------------------------------------------------------- cache


def test_cache_roundtrip_and_counts(tmp_path):
    path = tmp_path / "sub" / "answers.sqlite"
    cache = JudgeCache(path)
    key = prompt_sha256("the full prompt")
    assert cache.get("judge-a", key) is None and cache.stats() == {"hits": 0, "misses": 1}
    cache.put("judge-a", key, "Score: 3", {"probs": {"3": 1.0}}, task="quality")
    assert cache.get("judge-a", key) == ("Score: 3", {"probs": {"3": 1.0}})
    assert cache.get("judge-b", key) is None  # another judge, another key
    assert cache.stats() == {"hits": 1, "misses": 2}
    cache.close()
    reopened = JudgeCache(path)
    assert reopened.get("judge-a", key)[0] == "Score: 3" and len(reopened) == 1
    assert "hits=1" in repr(reopened)


def test_cache_default_location(tmp_path, monkeypatch):
    monkeypatch.setenv("FSNN_CACHE_DIR", str(tmp_path))
    with JudgeCache() as cache:
        assert cache.path == tmp_path / "judges" / "answers.sqlite"


def test_cache_threads(tmp_path):
    cache = JudgeCache(tmp_path / "c.sqlite")

    def work(k: int) -> None:
        for i in range(20):
            cache.put("j", prompt_sha256(f"{k}-{i}"), str(i))
            assert cache.get("j", prompt_sha256(f"{k}-{i}"))[0] == str(i)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 80 and cache.hits == 80
