"""How strengths are searched: :class:`SearchConfig`, and the names a search accepts.

Torch-free, so a run's configuration (and ``fsnn --help``) loads without torch. The
search itself is :mod:`fsnn.search.run`; the sampled parametrizations' meaning is
:mod:`fsnn.search.strength`; the objective is :mod:`fsnn.search.objective`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from fsnn.errors import FsnnError
from fsnn.steering.specs import check_operator, parse_schedule

from .objective import ObjectiveConfig

__all__ = ["DEFAULT_RANGES", "PARAMETRIZATIONS", "SAMPLERS", "SearchConfig"]

PARAMETRIZATIONS = ("alpha_gamma", "log_product", "norm_relative", "product", "angle")
# (low, high) of each parametrization's sampled value when the search sets none
DEFAULT_RANGES: dict[str, tuple[float, float]] = {
    "alpha_gamma": (0.01, 1.0),
    "product": (0.01, 1.0),
    "log_product": (1e-3, 1.0),
    "norm_relative": (0.01, 1.0),
    "angle": (1e-3, 0.1),  # radians per steered layer (the angular operator)
}

SAMPLERS = ("tpe", "random", "gp")


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    """How strengths are searched.

    Attributes:
        n_trials: completed trials per prompt and method (paper 5): the budget of
            steered generations per prompt.
        batch_trials: trials of one prompt asked together (K); rows of several
            prompts share one generate up to ``batch_rows``. K = n_trials asks every
            trial before any result is known (model-based samplers then act as random);
            K = 1 lets each round learn from the previous ones.
        batch_rows: rows per steered generate call.
        parametrization: what is sampled (:mod:`fsnn.search.strength`): ``alpha_gamma``
            (paper: alpha, gamma ~ U[low, high] per segment), ``log_product`` (k =
            alpha*gamma per segment on a log scale), ``norm_relative`` (the shift as a
            fraction of the layer's typical residual norm, log scale) or ``product``
            (k uniform in [low^2, high^2]).
        low, high: the sampled range; None takes the parametrization's default
            (:data:`fsnn.search.strength.DEFAULT_RANGES`; paper [0.01, 1.0]).
        sampler: ``tpe`` (paper: Optuna's default TPE), ``random`` or ``gp`` (Optuna's
            Gaussian-process sampler).
        n_startup_trials: random trials before TPE/GP model the results (Optuna's
            default 10: with 5 trials the paper's TPE is a random search).
        start_trials: log-spaced strengths (the same in every segment) enqueued as the
            first trials of each prompt, weakest first (:func:`fsnn.search.strength.start_params`).
        operator: how a steered layer changes (docs/operators.md;
            :class:`fsnn.steering.steer.Steering`): ``fusion`` (eq. (5), the paper's),
            ``angular`` (rotate toward the reference, norm kept; searched with the
            ``angle`` parametrization) or ``centred`` (the reference minus a generic mean).
        schedule: the strength's multiplier over decode steps: ``constant``,
            ``prompt_only``, ``first_n:N``, ``decay:RHO`` or ``kl:EPS`` (per step the
            largest share of the strength within EPS nats of the unsteered next-token
            distribution; ``cached`` mode, local models).
        windows: each segment also gets a categorical on/off (``on_S``) beside its
            strength; off leaves the segment's layers untouched
            (:func:`fsnn.steering.operators.window_distributions`).
        seed: makes a search repeat exactly (per-prompt seeds derive from it).
        tpe_multivariate, tpe_constant_liar: explicit TPE settings.
        score_on: ``full`` (prompt + completion, as the release scored) or
            ``completion`` (generated text only).
        objective: eq. (6) weights.
        unreadable_penalty: subtracted from S_opt when the completion fails
            :func:`fsnn.judges.degeneration.readable` (0 = eq. (6) as the paper used it; 1
            ranks any readable completion above a degenerate one of the same overlap).
        max_failures: failed trials (evaluation error, NaN objective) tolerated per
            prompt; each is retried with a new trial, after that the prompt is given
            up (reported, never re-queued forever).
    """

    # Defaults: the strength study's choice (docs/strength_study.md): a norm-relative strength,
    # three log-spaced start trials, then TPE in rounds of one trial per prompt. The paper's
    # recipe is SearchConfig.paper() (alpha_gamma, every trial asked at once, Optuna's 10
    # start-up trials, eq. (6) unguarded).
    n_trials: int = 5
    batch_trials: int = 1
    batch_rows: int = 16
    parametrization: Literal["alpha_gamma", "log_product", "norm_relative", "product", "angle"] = (
        "norm_relative"
    )
    low: float | None = None
    high: float | None = None
    sampler: Literal["tpe", "random", "gp"] = "tpe"
    n_startup_trials: int = 2
    start_trials: int = 3
    seed: int | None = 0
    tpe_multivariate: bool = False
    tpe_constant_liar: bool = True
    score_on: Literal["full", "completion"] = "full"
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    unreadable_penalty: float = 1.0
    max_failures: int = 3
    # the operators of docs/operators.md (issue 22); the defaults are the steering of before
    operator: Literal["fusion", "angular", "centred"] = "fusion"
    schedule: str = "constant"
    windows: bool = False

    def __post_init__(self) -> None:
        if self.n_trials <= 0:
            raise FsnnError(f"n_trials must be > 0, got {self.n_trials}")
        if self.batch_trials <= 0 or self.batch_rows <= 0:
            raise FsnnError("batch_trials and batch_rows must be > 0")
        if self.parametrization not in PARAMETRIZATIONS:
            raise FsnnError(
                f"unknown parametrization {self.parametrization!r}; choose one of {PARAMETRIZATIONS}"
            )
        low, high = self.range
        if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
            raise FsnnError(f"empty parameter range [{low}, {high}]")
        if self.parametrization in ("log_product", "norm_relative", "angle") and low <= 0:
            raise FsnnError(
                f"{self.parametrization} samples on a log scale: low must be > 0, got {low}"
            )
        if self.sampler not in SAMPLERS:
            raise FsnnError(f"unknown sampler {self.sampler!r}; choose one of {SAMPLERS}")
        if self.score_on not in ("full", "completion"):
            raise FsnnError(f"score_on must be 'full' or 'completion', got {self.score_on!r}")
        if self.n_startup_trials < 0 or self.start_trials < 0 or self.max_failures < 0:
            raise FsnnError("n_startup_trials, start_trials and max_failures must be >= 0")
        if not math.isfinite(self.unreadable_penalty) or self.unreadable_penalty < 0:
            raise FsnnError(
                f"unreadable_penalty must be finite and >= 0, got {self.unreadable_penalty}"
            )
        check_operator(self.operator)
        parse_schedule(self.schedule)
        if not isinstance(self.windows, bool):
            raise FsnnError(f"windows must be True or False, got {self.windows!r}")
        if (self.operator == "angular") != (self.parametrization == "angle"):
            raise FsnnError(
                "the angular operator searches an angle and the angle parametrization is the angular "
                f"operator's: set operator='angular' with parametrization='angle' (got "
                f"{self.operator!r} with {self.parametrization!r})"
            )

    @classmethod
    def paper(cls, **overrides: Any) -> SearchConfig:
        """The paper's search (docs/method.md §6): (alpha, gamma) ~ U[0.01, 1] per segment, TPE
        with Optuna's 10 random start-up trials, every trial asked at once, eq. (6) without the
        readability penalty, TO/PPL on the full decoded text. ``overrides`` change any field."""
        paper = dict(
            n_trials=5,
            batch_trials=5,
            parametrization="alpha_gamma",
            sampler="tpe",
            n_startup_trials=10,
            start_trials=0,
            unreadable_penalty=0.0,
            score_on="full",
        )
        return cls(**{**paper, **overrides})

    @property
    def range(self) -> tuple[float, float]:
        """(low, high) of the sampled value, defaults filled in."""
        low, high = DEFAULT_RANGES.get(self.parametrization, (0.01, 1.0))
        return (low if self.low is None else self.low, high if self.high is None else self.high)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
