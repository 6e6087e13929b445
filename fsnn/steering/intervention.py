"""The steering loop body that runs inside an nnsight trace (docs/method.md §3, §9; docs/operators.md).

One body, called from every place that steers: a local generate trace
(:func:`fsnn.steering.steer.steer_rows`), the traces of one NDIF session
(:func:`fsnn.steering.steer.steer_in_session`) and a user's own trace
(:meth:`fsnn.steering.steer.Steering.apply`). It decides *when* and *where* a layer is
steered; the math itself is :mod:`fsnn.steering.fusion` (eq. (5)) and
:mod:`fsnn.steering.operators` (the rotation and the mean-centred shift).

This module imports only torch and fsnn's pure math, and is registered with nnsight so
that it ships by value in remote requests (the NDIF server has no fsnn installed); the
operator cores it calls (``_rotate``, ``_shift``) refer to torch only.

Shapes: B rows, T positions of the current pass, H hidden. Per active layer ``i`` (the
layers whose strength is non-zero for some row), by ``operator``:

- ``fusion``: ``h[i]`` (B, 1, H) the reference, ``alpha[i]``/``gamma[i]`` (B, 1, 1);
  eq. (5) with mu = the pass's masked mean (cached decode steps: the running mean).
- ``centred``: ``h[i]`` (B, 1, H) the direction h_l - mu_generic,l, ``alpha[i]`` (B, 1, 1)
  the strength k = alpha * gamma; ``gamma`` unused (None).
- ``angular``: ``h[i]`` (B, 1, H) the direction h_l - mu_generic,l rotated toward,
  ``alpha[i]`` (B, 1, 1) the angle theta = alpha * gamma in radians; ``gamma`` unused.

``mask`` is (B, prompt + new) float32. ``gates[i]`` (fusion only) is None, or a (B, 1, 1)
bool tensor when some rows' strength at that layer is exactly 0: those rows keep the
layer's output bit for bit (a window that is off). ``scales`` is None (constant
schedule) or m(t) per decode step: step t's strength is m(t) times the row's strength.
"""

from __future__ import annotations

from typing import Any

import torch

from fsnn.models.layers import residual

from .fusion import fuse, fuse_decode_step, masked_sum
from .operators import _rotate, _shift

__all__ = ["steer_pass", "steer_steps"]


def _write(a: Any, i: int, operator: str, h: list[Any], alpha: list[Any], scale: float) -> None:
    """Steer one layer's output ``a`` in place with a position-wise operator (centred, angular)."""
    k = alpha[i] if scale == 1.0 else alpha[i] * scale
    steered = _shift(a, h[i], k) if operator == "centred" else _rotate(a, h[i], k)
    a.copy_(steered)


def steer_pass(
    envoys: list[Any],
    h: list[Any],
    alpha: list[Any],
    gamma: list[Any] | None,
    mask: Any,
    *,
    operator: str = "fusion",
    scale: float = 1.0,
    gates: list[Any] | None = None,
) -> list[Any]:
    """Steer one forward pass at every active layer (fusion: mu = the pass's masked mean).

    Args:
        envoys, h, alpha, gamma, mask, gates: as the module docstring says.
        operator: ``fusion``, ``centred`` or ``angular``.
        scale: the schedule's multiplier of this pass (1.0: the strengths as given).

    Returns:
        Fusion: per layer, the running ``(sum (B, 1, H), count (B, 1, 1))`` of the
        positions seen, before the layer's own shift (what cached decoding continues
        from). The position-wise operators need no running state: an empty list.
    """
    sums = []
    for i in range(len(envoys)):
        a = residual(envoys[i].output)
        if operator != "fusion":
            _write(a, i, operator, h, alpha, scale)
            continue
        assert gamma is not None  # fusion plans carry gamma (None: centred, angular)
        total, count = masked_sum(a, mask[:, : a.shape[1]])
        al = alpha[i][:, 0, 0] if scale == 1.0 else alpha[i][:, 0, 0] * scale
        steered = fuse(a, h[i][:, 0], total / count, al, gamma[i][:, 0, 0])
        if gates is not None and gates[i] is not None:
            steered = torch.where(gates[i], steered, a)
        sums.append((total[:, None], count[:, None]))
        # written in place: assigning .output would cost a second switch per layer
        a.copy_(steered)
    return sums


def steer_steps(
    tracer: Any,
    envoys: list[Any],
    lm_head: Any,
    h: list[Any],
    alpha: list[Any],
    gamma: list[Any] | None,
    mask: Any,
    picked: list[Any],
    *,
    faithful: bool,
    max_new_tokens: int,
    operator: str = "fusion",
    scales: list[float] | None = None,
    gates: list[Any] | None = None,
) -> None:
    """Steer every step of a generate trace and record the greedy token of each step.

    ``faithful``: no KV cache, every step re-runs the sequence and steers every position
    (fusion: mu is the mean of the whole pass). Cached: the prompt pass as faithful's
    step 0, then each step steers its one new position (fusion: with the running mean of
    all positions so far); cached positions keep the steering of the step that computed
    them. With ``scales``, step t steers with m(t) times the strengths: in faithful mode
    m(t) applies to the whole recomputed pass of step t, in cached mode to the new
    position only. A step with m(t) = 0 touches nothing (schedules are non-increasing,
    so neither does any later step). ``picked`` must be created (and saved) by the caller
    before the call: when a row hits EOS early nnsight unwinds this loop, and the steps
    it ran must survive.
    """
    sums: list[Any] = []
    for step in tracer.iter[0:max_new_tokens]:
        m = 1.0 if scales is None else scales[step]
        if m == 0.0:
            pass  # unsteered step (and every later one)
        elif faithful or step == 0:
            sums = steer_pass(
                envoys, h, alpha, gamma, mask, operator=operator, scale=m, gates=gates
            )
        elif operator != "fusion":
            for i in range(len(envoys)):
                _write(residual(envoys[i].output), i, operator, h, alpha, m)
        else:
            assert gamma is not None  # fusion plans carry gamma (None: centred, angular)
            for i in range(len(envoys)):
                a = residual(envoys[i].output)
                al = alpha[i] if m == 1.0 else alpha[i] * m
                steered, total, count = fuse_decode_step(
                    a, h[i], sums[i][0], sums[i][1], al, gamma[i]
                )
                sums[i] = (total, count)
                if gates is not None and gates[i] is not None:
                    steered = torch.where(gates[i], steered, a)
                a.copy_(steered)
        picked.append(lm_head.output[:, -1].argmax(dim=-1).cpu())
