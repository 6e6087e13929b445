"""Judge-agreement statistics, the stratified subset, and the CLI end to end."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pandas as pd
import pytest

from fsnn.analysis.judge_agreement import agreement, format_report, stratified_subset
from fsnn.errors import FsnnError


def test_agreement_hand_case():
    ref = np.array([1, 2, 2, 3, 5, 4])
    jud = np.array([1, 2, 3, 5, np.nan, 4])
    a = agreement(ref, jud)
    assert a["n"] == 5 and a["n_missing"] == 1
    assert a["exact"] == pytest.approx(3 / 5)
    assert a["within_1"] == pytest.approx(4 / 5)  # 3 vs 5 is off by two
    assert a["mean_abs_diff"] == pytest.approx((0 + 0 + 1 + 2 + 0) / 5)
    conf = np.array(a["confusion"])
    assert conf.shape == (5, 5) and conf.sum() == 5
    assert (
        conf[0, 0] == 1
        and conf[1, 1] == 1
        and conf[1, 2] == 1
        and conf[2, 4] == 1
        and conf[3, 3] == 1
    )
    assert a["reference_hist"] == [1, 2, 1, 1, 0] and a["judged_hist"] == [1, 1, 1, 1, 1]
    from scipy.stats import spearmanr

    assert a["spearman"] == pytest.approx(spearmanr([1, 2, 2, 3, 4], [1, 2, 3, 5, 4]).statistic)


def test_agreement_perfect_and_constant():
    ref = np.array([1, 2, 3, 4, 5, 2])
    perfect = agreement(ref, ref.astype(float))
    assert perfect["exact"] == 1.0 and perfect["kappa_quadratic"] == pytest.approx(1.0)
    assert perfect["spearman"] == pytest.approx(1.0)
    constant = agreement(ref, np.full(6, 2.0))
    assert constant["exact"] == pytest.approx(2 / 6) and math.isnan(constant["spearman"])
    assert constant["kappa_quadratic"] == pytest.approx(0.0)
    empty = agreement(ref, np.full(6, np.nan))
    assert empty["n"] == 0 and empty["n_missing"] == 6 and math.isnan(empty["exact"])


def test_stratified_subset():
    rows = pd.DataFrame(
        {
            "method": ["a"] * 80 + ["b"] * 20,
            "mistral_score": [2] * 70 + [5] * 10 + [1] * 19 + [4],
        }
    )
    sub = stratified_subset(rows, 20, seed=1)
    assert len(sub) == 20 and sub.index.is_monotonic_increasing and sub.index.is_unique
    counts = sub.groupby(["method", "mistral_score"]).size().to_dict()
    assert counts[("b", 4)] == 1  # the single-row stratum is kept
    assert counts[("a", 2)] > counts[("a", 5)] and counts[("a", 2)] >= 12
    assert sub.equals(stratified_subset(rows, 20, seed=1))  # seeded
    assert stratified_subset(rows, 500) is rows
    with pytest.raises(FsnnError):
        stratified_subset(rows, 3)  # fewer than the 4 strata


def test_agreement_run_on_released_rows(tmp_path, tiny_gemma2):
    """The agreement run with a local judge (tiny random model) on a subset; rerun is free."""
    from fsnn.analysis.judge_agreement import agreement_main
    from fsnn.judges import JudgeConfig
    from fsnn.store.files import read_dataset

    folder = os.environ.get("FSNN_RELEASE_DIR")
    if not folder:
        pytest.skip("FSNN_RELEASE_DIR is not set (CI sets it to the shared release folder)")
    out = tmp_path / "agree"
    kw = dict(release_dir=folder, limit=15, out=out, cache=tmp_path / "c.sqlite", model=tiny_gemma2)
    config = JudgeConfig(backend="local", model="tiny-gemma2", batch_size=4)
    report = agreement_main(config, progress=False, **kw)
    assert report["n_rows_graded"] == 15 and report["n_rows_release"] == 1045
    assert report["subset"].startswith("stratified") and report["overall"]["n"] == 15
    assert report["timing"]["n_answered"] == 15 and report["timing"]["seconds_per_grade"] > 0
    on_disk = json.loads(out.with_suffix(".json").read_text())
    assert on_disk["overall"]["confusion"] == report["overall"]["confusion"]
    ds = read_dataset(out.with_suffix(".nc"))
    assert ds.sizes["row"] == 15 and ds.sizes["grade"] == 5
    assert (
        ds["confusion"].dims == ("mistral_grade", "judge_grade")
        and int(ds["confusion"].sum()) == 15
    )
    assert ds.attrs["judge_id"] == "local:tiny-gemma2"
    assert json.loads(ds.attrs["config"])["model"] == "tiny-gemma2"
    np.testing.assert_allclose(ds["judge_probs"].sum("grade"), 1.0, atol=1e-5)
    again = agreement_main(config, progress=False, **kw)
    assert again["timing"]["n_answered"] == 0 and again["timing"]["n_cached"] == 15
    assert again["overall"]["confusion"] == report["overall"]["confusion"]
    assert "time per grade" in format_report(report)


def test_cli_errors(capsys):
    from fsnn.cli import main

    assert main(["judge-agreement", "--judge", "nonsense", "--release-dir", "/nonexistent"]) == 2
    assert "bad judge spec" in capsys.readouterr().err
