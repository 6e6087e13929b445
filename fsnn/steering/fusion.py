"""The intervention math of Fusion Steering, docs/method.md §3 eqs. (1)-(5), as pure tensor functions.

No hooks, no nnsight: :mod:`fsnn.steering.steer` decides *where* and *when* these apply. This
module imports nothing but torch, so it can be shipped by value to NDIF
(``nnsight.register``) and runs unchanged inside a remote trace.

Shapes (one vocabulary across fsnn): B = rows of a batch (``prompt`` x ``trial``),
T = ``token`` positions of the current forward pass, H = ``hidden`` (d_model).

    (1)  h_l   = mean_{t in T_ref} a_{l,t}                  reference, per layer
    (2)  mu_l  = mean over the current pass's valid positions of a_{l,t}
    (3)  D_l   = gamma * (h_l - mu_l)
    (4)  a'    = a + D_l                                    at every position
    (5)  a''   = alpha * a' + (1 - alpha) * a  =  a + alpha * D_l

(5) is evaluated in its second, algebraically identical form ``a + alpha * D``: it is
exact (bit-identical to ``a``) when alpha = 0 *or* gamma = 0, which the literal form is
not (``alpha*a + (1-alpha)*a`` rounds). The math runs in float32 and the result is cast
back to the activation dtype (fp16 in the paper's 8-bit setting).
"""

from __future__ import annotations

import torch

__all__ = ["fuse", "fuse_decode_step", "masked_mean", "masked_sum", "running_mean_update"]


def masked_sum(a: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum and count of ``a`` over valid positions, in float32.

    Args:
        a: activations, (B, T, H).
        mask: 1 for real tokens, 0 for padding, (B, T).

    Returns:
        (sum (B, H) float32, count (B, 1) float32).
    """
    m = mask.to(device=a.device, dtype=torch.float32).unsqueeze(-1)
    return (a.float() * m).sum(dim=1), m.sum(dim=1)


def masked_mean(a: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. (1)/(2): mean of ``a`` (B, T, H) over positions where ``mask`` (B, T) is 1.

    Returns:
        (B, H) float32. A row with no valid position raises instead of returning NaN.
    """
    total, count = masked_sum(a, mask)
    if bool((count == 0).any()):
        raise ValueError("masked_mean: a row has no valid position (empty span)")
    return total / count


def running_mean_update(
    total: torch.Tensor, count: torch.Tensor, a_new: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Add one decode step's activations to a running sum; return the new mean.

    Args:
        total: (B, H) float32 sum of all positions so far.
        count: (B, 1) float32 number of positions so far.
        a_new: (B, 1, H) this step's activations (before this layer's shift).

    Returns:
        (mean (B, H), new total, new count).
    """
    total = total + a_new[:, -1].float()
    count = count + 1.0
    return total / count, total, count


def fuse(
    a: torch.Tensor,
    h: torch.Tensor,
    mu: torch.Tensor,
    alpha: torch.Tensor,
    gamma: torch.Tensor,
) -> torch.Tensor:
    """Eqs. (3)-(5): interpolated additive steering of one layer's output.

    Args:
        a: block output, (B, T, H), any float dtype.
        h: reference vector, (B, H).
        mu: mean of this pass's activations, (B, H) float32.
        alpha: interpolation weight per row, (B,).
        gamma: additive strength per row, (B,).

    Returns:
        a'' with the dtype and shape of ``a``; the same shift at every position of a row.
    """
    # h/alpha/gamma may come from the CPU (a remote request); the math runs where a is
    h, alpha, gamma = (t.to(device=a.device, dtype=torch.float32) for t in (h, alpha, gamma))
    delta = gamma.unsqueeze(-1) * (h - mu)  # (3)  (B, H)
    shift = alpha.unsqueeze(-1) * delta  # (4)+(5): a'' - a = alpha * D
    return (a.float() + shift.unsqueeze(1)).to(a.dtype)


def fuse_decode_step(
    a: torch.Tensor,
    h: torch.Tensor,
    total: torch.Tensor,
    count: torch.Tensor,
    alpha: torch.Tensor,
    gamma: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`running_mean_update` then :func:`fuse`, for cached mode's decode steps.

    The same float32 operations in the same order, so the result is bit-identical;
    it only saves the per-call reshapes and casts (this runs at every layer of every
    generated token), so every operand comes shaped for the (B, T, H) activations.

    Args:
        a: block output, (B, T, H) (T = 1 in a decode step); the last position joins
            the running sum.
        h: reference vector, (B, 1, H) float32.
        total: (B, 1, H) float32 sum of all positions so far.
        count: (B, 1, 1) float32 number of positions so far.
        alpha, gamma: (B, 1, 1) float32.

    Returns:
        (a'' with the dtype and shape of ``a``, new total, new count).
    """
    total = total + a[:, -1:].float()
    count = count + 1.0
    mu = total / count
    delta = gamma * (h - mu)  # (3)
    shift = alpha * delta  # (4)+(5)
    return (a.float() + shift).to(a.dtype), total, count
