"""Exact oracles of the steering operators beyond eqs. (3)-(5) (docs/operators.md)."""

from __future__ import annotations

import math

import pytest
import torch

from fsnn.errors import FsnnError
from fsnn.steering.fusion import fuse
from fsnn.steering.layout import SegmentLayout
from fsnn.steering.operators import (
    centred_direction,
    gated_strengths,
    generic_mean,
    kl_bounded_strength,
    kl_divergence,
    mean_centred,
    rotate_toward,
    schedule,
    steer_window,
    window_distributions,
    window_strengths,
)

DTYPES = [torch.float32, torch.bfloat16]
_INT_VIEW = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equality: unlike torch.equal, tells -0.0 from +0.0 and NaN from NaN."""
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and torch.equal(a.view(_INT_VIEW[a.dtype]), b.view(_INT_VIEW[b.dtype]))
    )


def one_line_error(excinfo: pytest.ExceptionInfo, needle: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message and needle in message, message


def with_signed_zeros(x: torch.Tensor) -> torch.Tensor:
    """x with a -0.0 in every row: torch.equal cannot tell it from +0.0, same_bits can."""
    x = x.clone()
    x[:, 0, 0] = -0.0
    return x


# --------------------------------------------------------------------------- (a) rotation


def slerp_oracle(x: torch.Tensor, r: torch.Tensor, theta: float) -> torch.Tensor:
    """Independent form in float64: x' = ||x|| (sin(phi - a) u + sin(a) r^) / sin(phi), a = min(theta, phi)."""
    x64, r64 = x.double(), r.double()
    nx = x64.norm(dim=-1, keepdim=True)
    u, rh = x64 / nx, r64 / r64.norm(dim=-1, keepdim=True)
    phi = torch.arccos((u * rh).sum(-1, keepdim=True).clamp(-1, 1))
    a = phi.clamp(max=theta)
    return nx * (torch.sin(phi - a) * u + torch.sin(a) * rh) / torch.sin(phi)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rotation_by_zero_is_the_identity_bit_for_bit(dtype):
    torch.manual_seed(0)
    x = with_signed_zeros(torch.randn(2, 5, 8)).to(dtype)
    r = torch.randn(2, 8)
    for theta in (0.0, torch.zeros(2), torch.zeros(2, 5)):
        out = rotate_toward(x, r, theta)
        assert torch.equal(out, x) and same_bits(out, x)
    assert same_bits(rotate_toward(x, r, 0.0, relative=True), x)


def test_rotation_hand_computed_2d():
    x = torch.tensor([[[1.0, 0.0]]])
    up = torch.tensor([0.0, 1.0])
    out = rotate_toward(x, up, math.pi / 6)
    torch.testing.assert_close(
        out, torch.tensor([[[math.cos(math.pi / 6), math.sin(math.pi / 6)]]]), rtol=0, atol=1e-7
    )
    # clamped at the angle to r (pi/2): lands on ||x|| * r^, never past it
    far = rotate_toward(torch.tensor([[[2.0, 0.0]]]), torch.tensor([0.0, 5.0]), 3.0)
    torch.testing.assert_close(far, torch.tensor([[[0.0, 2.0]]]), rtol=0, atol=1e-6)
    # relative: half of the way from 0 to pi/2 is pi/4
    half = rotate_toward(x, up, 0.5, relative=True)
    torch.testing.assert_close(
        half, torch.tensor([[[math.sqrt(0.5), math.sqrt(0.5)]]]), rtol=0, atol=1e-7
    )
    torch.testing.assert_close(
        rotate_toward(x, up, 1.0, relative=True), up.view(1, 1, 2), rtol=0, atol=1e-7
    )


def test_rotation_matches_the_slerp_oracle_and_keeps_the_norm():
    torch.manual_seed(1)
    x = torch.randn(3, 4, 16)
    r = torch.randn(3, 16)
    for theta in (0.05, 0.4, 1.2, math.pi):
        out = rotate_toward(x, r, theta)
        torch.testing.assert_close(
            out.double(), slerp_oracle(x, r[:, None], theta), rtol=0, atol=2e-6
        )
        torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1), rtol=1e-6, atol=0)
    # the angle to r shrinks by exactly min(theta, phi)
    cos = torch.nn.functional.cosine_similarity
    phi = torch.arccos(cos(x.double(), r[:, None].double(), dim=-1))
    after = torch.arccos(
        cos(rotate_toward(x, r, 0.3).double(), r[:, None].double(), dim=-1).clamp(-1, 1)
    )
    torch.testing.assert_close(after, (phi - 0.3).clamp_min(0), rtol=0, atol=1e-5)


def test_rotation_per_row_and_per_position_strengths():
    torch.manual_seed(2)
    x, r = torch.randn(2, 3, 8), torch.randn(2, 8)
    theta = torch.tensor([0.0, 0.7])
    out = rotate_toward(x, r, theta)
    assert same_bits(out[0], x[0])
    assert torch.equal(out[1:], rotate_toward(x[1:], r[1:], 0.7))
    per_pos = torch.tensor([[0.0, 0.2, 0.0], [0.5, 0.0, 0.9]])
    out = rotate_toward(x, r, per_pos)
    for b in range(2):
        for t in range(3):
            want = rotate_toward(x[b : b + 1, t : t + 1], r[b : b + 1], float(per_pos[b, t]))
            assert torch.equal(out[b : b + 1, t : t + 1], want)


def test_rotation_edge_cases_give_no_nan():
    x = torch.tensor([[[3.0, 0.0, 0.0], [0.0, 0.0, 0.0], [-2.0, 0.0, 0.0], [1e-30, 0.0, 0.0]]])
    r = torch.tensor([1.0, 0.0, 0.0])
    out = rotate_toward(x, r, math.pi / 2)
    assert not out.isnan().any()
    assert same_bits(out[:, 0], x[:, 0])  # parallel: already there
    assert same_bits(out[:, 1], x[:, 1])  # zero vector
    assert same_bits(out[:, 3], x[:, 3])  # tiny but parallel
    # anti-parallel: a quarter turn in the fallback plane (e_1, the first smallest |u_k|)
    torch.testing.assert_close(out[0, 2], torch.tensor([0.0, 2.0, 0.0]), rtol=0, atol=1e-6)
    torch.testing.assert_close(
        rotate_toward(x[:, 2:3], r, math.pi)[0, 0], -x[0, 2], rtol=0, atol=1e-6
    )
    # zero reference direction: nothing to rotate toward
    assert same_bits(rotate_toward(x, torch.zeros(3), 1.0), x)
    # nearly parallel: stays finite and norm-preserving
    near = torch.tensor([[[1.0, 1e-7, 0.0]]])
    out = rotate_toward(near, r, 0.5)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.norm(dim=-1), near.norm(dim=-1), rtol=1e-6, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rotation_keeps_shape_and_dtype(dtype):
    torch.manual_seed(3)
    x = torch.randn(2, 5, 8).to(dtype)
    r = torch.randn(2, 8)
    out = rotate_toward(x, r, 0.3)
    assert out.shape == x.shape and out.dtype == dtype
    # the math is float32: a bf16 input gives the float32 result cast once
    assert torch.equal(out, rotate_toward(x.float(), r, 0.3).to(dtype))
    torch.testing.assert_close(out.float().norm(dim=-1), x.float().norm(dim=-1), rtol=1e-2, atol=0)


def test_rotation_bad_parameters():
    x, r = torch.randn(1, 2, 4), torch.randn(4)
    with pytest.raises(FsnnError) as e:
        rotate_toward(x, r, -0.1)
    one_line_error(e, "-0.1")
    with pytest.raises(FsnnError) as e:
        rotate_toward(x, r, float("nan"))
    one_line_error(e, "nan")
    with pytest.raises(FsnnError) as e:
        rotate_toward(x, r, 1.5, relative=True)
    one_line_error(e, "1.5")
    with pytest.raises(FsnnError, match="hidden size"):
        rotate_toward(torch.ones(1, 1, 1), torch.ones(1), 0.1)
    with pytest.raises(FsnnError, match="does not fit"):
        rotate_toward(x, torch.randn(3), 0.1)
    with pytest.raises(FsnnError, match=r"\(batch, position, hidden\)"):
        rotate_toward(torch.randn(2, 4), r, 0.1)
    with pytest.raises(FsnnError, match="does not fit"):
        rotate_toward(x, r, torch.zeros(3))


# --------------------------------------------------------------------------- (b) schedules


def test_schedules_by_hand():
    t = list(range(6))
    assert schedule("constant", t).tolist() == [1, 1, 1, 1, 1, 1]
    assert schedule("prompt_only", t).tolist() == [1, 0, 0, 0, 0, 0]
    assert schedule("first_n", t, n=3).tolist() == [1, 1, 1, 0, 0, 0]
    assert schedule("decay", t, rho=0.5).tolist() == [1, 0.5, 0.25, 0.125, 0.0625, 0.03125]
    # the prompt pass counts as one of the n; rho = 0 and rho = 1 are the limits
    assert torch.equal(schedule("first_n", t, n=1), schedule("prompt_only", t))
    assert torch.equal(schedule("decay", t, rho=0.0), schedule("prompt_only", t))
    assert torch.equal(schedule("decay", t, rho=1.0), schedule("constant", t))
    assert schedule("decay", [3], rho=0.9).item() == pytest.approx(0.729, abs=1e-7)


def test_schedules_are_vectorised():
    t = torch.tensor([[0, 4, 1], [2, 0, 7]])
    for kind, kw in (
        ("constant", {}),
        ("prompt_only", {}),
        ("first_n", {"n": 2}),
        ("decay", {"rho": 0.8}),
    ):
        m = schedule(kind, t, **kw)
        assert m.shape == t.shape and m.dtype == torch.float32
        flat = [schedule(kind, [int(v)], **kw).item() for v in t.flatten()]
        assert m.flatten().tolist() == flat
    assert schedule("constant", 0).shape == ()


@pytest.mark.parametrize(
    ("kind", "kw", "t", "needle"),
    [
        ("linear", {}, [0], "'linear'"),
        ("first_n", {}, [0], "n=None"),
        ("first_n", {"n": 0}, [0], "n=0"),
        ("first_n", {"n": 2.5}, [0], "n=2.5"),
        ("decay", {}, [0], "rho=None"),
        ("decay", {"rho": 1.5}, [0], "rho=1.5"),
        ("decay", {"rho": -0.1}, [0], "rho=-0.1"),
        ("decay", {"rho": float("nan")}, [0], "rho=nan"),
        ("constant", {"n": 3}, [0], "n=3"),
        ("prompt_only", {"rho": 0.5}, [0], "rho=0.5"),
        ("constant", {}, [0, -1], "-1"),
        ("constant", {}, [0.0, 1.0], "float32"),
    ],
)
def test_schedule_bad_parameters(kind, kw, t, needle):
    with pytest.raises(FsnnError) as e:
        schedule(kind, t, **kw)
    one_line_error(e, needle)


# --------------------------------------------------------------------------- (c) windows


def test_window_strengths_switch_segments_off():
    layout = SegmentLayout.segmented(7)  # 0-2, 3-4, 5-6
    strength, on = window_strengths([0.5, 0.0, -0.0], layout, 8)
    assert strength.tolist() == [0.5, 0.5, 0.5, 0, 0, 0, 0, 0]
    assert on.tolist() == [True, True, True, False, False, False, False, False]
    assert on.dtype == torch.bool and strength.dtype == torch.float32
    with pytest.raises(FsnnError) as e:
        window_strengths([0.5, float("inf"), 0.0], layout, 8)
    one_line_error(e, "inf")
    with pytest.raises(FsnnError, match="segment"):
        window_strengths([0.5], layout, 8)


@pytest.mark.parametrize("dtype", DTYPES)
def test_window_off_returns_the_very_input(dtype):
    torch.manual_seed(4)
    x = with_signed_zeros(torch.randn(3, 4, 6)).to(dtype)
    x[1, 2, 3] = float("nan")

    def refuse(x, s):
        raise AssertionError("an off window must not compute anything")

    assert steer_window(x, 0.0, refuse) is x
    assert steer_window(x, torch.zeros(3), refuse) is x
    # mixed rows: off rows keep their bits (-0.0 and NaN), on rows are steered
    h, mu = torch.randn(3, 6), torch.randn(3, 6)
    k = torch.tensor([0.0, 0.0, 0.7])
    out = steer_window(x, k, lambda x, s: fuse(x, h, mu, torch.ones(3), s))
    assert same_bits(out[:2], x[:2])
    assert torch.equal(out[2], fuse(x, h, mu, torch.ones(3), k)[2])
    # what the selection avoids: x + 0 * delta turns -0.0 into +0.0 where delta >= 0
    naive = fuse(x, h.abs() + 1, mu.abs() * 0, torch.ones(3), torch.zeros(3))
    assert not same_bits(naive[:1], x[:1])


def test_window_search_encoding():
    import optuna

    names = ("early", "middle", "late")
    dists = window_distributions(names)
    assert sorted(dists) == ["on_early", "on_late", "on_middle"]
    assert all(d.choices == (True, False) for d in dists.values())
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        params = study.ask(dists).params
        acting = gated_strengths([0.2, 0.3, 0.4], params, names)
        assert acting == [
            v if params[f"on_{n}"] else 0.0 for v, n in zip([0.2, 0.3, 0.4], names, strict=True)
        ]
        seen.update(params.values())
    assert seen == {True, False}
    assert gated_strengths([0.2], {"on_all": False}, ["all"]) == [0.0]
    with pytest.raises(FsnnError) as e:
        gated_strengths([0.2], {"on_all": "yes"}, ["all"])
    one_line_error(e, "on_all")
    with pytest.raises(FsnnError, match="on_all"):
        gated_strengths([0.2], {}, ["all"])


# --------------------------------------------------------------------------- (d) mean-centring


def test_generic_mean_against_a_hand_computation():
    torch.manual_seed(5)
    a = torch.randn(3, 2, 4, 5)  # 3 generic prompts, 2 layers, 4 positions, hidden 5
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1]])
    per_prompt = [a[0].mean(dim=1), a[1, :, 2:].mean(dim=1), a[2, :, 3]]
    want = (per_prompt[0] + per_prompt[1] + per_prompt[2]) / 3
    torch.testing.assert_close(generic_mean(a, mask), want, rtol=1e-6, atol=1e-6)
    tokens = torch.cat(
        [a[0], a[1, :, 2:], a[2, :, 3:]], dim=1
    )  # (layer, 7 valid positions, hidden)
    torch.testing.assert_close(
        generic_mean(a, mask, per="token"), tokens.mean(dim=1), rtol=1e-6, atol=1e-6
    )
    assert generic_mean(a.bfloat16(), mask).dtype == torch.float32
    with pytest.raises(FsnnError) as e:
        generic_mean(a, torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 1]]))
    one_line_error(e, "generic prompt 1")
    with pytest.raises(FsnnError, match="per='median'"):
        generic_mean(a, mask, per="median")
    with pytest.raises(FsnnError, match="mask"):
        generic_mean(a, mask[:, :3])


@pytest.mark.parametrize("dtype", DTYPES)
def test_mean_centred_by_hand_and_as_eq5_with_the_generic_mean(dtype):
    torch.manual_seed(6)
    x = with_signed_zeros(torch.randn(2, 3, 4)).to(dtype)
    h_ref, mu_g = torch.randn(2, 4), torch.randn(2, 4)
    k = torch.tensor([0.0, 0.8])
    out = mean_centred(x, h_ref, mu_g, k)
    assert out.shape == x.shape and out.dtype == dtype
    assert same_bits(out[0], x[0]) and same_bits(mean_centred(x, h_ref, mu_g, 0.0), x)
    # independent hand computation, element by element in Python floats
    want = [
        [
            [
                float(x[1, t, i].float()) + 0.8 * (float(h_ref[1, i]) - float(mu_g[1, i]))
                for i in range(4)
            ]
            for t in range(3)
        ]
    ]
    torch.testing.assert_close(
        out[1:].float(), torch.tensor(want).to(dtype).float(), rtol=0, atol=1e-6
    )
    # eq. (5) with mu replaced by the generic mean and k = alpha * gamma: the same bits
    assert torch.equal(out[1], fuse(x, h_ref, mu_g, torch.ones(2), k)[1])
    assert torch.equal(centred_direction(h_ref, mu_g), h_ref - mu_g)


def test_mean_centred_with_per_layer_directions():
    torch.manual_seed(7)
    h_ref, mu_g = torch.randn(5, 6), torch.randn(5, 6)  # (layer, hidden)
    d = centred_direction(h_ref, mu_g)
    x = torch.randn(2, 3, 6)
    layer = 2
    out = mean_centred(
        x, h_ref[layer], mu_g[layer], torch.tensor([[0.1, 0.0, 0.2], [0.3, 0.3, 0.0]])
    )
    torch.testing.assert_close(out[0, 0], x[0, 0] + 0.1 * d[layer])
    assert same_bits(out[0, 1], x[0, 1]) and same_bits(out[1, 2], x[1, 2])
    with pytest.raises(FsnnError) as e:
        mean_centred(x, h_ref[layer], mu_g[layer], float("inf"))
    one_line_error(e, "inf")
    with pytest.raises(FsnnError, match="differ"):
        centred_direction(h_ref, mu_g[:, :5])


# --------------------------------------------------------------------------- (e) KL bound


def bernoulli_kl(s: float) -> float:
    """KL(softmax(0, s) || softmax(0, 0)) = p log 2p + (1-p) log 2(1-p), p = sigmoid(s)."""
    p = 1.0 / (1.0 + math.exp(-s))
    return p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p))


def test_kl_divergence_closed_form():
    for s in (0.0, 0.5, 2.0, -3.0):
        got = kl_divergence(torch.tensor([0.0, s]), torch.zeros(2))
        assert got.item() == pytest.approx(bernoulli_kl(s), abs=1e-6)
    masked = torch.tensor([0.0, float("-inf")])
    assert kl_divergence(masked, torch.zeros(2)).item() == pytest.approx(math.log(2), abs=1e-6)
    assert kl_divergence(torch.zeros(2), masked).item() == math.inf
    assert kl_divergence(torch.tensor([0.0, float("nan")]), torch.zeros(2)).isnan()


def test_kl_bisection_against_the_closed_form_crossing():
    from scipy.optimize import brentq

    eps, s_max, n = 0.05, 4.0, 20
    strength, kl = kl_bounded_strength(
        lambda s: torch.stack([torch.zeros_like(s), s], -1),
        torch.zeros(2),
        eps,
        s_max=s_max,
        n_iter=n,
    )
    crossing = brentq(lambda s: bernoulli_kl(s) - eps, 0.0, s_max, xtol=1e-12)
    assert strength.shape == () and strength.item() <= crossing + 1e-5
    assert crossing - strength.item() < s_max / 2**n + 1e-5
    assert kl.item() <= eps and kl.item() == pytest.approx(bernoulli_kl(strength.item()), abs=1e-6)


def test_kl_bisection_equals_a_brute_force_grid():
    """Logits linear in s: KL grows monotonically, so the largest feasible grid point is the answer."""
    torch.manual_seed(8)
    n, s_max, eps = 10, 2.0, 0.1
    plain = torch.randn(3, 32)
    direction = torch.randn(3, 32) * torch.tensor([[0.5], [1.0], [3.0]])
    strength, kl = kl_bounded_strength(
        lambda s: plain + s[:, None] * direction, plain, eps, s_max=s_max, n_iter=n
    )
    grid = torch.arange(2**n + 1, dtype=torch.float64) * (s_max / 2**n)
    for b in range(3):
        logp = torch.log_softmax(plain[b].double() + grid[:, None] * direction[b].double(), -1)
        logq = torch.log_softmax(plain[b].double(), -1)
        grid_kl = (logp.exp() * (logp - logq)).sum(-1)
        assert bool((grid_kl[1:] >= grid_kl[:-1]).all())  # the oracle's premise
        best = int((grid_kl <= eps).nonzero().max())
        assert strength[b].item() == pytest.approx(float(grid[best]), abs=0)
        assert kl[b].item() == pytest.approx(float(grid_kl[best]), abs=1e-6)
    # each row bisects on its own: the batch gives every row its single-row answer
    for b in range(3):
        alone, _ = kl_bounded_strength(
            lambda s, b=b: plain[b] + s * direction[b], plain[b], eps, s_max=s_max, n_iter=n
        )
        assert alone.item() == strength[b].item()


def test_kl_bisection_ends():
    calls = []

    def jump(s):
        calls.append(s)
        return torch.stack([torch.zeros_like(s), 10.0 * (s > 0)], -1)  # any step breaks the bound

    strength, kl = kl_bounded_strength(jump, torch.zeros(2), 1e-3, s_max=1.0, n_iter=7)
    assert strength.item() == 0.0 and kl.item() == 0.0 and len(calls) == 1 + 7
    assert calls[-1].item() == 1.0 / 2**7  # the smallest step was tried
    # s_max feasible: returned at once, with its KL
    strength, kl = kl_bounded_strength(
        lambda s: torch.stack([torch.zeros_like(s), s], -1), torch.zeros(2), 1.0, s_max=0.5
    )
    assert strength.item() == 0.5 and kl.item() == pytest.approx(bernoulli_kl(0.5), abs=1e-6)


def test_kl_bisection_without_monotonicity_finds_a_crossing():
    """KL(s) of logits (0, 4 sin s): up, down to 0 at pi, up again; what bisection promises."""
    n, eps = 12, 0.2

    def logits(s):
        return torch.stack([torch.zeros_like(s), 4.0 * torch.sin(s)], -1)

    def kl_of(s):
        return kl_divergence(logits(torch.tensor(s)), torch.zeros(2)).item()

    s_max = 1.25 * math.pi
    strength, kl = kl_bounded_strength(logits, torch.zeros(2), eps, s_max=s_max, n_iter=n)
    step = s_max / 2**n
    assert kl.item() <= eps and kl.item() == kl_of(strength.item())
    assert kl_of(strength.item() + step) > eps  # a crossing within the resolution
    # s_max = 2 pi is feasible (sin = 0): returned although the strengths between are not
    strength, _ = kl_bounded_strength(logits, torch.zeros(2), eps, s_max=2 * math.pi, n_iter=n)
    assert strength.item() == pytest.approx(2 * math.pi) and kl_of(math.pi / 2) > eps
    # a NaN probe counts as infeasible
    strength, kl = kl_bounded_strength(
        lambda s: torch.full((2,), float("nan")), torch.zeros(2), 1.0, s_max=1.0
    )
    assert strength.item() == 0.0 and kl.item() == 0.0


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"epsilon": -0.1}, "-0.1"),
        ({"epsilon": float("nan")}, "nan"),
        ({"s_max": 0.0}, "0.0"),
        ({"s_max": float("inf")}, "inf"),
        ({"n_iter": 0}, "n_iter"),
        ({"n_iter": 2.0}, "2.0"),
    ],
)
def test_kl_bisection_bad_parameters(kw, needle):
    args = {"epsilon": 0.1, "s_max": 1.0, "n_iter": 4} | kw
    with pytest.raises(FsnnError) as e:
        kl_bounded_strength(lambda s: torch.zeros(2), torch.zeros(2), args.pop("epsilon"), **args)
    one_line_error(e, needle)


def test_kl_bisection_refuses_a_wrong_logits_shape():
    with pytest.raises(FsnnError, match="logits_at returned shape"):
        kl_bounded_strength(lambda s: torch.zeros(3), torch.zeros(2), 0.1, s_max=1.0)
    with pytest.raises(FsnnError, match="plain logits"):
        kl_bounded_strength(lambda s: torch.zeros(1, 1, 2), torch.zeros(1, 1, 2), 0.1, s_max=1.0)


def test_every_public_name_is_exported():
    from fsnn.steering import operators

    assert sorted(operators.__all__) == sorted(
        name
        for name in vars(operators)
        if not name.startswith("_")
        and name.isidentifier()
        and (callable(getattr(operators, name)) or name.isupper())
        and getattr(getattr(operators, name), "__module__", operators.__name__)
        == operators.__name__
    )
