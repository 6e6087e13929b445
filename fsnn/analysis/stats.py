"""Uncertainty of the reported rates: seeded bootstrap intervals and paired tests.

Every rate fsnn reports is a mean over prompts (a 0/1 outcome per prompt, or a score),
so its uncertainty comes from which prompts happened to be asked. Three tools:

- :func:`bootstrap_mean`: percentile bootstrap interval of a mean over prompts
  (resample prompts with replacement; seeded, so a report is reproducible).
- :func:`paired_bootstrap_diff`: interval of ``mean(a) - mean(b)`` when ``a`` and ``b``
  are two methods on the SAME prompts (prompts resampled jointly, so the pairing is
  kept: far tighter than two independent intervals).
- :func:`mcnemar_exact`: exact McNemar test of two paired 0/1 outcomes: under H0 the
  discordant pairs split 50/50, so ``p = min(1, 2 * P[Binom(b + c, 1/2) <= min(b, c)])``.

:func:`percentile_interval` is the percentile step alone (for replicates drawn elsewhere,
e.g. the cluster bootstrap of :mod:`fsnn.analysis.judge_agreement`).
:func:`wilson_interval` is the closed-form score interval of a proportion, a cross-check
of the bootstrap for small ``n`` (the percentile bootstrap of an all-0 or all-1 sample
is the point [0, 0] or [1, 1]; Wilson is not).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DEFAULT_N_BOOT",
    "DEFAULT_SEED",
    "Interval",
    "McNemar",
    "bootstrap_mean",
    "mcnemar_exact",
    "paired_bootstrap_diff",
    "percentile_interval",
    "wilson_interval",
]

DEFAULT_N_BOOT = 2000
DEFAULT_SEED = 0
_LEVEL = 0.95


@dataclass(frozen=True, kw_only=True)
class Interval:
    """A point estimate with its bootstrap interval.

    Attributes:
        estimate: the statistic on the sample (NaN when ``n`` is 0).
        low, high: the interval's bounds (NaN when ``n`` is 0).
        n: sample size (prompts).
        level: coverage, e.g. 0.95.
    """

    estimate: float
    low: float
    high: float
    n: int
    level: float = _LEVEL

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError(f"n must be >= 0, got {self.n}")
        if not 0 < self.level < 1:
            raise ValueError(f"level must be in (0, 1), got {self.level}")

    def as_dict(self) -> dict[str, float | int | None]:
        """JSON-safe: NaN becomes None."""
        return {"estimate": _num(self.estimate), "low": _num(self.low), "high": _num(self.high),
                "n": self.n, "level": self.level}  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class McNemar:
    """Exact McNemar test of paired 0/1 outcomes ``a`` vs ``b``.

    Attributes:
        b: pairs with a = 1 and b = 0 (``a`` better).
        c: pairs with a = 0 and b = 1 (``b`` better).
        p: two-sided exact p-value (1.0 when there is no discordant pair).
    """

    b: int
    c: int
    p: float


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _as_1d(values: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=float).reshape(-1)
    if np.isnan(arr).any():
        raise ValueError("values hold NaN: drop missing prompts before computing an interval")
    return arr


def _resample_means(x: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Means of ``n_boot`` resamples of ``x`` (prompts drawn with replacement), shape (n_boot,)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    return x[idx].mean(axis=1)


def percentile_interval(
    samples: Sequence[float] | np.ndarray,
    level: float = _LEVEL,
    *,
    quantiles: tuple[float, float] | None = None,
) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates: their ``(1 - level) / 2`` and
    ``1 - (1 - level) / 2`` quantiles (numpy's linear interpolation).

    Args:
        samples: the replicates, shape (n_boot,), no NaN.
        level: coverage of the interval.
        quantiles: the two quantiles to take instead of those of ``level`` (the
            judge-agreement reports take exactly (0.025, 0.975); in floats
            ``(1 - 0.95) / 2`` is 0.025000000000000022, which moves a bound in its last
            digits).
    """
    if quantiles is None:
        tail = (1 - level) / 2
        quantiles = (tail, 1 - tail)
    low, high = np.quantile(np.asarray(samples, dtype=float), list(quantiles))
    return float(low), float(high)


def bootstrap_mean(
    values: Sequence[float] | np.ndarray,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
    level: float = _LEVEL,
) -> Interval:
    """Percentile bootstrap interval of the mean of ``values`` over prompts.

    Args:
        values: one value per prompt, shape (prompt,); a rate is the mean of 0/1 values.
            No NaN: the caller decides which prompts are in the denominator.
        n_boot: bootstrap resamples.
        seed: RNG seed (same seed, same interval).
        level: coverage of the interval.

    Returns:
        the sample mean and its interval; NaN bounds for an empty sample.
    """
    x = _as_1d(values)
    if x.size == 0:
        return Interval(estimate=math.nan, low=math.nan, high=math.nan, n=0, level=level)
    low, high = percentile_interval(_resample_means(x, n_boot, seed), level)
    est = float(x.mean())
    # the percentile interval of a mean always holds it up to float rounding; clip that
    return Interval(
        estimate=est, low=min(low, est), high=max(high, est), n=int(x.size), level=level
    )


def paired_bootstrap_diff(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
    level: float = _LEVEL,
) -> Interval:
    """Interval of ``mean(a) - mean(b)`` for two methods on the same prompts.

    Args:
        a, b: one value per prompt each, shape (prompt,), aligned (same prompt order).

    Returns:
        the difference of means and its paired bootstrap interval.
    """
    x, y = _as_1d(a), _as_1d(b)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in size: {x.size} vs {y.size}")
    return bootstrap_mean(x - y, n_boot=n_boot, seed=seed, level=level)


def _binom_cdf_half(k: int, n: int) -> float:
    """P[Binom(n, 1/2) <= k], exactly (integers), then one division."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2**n


def mcnemar_exact(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> McNemar:
    """Exact (binomial) McNemar test of paired 0/1 outcomes.

    Args:
        a, b: 0/1 outcome per prompt of two methods, shape (prompt,), aligned.

    Returns:
        the discordant counts and the two-sided p-value.
    """
    x, y = _as_1d(a).astype(bool), _as_1d(b).astype(bool)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in size: {x.size} vs {y.size}")
    n10 = int(np.sum(x & ~y))
    n01 = int(np.sum(~x & y))
    if n10 + n01 == 0:
        return McNemar(b=0, c=0, p=1.0)
    p = min(1.0, 2 * _binom_cdf_half(min(n10, n01), n10 + n01))
    return McNemar(b=n10, c=n01, p=p)


def wilson_interval(
    k: int, n: int, level: float = _LEVEL, *, z: float | None = None
) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n`` (NaN bounds when ``n`` is 0).

    Args:
        k, n: successes and trials.
        level: coverage; the normal quantile is ``NormalDist().inv_cdf(1 - (1 - level) / 2)``.
        z: that quantile given directly instead (the judge-agreement reports use
            1.959963984540054, z_0.975 correctly rounded; ``NormalDist`` gives one ulp less).
    """
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return math.nan, math.nan
    if z is None:
        from statistics import NormalDist

        z = NormalDist().inv_cdf(1 - (1 - level) / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
