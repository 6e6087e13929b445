"""The KL-bounded strength per step (schedule ``kl:EPS``, fsnn.steering.kl_decode): its two
limits against the other generation paths, the bound itself against an independent
one-pass oracle, and the modes and backends it refuses."""

from __future__ import annotations

import pytest
import torch

from fsnn.errors import FsnnError
from fsnn.experiment.config import RunConfig
from fsnn.search.config import SearchConfig
from fsnn.steering.generation import generate
from fsnn.steering.kl_decode import KL_BISECTIONS
from fsnn.steering.operators import kl_divergence, schedule, schedule_multipliers
from fsnn.steering.references import capture_generic_mean
from fsnn.steering.specs import parse_schedule
from fsnn.steering.steer import Steering, plan_rows, steer_in_session, steered_generate

PROMPTS = [
    "Question: What is the capital of France?\nAnswer:",
    "Question: Which river flows through Vienna, the capital of Austria?\nAnswer:",
    "Hi",
]
OPERATORS = ("fusion", "centred", "angular")
STRENGTH = {"fusion": 0.8, "centred": 0.8, "angular": 0.6}


@pytest.fixture(scope="module")
def mu(tiny_gemma2):
    return torch.as_tensor(capture_generic_mean(tiny_gemma2).values)


def _inputs(model, n, op):
    torch.manual_seed(0)
    h = torch.randn(n, model.n_layers, model.d_model)
    k = torch.full((n, model.n_layers), STRENGTH[op])
    if n > 2:
        k[2, :2] = 0.0  # a row whose first layers are off: the gates keep working
    return h, torch.ones_like(k), k


def _run(model, mu, op, schedule, n_rows=3, **kw):
    h, alpha, gamma = _inputs(model, n_rows, op)
    return steered_generate(
        model,
        PROMPTS[:n_rows],
        h,
        alpha,
        gamma,
        mode="cached",
        max_new_tokens=kw.pop("max_new_tokens", 6),
        operator=op,
        schedule=schedule,
        mu_generic=None if op == "fusion" else mu,
        **kw,
    )


@pytest.mark.parametrize("arch", ["gemma2", "qwen2", "gemma3_text"])
@pytest.mark.parametrize("op", OPERATORS)
def test_a_bound_never_reached_is_the_constant_schedule(tiny_factory, op, arch):
    """EPS so large that m = 1 at every step: the tokens of the generate trace, cached,
    constant schedule (another decode loop, left padding and position ids included)."""
    model = tiny_factory(arch)
    mu = torch.as_tensor(capture_generic_mean(model).values)
    plain = [o.ids for o in generate(model, PROMPTS, max_new_tokens=6)]
    constant = _run(model, mu, op, "constant")
    bounded = _run(model, mu, op, "kl:1e30")
    assert [o.ids for o in bounded] == [o.ids for o in constant]
    assert [o.ids for o in constant] != plain  # non-vacuous: the strength changes tokens
    for out in bounded:
        assert out.strength_scale == (1.0,) * len(out.ids)
    assert all(o.strength_scale is None for o in constant)


@pytest.mark.parametrize("op", OPERATORS)
def test_a_zero_bound_is_the_plain_model(tiny_gemma2, mu, op):
    plain = generate(tiny_gemma2, PROMPTS, max_new_tokens=6)
    bounded = _run(tiny_gemma2, mu, op, "kl:0")
    assert [o.ids for o in bounded] == [o.ids for o in plain]
    assert [o.completion for o in bounded] == [o.completion for o in plain]
    for out in bounded:
        assert out.strength_scale == (0.0,) * len(out.ids)


def _prompt_pass_logits(model, mu, op, h, k, m: float) -> torch.Tensor:
    """Last-position logits of one prompt pass steered with m * k (Steering.apply: the
    generate loop's step 0 by another path)."""
    steering = Steering.layerwise(
        h[0],
        alpha=torch.ones(model.n_layers),
        gamma=k[0] * torch.tensor(m, dtype=torch.float32),
        mode="cached",
        operator=op,
        mu_generic=None if op == "fusion" else mu,
    )
    enc = model.tokenizer(PROMPTS[:1], return_tensors="pt")
    with model.lm.trace(enc):
        steering.apply(model)
        logits = model.lm.output.logits[:, -1].detach().float().save()  # soft-capped (Gemma-2)
    return logits


@pytest.mark.parametrize("op", OPERATORS)
def test_the_prompt_pass_takes_the_largest_strength_within_the_bound(tiny_gemma2, mu, op):
    """Step 0 against an oracle: EPS a quarter of the KL at full strength, so m(0) is
    strictly inside (0, 1); the KL at m(0) is within EPS and the KL one bisection
    resolution above it is not (what the bisection promises)."""
    model = tiny_gemma2
    h, _, k = _inputs(model, 1, op)
    plain = _prompt_pass_logits(model, mu, op, h, k, 0.0)
    full_kl = float(kl_divergence(_prompt_pass_logits(model, mu, op, h, k, 1.0), plain)[0])
    assert full_kl > 0
    eps = full_kl / 4
    out = _run(model, mu, op, f"kl:{eps!r}", n_rows=1, max_new_tokens=3, stop_at_eos=False)[0]
    m0 = out.strength_scale[0]
    assert 0.0 < m0 < 1.0
    assert (m0 * 2**KL_BISECTIONS) == int(m0 * 2**KL_BISECTIONS)  # a bisection point
    at = float(kl_divergence(_prompt_pass_logits(model, mu, op, h, k, m0), plain)[0])
    above = float(
        kl_divergence(_prompt_pass_logits(model, mu, op, h, k, m0 + 2.0**-KL_BISECTIONS), plain)[0]
    )
    assert at <= eps < above


def _plain_forward_logits(model, ids, strength, h, mu):
    """Final last-position logits of a plain transformers forward (no cache, no nnsight) of
    ``ids``, every layer's output mean-centred-shifted with a per-position strength (1, T)."""
    from fsnn.models.layers import residual, with_residual
    from fsnn.steering.operators import mean_centred

    def hook(li):
        def fn(module, args, output):
            x = residual(output)
            return with_residual(output, mean_centred(x, h[0, li], mu[li], strength))

        return fn

    handles = [model.hf_layer(li).register_forward_hook(hook(li)) for li in range(model.n_layers)]
    try:
        with torch.no_grad():
            return model.hf_model(torch.tensor([ids])).logits[:, -1].float()
    finally:
        for handle in handles:
            handle.remove()


def test_every_step_takes_the_largest_strength_within_the_bound(tiny_gemma2, mu):
    """Every decode step against an oracle without cache or nnsight: a plain forward of the
    prompt and the tokens so far, each position steered (forward hooks, the pure
    ``mean_centred``) with the m of the step that computed it (prompt: m(0); generated
    token j: m(j + 1)) and the step's new position with a candidate m. At every step
    KL(m(t)) <= EPS, and where m(t) < 1, KL(m(t) + 1/32) > EPS (to float rounding: the
    cache computes the same positions in another order)."""
    model, op = tiny_gemma2, "centred"
    h, _, k = _inputs(model, 1, op)
    k_value = STRENGTH[op]
    prompt_ids = model.tokenizer(PROMPTS[0]).input_ids
    n_prompt = len(prompt_ids)
    full = torch.full((1, n_prompt), k_value)
    eps = (
        float(
            kl_divergence(
                _plain_forward_logits(model, prompt_ids, full, h, mu),
                _plain_forward_logits(model, prompt_ids, full * 0, h, mu),
            )[0]
        )
        / 4
    )
    out = _run(model, mu, op, f"kl:{eps!r}", n_rows=1, max_new_tokens=6, stop_at_eos=False)[0]
    ms = out.strength_scale
    step = 2.0**-KL_BISECTIONS
    for t, m in enumerate(ms):
        ids = prompt_ids + out.ids[:t]
        past = [ms[0]] * n_prompt + [ms[j + 1] for j in range(t - 1)] if t else []

        def kl_at(candidate, ids=ids, past=past):
            news = [candidate] * (len(ids) - len(past))
            strength = torch.tensor([past + news], dtype=torch.float32) * k_value
            plain = torch.tensor([past + [0.0] * len(news)], dtype=torch.float32) * k_value
            steered = _plain_forward_logits(model, ids, strength, h, mu)
            return float(kl_divergence(steered, _plain_forward_logits(model, ids, plain, h, mu))[0])

        assert kl_at(m) <= eps * (1 + 1e-4) + 1e-9, f"step {t}"
        if m < 1.0:
            assert kl_at(m + step) > eps * (1 - 1e-4), f"step {t}"
    assert any(0.0 < m < 1.0 for m in ms[1:])  # non-vacuous: the bound binds after step 0


@pytest.mark.parametrize("arch", ["gemma3_text", "gemma2"])
def test_probes_past_a_sliding_window(tiny_factory, arch):
    """A sliding window of 4 positions, prompts longer than it: the probes crop the cache
    past the window and the tokens still equal the generate trace's (m = 1 throughout)."""
    model = tiny_factory(arch, sliding_window=4)
    mu = torch.as_tensor(capture_generic_mean(model).values)
    constant = _run(model, mu, "centred", "constant", max_new_tokens=8)
    bounded = _run(model, mu, "centred", "kl:1e30", max_new_tokens=8)
    assert [o.ids for o in bounded] == [o.ids for o in constant]
    cut = _run(model, mu, "centred", "kl:1e-5", max_new_tokens=8)
    assert all(len(o.strength_scale) == len(o.ids) for o in cut)


@pytest.mark.parametrize("op", OPERATORS)
def test_batched_rows_bisect_alone(tiny_gemma2, mu, op):
    """Each row's strengths and tokens are those of the row generated alone (fusion: its
    running mean across fractional m, and a row whose first layers are off)."""
    model = tiny_gemma2
    h, alpha, k = _inputs(model, len(PROMPTS), op)
    kw = dict(
        mode="cached",
        max_new_tokens=5,
        operator=op,
        schedule="kl:1e-4",
        mu_generic=None if op == "fusion" else mu,
    )

    batched = steered_generate(model, PROMPTS, h, alpha, k, **kw)
    for i, prompt in enumerate(PROMPTS):
        alone = steered_generate(
            model, [prompt], h[i : i + 1], alpha[i : i + 1], k[i : i + 1], **kw
        )
        assert alone[0].ids == batched[i].ids
        assert alone[0].strength_scale == batched[i].strength_scale
    # non-vacuous: the bound cut some step's strength, and not every step's to 0
    scales = [s for o in batched for s in o.strength_scale]
    assert min(scales) < 1.0 and max(scales) > 0.0


def test_modes_and_backends_it_cannot_run_in(tiny_gemma2, mu):
    model = tiny_gemma2
    h, alpha, k = _inputs(model, 1, "centred")
    with pytest.raises(FsnnError, match="needs mode 'cached', got 'faithful'"):
        Steering.full(h[0], alpha=1.0, gamma=0.5, schedule="kl:1")
    with pytest.raises(FsnnError, match="needs mode 'cached'"):
        steered_generate(model, PROMPTS[:1], h, alpha, k, mode="faithful", schedule="kl:1")
    with pytest.raises(FsnnError, match="local model, not through 'serialised'"):
        steered_generate(
            model, PROMPTS[:1], h, alpha, k, mode="cached", schedule="kl:1", backend="serialised"
        )
    with pytest.raises(FsnnError, match="not through 'session'"):
        steer_in_session(
            model, PROMPTS[:1], h, alpha, k, mode="cached", schedule="kl:1", backend="local"
        )
    with pytest.raises(FsnnError, match=r"use generate\(\)"):
        Steering.full(h[0], alpha=1.0, gamma=0.5, mode="cached", schedule="kl:1").apply(model)
    with pytest.raises(FsnnError, match="needs mode 'cached'"):
        plan_rows(
            model, PROMPTS[:1], h, alpha, k, mode="faithful", max_new_tokens=2, schedule="kl:1"
        )
    with pytest.raises(FsnnError, match="needs mode 'cached'"):
        RunConfig(schedule="kl:1")  # faithful is the run's default mode
    with pytest.raises(FsnnError, match="not through 'ndif'"):
        RunConfig(schedule="kl:1", mode="cached", backend="ndif", ppl_model="gpt2")
    assert RunConfig(schedule="kl:1", mode="cached").search.schedule == "kl:1"


@pytest.mark.parametrize("spec", ["kl", "kl:", "kl:x", "kl:-0.1", "kl:nan", "kl:inf"])
def test_bad_bounds_are_one_line(spec):
    with pytest.raises(FsnnError, match="kl needs a finite number EPS >= 0|takes"):
        parse_schedule(spec)
    with pytest.raises(FsnnError):
        SearchConfig(schedule=spec)


def test_the_bound_has_no_fixed_multipliers():
    assert parse_schedule("kl:0.5") == ("kl", {"epsilon": 0.5})
    with pytest.raises(FsnnError, match="no fixed multipliers"):
        schedule("kl", [0, 1])
    with pytest.raises(FsnnError, match="no fixed multipliers"):
        schedule_multipliers("kl:0.5", 4)
