"""The names of the steering operators and schedules, and the schedule spec strings (torch-free).

Kept apart from :mod:`fsnn.steering.operators` (which needs torch) so that a
configuration (``SearchConfig``) can validate its strings without importing torch.
docs/operators.md defines what each name does.

Schedule specs, the strings ``Steering(schedule=...)`` and ``SearchConfig(schedule=...)``
take:

==================  =========================================================
``constant``        m(t) = 1 at every step (the paper; the default)
``prompt_only``     m(0) = 1, then 0
``first_n:N``       m(t) = 1 for t < N (N >= 1; the prompt pass is step 0)
``decay:RHO``       m(t) = RHO ** t (RHO in [0, 1])
``kl:EPS``          m(t) per row and step: the largest in [0, 1] whose next-token
                    distribution stays within EPS nats (KL) of the unsteered
                    step's (``cached`` mode, local models only;
                    :mod:`fsnn.steering.kl_decode`)
==================  =========================================================
"""

from __future__ import annotations

import math
from typing import Any

from fsnn.errors import FsnnError

__all__ = [
    "FIXED_SCHEDULES",
    "OPERATORS",
    "SCHEDULES",
    "check_operator",
    "check_schedule_mode",
    "parse_schedule",
]

# how a layer's output is steered (fsnn.steering.steer.Steering.operator): eq. (5) of the paper,
# the norm-preserving rotation toward h_l - mu_generic, the mean-centred shift
OPERATORS: tuple[str, ...] = ("fusion", "angular", "centred")
# multipliers fixed before generation (fsnn.steering.operators.schedule), and ``kl``, chosen
# per row and step from the logits while generating
FIXED_SCHEDULES: tuple[str, ...] = ("constant", "prompt_only", "first_n", "decay")
SCHEDULES: tuple[str, ...] = (*FIXED_SCHEDULES, "kl")
SCHEDULE_SPECS = "constant, prompt_only, first_n:N, decay:RHO or kl:EPS"


def check_operator(operator: Any) -> str:
    """``operator`` if it names one of :data:`OPERATORS`, else one FsnnError line."""
    if operator not in OPERATORS:
        raise FsnnError(
            f"unknown steering operator {operator!r}; choose one of {', '.join(OPERATORS)}"
        )
    return operator


def parse_schedule(spec: Any) -> tuple[str, dict[str, Any]]:
    """A schedule spec as (kind, keyword arguments of :func:`fsnn.steering.operators.schedule`).

    ``"constant"`` -> ("constant", {}), ``"first_n:3"`` -> ("first_n", {"n": 3}),
    ``"decay:0.5"`` -> ("decay", {"rho": 0.5}), ``"kl:1"`` -> ("kl", {"epsilon": 1.0}).

    Raises:
        FsnnError: one line naming the bad spec (unknown kind, missing or superfluous
            parameter, N not an integer >= 1, RHO not a number in [0, 1], EPS not a
            finite number >= 0).
    """
    if not isinstance(spec, str):
        raise FsnnError(f"a schedule is a string ({SCHEDULE_SPECS}), got {spec!r}")
    kind, sep, arg = spec.strip().partition(":")
    if kind not in SCHEDULES:
        raise FsnnError(f"unknown schedule {spec!r}; choose {SCHEDULE_SPECS}")
    if kind in ("constant", "prompt_only"):
        if sep:
            raise FsnnError(f"schedule {kind!r} takes no parameter, got {spec!r}")
        return kind, {}
    if kind == "first_n":
        try:
            n = int(arg)
        except ValueError:
            n = 0
        if n < 1 or str(n) != arg.strip():
            raise FsnnError(f"schedule {spec!r}: first_n needs an integer N >= 1 (first_n:N)")
        return kind, {"n": n}
    if kind == "kl":
        try:
            eps = float(arg)
        except ValueError:
            eps = math.nan
        if not (math.isfinite(eps) and eps >= 0.0):
            raise FsnnError(
                f"schedule {spec!r}: kl needs a finite number EPS >= 0 in nats (kl:EPS)"
            )
        return kind, {"epsilon": eps}
    try:
        rho = float(arg)
    except ValueError:
        rho = math.nan
    if not 0.0 <= rho <= 1.0:
        raise FsnnError(f"schedule {spec!r}: decay needs a number RHO in [0, 1] (decay:RHO)")
    return kind, {"rho": rho}


def check_schedule_mode(schedule: str, mode: str, backend: str = "local") -> None:
    """The one rule on which schedules run where: ``kl:EPS`` needs ``cached`` mode and a local model.

    ``backend``: where the traces run, a backend name (``local``, ``serialised``,
    ``ndif``) or ``session`` (the traces of one nnsight session).

    The bound probes each step's one new position at several strengths on the same KV
    cache (:mod:`fsnn.steering.kl_decode`); ``faithful`` mode has no cache and re-steers
    every position at every step, and a remote model would make every probe a request.

    Raises:
        FsnnError: one line naming the schedule and the mode or backend it cannot run in.
    """
    kind, _ = parse_schedule(schedule)
    if kind != "kl":
        return
    if mode != "cached":
        raise FsnnError(
            f"schedule {schedule!r} bounds each cached decode step: it needs mode 'cached', got {mode!r}"
        )
    if backend != "local":
        raise FsnnError(
            f"schedule {schedule!r} probes every decode step several times on one KV cache: "
            f"it runs step by step on a local model, not through {backend!r}"
        )
