"""fsnn.judges.offline: the judge (a Judge, no network, bad input), its CLI report, its names."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fsnn.judges import Judge, make_judge
from fsnn.judges import offline as O

# every top-level name of the single module fsnn/judges/offline.py before it became a folder
FORMER_NAMES = (
    "CALIBRATION_FILE",
    "MAX_CHARS",
    "FEATURES",
    "_MONTHS",
    "_MONTH_RE",
    "_HEDGES",
    "_LABELS",
    "_REFUSALS",
    "_to_text",
    "normalise",
    "answer_part",
    "numbers",
    "_Date",
    "dates",
    "_phrase_in",
    "_fuzzy",
    "_count_phrases",
    "_features_cached",
    "features",
    "feature_matrix",
    "_sigmoid",
    "ordinal_probs",
    "fit_ordinal",
    "DECODES",
    "decode_grades",
    "median_grade",
    "Calibration",
    "load_calibration",
    "OfflineConfig",
    "OfflineJudge",
    "N_PROMPTS",
    "SPLIT_SEED",
    "TRAIN_FRACTION",
    "L2_GRID",
    "CV_FOLDS",
    "split_prompts",
    "_standardise",
    "_folds",
    "_fit_fold",
    "_predict",
    "cross_validate",
    "fit_calibration",
)


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


def test_every_former_name_imports():
    missing = [name for name in FORMER_NAMES if not hasattr(O, name)]
    assert missing == []
    assert set(O.__all__) <= set(FORMER_NAMES)


def test_the_offline_judge_is_a_judge():
    judge = make_judge("offline", cache=None)
    assert isinstance(judge, Judge) and isinstance(judge, O.OfflineJudge)
    assert repr(judge) == f"OfflineJudge(id={judge.id!r})" and judge.cache is None
    assert judge.config.to_dict() == {"backend": "offline", "calibration": None}
    judge.grade_quality([("Q?", "Paris", "Paris")])
    assert judge.stats["answered"] == 1 and judge.stats["failed"] == 0


def test_a_judge_must_answer_prompts_or_grade_items():
    class Nothing(Judge):
        pass

    with pytest.raises(TypeError, match="_answer, or grade_simpleqa and grade_quality"):
        Nothing(O.OfflineConfig(), judge_id="x")


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


def test_cli_heldout_json_keys(release, tmp_path):
    env = {**os.environ, "FSNN_RELEASE_DIR": release, "PYTHONPATH": str(Path(__file__).parents[3])}
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
