"""The search objective: S_opt (docs/method.md §3 eq. (6)) and its readability guard.

    S_opt = w_to * TO - w_ppl * min(PPL / ppl_cap, 1)                      (eq. 6)
    S     = S_opt - penalty * (1 - readable)                    (the guarded objective)

TO and PPL are :mod:`fsnn.judges.metrics`; ``readable`` is
:func:`fsnn.judges.degeneration.readable`. Repetition *lowers* perplexity, so eq. (6)
alone rewards a loop; the guard ranks any readable completion above a degenerate one of
the same overlap (docs/strength_study.md). Torch-free: configs import it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["ObjectiveConfig", "guarded_objective", "objective"]


@dataclass(frozen=True, kw_only=True)
class ObjectiveConfig:
    """S_opt = w_to * TO - w_ppl * min(PPL / ppl_cap, 1)  (docs/method.md §3 eq. (6), §6).

    Attributes:
        w_to: weight of token overlap (paper 0.7).
        w_ppl: weight of the capped perplexity penalty (paper 0.3).
        ppl_cap: perplexity at which the penalty saturates (paper 100).
    """

    w_to: float = 0.7
    w_ppl: float = 0.3
    ppl_cap: float = 100.0

    def __post_init__(self) -> None:
        for name in ("w_to", "w_ppl", "ppl_cap"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f"ObjectiveConfig.{name} must be finite, got {value}")
        if self.ppl_cap <= 0:
            raise ValueError(f"ObjectiveConfig.ppl_cap must be > 0, got {self.ppl_cap}")


def objective(to: float, ppl: float, config: ObjectiveConfig = ObjectiveConfig()) -> float:
    """S_opt of one trial; a NaN perplexity (empty text) takes the full penalty."""
    penalty = 1.0 if not math.isfinite(ppl) else min(ppl / config.ppl_cap, 1.0)
    return config.w_to * to - config.w_ppl * penalty


def guarded_objective(
    to: float,
    ppl: float,
    is_readable: bool,
    config: ObjectiveConfig | None = None,
    penalty: float = 1.0,
) -> float:
    """S = S_opt(TO, PPL) - penalty * (1 - readable).

    With ``penalty`` > w_ppl (0.3) an unreadable completion scores below any readable
    one of the same (or a lower by up to (penalty - w_ppl) / w_to) overlap, whatever its
    perplexity; ``penalty = 0`` is eq. (6) as the paper used it.
    """
    if not math.isfinite(penalty) or penalty < 0:
        raise ValueError(f"penalty must be finite and >= 0, got {penalty}")
    return objective(to, ppl, config or ObjectiveConfig()) - penalty * (0.0 if is_readable else 1.0)
