"""The steering loop body that runs inside an nnsight trace (docs/method.md §3, §9).

One body, called from every place that steers: a local generate trace
(:func:`fsnn.steering.steer.steer_rows`), the traces of one NDIF session
(:func:`fsnn.backends.ndif.steer_in_session`) and a user's own trace
(:meth:`fsnn.steering.steer.Steering.apply`). It decides *when* eqs. (2)-(5) apply; the math
itself is :mod:`fsnn.steering.fusion`.

This module imports only torch and fsnn's pure math, and is registered with nnsight so
that it ships by value in remote requests (the NDIF server has no fsnn installed).

Shapes: B rows, T positions of the current pass, H hidden; per active layer ``i``
(the layers whose strengths are non-zero for some row): ``h[i]`` (B, 1, H) float32,
``alpha[i]``/``gamma[i]`` (B, 1, 1) float32, ``mask`` (B, prompt + new) float32.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

from fsnn.models import layers
from fsnn.models.layers import residual

from . import fusion
from .fusion import fuse, fuse_decode_step, masked_sum

__all__ = ["register_for_remote", "steer_pass", "steer_steps"]


@functools.cache
def register_for_remote() -> None:
    """Hand this loop body and the math it calls to nnsight by value, once, at the first
    remote trace (NDIF, or the serialised backend): the server has no fsnn. Registering
    at import instead would patch nnsight for every user of ``import fsnn``."""
    import nnsight

    for module in (fusion, layers, sys.modules[__name__]):
        nnsight.register(module)


def steer_pass(envoys: list[Any], h: list[Any], alpha: list[Any], gamma: list[Any], mask: Any) -> list[Any]:
    """Steer one forward pass at every active layer: mu = the pass's masked mean.

    Returns:
        Per layer, the running ``(sum (B, 1, H), count (B, 1, 1))`` of the positions
        seen, before the layer's own shift (what cached decoding continues from).
    """
    sums = []
    for i in range(len(envoys)):
        a = residual(envoys[i].output)
        total, count = masked_sum(a, mask[:, : a.shape[1]])
        steered = fuse(a, h[i][:, 0], total / count, alpha[i][:, 0, 0], gamma[i][:, 0, 0])
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
    gamma: list[Any],
    mask: Any,
    picked: list[Any],
    *,
    faithful: bool,
    max_new_tokens: int,
) -> None:
    """Steer every step of a generate trace and record the greedy token of each step.

    ``faithful``: no KV cache, every step re-runs the sequence; mu is the mean of the
    whole pass and the shift applies to every position. Cached: the prompt pass as
    faithful's step 0, then each new position is steered with the running mean of all
    positions so far. ``picked`` must be created (and saved) by the caller before the
    call: when a row hits EOS early nnsight unwinds this loop, and the steps it ran
    must survive.
    """
    sums: list[Any] = []
    for step in tracer.iter[0:max_new_tokens]:
        if faithful or step == 0:
            sums = steer_pass(envoys, h, alpha, gamma, mask)
        else:
            for i in range(len(envoys)):
                a = residual(envoys[i].output)
                steered, total, count = fuse_decode_step(a, h[i], sums[i][0], sums[i][1], alpha[i], gamma[i])
                sums[i] = (total, count)
                a.copy_(steered)
        picked.append(lm_head.output[:, -1].argmax(dim=-1).cpu())
