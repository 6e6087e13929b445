"""fsnn.store.schema: the string arrays, each run file's builder, and the dims each file kind needs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr

from fsnn.errors import FsnnError
from fsnn.store.files import check_dims, read_dataset, write_dataset
from fsnn.store.schema import (
    REQUIRED,
    RESULTS_DIMS,
    SEARCH_TRIAL_DIMS,
    baseline_dataset,
    references_dataset,
    results_dataset,
    search_trials_dataset,
    str_array,
    trials_dataset,
)


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


def _search_columns(n: int, t: int, seg: int, layers: int, params: int) -> dict:
    shapes = {("prompt",): (n,), ("prompt", "trial"): (n, t)}
    shapes |= {
        ("prompt", "trial", "segment"): (n, t, seg),
        ("prompt", "trial", "layer"): (n, t, layers),
        ("prompt", "trial", "param"): (n, t, params),
    }
    cols = {k: np.zeros(shapes[d]) for k, d in SEARCH_TRIAL_DIMS.items()}
    cols["completion"] = str_array(np.full((n, t), "done", dtype=object))
    cols["text"] = str_array(np.full((n, t), "Q? done", dtype=object))
    return cols


def test_search_trials_and_trials_file_layout(tmp_path):
    one = search_trials_dataset(
        _search_columns(2, 3, 1, 4, 1),
        prompt_keys=["7", "9"],
        n_trials=3,
        segments=["all"],
        params=["s"],
        n_layers=4,
        attrs={"layout": "full"},
    )
    assert list(one.data_vars) == list(SEARCH_TRIAL_DIMS)  # the file's variable order
    two = search_trials_dataset(
        _search_columns(2, 3, 2, 4, 2),
        prompt_keys=["7", "9"],
        n_trials=3,
        segments=["a", "b"],
        params=["s_a", "s_b"],
        n_layers=4,
        attrs={},
    )
    for ds in (one, two):
        ds["completion"] = ds.completion.where(False)  # as if no trial finished
    trials = trials_dataset(
        {"full": one, "segmented": two},
        simpleqa_id=np.array([7, 9]),
        question=str_array(["Q?", "Q2?"]),
        answer=str_array(["Paris", "Rome"]),
        attrs={"model": "m"},
    )
    assert trials.method.values.tolist() == ["full", "segmented"]
    assert dict(trials.sizes) == {
        "method": 2,
        "prompt": 2,
        "trial": 3,
        "segment": 3,
        "layer": 4,
        "param": 3,
    }
    # outer join: a method has NaN for the other's segments; missing texts become ""
    assert np.isnan(trials.alpha.sel({"method": "full", "segment": "a"})).all()
    assert trials.completion.values.ravel().tolist() == [""] * 12
    assert trials.attrs == {"model": "m"}
    write_dataset(trials, tmp_path / "trials.nc")
    check_dims(read_dataset(tmp_path / "trials.nc"), "trials")


def test_run_file_builders_refuse_a_wrong_column_set():
    cols = _search_columns(1, 1, 1, 1, 1)
    del cols["objective"]
    with pytest.raises(ValueError, match=r"missing \['objective'\]"):
        search_trials_dataset(
            cols,
            prompt_keys=["1"],
            n_trials=1,
            segments=["all"],
            params=["s"],
            n_layers=1,
            attrs={},
        )
    with pytest.raises(ValueError, match=r"unexpected \['extra'\]"):
        results_dataset(
            {**{k: np.zeros((1, 1, 1)[: len(d)]) for k, d in RESULTS_DIMS.items()}, "extra": 0},
            methods=["baseline"],
            segments=["all"],
            question=["Q?"],
            answer=["A"],
            topic=[""],
            simpleqa_id=[1],
            attrs={},
        )


def test_references_dataset_layout():
    h = xr.DataArray(np.ones((2, 3, 4), np.float32), dims=("prompt", "layer", "hidden"))
    ds = references_dataset(
        h,
        explanations=["e1", None],
        enrichment_raw=["r1", "r2"],
        simpleqa_id=[7, 9],
        question=["Q?", "Q2?"],
        answer=["Paris", "Rome"],
        attrs={"model": "m"},
    )
    check_dims(ds, "references")
    assert ds.explanation.values.tolist() == ["e1", ""]
    assert ds.simpleqa_id.dtype == np.int64 and ds.attrs == {"model": "m"}


def test_package_files_use_the_one_dimension_vocabulary(tmp_path):
    """A file carrying ``fsnn_schema`` with a dimension outside DIMENSIONS is refused,
    before anything is written; other files (a study's own summaries) are not checked."""
    from fsnn.store.schema import DIMENSIONS

    assert {"prompt", "method", "trial", "segment", "layer", "row", "simpleqa_id"} <= set(
        DIMENSIONS
    )
    odd = xr.Dataset({"x": (("prompts",), np.zeros(2))}, attrs={"fsnn_schema": "results/3"})
    with pytest.raises(FsnnError, match=r"dimension\(s\) \['prompts'\] are not in"):
        write_dataset(odd, tmp_path / "odd.nc")
    assert not (tmp_path / "odd.nc").exists()
    write_dataset(odd.rename(prompts="prompt"), tmp_path / "ok.nc")
    odd.attrs = {}
    write_dataset(odd, tmp_path / "study.nc")  # not a package file: free names
