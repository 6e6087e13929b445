"""fsnn.store.schema: the string arrays, baseline.nc's layout, and the dims each file kind needs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr

from fsnn.errors import FsnnError
from fsnn.store.files import check_dims, read_dataset, write_dataset
from fsnn.store.schema import REQUIRED, baseline_dataset, str_array


def test_str_array_makes_python_str_and_blanks_missing():
    arr = str_array([["a", None], [math.nan, 3]])
    assert arr.dtype == object and arr.shape == (2, 2)
    assert arr.tolist() == [["a", ""], ["", "3"]]
    assert all(type(v) is str for v in arr.ravel())
    assert str_array([]).shape == (0,)


ROWS = [
    {
        "completion": "Paris.",
        "text": "Q? Paris.",
        "grade": "CORRECT",
        "grade_source": "proxy:containment",
        "token_overlap": 1.0,
        "simpleqa_id": 7,
        "question": "Q?",
        "answer": "Paris",
        "topic": "Geo",
    },
    {
        "completion": "",
        "text": "Q2?",
        "grade": "NOT_ATTEMPTED",
        "grade_source": "local:x",
        "token_overlap": 0.0,
        "simpleqa_id": 9,
        "question": "Q2?",
        "answer": "Rome",
    },  # no topic
]


def test_baseline_dataset_layout_and_round_trip(tmp_path):
    ds = baseline_dataset(ROWS, {"model": "m"})
    assert dict(ds.sizes) == {"prompt": 2}
    assert set(ds.data_vars) == {"completion", "text", "grade", "grade_source", "token_overlap"}
    assert ds["prompt"].values.tolist() == [0, 1]
    assert ds["simpleqa_id"].dtype == np.int64 and ds["simpleqa_id"].values.tolist() == [7, 9]
    assert ds["topic"].values.tolist() == ["Geo", ""]  # a missing key is ""
    assert ds["token_overlap"].values.tolist() == [1.0, 0.0]
    assert ds.attrs == {"model": "m"}
    write_dataset(ds, tmp_path / "baseline.nc")
    back = read_dataset(tmp_path / "baseline.nc")
    assert back["completion"].values.tolist() == ["Paris.", ""]
    assert back["grade_source"].values.tolist() == ["proxy:containment", "local:x"]


@pytest.mark.parametrize("kind", sorted(REQUIRED))
def test_required_dims_are_checked(kind):
    good = xr.Dataset(
        {name: (dims, np.zeros((1,) * len(dims))) for name, dims in REQUIRED[kind].items()}
    )
    check_dims(good, kind)  # the schema's own shape passes
    name, dims = next(iter(REQUIRED[kind].items()))
    with pytest.raises(FsnnError, match=rf"not a {kind} file, variable '{name}' is missing"):
        check_dims(good.drop_vars(name), kind, "f.nc")
    bad = good.assign(
        {name: (tuple(reversed(dims)) + ("extra",), np.zeros((1,) * (len(dims) + 1)))}
    )
    with pytest.raises(FsnnError, match=rf"variable '{name}' has dims"):
        check_dims(bad, kind)


def test_results_need_every_per_method_score():
    assert REQUIRED["results"] == {
        name: ("method", "prompt")
        for name in ("token_overlap", "completion", "judge_score", "simpleqa_grade", "composite")
    }
