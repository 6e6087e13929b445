"""The operators wired into steering (docs/operators.md): identity at strength 0, exact
oracles through the trace, batching, schedules, windows, mu_generic, validation."""

from __future__ import annotations

import pytest
import torch

from fsnn.errors import FsnnError
from fsnn.steering.fusion import fuse, masked_mean
from fsnn.steering.generation import generate
from fsnn.steering.layout import SegmentLayout, Strengths
from fsnn.steering.operators import generic_mean, mean_centred, rotate_toward
from fsnn.steering.references import GENERIC_PROMPTS, capture_generic_mean, generic_inputs
from fsnn.steering.steer import Steering, steered_generate

PROMPTS = [
    "Question: Who received the IEEE Frank Rosenblatt Award in 2010?\nAnswer and explanation:",
    "Question: What is the capital of France?\nAnswer and explanation:",
    "Question: Which river flows through Vienna?\nAnswer and explanation:",
]
OPERATORS = ("fusion", "centred", "angular")
MODES = ("faithful", "cached")


def _refs(model, n, seed=0):
    torch.manual_seed(seed)
    return torch.randn(n, model.n_layers, model.d_model)


@pytest.fixture(scope="module")
def mu(tiny_gemma2):
    return torch.as_tensor(capture_generic_mean(tiny_gemma2).values)


def _strength(op: str) -> float:
    # a strength that changes the tiny model's tokens: k for the shifts, an angle (rad) for the rotation
    return {"fusion": 0.8, "centred": 0.8, "angular": 0.6}[op]


def _run(model, prompts, h, k, *, op, mu, mode, schedule="constant", n=6, **kw):
    alpha = torch.ones_like(k)
    return steered_generate(
        model,
        prompts,
        h,
        alpha,
        k,
        mode=mode,
        max_new_tokens=n,
        operator=op,
        schedule=schedule,
        mu_generic=None if op == "fusion" else mu,
        **kw,
    )


# --------------------------------------------------------------------------- identity, windows


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", OPERATORS)
def test_strength_zero_is_the_unsteered_generation(tiny_gemma2, mu, op, mode):
    model = tiny_gemma2
    h = _refs(model, len(PROMPTS))
    plain = [o.ids for o in generate(model, PROMPTS, max_new_tokens=6)]
    zero = torch.zeros(len(PROMPTS), model.n_layers)
    assert [o.ids for o in _run(model, PROMPTS, h, zero, op=op, mu=mu, mode=mode)] == plain
    # a window that is off inside a batch: row 1 is 0 everywhere while the others steer
    k = torch.full((len(PROMPTS), model.n_layers), _strength(op))
    k[1] = 0.0
    mixed = _run(model, PROMPTS, h, k, op=op, mu=mu, mode=mode, schedule="decay:0.7")
    assert mixed[1].ids == plain[1]
    assert mixed[0].ids != plain[0] or mixed[2].ids != plain[2]  # non-vacuous: the others moved


@pytest.mark.parametrize("op", OPERATORS)
def test_an_off_segment_leaves_its_layers_untouched(tiny_gemma2, mu, op):
    """Segment strengths (s, 0): the logits equal steering the first segment's layers only."""
    model = tiny_gemma2
    h = _refs(model, 1, seed=2)
    layout = SegmentLayout(name="two", ranges=((0, 1), (2, model.n_layers - 1)))
    s = _strength(op)
    off = Steering(
        references=h[0],
        strengths=Strengths(layout=layout, alpha=(1.0, 1.0), gamma=(s, 0.0)),
        mode="faithful",
        operator=op,
        mu_generic=None if op == "fusion" else mu,
    )
    first = SegmentLayout(name="first", ranges=((0, 1),))
    only = Steering(
        references=h[0],
        strengths=Strengths(layout=first, alpha=(1.0,), gamma=(s,)),
        mode="faithful",
        operator=op,
        mu_generic=None if op == "fusion" else mu,
    )
    enc = dict(model.tokenizer(PROMPTS[:1], return_tensors="pt"))
    logits = []
    for steering in (off, only):
        import nnsight

        with model.lm.trace(enc):
            steering.apply(model, rows=1, mask=enc["attention_mask"])
            logits.append(nnsight.save(model.lm.output.logits))
    assert torch.equal(logits[0], logits[1])


# --------------------------------------------------------------------------- exact oracles


def _plain_block_output(model, ids: list[int], layer: int) -> torch.Tensor:
    """Block ``layer``'s output for ``ids`` (1 row), plain forward without cache."""
    seen = {}

    def hook(module, args, output):
        seen["a"] = (output if isinstance(output, torch.Tensor) else output[0]).detach().clone()

    handle = model.hf_layer(layer).register_forward_hook(hook)
    try:
        with torch.no_grad():
            model.hf_model(input_ids=torch.tensor([ids]), use_cache=False)
    finally:
        handle.remove()
    return seen["a"]


def _oracle(op, a, h_l, mu_l, k, m=1.0):
    """The pure operator on an unsteered block output ``a`` (1, T, H), strength k, multiplier m.

    Fusion scales alpha (alpha = 1 here): a + (1 * m) * (k * (h - mu)); the position-wise
    operators take the float32 product k * m as their strength.
    """
    if op == "fusion":
        return fuse(
            a,
            h_l[None],
            masked_mean(a, torch.ones(a.shape[:2])),
            torch.tensor([m]),
            torch.tensor([k]),
        )
    km = float(torch.tensor([k], dtype=torch.float32) * m) if m != 1.0 else k
    if op == "centred":
        return mean_centred(a, h_l, mu_l, km)
    return rotate_toward(a, h_l - mu_l, km)


@pytest.mark.parametrize("schedule", ["constant", "decay:0.7"])
@pytest.mark.parametrize("op", OPERATORS)
def test_steered_block_output_is_the_operator_of_the_unsteered_one_faithful(
    tiny_gemma2, mu, op, schedule
):
    """Only block L is steered; at every faithful step, the input of block L+1 (= steered
    output of block L) equals the pure operator applied to block L's unsteered output of the
    same sequence, with the strength m(t) * k, bit for bit."""
    model, layer = tiny_gemma2, 1
    h = _refs(model, 1, seed=3)
    k = torch.zeros(1, model.n_layers)
    k[0, layer] = _strength(op)
    inputs = []
    handle = model.hf_layer(layer + 1).register_forward_pre_hook(
        lambda m, args, kwargs: inputs.append(
            (args[0] if args else kwargs["hidden_states"]).detach().clone()
        ),
        with_kwargs=True,
    )
    try:
        out = _run(
            model,
            PROMPTS[:1],
            h,
            k,
            op=op,
            mu=mu,
            mode="faithful",
            schedule=schedule,
            n=4,
            stop_at_eos=False,
        )[0]
    finally:
        handle.remove()
    prompt_ids = model.tokenizer(PROMPTS[0]).input_ids
    assert len(inputs) == 4
    for t, seen in enumerate(inputs):
        m = 1.0 if schedule == "constant" else float(torch.tensor(0.7, dtype=torch.float64) ** t)
        m = float(torch.tensor(m, dtype=torch.float32))  # the schedule's float32 multiplier
        a = _plain_block_output(model, prompt_ids + out.ids[:t], layer)
        want = _oracle(op, a, h[0, layer], mu[layer], _strength(op), m)
        assert torch.equal(seen, want), f"step {t}"


@pytest.mark.parametrize("op", OPERATORS)
def test_steered_block_output_is_the_operator_of_the_unsteered_one_cached(tiny_gemma2, mu, op):
    """Cached mode: the prompt pass exactly; each new position (one-position passes on the
    cache) to float tolerance, against the same operator on the plain run's position."""
    model, layer = tiny_gemma2, 2
    h = _refs(model, 1, seed=4)
    k = torch.zeros(1, model.n_layers)
    k[0, layer] = _strength(op)
    inputs = []
    handle = model.hf_layer(layer + 1).register_forward_pre_hook(
        lambda m, args, kwargs: inputs.append(
            (args[0] if args else kwargs["hidden_states"]).detach().clone()
        ),
        with_kwargs=True,
    )
    try:
        out = _run(model, PROMPTS[:1], h, k, op=op, mu=mu, mode="cached", n=4, stop_at_eos=False)[0]
    finally:
        handle.remove()
    prompt_ids = model.tokenizer(PROMPTS[0]).input_ids
    a0 = _plain_block_output(model, prompt_ids, layer)
    assert torch.equal(inputs[0], _oracle(op, a0, h[0, layer], mu[layer], _strength(op)))
    if op == "fusion":
        return  # its decode steps use the running mean: test_steer.py's hook oracle covers them
    full = _plain_block_output(model, prompt_ids + out.ids[:3], layer)
    for t in range(1, 4):
        pos = len(prompt_ids) + t - 1
        want = _oracle(op, full[:, pos : pos + 1], h[0, layer], mu[layer], _strength(op))
        torch.testing.assert_close(inputs[t], want, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- batching, schedules


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", OPERATORS)
def test_batched_equals_sequential(tiny_gemma2, mu, op, mode):
    model = tiny_gemma2
    n = len(PROMPTS)
    h = _refs(model, n, seed=5)
    torch.manual_seed(6)
    k = torch.rand(n, model.n_layers) * _strength(op)
    k[1, :2] = 0.0  # rows differ in which layers they steer
    batched = _run(model, PROMPTS, h, k, op=op, mu=mu, mode=mode, schedule="first_n:3")
    for i in range(n):
        alone = _run(
            model,
            PROMPTS[i : i + 1],
            h[i : i + 1],
            k[i : i + 1],
            op=op,
            mu=mu,
            mode=mode,
            schedule="first_n:3",
        )[0]
        assert batched[i].ids == alone.ids, f"row {i}"


@pytest.mark.parametrize("mode", MODES)
def test_schedules_that_coincide_give_the_same_tokens(tiny_gemma2, mu, mode):
    model = tiny_gemma2
    h = _refs(model, 2, seed=7)
    k = torch.full((2, model.n_layers), 0.8)
    for op in OPERATORS:

        def ids(schedule, op=op):
            return [
                o.ids
                for o in _run(model, PROMPTS[:2], h, k, op=op, mu=mu, mode=mode, schedule=schedule)
            ]

        constant = ids("constant")
        assert ids("decay:1") == constant
        assert ids("first_n:6") == constant
        assert ids("decay:0") == ids("prompt_only") == ids("first_n:1")
        assert [c[0] for c in ids("prompt_only")] == [
            c[0] for c in constant
        ]  # step 0 is steered alike


def test_faithful_prompt_only_continues_unsteered(tiny_gemma2, mu):
    """Faithful mode, first_n:2: tokens 0-1 as constant steering, then the plain model's greedy
    continuation of prompt + those tokens (every later pass is recomputed unsteered)."""
    model = tiny_gemma2
    h = _refs(model, 1, seed=8)
    k = torch.full((1, model.n_layers), 0.8)
    for op in OPERATORS:
        got = _run(
            model,
            PROMPTS[:1],
            h,
            k,
            op=op,
            mu=mu,
            mode="faithful",
            schedule="first_n:2",
            stop_at_eos=False,
        )[0].ids
        constant = _run(model, PROMPTS[:1], h, k, op=op, mu=mu, mode="faithful", stop_at_eos=False)[
            0
        ].ids
        assert got[:2] == constant[:2]
        ids = model.tokenizer(PROMPTS[0]).input_ids + got[:2]
        with torch.no_grad():
            for _ in range(4):
                ids.append(
                    int(
                        model.hf_model(input_ids=torch.tensor([ids]), use_cache=False)
                        .logits[0, -1]
                        .argmax()
                    )
                )
        assert got == ids[-6:], op


# --------------------------------------------------------------------------- mu_generic, the value


def test_generic_mean_capture(tiny_gemma2):
    model = tiny_gemma2
    mu = capture_generic_mean(model)
    assert mu.dims == ("layer", "hidden") and mu.shape == (model.n_layers, model.d_model)
    assert mu.attrs["n_prompts"] == len(GENERIC_PROMPTS) == 16
    # the same as operators.generic_mean over captured block outputs (per prompt, special tokens out)
    ids, att, span = generic_inputs(model, GENERIC_PROMPTS)
    with torch.no_grad():
        hs = model.hf_model(
            input_ids=ids, attention_mask=att, output_hidden_states=True
        ).hidden_states
    # hidden_states[l + 1] is block l's output except the last, which is after the final norm
    acts = torch.stack([hs[li + 1] for li in range(model.n_layers - 1)], dim=1)
    want = generic_mean(acts, span)
    torch.testing.assert_close(torch.as_tensor(mu.values)[:-1], want, rtol=1e-4, atol=1e-4)
    # batching does not change it; BOS (a special token) is never in the span
    torch.testing.assert_close(
        torch.as_tensor(capture_generic_mean(model, batch_size=3).values),
        torch.as_tensor(mu.values),
        rtol=1e-4,
        atol=1e-5,
    )
    assert span[:, :][att == 1].sum() <= att.sum()
    with pytest.raises(FsnnError, match="no generic prompt"):
        capture_generic_mean(model, ())


def test_steering_value_validates_and_describes(tiny_gemma2, mu):
    model = tiny_gemma2
    h = _refs(model, 1)[0]
    s = Steering.full(
        h,
        alpha=1.0,
        gamma=0.3,
        operator="angular",
        schedule="decay:0.8",
        mu_generic=mu,
        mode="cached",
    )
    d = s.describe()
    assert d["operator"] == "angular" and d["schedule"] == "decay:0.8" and d["mode"] == "cached"
    assert d["mu_generic"].startswith(f"{model.n_layers}x{model.d_model} sha256:")
    plain = Steering.full(h, alpha=0.5, gamma=0.4)
    assert plain.describe()["operator"] == "fusion" and "mu_generic" not in plain.describe()
    assert (
        s.generate(model, PROMPTS[:1], max_new_tokens=3)[0].ids
        == _run(
            model,
            PROMPTS[:1],
            h[None],
            torch.full((1, model.n_layers), 0.3),
            op="angular",
            mu=mu,
            mode="cached",
            schedule="decay:0.8",
            n=3,
        )[0].ids
    )
    cases = [
        (dict(operator="rotate"), "unknown steering operator 'rotate'"),
        (dict(schedule="sometimes"), "unknown schedule 'sometimes'"),
        (dict(schedule="first_n:0"), "first_n needs an integer N >= 1"),
        (dict(operator="centred"), "needs mu_generic"),
        (dict(mu_generic=mu), "used by the angular and centred operators only"),
        (dict(operator="angular", mu_generic=mu[:-1]), "mu_generic must be"),
    ]
    for options, message in cases:
        with pytest.raises(FsnnError, match=message):
            Steering.full(h, alpha=1.0, gamma=0.3, **options)
    with pytest.raises(FsnnError, match="angle in radians"):
        Steering.full(h, alpha=1.0, gamma=-0.3, operator="angular", mu_generic=mu)
    with pytest.raises(FsnnError, match="unknown steering operator"):
        steered_generate(
            model,
            PROMPTS[:1],
            h[None],
            torch.ones(1, model.n_layers),
            torch.ones(1, model.n_layers),
            operator="nope",
        )


# --------------------------------------------------------------------------- SmolLM2


@pytest.mark.real
def test_smollm2_angular_changes_the_greedy_output(smollm2):
    from fsnn.steering.references import ReferenceItem, capture_references

    model = smollm2
    item = ReferenceItem(
        question="Who received the IEEE Frank Rosenblatt Award in 2010?",
        answer="Michio Sugeno",
        explanation="Michio Sugeno is a Japanese researcher known for fuzzy control.",
    )
    h = torch.tensor(capture_references(model, [item]).values)
    mu = torch.as_tensor(capture_generic_mean(model).values)
    for mode in MODES:

        def run(theta, stop_at_eos=False, mode=mode):
            return (
                Steering.full(
                    h[0], alpha=1.0, gamma=theta, operator="angular", mu_generic=mu, mode=mode
                )
                .generate(model, PROMPTS[:1], max_new_tokens=12, stop_at_eos=stop_at_eos)[0]
                .ids
            )

        # angle 0 is the plain model (the EOS-stopping path compared with plain greedy decoding)
        assert run(0.0, stop_at_eos=True) == generate(model, PROMPTS[:1], max_new_tokens=12)[0].ids
        # 0.03 rad (1.7 degrees) at every layer: a moderate angle for SmolLM2 (0.002 already moves
        # its text, 0.1 breaks it)
        assert run(0.03) != run(0.0), mode
