"""fsnn.judges.offline.model: the shipped calibration, its checks, the ordinal model's decoding."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fsnn.judges import offline as O


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


def test_ordinal_probs_and_decoding_oracles():
    # one cut at 0 between two classes: P(grade 1) = sigmoid(0 - z)
    p = O.ordinal_probs(np.array([0.0, np.log(3.0)]), np.array([0.0]))
    np.testing.assert_allclose(p, [[0.5, 0.5], [0.25, 0.75]])
    probs = np.array(
        [[0.1, 0.3, 0.2, 0.2, 0.2], [0.6, 0.1, 0.1, 0.1, 0.1], [0.0, 0.0, 0.5, 0.0, 0.5]]
    )
    # median: the largest k with P(grade >= k) >= 1/2; expected: E[grade] rounded half up
    assert O.median_grade(probs).tolist() == [3, 1, 5]  # P(grade >= 5) = 1/2 in the last row
    assert O.decode_grades(probs, "median").tolist() == [3, 1, 5]
    assert O.decode_grades(probs, "expected").tolist() == [3, 2, 4]  # 3.1, 2.0, 4.0
    from fsnn.errors import FsnnError

    with pytest.raises(FsnnError, match="decode rule"):
        O.decode_grades(probs, "mode")
