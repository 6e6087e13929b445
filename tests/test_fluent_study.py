"""experiments/fluent_study.py: the pure pieces, and its --quick shape end to end on SmolLM2."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

import fluent_study as fs  # noqa: E402


def _trials(objective, completions, question="Who painted it?", answer="Ada Lovelace"):
    n, t = np.shape(objective)
    return xr.Dataset(
        {
            "objective": (("prompt", "trial"), np.asarray(objective, dtype=float)),
            "completion": (("prompt", "trial"), np.asarray(completions, dtype=object)),
        },
        coords={
            "question": ("prompt", np.asarray([question] * n, dtype=object)),
            "answer": ("prompt", np.asarray([answer] * n, dtype=object)),
        },
    )


def test_judged_takes_the_search_best_and_the_any_trial_ceiling():
    good = "It was painted by Ada Lovelace in London."
    loop = "Ada Lovelace Ada Lovelace Ada Lovelace Ada Lovelace Ada Lovelace"
    other = "It was painted by a French artist."
    ds = _trials(
        [[0.9, 0.1, 0.5], [0.2, 0.8, np.nan], [np.nan, np.nan, np.nan]],
        [[other, good, loop], [good, loop, ""], ["", "", ""]],
    )
    h = fs.judged(ds, 3)
    assert h["states"].tolist() == [
        0.0,
        0.0,
        0.0,
    ]  # best: other (no answer), loop (unreadable), none
    assert h["any_states"].tolist() == [1.0, 1.0, 0.0]  # some trial stated it
    assert h["to_hit"].tolist() == [0.0, 1.0, 0.0]  # TO counts the loop
    assert h["readable"].tolist() == [1.0, 0.0, 0.0]
    assert fs.judged(ds, 1)["any_states"].tolist() == [0.0, 1.0, 0.0]  # the first trial only


def test_configs_are_the_recipes_named():
    from fsnn.search.run import SearchConfig

    assert fs.CONFIGS["paper"].search_config(10, 0) == SearchConfig.paper(
        n_trials=10, batch_trials=10, batch_rows=64, seed=0
    )
    assert fs.CONFIGS["default"].search_config(5, 0) == SearchConfig(
        n_trials=5, batch_rows=64, seed=0
    )
    assert fs.CONFIGS["kl"].search_config(5, 0).schedule == "kl:1.0"
    assert fs._runs_in("kl", "cached") and not fs._runs_in("kl", "faithful")
    angular = fs.CONFIGS["angular"].search_config(5, 0)
    assert (angular.operator, angular.parametrization) == ("angular", "angle")
    assert (
        fs.CONFIGS["windows"].layout == "segmented"
        and fs.CONFIGS["windows"].search_config(5, 0).windows
    )
    for name in (
        "angular",
        "centred",
        "prompt_only",
        "decay",
        "kl",
        "windows",
    ):  # the default search otherwise
        cfg = fs.CONFIGS[name].search_config(5, 0)
        assert (cfg.sampler, cfg.start_trials, cfg.unreadable_penalty) == ("tpe", 3, 1.0)


@pytest.mark.real
def test_quick_study_end_to_end(tmp_path):
    from tests.conftest import shared_path

    shared_path("FSNN_SIMPLEQA_CSV")
    out = tmp_path / "study"
    assert fs.main(["--out", str(out), "--quick"]) == 0
    summary = xr.open_dataset(out / "summary-cached-screen.nc")
    assert dict(summary.sizes) == {"model": 1, "config": 3, "budget": 1}
    assert list(summary.config.values) == ["default", "angular", "kl"]
    assert (summary.n.values == 3).all() and np.isfinite(summary.states_rate.values).all()
    assert np.isfinite(summary.vs_default.values[0, 1, 0]) and (summary.wall_s.values > 0).all()
    assert (out / "states_answer-cached-screen.png").stat().st_size > 0
    prep = xr.open_dataset(out / "smollm2-135m" / "prep.nc")
    ids = set(prep.simpleqa_id.values.tolist())
    screen = set(prep.simpleqa_id.values[prep.split.values == "screen"].tolist())
    assert screen and screen != ids  # both splits, disjoint by question
    from fsnn.experiment.simpleqa import load_simpleqa

    excluded = set().union(*fs.exclusion_ids(load_simpleqa()).values())
    assert not ids & excluded
    cells = sorted((out / "smollm2-135m" / "cells").glob("*.nc"))
    assert [c.name for c in cells] == [
        "cached-angular-b2-screen-n3.nc",
        "cached-default-b2-screen-n3.nc",
        "cached-kl-b2-screen-n3.nc",
    ]
    stamps = [c.stat().st_mtime_ns for c in cells]
    assert (
        fs.main(["--out", str(out), "--quick"]) == 0
    )  # resumed: finished cells are not searched again
    assert [c.stat().st_mtime_ns for c in cells] == stamps
    assert fs.main(["--out", str(out), "--quick", "--collect-only"]) == 0


def test_missing_simpleqa_is_reported_before_any_model_loads(tmp_path, monkeypatch):
    from fsnn.errors import FsnnError

    missing = tmp_path / "nowhere" / "simple_qa_test_set.csv"
    monkeypatch.setenv("FSNN_SIMPLEQA_CSV", str(missing))

    def no_model(name):
        raise AssertionError(f"{name} loaded before SimpleQA was read")

    monkeypatch.setattr(fs, "_load", no_model)
    with pytest.raises(FsnnError, match="nowhere"):
        fs.main(["--out", str(tmp_path / "study"), "--quick"])
