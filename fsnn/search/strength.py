"""Parametrizations of steering strength: what a search samples, and the per-layer (alpha, gamma) it means.

Eqs. (3)-(5) shift a layer's output by ``alpha * gamma * (h_l - mu_l)`` (docs/method.md §3,
§2.5), so only the product k = alpha * gamma changes the result. Three ways to sample it,
one value (or pair) per segment of the layout — a custom layout (``NAME=0-3,8-11``)
gives per-layer-group strengths, ``full`` one strength for every layer:

``alpha_gamma`` (the paper)
    alpha, gamma ~ U[low, high] per segment (paper [0.01, 1]): k spans 1e-4..1 with most
    mass near 0.25, a range tuned on Gemma-2-2B.
``log_product``
    k per segment on a log scale (alpha fixed to 1), default [1e-3, 1]: every decade of
    strength gets the same share of the trials.
``norm_relative``
    s per segment on a log scale, default [0.01, 1]: the shift's size as a fraction of
    the layer's typical residual norm. gamma_l = s * ||a_l||_typ / ||h_l - mu_l|| with mu_l
    the steering prompt's mean activation and ||a_l||_typ the median norm of its
    positions (one unsteered traced pass, :func:`norm_scales`), so at the prompt pass
    ||gamma_l * (h_l - mu_l)|| = s * ||a_l||_typ at every layer of every model.

``angle`` (the ``angular`` operator, docs/operators.md)
    theta per segment on a log scale, default [1e-3, 0.1] radians: the rotation of every
    steered position toward h_l - mu_generic,l (alpha = 1, gamma = theta, so alpha *
    gamma is the angle). On SmolLM2-135M, full-layer, 2e-3 rad already changes the text,
    0.01 keeps it readable, 0.02 starts to loop and 0.1 breaks it (measured on two
    questions, cached, 24 tokens): the range spans weak to broken, as ``log_product``'s does.

``product`` (k uniform in [low^2, high^2], alpha = 1) is kept for older run folders.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import nnsight
import numpy as np
import torch

from fsnn.backends.base import resolve_backend
from fsnn.errors import FsnnError
from fsnn.models.layers import residual
from fsnn.steering.fusion import masked_sum
from fsnn.steering.remote_code import trace_remote

from .config import DEFAULT_RANGES, PARAMETRIZATIONS

__all__ = [
    "DEFAULT_RANGES",
    "PARAMETRIZATIONS",
    "distributions",
    "norm_scales",
    "per_layer",
    "start_params",
    "strengths",
]

# the parameter prefix of each log-scale parametrization: k_S, s_S, theta_S
_PREFIX = {"log_product": "k", "norm_relative": "s", "angle": "theta"}


def _check(parametrization: str) -> None:
    if parametrization not in PARAMETRIZATIONS:
        raise FsnnError(
            f"unknown parametrization {parametrization!r}; choose one of {PARAMETRIZATIONS}"
        )


def distributions(
    parametrization: str, segment_names: Sequence[str], low: float, high: float
) -> dict[str, Any]:
    """Optuna distributions of one trial, by parameter name (``alpha_S``/``gamma_S``, ``k_S``, ``s_S`` or ``theta_S``)."""
    from optuna.distributions import FloatDistribution

    _check(parametrization)
    if parametrization == "alpha_gamma":
        d = FloatDistribution(low, high)
        return {f"{p}_{name}": d for name in segment_names for p in ("alpha", "gamma")}
    if parametrization == "product":
        d = FloatDistribution(low * low, high * high)
        return {f"k_{name}": d for name in segment_names}
    if low <= 0:
        raise FsnnError(f"{parametrization} samples on a log scale: low must be > 0, got {low}")
    d = FloatDistribution(low, high, log=True)
    return {f"{_PREFIX[parametrization]}_{name}": d for name in segment_names}


def start_params(
    parametrization: str, segment_names: Sequence[str], low: float, high: float, n: int
) -> list[dict[str, float]]:
    """``n`` log-spaced strengths, the same in every segment, inside (low, high), weakest first.

    For ``alpha_gamma``, alpha = high and gamma takes the log-spaced values.
    """
    _check(parametrization)
    if n <= 0:
        return []
    lo, hi = (low * low, high * high) if parametrization == "product" else (low, high)
    values = np.geomspace(lo, hi, n + 2)[1:-1]
    out = []
    for v in values:
        if parametrization == "alpha_gamma":
            out.append(
                {
                    k: float(x)
                    for name in segment_names
                    for k, x in ((f"alpha_{name}", high), (f"gamma_{name}", v))
                }
            )
        else:
            prefix = _PREFIX.get(parametrization, "k")  # product samples k too
            out.append({f"{prefix}_{name}": float(v) for name in segment_names})
    return out


def strengths(params: dict[str, float], segment_names: Sequence[str]) -> list[float]:
    """The sampled strength of each segment: alpha*gamma, k, theta or s."""
    out = []
    for name in segment_names:
        if f"alpha_{name}" in params:
            out.append(float(params[f"alpha_{name}"]) * float(params[f"gamma_{name}"]))
        elif f"k_{name}" in params:
            out.append(float(params[f"k_{name}"]))
        elif f"theta_{name}" in params:
            out.append(float(params[f"theta_{name}"]))
        else:
            out.append(float(params[f"s_{name}"]))
    return out


def per_layer(
    params: dict[str, float],
    ranges: Sequence[tuple[int, int]],
    segment_names: Sequence[str],
    n_layers: int,
    norm_scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha (layer,), gamma (layer,)) float32 of one trial; 0 outside every segment.

    Args:
        params: the trial's parameters (names as :func:`distributions` gives them).
        ranges: inclusive (first, last) layer range of each segment.
        segment_names: one per range.
        n_layers: model depth.
        norm_scale: (layer,) ||a_l||_typ / ||h_l - mu_l|| of the prompt
            (:func:`norm_scales`); required by ``s_*`` parameters.

    Raises:
        FsnnError: a norm-relative trial without ``norm_scale``.
    """
    alpha = torch.zeros(n_layers, dtype=torch.float32)
    gamma = torch.zeros(n_layers, dtype=torch.float32)
    for (first, last), name in zip(ranges, segment_names, strict=True):
        sl = slice(first, last + 1)
        if f"alpha_{name}" in params:
            alpha[sl], gamma[sl] = float(params[f"alpha_{name}"]), float(params[f"gamma_{name}"])
        elif f"k_{name}" in params:
            alpha[sl], gamma[sl] = 1.0, float(params[f"k_{name}"])
        elif f"theta_{name}" in params:  # the angular operator reads alpha * gamma as the angle
            alpha[sl], gamma[sl] = 1.0, float(params[f"theta_{name}"])
        elif f"s_{name}" in params:
            if norm_scale is None:
                raise FsnnError(
                    "a norm_relative strength needs the prompt's norm scales (fsnn.search.strength.norm_scales)"
                )
            alpha[sl] = 1.0
            gamma[sl] = float(params[f"s_{name}"]) * norm_scale[sl].float()
        else:
            raise FsnnError(
                f"trial parameters {sorted(params)} hold no strength for segment {name!r}"
            )
    return alpha, gamma


@torch.no_grad()
def norm_scales(
    model: Any,
    prompts: Sequence[str],
    h: torch.Tensor,
    *,
    batch_size: int = 8,
    backend: Any = None,
    centre: torch.Tensor | None = None,
) -> torch.Tensor:
    """||a_l||_typ / ||h_l - mu_l|| of each prompt at each layer, from one unsteered traced pass per batch.

    mu_l is the mean of the prompt's block-l outputs over its valid positions (eq. 2 at
    the prompt pass); ||a_l||_typ is the median norm of those positions (the median
    ignores the few outsized positions, e.g. a BOS attention sink). With ``centre``
    (the ``centred`` operator's mu_generic, (layer, hidden)), the distance is
    ||h_l - centre_l|| instead, the length of the direction that operator adds, so
    that s is again the shift's size as a fraction of ||a_l||_typ.

    Args:
        model: a :class:`fsnn.models.load.LoadedModel`.
        prompts: B steering prompts.
        h: reference vectors, (B, layer, hidden).
        batch_size: prompts per traced pass.
        backend: where the trace runs (:mod:`fsnn.backends.base`; default local).
        centre: (layer, hidden) float32 to measure h_l against instead of mu_l.

    Returns:
        (B, layer) float32; a layer where h_l = mu_l (no direction) gets 0.
    """
    from fsnn.steering.generation import encode

    h = torch.as_tensor(h, dtype=torch.float32)
    if h.ndim != 3 or h.shape[0] != len(prompts) or h.shape[1] != model.n_layers:
        raise FsnnError(
            f"references must be (rows={len(prompts)}, layer={model.n_layers}, hidden), "
            f"got {tuple(h.shape)}"
        )
    envoys = [model.layer(i) for i in range(model.n_layers)]
    where = resolve_backend(backend)
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        enc = encode(model, chunk)
        mask = enc.attention_mask.to(model.device)
        with model.lm.trace(dict(enc), remote=trace_remote(where)):
            stats = nnsight.save([])
            for envoy in envoys:
                a = residual(envoy.output)
                total, count = masked_sum(a, mask)
                norms = a.float().norm(dim=-1).masked_fill(mask == 0, float("nan"))
                stats.append(((total / count).cpu(), norms.nanmedian(dim=1).values.cpu()))
        mu = torch.stack([m for m, _ in stats], dim=1)  # (b, L, H)
        typ = torch.stack([t for _, t in stats], dim=1)  # (b, L)
        against = mu if centre is None else torch.as_tensor(centre, dtype=torch.float32)[None]
        dist = (h[start : start + len(chunk)] - against).norm(dim=-1)
        out.append(torch.where(dist > 0, typ / dist.clamp_min(1e-30), torch.zeros_like(typ)))
    return torch.cat(out).float()
