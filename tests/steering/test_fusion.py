"""Exact oracles of the pure intervention math (eqs. 1-5)."""

from __future__ import annotations

import pytest
import torch

from fsnn.steering.fusion import fuse, masked_mean, masked_sum, running_mean_update


def literal_eq5(a, h, mu, alpha, gamma):
    """Eqs. (3)-(5) exactly as written, in float32."""
    a32 = a.float()
    delta = gamma[:, None, None] * (h[:, None, :] - mu[:, None, :])
    a1 = a32 + delta
    return alpha[:, None, None] * a1 + (1 - alpha[:, None, None]) * a32


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_alpha_or_gamma_zero_is_bit_identical(dtype):
    torch.manual_seed(0)
    a = torch.randn(3, 7, 16).to(dtype)
    h, mu = torch.randn(3, 16), torch.randn(3, 16)
    zero, some = torch.zeros(3), torch.tensor([0.3, 0.9, 1.0])
    assert torch.equal(fuse(a, h, mu, zero, some), a)
    assert torch.equal(fuse(a, h, mu, some, zero), a)
    assert fuse(a, h, mu, some, some).dtype == dtype


def test_fuse_equals_the_literal_formula():
    torch.manual_seed(1)
    a = torch.randn(4, 5, 32)
    h, mu = torch.randn(4, 32), torch.randn(4, 32)
    alpha, gamma = torch.rand(4), torch.rand(4)
    torch.testing.assert_close(
        fuse(a, h, mu, alpha, gamma), literal_eq5(a, h, mu, alpha, gamma), rtol=1e-6, atol=1e-6
    )
    # only the product alpha*gamma matters (docs/method.md §3: eq. (5) collapses)
    out2 = fuse(a, h, mu, alpha * 2, gamma / 2)
    torch.testing.assert_close(fuse(a, h, mu, alpha, gamma), out2, rtol=1e-6, atol=1e-6)
    # every position of a row gets the same shift
    shift = fuse(a, h, mu, alpha, gamma) - a
    torch.testing.assert_close(shift, shift[:, :1].expand_as(shift))


def test_masked_mean_ignores_padding():
    a = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    mean = masked_mean(a, mask)
    torch.testing.assert_close(mean[0], a[0, 2:].mean(0))
    torch.testing.assert_close(mean[1], a[1].mean(0))
    with pytest.raises(ValueError, match="empty span"):
        masked_mean(a, torch.zeros(2, 4))


def test_running_mean_equals_full_mean():
    torch.manual_seed(2)
    a = torch.randn(2, 9, 5)
    mask = torch.ones(2, 9)
    total, count = masked_sum(a[:, :4], mask[:, :4])
    for t in range(4, 9):
        mu, total, count = running_mean_update(total, count, a[:, t : t + 1])
        torch.testing.assert_close(mu, a[:, : t + 1].mean(1))


def test_fuse_decode_step_equals_running_mean_then_fuse():
    """The fused decode-step kernel is bit-identical to its two-step definition."""
    from fsnn.steering.fusion import fuse_decode_step

    torch.manual_seed(3)
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(3, 1, 16).to(dtype)
        h = torch.randn(3, 16)
        total, count = torch.randn(3, 16), torch.full((3, 1), 5.0)
        alpha, gamma = torch.rand(3), torch.rand(3)
        mu, t2, c2 = running_mean_update(total, count, a)
        expected = fuse(a, h, mu, alpha, gamma)
        got, t3, c3 = fuse_decode_step(
            a,
            h[:, None],
            total[:, None],
            count[:, None],
            alpha[:, None, None],
            gamma[:, None, None],
        )
        assert torch.equal(got, expected)
        assert torch.equal(t3[:, 0], t2) and torch.equal(c3[:, 0], c2)
