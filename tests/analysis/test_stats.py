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


# The judge-agreement report's intervals (Wilson for rates, percentile for bootstrap
# replicates), recorded before it used this module (issue 23): its numbers must not move.
AGREEMENT_WILSON = [
    ((0, 1), (0.0, 0.7934506856227626)),
    ((1, 1), (0.20654931437723745, 1.0)),
    ((0, 10), (0.0, 0.2775327998628892)),
    ((3, 10), (0.10779126740630099, 0.6032218525388546)),
    ((7, 13), (0.29143795714506004, 0.7679393219046169)),
    ((42, 260), (0.12178630076086523, 0.21114643548659057)),
    ((130, 260), (0.43966815931466346, 0.5603318406853366)),
    ((259, 260), (0.9785392297268466, 0.9993207364558602)),
    ((1, 3), (0.06149194472039621, 0.7923403991979522)),
]


@pytest.mark.parametrize(("kn", "ci"), AGREEMENT_WILSON)
def test_judge_agreement_rate_is_pinned(kn, ci):
    from fsnn.analysis.judge_agreement import _rate

    k, n = kn
    assert _rate(k, n) == {"value": k / n, "ci95": list(ci)}


def test_judge_agreement_percentile_interval_is_pinned():
    from fsnn.analysis.judge_agreement import _interval, _rate

    rng = np.random.default_rng(7)
    want = {
        5: [0.23270309948265522, 0.8850609898971373],
        40: [0.005227028002737256, 0.9891236510756976],
        2000: [0.030011983892406086, 0.9701910725705936],
    }
    for size, ci in want.items():
        assert _interval(0.5, rng.random(size).tolist()) == {"value": 0.5, "ci95": ci}
    assert _interval(0.5, [0.1, math.nan, 0.3]) == {
        "value": 0.5,
        "ci95": [0.10500000000000001, 0.295],
    }
    for point, samples in ((math.nan, [0.1]), (0.5, []), (0.5, [math.nan])):
        got = _interval(point, samples)
        assert got["value"] is point and all(math.isnan(v) for v in got["ci95"])
    got = _rate(0, 0)
    assert math.isnan(got["value"]) and all(math.isnan(v) for v in got["ci95"])


def test_percentile_interval_oracles():
    from fsnn.analysis.stats import percentile_interval

    x = np.arange(101, dtype=float)  # the q-quantile of 0..100 is 100 q, with linear interpolation
    assert percentile_interval(x, quantiles=(0.0, 1.0)) == (0.0, 100.0)
    assert percentile_interval(x, quantiles=(0.25, 0.5)) == (25.0, 50.0)
    lo, hi = percentile_interval(x, 0.9)
    assert lo == pytest.approx(5.0, abs=1e-12) and hi == pytest.approx(95.0, abs=1e-12)
