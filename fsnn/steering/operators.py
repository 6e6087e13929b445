"""Steering operators beyond eqs. (3)-(5), as pure tensor functions (docs/operators.md).

Eqs. (3)-(5) push every position toward one reference at every step (docs/method.md §3);
small models then loop on the answer word or break. The operators here change *how*
(a norm-preserving rotation, a mean-centred shift), *when* (schedules over decoding
steps, a per-step KL bound) and *where* (layer windows that can be switched off) a
layer's output is steered. No hooks, no nnsight: like :mod:`fsnn.steering.fusion`, the caller
decides where they run; :mod:`fsnn.steering.intervention` runs them inside a trace.

Conventions shared with :mod:`fsnn.steering.fusion`:

- Shapes: B = rows of a batch, T = positions of the current forward pass, H = hidden
  (d_model), L = layers, P = generic prompts, V = vocabulary.
- The math runs in float32 and the result is cast back to the activation dtype.
- A strength of exactly 0 returns the input bit for bit: the unsteered value is
  *selected* (``torch.where``), never computed as ``x + 0 * delta``, which turns -0.0
  into +0.0 and an infinite delta into NaN.
- Steps: a generation of N new tokens makes N forward calls, t = 0..N-1. Step t = 0 is
  the prompt pass; its last position picks generated token 0. Step t >= 1 picks
  generated token t: in ``cached`` mode it processes one position (token t-1 fed
  back); in ``faithful`` mode it re-runs the whole sequence, prompt and tokens 0..t-1
  (docs/method.md §9).
- ``check=True`` validates parameter *values* and raises :class:`fsnn.errors.FsnnError`
  with one line naming the bad value. It reads the values on the host (one device
  sync): validate once where a request is planned, then pass ``check=False`` inside a
  trace's per-layer, per-token loop. Shapes are always checked (they cost nothing).

Position-wise operators (:func:`rotate_toward`, :func:`mean_centred`) change each
position from its own value and fixed per-row vectors only. With a step-independent
strength, faithful mode then recomputes every earlier position exactly as cached mode
steered it (a causal model, induction over layers), so the two modes are the same
method, unlike eqs. (2)-(5), whose pass mean mu_l makes them differ (docs/method.md §9).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch

from fsnn.errors import FsnnError

from .fusion import masked_mean, masked_sum
from .layout import SegmentLayout, expand_segments
from .specs import FIXED_SCHEDULES, OPERATORS, SCHEDULES, parse_schedule

__all__ = [
    "FIXED_SCHEDULES",
    "OPERATORS",
    "SCHEDULES",
    "WINDOW_PREFIX",
    "centred_direction",
    "gated_strengths",
    "generic_mean",
    "kl_bounded_strength",
    "kl_divergence",
    "mean_centred",
    "rotate_toward",
    "schedule",
    "schedule_multipliers",
    "steer_window",
    "window_distributions",
    "window_strengths",
]


# Optuna parameter of a segment's on/off switch: f"{WINDOW_PREFIX}_{segment name}"
WINDOW_PREFIX = "on"


# --------------------------------------------------------------------------- shaping


def _check_activations(x: torch.Tensor) -> None:
    if x.ndim != 3:
        raise FsnnError(
            f"activations must be (batch, position, hidden), got shape {tuple(x.shape)}"
        )


def _per_position(value: Any, x: torch.Tensor, name: str) -> torch.Tensor:
    """A scalar, (B,) or (B, T) strength as float32 (B|1, T|1, 1) on x's device."""
    v = torch.as_tensor(value, dtype=torch.float32).to(x.device)
    if v.ndim == 0:
        v = v.reshape(1, 1)
    elif v.ndim == 1:
        v = v[:, None]
    elif v.ndim != 2:
        raise FsnnError(
            f"{name} must be a scalar, (batch,) or (batch, position), got shape {tuple(v.shape)}"
        )
    if v.shape[0] not in (1, x.shape[0]) or v.shape[1] not in (1, x.shape[1]):
        raise FsnnError(
            f"{name} of shape {tuple(v.shape)} does not fit activations {tuple(x.shape)}"
        )
    return v[..., None]


def _per_row_vector(value: Any, x: torch.Tensor, name: str) -> torch.Tensor:
    """An (H,), (B, H) or (B, T, H) vector as float32 (B|1, T|1, H) on x's device."""
    v = torch.as_tensor(value).to(device=x.device, dtype=torch.float32)
    if v.ndim == 1:
        v = v[None, None]
    elif v.ndim == 2:
        v = v[:, None]
    elif v.ndim != 3:
        raise FsnnError(
            f"{name} must be (hidden,), (batch, hidden) or (batch, position, hidden), "
            f"got shape {tuple(v.shape)}"
        )
    if (
        v.shape[-1] != x.shape[-1]
        or v.shape[0] not in (1, x.shape[0])
        or v.shape[1] not in (1, x.shape[1])
    ):
        raise FsnnError(
            f"{name} of shape {tuple(v.shape)} does not fit activations {tuple(x.shape)}"
        )
    return v


def _check_range(v: torch.Tensor, name: str, low: float, high: float = math.inf) -> None:
    """Raise unless every value of v is finite and in [low, high]."""
    bad = ~torch.isfinite(v) | (v < low) | (v > high)
    if bool(bad.any()):
        first = float(v[bad].flatten()[0])
        bounds = f">= {low}" if high == math.inf else f"in [{low}, {high}]"
        raise FsnnError(f"{name} must be finite and {bounds}, got {first}")


# --------------------------------------------------------------------------- (a) rotation


def rotate_toward(
    x: torch.Tensor, r: Any, theta: Any, *, relative: bool = False, check: bool = True
) -> torch.Tensor:
    """Norm-preserving rotation of every position toward a reference direction.

    For each position's residual x (H,) and its row's direction r, with u = x/||x||,
    r^ = r/||r||, phi = angle(x, r) in [0, pi] and v the unit vector of
    r^ - (u.r^) u (the part of r orthogonal to x):

        x' = cos(a) * x + sin(a) * ||x|| * v,
        a  = min(theta, phi)      (relative=False: theta is an angle in radians)
        a  = theta * phi          (relative=True: theta in [0, 1], the fraction of the way)

    x' stays in the plane spanned by x and r, keeps ||x'|| = ||x|| and makes the angle
    phi - a with r: the geodesic (great-circle) step toward r^ on the sphere of radius
    ||x||. The clamp a <= phi means it never overshoots: theta >= phi lands exactly on
    ||x|| * r^, relative theta = 1 likewise.

    Edge cases, all without NaN: a position with x = 0, a row with r = 0, x parallel to r
    (phi = 0) and theta = 0 return x bit for bit. x anti-parallel to r (phi = pi) has no
    unique plane; every great circle through x reaches r^, and v is taken as the unit
    part of e_k orthogonal to x, k the first coordinate of smallest |u_k| (deterministic;
    it exists for H >= 2).

    Angular steering (H. M. Vu and T. M. Nguyen, "Angular Steering: Behavior Control via
    Rotation in Activation Space", arXiv:2510.26243, 2025) rotates within one fixed 2-D
    plane shared by all positions; rotating each position along its own geodesic toward
    a target direction is the primitive of Spherical Steering (Z. You, C. Deng, H. Chen,
    "Spherical Steering: Geometry-Aware Activation Rotation for Language Models",
    arXiv:2602.08169, 2026). The clamp and the angle parametrization are fsnn's.

    Modes: position-wise with a fixed r, so ``faithful`` and ``cached`` coincide when
    theta does not depend on the step (module docstring). Choose r fixed per row, e.g.
    the mean-centred direction h_l - mu_generic (:func:`centred_direction`): raw
    residuals share a large common offset that dominates the angle between x and h_l.
    A pass-dependent r such as h_l - mu_l makes the operator depend on the pass.

    Args:
        x: one layer's output, (B, T, H), any float dtype, H >= 2.
        r: reference direction, (H,), (B, H) or (B, T, H); its length is ignored.
        theta: the strength: a scalar, (B,) or (B, T). Radians >= 0 (values above pi act
            as pi), or with ``relative`` a fraction in [0, 1].
        relative: theta is a fraction of each position's angle phi instead of an angle.
        check: validate theta's values (one host sync; see the module docstring).

    Returns:
        x' with the shape and dtype of ``x``.

    Raises:
        FsnnError: a bad shape, H < 2, or (with ``check``) a negative, non-finite or,
            relative, above-1 theta.
    """
    _check_activations(x)
    if x.shape[-1] < 2:
        raise FsnnError(f"rotation needs a hidden size >= 2, got {x.shape[-1]}")
    r32 = _per_row_vector(r, x, "r")
    th = _per_position(theta, x, "theta")
    if check:
        _check_range(
            th,
            "theta (fraction)" if relative else "theta (radians)",
            0.0,
            1.0 if relative else math.inf,
        )
    return _rotate(x, r32, th, relative)


def _rotate(
    x: torch.Tensor, r32: torch.Tensor, th: torch.Tensor, relative: bool = False
) -> torch.Tensor:
    """The math of :func:`rotate_toward` on shaped, validated operands (no checks).

    Runs inside nnsight traces (:mod:`fsnn.steering.intervention`), also on NDIF, where
    this module is shipped by value: it refers to torch only, never to fsnn names.

    Args:
        x: (B, T, H); r32: (B|1, T|1, H) float32; th: (B|1, T|1, 1) float32 (radians, or a
            fraction with ``relative``).
    """
    x32 = x.float()
    nx = x32.norm(dim=-1, keepdim=True)
    nr = r32.norm(dim=-1, keepdim=True)
    valid = (nx > 0) & (nr > 0)
    u = x32 / nx.clamp_min(torch.finfo(torch.float32).tiny)
    rh = r32 / nr.clamp_min(torch.finfo(torch.float32).tiny)
    cos_phi = (u * rh).sum(dim=-1, keepdim=True)
    w = rh - cos_phi * u
    sin_phi = w.norm(dim=-1, keepdim=True)
    # atan2 stays accurate near 0 and pi, where acos of a rounded cosine does not
    phi = torch.atan2(sin_phi, cos_phi)
    a = th * phi if relative else torch.minimum(th, phi)  # the clamp: never past r
    # anti-parallel: no unique plane; any unit vector orthogonal to x is a geodesic to r
    k = u.abs().argmin(dim=-1, keepdim=True)
    fallback = torch.zeros_like(u).scatter_(-1, k, 1.0) - u.gather(-1, k) * u
    fallback = fallback / fallback.norm(dim=-1, keepdim=True).clamp_min(
        torch.finfo(torch.float32).tiny
    )
    v = torch.where(sin_phi > 0, w / sin_phi.clamp_min(torch.finfo(torch.float32).tiny), fallback)
    # second Gram-Schmidt pass: for nearly parallel x and r, w loses orthogonality to
    # rounding, and a v not orthogonal to x would change the norm
    v = v - (u * v).sum(dim=-1, keepdim=True) * u
    v = v / v.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    out = torch.cos(a) * x32 + torch.sin(a) * nx * v
    keep = ~valid | (a == 0)
    return torch.where(keep, x, out.to(x.dtype))


# --------------------------------------------------------------------------- (b) schedules


def schedule(kind: str, t: Any, *, n: int | None = None, rho: float | None = None) -> torch.Tensor:
    """Multiplier m(t) of a steering strength at generation step t (module docstring: steps).

        constant      m(t) = 1
        prompt_only   m(t) = 1 if t == 0 else 0
        first_n       m(t) = 1 if t < n else 0     (n >= 1; the prompt pass counts: n = 1
                                                    is prompt_only; the first n generated
                                                    tokens are picked under steering)
        decay         m(t) = rho ** t              (rho in [0, 1]; 0 ** 0 = 1, so rho = 0
                                                    is prompt_only and rho = 1 constant)

    The steered strength at step t is m(t) times the searched strength (k, theta, ...).
    Varying the strength over decoding is the idea of Dynamic Activation Composition
    (D. Scalena, G. Sarti, M. Nissim, "Multi-property Steering of Large Language Models
    with Dynamic Activation Composition", arXiv:2406.17563, 2024), which sets it per step
    from a KL divergence (:func:`kl_bounded_strength`); these fixed schedules are fsnn's.

    Modes: in ``cached`` mode step t steers only the new position, and positions already
    in the cache keep the multiplier of the step that computed them: prompt_only steers
    the prompt's keys/values once, and every later token still attends to them. In
    ``faithful`` mode step t re-runs and steers every position with m(t): prompt_only
    then steers token 0's choice only, and later passes recompute the prompt unsteered.
    To give faithful mode cached mode's meaning, evaluate the schedule per *position*
    instead, t = 0 for prompt positions and t = j + 1 for generated token j's position
    (the step that first processed it), and pass the (B, T) result as a per-position
    strength; for a position-wise operator the two modes then coincide.

    Args:
        kind: one of :data:`FIXED_SCHEDULES` (``kl`` has no fixed multipliers: it is chosen
            while generating, :mod:`fsnn.steering.kl_decode`).
        t: step (or position) indices, integers >= 0: an int, a sequence or an integer
            tensor of any shape.
        n: the count of ``first_n`` (an int >= 1); only for ``first_n``.
        rho: the ratio of ``decay`` (in [0, 1]); only for ``decay``.

    Returns:
        float32 tensor with the shape of ``t``.

    Raises:
        FsnnError: an unknown kind, a missing, superfluous or out-of-range n or rho, or
            t that is not made of integers >= 0.
    """
    if kind == "kl":
        raise FsnnError(
            "schedule 'kl' has no fixed multipliers: each step's is chosen from the logits "
            "while generating (fsnn.steering.kl_decode)"
        )
    if kind not in FIXED_SCHEDULES:
        raise FsnnError(f"unknown schedule {kind!r}; choose one of {FIXED_SCHEDULES}")
    if n is not None and kind != "first_n":
        raise FsnnError(f"schedule {kind!r} takes no n (got n={n!r})")
    if rho is not None and kind != "decay":
        raise FsnnError(f"schedule {kind!r} takes no rho (got rho={rho!r})")
    steps = torch.as_tensor(t)
    if steps.dtype.is_floating_point or steps.dtype.is_complex or steps.dtype == torch.bool:
        raise FsnnError(f"schedule steps must be integers, got dtype {steps.dtype}")
    steps = steps.long()
    if steps.numel() and int(steps.min()) < 0:
        raise FsnnError(f"schedule steps must be >= 0, got {int(steps.min())}")
    if kind == "constant":
        return torch.ones(steps.shape, dtype=torch.float32)
    if kind == "prompt_only":
        return (steps == 0).float()
    if kind == "first_n":
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise FsnnError(f"first_n needs an integer n >= 1, got n={n!r}")
        return (steps < int(n)).float()
    if isinstance(rho, bool) or not isinstance(rho, numbers.Real) or not 0.0 <= rho <= 1.0:
        raise FsnnError(f"decay needs a number rho in [0, 1], got rho={rho!r}")
    # float64 power: rho ** t is then correctly rounded once, at the cast
    return torch.pow(torch.tensor(float(rho), dtype=torch.float64), steps.double()).float()


def schedule_multipliers(spec: str, n_steps: int) -> list[float] | None:
    """m(0), ..., m(n_steps - 1) of a schedule spec (:mod:`fsnn.steering.specs`), or None for ``constant``.

    None lets the steering loop keep the constant schedule's exact code path (no
    multiplication at all). The values are float32 numbers as Python floats, and every
    schedule is non-increasing, so the first 0 ends the steering for good.

    Raises:
        FsnnError: a bad spec, or n_steps < 1.
    """
    kind, kw = parse_schedule(spec)
    if n_steps < 1:
        raise FsnnError(f"a schedule needs n_steps >= 1, got {n_steps}")
    if kind == "constant":
        return None
    if kind == "kl":
        schedule(kind, 0)  # raises the one-line error: kl has no fixed multipliers
    return [float(v) for v in schedule(kind, torch.arange(n_steps), **kw)]


# --------------------------------------------------------------------------- (c) windows


def window_strengths(
    values: Sequence[float], layout: SegmentLayout, n_layers: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-segment strengths as per-layer strengths, and which layers are steered at all.

    A segment whose strength is exactly 0 (or -0.0) is switched off: its layers are
    *not touched*, the same as layers outside every segment. The wiring skips every layer
    with ``on`` False before the trace (as :func:`fsnn.steering.steer._layer_plan` skips layers
    whose alpha * gamma is 0), so those layers' outputs are the model's own, bit for bit.

    Selective Steering (Q.-A. Dang and C. Ngo, "Selective Steering: Norm-Preserving
    Control Through Discriminative Layer Selection", arXiv:2601.19375, 2026) steers only
    chosen layers; here a search chooses them per prompt (:func:`window_distributions`).

    Args:
        values: one strength per segment of ``layout`` (any operator's strength).
        layout: the segments.
        n_layers: decoder blocks of the model.

    Returns:
        (strength (layer,) float32, 0 where off; on (layer,) bool).

    Raises:
        FsnnError: a count of values that does not match the layout, a non-finite value,
            a range outside the model.
    """
    values = [float(v) for v in values]
    for v in values:
        if not math.isfinite(v):
            raise FsnnError(f"layout {layout.name!r}: a window strength must be finite, got {v}")
    strength = expand_segments(values, layout, n_layers)
    on = expand_segments([1.0 if v != 0 else 0.0 for v in values], layout, n_layers) != 0
    return strength, on


def steer_window(
    x: torch.Tensor, strength: Any, operator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Apply ``operator`` to one layer's output where its per-row strength is not 0.

    All rows 0: returns ``x`` itself (the same object; ``operator`` is not called). Some
    rows 0: those rows are selected from ``x`` (bit for bit, -0.0 and NaN included),
    the others from ``operator(x, strength)``. Reads ``strength`` on the host: use it
    where the strengths are known before the trace.

    Args:
        x: one layer's output, (B, T, H).
        strength: per row, a scalar or (B,).
        operator: ``(x, strength (B,) float32) -> x'`` of x's shape and dtype.

    Returns:
        x, or the steered output with x's rows where the strength is 0.
    """
    _check_activations(x)
    s = torch.as_tensor(strength, dtype=torch.float32)
    s = s.expand(x.shape[0]) if s.ndim == 0 else s
    if tuple(s.shape) != (x.shape[0],):
        raise FsnnError(
            f"window strength must be a scalar or (batch={x.shape[0]},), got shape {tuple(s.shape)}"
        )
    on = s != 0
    if not bool(on.any()):
        return x
    out = operator(x, s.to(x.device))
    if bool(on.all()):
        return out
    return torch.where(on.to(x.device)[:, None, None], out, x)


def window_distributions(segment_names: Sequence[str]) -> dict[str, Any]:
    """Optuna distributions of the on/off switch of each segment: ``on_S`` in (True, False).

    The encoding is a categorical per segment, beside the segment's strength parameter
    (``k_S``, ``s_S``, ...), not a strength value that maps to 0: the searched strengths
    are log-uniform, whose range cannot hold 0, and a threshold ("below s_off means
    off") would make "off" the neighbour of "weak" in TPE's density. A categorical lets
    TPE learn how often a window helps independently of how strong it should be. The
    strength of a switched-off segment is still sampled (a search with fixed
    distributions, ``study.ask(dists)``, samples every parameter) and has no effect;
    :func:`gated_strengths` gives the strengths that act. Every switch off is the
    unsteered baseline, a legitimate candidate.
    """
    from optuna.distributions import CategoricalDistribution

    d = CategoricalDistribution((True, False))
    return {f"{WINDOW_PREFIX}_{name}": d for name in segment_names}


def gated_strengths(
    values: Sequence[float], params: dict[str, Any], segment_names: Sequence[str]
) -> list[float]:
    """The acting strength of each segment: its value when ``on_S`` is True, exactly 0.0 when False.

    Args:
        values: the sampled strength of each segment (e.g. :func:`fsnn.search.strength.strengths`).
        params: the trial's parameters, holding ``on_S`` for every segment S.
        segment_names: one per value.

    Raises:
        FsnnError: a missing or non-boolean switch, or counts that differ.
    """
    if len(values) != len(segment_names):
        raise FsnnError(f"{len(values)} strength(s) for {len(segment_names)} segment(s)")
    out = []
    for value, name in zip(values, segment_names, strict=True):
        switch = params.get(f"{WINDOW_PREFIX}_{name}")
        if not isinstance(switch, bool):
            raise FsnnError(
                f"trial parameter {WINDOW_PREFIX}_{name} must be True or False, got {switch!r}"
            )
        out.append(float(value) if switch else 0.0)
    return out


# --------------------------------------------------------------------------- (d) mean-centring


def generic_mean(a: torch.Tensor, mask: torch.Tensor, *, per: str = "prompt") -> torch.Tensor:
    """mu_generic: mean activation of each layer over a fixed set of generic prompts.

        per="prompt":  mu_l = (1/P) sum_p mean_{t: mask[p,t]=1} a[p,l,t]   (each prompt weighs 1)
        per="token":   mu_l = sum_{p,t} mask[p,t] a[p,l,t] / sum_{p,t} mask[p,t]

    "prompt" matches how a reference h_l is built (one text, averaged over its span,
    docs/method.md §2.4), so a long generic prompt does not outweigh short ones.

    Args:
        a: captured block outputs, (P, L, T, H), padded along T.
        mask: 1 for real tokens, 0 for padding, (P, T).
        per: ``prompt`` or ``token`` weighting.

    Returns:
        (L, H) float32.

    Raises:
        FsnnError: bad shapes, an unknown weighting, a prompt with no valid position.
    """
    if a.ndim != 4:
        raise FsnnError(
            f"generic activations must be (prompt, layer, position, hidden), got shape {tuple(a.shape)}"
        )
    p, n_layers, t, h = a.shape
    if tuple(mask.shape) != (p, t):
        raise FsnnError(f"mask must be (prompt={p}, position={t}), got shape {tuple(mask.shape)}")
    if per not in ("prompt", "token"):
        raise FsnnError(f"unknown weighting per={per!r}; choose 'prompt' or 'token'")
    empty = (mask != 0).sum(dim=1) == 0
    if bool(empty.any()):
        raise FsnnError(f"generic prompt {int(empty.nonzero()[0])} has no valid position")
    rows = a.reshape(p * n_layers, t, h)
    row_mask = mask.repeat_interleave(n_layers, dim=0)
    if per == "prompt":
        return masked_mean(rows, row_mask).reshape(p, n_layers, h).mean(dim=0)
    total, count = masked_sum(rows, row_mask)
    return total.reshape(p, n_layers, h).sum(dim=0) / count.reshape(p, n_layers, 1).sum(dim=0)


def centred_direction(h_ref: torch.Tensor, mu_generic: torch.Tensor) -> torch.Tensor:
    """d = h_ref - mu_generic in float32: the mean-centred steering direction.

    Args:
        h_ref: reference vectors, (L, H) or (B, L, H) (eq. 1).
        mu_generic: generic means, (L, H) (:func:`generic_mean`).

    Returns:
        float32 of the broadcast shape.
    """
    if h_ref.shape[-2:] != mu_generic.shape[-2:]:
        raise FsnnError(
            f"references {tuple(h_ref.shape)} and generic means {tuple(mu_generic.shape)} "
            "differ in (layer, hidden)"
        )
    return h_ref.float() - mu_generic.float()


def mean_centred(
    x: torch.Tensor, h_ref: Any, mu_generic: Any, k: Any, *, check: bool = True
) -> torch.Tensor:
    """Mean-centred activation addition: x' = x + k * (h_ref - mu_generic), at every position.

    This is eq. (5) with the pass mean mu_l of eq. (2) replaced by the fixed generic mean:
    eq. (3) becomes D_l = gamma * (h_l - mu_generic,l), and eq. (5) gives
    x + alpha * gamma * (h_l - mu_generic,l), i.e. this operator with k = alpha * gamma
    (``fsnn.steering.fusion.fuse(x, h, mu_generic, 1, k)`` computes the same bits for k != 0).
    The shift is one constant vector per row and layer: it no longer follows the
    prompt or the text generated so far, and it removes the offset that every
    activation of the layer shares, so it points at what is specific to the answer text.
    A norm-relative strength (fsnn.search.strength) carries over with ||h_l - mu_generic,l||
    in place of ||h_l - mu_l||.

    Mean-centring: O. Jorgensen, D. Cope, N. Schoots, M. Shanahan, "Improving Activation
    Steering in Language Models with Mean-Centring", arXiv:2312.03813, 2023 (target-set
    mean minus a generic mean; here the target set is the reference span). Adding a
    fixed vector to the residual stream: A. M. Turner et al., "Activation Addition:
    Steering Language Models Without Optimization", arXiv:2308.10248, 2023.

    Modes: position-wise with a constant shift, so ``faithful`` and ``cached`` coincide
    when k does not depend on the step (module docstring).

    Args:
        x: one layer's output, (B, T, H), any float dtype.
        h_ref: reference vector of the layer, (H,), (B, H) or (B, T, H).
        mu_generic: generic mean of the layer, of a shape that fits like ``h_ref``.
        k: the strength: a scalar, (B,) or (B, T); activation units per unit of
            ||h_ref - mu_generic||, any finite sign (negative pushes away).
        check: validate k's values (one host sync).

    Returns:
        x' with the shape and dtype of ``x``; x bit for bit where k == 0.
    """
    _check_activations(x)
    kk = _per_position(k, x, "k")
    if check:
        _check_range(kk, "k", -math.inf)
    d = _per_row_vector(h_ref, x, "h_ref") - _per_row_vector(mu_generic, x, "mu_generic")
    return _shift(x, d, kk)


def _shift(x: torch.Tensor, d: torch.Tensor, kk: torch.Tensor) -> torch.Tensor:
    """The math of :func:`mean_centred` on shaped operands: x + kk * d, x itself where kk == 0.

    Trace-safe like :func:`_rotate` (torch only). d: (B|1, T|1, H) float32, the direction
    h_ref - mu_generic; kk: (B|1, T|1, 1) float32.
    """
    out = x.float() + kk * d
    return torch.where(kk != 0, out.to(x.dtype), x)


# --------------------------------------------------------------------------- (e) KL bound


def kl_divergence(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(P || Q) = sum_v p_v (log p_v - log q_v) of the softmaxes of two logit tensors.

    Args:
        logits_p, logits_q: (..., V), the same shape.

    Returns:
        (...) float32, >= 0 (rounding below 0 is clamped); terms with p_v = 0 count 0,
        NaN logits give NaN.
    """
    if logits_p.shape != logits_q.shape:
        raise FsnnError(
            f"logits of shapes {tuple(logits_p.shape)} and {tuple(logits_q.shape)} differ"
        )
    log_p = torch.log_softmax(logits_p.float(), dim=-1)
    log_q = torch.log_softmax(logits_q.float(), dim=-1)
    p = log_p.exp()
    # p == 0 selects 0 (0 * -inf would be NaN); a NaN logit still gives NaN
    terms = torch.where(p == 0, torch.zeros_like(p), p * (log_p - log_q))
    return terms.sum(dim=-1).clamp_min(0.0)


def kl_bounded_strength(
    logits_at: Callable[[torch.Tensor], torch.Tensor],
    plain_logits: torch.Tensor,
    epsilon: float,
    *,
    s_max: float,
    n_iter: int = 20,
    check: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The largest strength in [0, s_max] whose next-token distribution stays within a KL bound.

    Bounds KL(p_steered || p_plain) <= epsilon, p = softmax of the step's logits. This
    direction is the expected log-ratio under the distribution the token is *picked
    from*: it grows when steering puts mass on tokens the plain model finds implausible
    (broken language), while it lets steering drain mass from the plain model's (wrong)
    answer at little cost. The reverse KL(p_plain || p_steered) would charge exactly for
    that draining, which is what steering is for.

    Bisection with a fixed count: s = s_max when it is feasible; otherwise
    [lo, hi] = [0, s_max] and ``n_iter`` times mid = (lo + hi) / 2 becomes lo when
    feasible, hi when not (NaN counts as not). 1 + n_iter calls of ``logits_at``, rows
    bisected in parallel. KL need not be monotone in the strength, so what it finds is:
    a feasible s (the KL returned is the one evaluated at s) with an infeasible point at
    s + s_max / 2**n_iter, i.e. a crossing of the bound within that resolution, the
    largest feasible strength only when KL is monotone. s_max feasible is returned even
    if strengths below it are not. Strength 0 (KL 0, taken to be the plain logits, not
    evaluated) when every probe, the smallest s_max / 2**n_iter included, exceeds the
    bound.

    Modes: meant for ``cached`` decoding, one bisection per step: ``logits_at(s)`` runs
    the step's one new position at strength s on the same (unchanged) cache, and the
    chosen s steers that position for good. In ``faithful`` mode each probe would
    re-run the whole sequence, and the step's strength would re-steer every position.
    A per-step strength modulated by a KL divergence between steered and unsteered
    distributions is the idea of Dynamic Activation Composition (Scalena, Sarti, Nissim,
    arXiv:2406.17563, 2024); this bisection with a hard bound is fsnn's.

    Args:
        logits_at: strength -> logits; called with a float32 tensor of shape
            ``plain_logits.shape[:-1]`` (0-d for one distribution, (B,) for B rows, each
            row its own strength) and must return logits of ``plain_logits``'s shape.
        plain_logits: the unsteered logits, (V,) or (B, V).
        epsilon: the bound on KL in nats, >= 0.
        s_max: the largest strength, > 0.
        n_iter: bisection steps, >= 1 (resolution s_max / 2**n_iter).
        check: validate the parameters' values.

    Returns:
        (strength, kl), each float32 of shape ``plain_logits.shape[:-1]``.

    Raises:
        FsnnError: bad parameters, or ``logits_at`` returning another shape.
    """
    if check:
        if not (isinstance(epsilon, numbers.Real) and math.isfinite(epsilon) and epsilon >= 0):
            raise FsnnError(f"KL bound epsilon must be a finite number >= 0, got {epsilon!r}")
        if not (isinstance(s_max, numbers.Real) and math.isfinite(s_max) and s_max > 0):
            raise FsnnError(f"s_max must be a finite number > 0, got {s_max!r}")
        if isinstance(n_iter, bool) or not isinstance(n_iter, numbers.Integral) or n_iter < 1:
            raise FsnnError(f"n_iter must be an integer >= 1, got {n_iter!r}")
    if plain_logits.ndim not in (1, 2):
        raise FsnnError(
            f"plain logits must be (vocab,) or (batch, vocab), got shape {tuple(plain_logits.shape)}"
        )
    plain = plain_logits.float()
    shape = plain.shape[:-1]

    def kl_at(s: torch.Tensor) -> torch.Tensor:
        logits = logits_at(s)
        if logits.shape != plain.shape:
            raise FsnnError(
                f"logits_at returned shape {tuple(logits.shape)}, want {tuple(plain.shape)}"
            )
        return kl_divergence(logits, plain)

    top = torch.full(shape, float(s_max), dtype=torch.float32, device=plain.device)
    kl_top = kl_at(top)
    top_ok = kl_top <= epsilon
    if bool(top_ok.all()):
        return top, kl_top
    lo = torch.zeros_like(top)
    kl_lo = torch.zeros_like(top)
    hi = top.clone()
    for _ in range(int(n_iter)):
        mid = (lo + hi) / 2
        kl_mid = kl_at(mid)
        ok = kl_mid <= epsilon
        lo, kl_lo = torch.where(ok, mid, lo), torch.where(ok, kl_mid, kl_lo)
        hi = torch.where(ok, hi, mid)
    return torch.where(top_ok, top, lo), torch.where(top_ok, kl_top, kl_lo)
