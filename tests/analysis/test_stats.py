"""Bootstrap intervals and paired tests against exact oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from fsnn.analysis.stats import (
    bootstrap_mean,
    mcnemar_exact,
    paired_bootstrap_diff,
    wilson_interval,
)


def test_all_ones_and_all_zeros_have_point_intervals():
    ones = bootstrap_mean(np.ones(17))
    assert (ones.estimate, ones.low, ones.high, ones.n) == (1.0, 1.0, 1.0, 17)
    zeros = bootstrap_mean(np.zeros(5))
    assert (zeros.estimate, zeros.low, zeros.high) == (0.0, 0.0, 0.0)


def test_interval_holds_the_estimate_and_is_seeded():
    x = np.array([1, 0, 0, 1, 1, 0, 0, 0, 1, 0], dtype=float)
    a = bootstrap_mean(x, seed=3)
    assert a == bootstrap_mean(x, seed=3)  # same seed, same interval
    scores = np.linspace(0, 1, 37) ** 2  # continuous values: every seed moves the bounds
    assert bootstrap_mean(scores, seed=3) != bootstrap_mean(scores, seed=4)
    assert a.low < a.estimate == 0.4 < a.high
    assert 0.0 <= a.low and a.high <= 1.0


def test_bootstrap_matches_wilson_for_a_moderate_sample():
    x = np.r_[np.ones(42), np.zeros(218)]  # 42/260, the release's full-layer composite
    boot = bootstrap_mean(x, n_boot=4000)
    lo, hi = wilson_interval(42, 260)
    assert abs(boot.low - lo) < 0.015 and abs(boot.high - hi) < 0.015


def test_wilson_hand_computed():
    # k=0, n=10, z=1.959964: upper bound = z^2/n / (1 + z^2/n)
    z2 = 1.959963984540054**2
    lo, hi = wilson_interval(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-15)
    assert hi == pytest.approx((z2 / 10) / (1 + z2 / 10), rel=1e-9)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_empty_sample_is_nan_and_nan_input_is_refused():
    e = bootstrap_mean([])
    assert e.n == 0 and math.isnan(e.estimate) and math.isnan(e.low)
    assert e.as_dict()["estimate"] is None
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_mean([1.0, math.nan])


def test_mcnemar_against_hand_computed_binomial():
    # b = 7 (a better), c = 1: p = 2 * (C(8,0) + C(8,1)) / 2^8 = 2 * 9 / 256
    a = np.r_[np.ones(7), np.zeros(1), np.ones(5), np.zeros(10)]
    b = np.r_[np.zeros(7), np.ones(1), np.ones(5), np.zeros(10)]
    t = mcnemar_exact(a, b)
    assert (t.b, t.c) == (7, 1)
    assert t.p == pytest.approx(18 / 256, abs=0)
    assert t.p == pytest.approx(sps.binomtest(1, 8, 0.5).pvalue, rel=1e-12)


def test_mcnemar_symmetric_and_capped():
    a = np.array([1, 0, 1, 0, 1, 1], float)
    b = np.array([0, 1, 1, 0, 0, 1], float)
    assert mcnemar_exact(a, b).p == mcnemar_exact(b, a).p
    t = mcnemar_exact([1, 0], [0, 1])  # b = c = 1: 2 * 3/4 capped to 1
    assert t.p == 1.0
    assert mcnemar_exact([1, 1, 0], [1, 1, 0]).p == 1.0  # no discordant pair


def test_paired_interval_is_tighter_than_unpaired_and_exact_when_constant():
    rng = np.random.default_rng(0)
    base = (rng.random(200) < 0.3).astype(float)
    steered = np.maximum(base, (rng.random(200) < 0.2).astype(float))  # never worse
    d = paired_bootstrap_diff(steered, base)
    assert d.estimate == pytest.approx(steered.mean() - base.mean())
    assert d.low >= 0.0  # no resample can make a never-worse method worse
    const = paired_bootstrap_diff(np.ones(9), np.zeros(9))
    assert (const.low, const.estimate, const.high) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="differ in size"):
        paired_bootstrap_diff([1.0], [1.0, 0.0])
