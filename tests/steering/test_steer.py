"""Steered generation: hook oracle, identity, non-vacuity, batching, cached reference, capture."""

from __future__ import annotations

import pytest
import torch

from fsnn.errors import FsnnError
from fsnn.steering.decode import eos_ids
from fsnn.steering.generation import generate
from fsnn.steering.layout import Strengths
from fsnn.steering.references import ReferenceItem, capture_references
from fsnn.steering.steer import steered_generate

PROMPTS = [
    "Question: Who received the IEEE Frank Rosenblatt Award in 2010?\nAnswer and explanation:",
    "Question: What is the capital of France?\nAnswer and explanation:",
    "Question: Which river flows through Vienna?\nAnswer and explanation:",
]


# --------------------------------------------------------------------------- oracles


class HookOracle:
    """Eqs. (1)-(5) written with plain PyTorch forward hooks, one row, no nnsight."""

    def __init__(self, model, h, alpha, gamma, *, cached: bool, record_layer: int | None = None):
        self.model, self.h, self.alpha, self.gamma = model, h, alpha, gamma
        self.cached = cached
        self.record_layer = record_layer
        self.recorded = None
        self.sums: dict[int, tuple[torch.Tensor, float]] = {}

    def hook(self, layer):
        def fn(module, inputs, output):
            a = output if isinstance(output, torch.Tensor) else output[0]
            a32 = a.float()[0]  # (T, H), one row, no padding
            if self.cached and a.shape[1] == 1 and layer in self.sums:
                total, count = self.sums[layer]
                total, count = total + a32[-1], count + 1
            else:
                total, count = a32.sum(0), a32.shape[0]
            self.sums[layer] = (total, count)
            mu = total / count
            a1 = a32 + self.gamma[layer] * (self.h[layer] - mu)  # (3), (4)
            a2 = self.alpha[layer] * a1 + (1 - self.alpha[layer]) * a32  # (5), literal
            new = a2.to(a.dtype)[None]
            if layer == self.record_layer:
                self.recorded = new.detach().clone()
            return new if isinstance(output, torch.Tensor) else (new, *output[1:])

        return fn

    @torch.no_grad()
    def generate(self, prompt: str, max_new_tokens: int) -> list[int]:
        model = self.model
        hf = model.hf_model
        handles = [
            model.hf_layer(li).register_forward_hook(self.hook(li)) for li in range(model.n_layers)
        ]
        eos = eos_ids(model)
        try:
            ids = model.tokenizer(prompt, return_tensors="pt").input_ids
            new: list[int] = []
            past = None
            for _ in range(max_new_tokens):
                if self.cached:
                    step_ids = ids if past is None else torch.tensor([[new[-1]]])
                    out = hf(input_ids=step_ids, past_key_values=past, use_cache=True)
                    past = out.past_key_values
                else:
                    out = hf(
                        input_ids=torch.cat([ids, torch.tensor([new], dtype=torch.long)], 1)
                        if new
                        else ids,
                        use_cache=False,
                    )
                tok = int(out.logits[0, -1].argmax())
                if tok in eos:
                    break
                new.append(tok)
            return new
        finally:
            for hd in handles:
                hd.remove()


def _refs(model, n, seed=0, scale=1.0):
    torch.manual_seed(seed)
    return torch.randn(n, model.n_layers, model.d_model) * scale


# --------------------------------------------------------------------------- tiny model


@pytest.mark.parametrize("mode", ["faithful", "cached"])
def test_matches_hook_oracle_tiny_gemma2(tiny_gemma2, mode):
    model = tiny_gemma2
    h = _refs(model, 1)
    alpha, gamma = torch.rand(model.n_layers), torch.rand(model.n_layers)
    ours = steered_generate(
        model, PROMPTS[:1], h, alpha[None], gamma[None], mode=mode, max_new_tokens=8
    )[0]
    oracle = HookOracle(model, h[0], alpha, gamma, cached=mode == "cached").generate(PROMPTS[0], 8)
    assert ours.ids == oracle
    assert len(oracle) > 0


def test_steered_activation_equals_oracle_at_checked_layer(tiny_gemma2):
    """The input of block k+1 (= steered output of block k) equals the hand formula."""
    model, k = tiny_gemma2, 1
    h = _refs(model, 1, seed=3)
    alpha, gamma = torch.full((model.n_layers,), 0.6), torch.full((model.n_layers,), 0.8)
    seen = {}
    handle = model.hf_layer(k + 1).register_forward_pre_hook(
        lambda m, args, kwargs: seen.__setitem__(
            "x", (args[0] if args else kwargs["hidden_states"]).clone()
        ),
        with_kwargs=True,
    )
    try:
        steered_generate(
            model, PROMPTS[:1], h, alpha[None], gamma[None], mode="faithful", max_new_tokens=1
        )
    finally:
        handle.remove()
    oracle = HookOracle(model, h[0], alpha, gamma, cached=False, record_layer=k)
    oracle.generate(PROMPTS[0], 1)
    torch.testing.assert_close(seen["x"], oracle.recorded, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("which", ["alpha", "gamma"])
def test_zero_strength_gives_bit_identical_logits(tiny_gemma2, which):
    """alpha=0 or gamma=0 on every layer: logits of the steered pass == unsteered, bitwise."""
    import nnsight

    from fsnn.models.layers import residual, with_residual
    from fsnn.steering.fusion import fuse, masked_mean

    model = tiny_gemma2
    enc = dict(model.tokenizer(PROMPTS, return_tensors="pt", padding=True))
    h = _refs(model, len(PROMPTS))
    zero, some = torch.zeros(len(PROMPTS)), torch.full((len(PROMPTS),), 0.7)
    alpha, gamma = (zero, some) if which == "alpha" else (some, zero)
    with model.lm.trace(enc):
        for li in range(model.n_layers):
            out = model.layer(li).output
            a = residual(out)
            model.layer(li).output = with_residual(
                out, fuse(a, h[:, li], masked_mean(a, enc["attention_mask"]), alpha, gamma)
            )
        steered = nnsight.save(model.lm.output.logits)
    with model.lm.trace(enc):  # the same input path, nothing written
        plain = nnsight.save(model.lm.output.logits)
    assert torch.equal(steered, plain)
    assert not torch.equal(steered[:, :, :5], torch.zeros_like(steered[:, :, :5]))


@pytest.mark.parametrize("mode", ["faithful", "cached"])
def test_batched_equals_sequential(tiny_gemma2, mode):
    model = tiny_gemma2
    n = len(PROMPTS)
    h = _refs(model, n, seed=5)
    torch.manual_seed(6)
    alpha, gamma = torch.rand(n, model.n_layers), torch.rand(n, model.n_layers)
    alpha[1, :2] = 0.0  # rows differ in which layers they steer, too
    batched = steered_generate(model, PROMPTS, h, alpha, gamma, mode=mode, max_new_tokens=6)
    for i in range(n):
        alone = steered_generate(
            model,
            PROMPTS[i : i + 1],
            h[i : i + 1],
            alpha[i : i + 1],
            gamma[i : i + 1],
            mode=mode,
            max_new_tokens=6,
        )[0]
        assert batched[i].ids == alone.ids, f"row {i}"


def test_zero_spec_equals_plain_generation(tiny_gemma2):
    model = tiny_gemma2
    h = _refs(model, 3)
    z = torch.zeros(3, model.n_layers)
    for mode in ("faithful", "cached"):
        ours = steered_generate(model, PROMPTS, h, z, z, mode=mode, max_new_tokens=6)
        assert [o.ids for o in ours] == [o.ids for o in generate(model, PROMPTS, max_new_tokens=6)]


def test_capture_with_padding_equals_alone(tiny_gemma2):
    items = [
        ReferenceItem(
            question="Who won?",
            answer="Michio Sugeno",
            explanation="A long explanation, with words.",
        ),
        ReferenceItem(question="Where is Paris?", answer="France"),
    ]
    both = capture_references(tiny_gemma2, items)
    assert both.dims == ("prompt", "layer", "hidden") and both.dtype == "float32"
    for i, item in enumerate(items):
        alone = capture_references(tiny_gemma2, [item])
        torch.testing.assert_close(
            torch.tensor(both.values[i]), torch.tensor(alone.values[0]), rtol=1e-4, atol=1e-5
        )
    per_layer = capture_references(tiny_gemma2, items, per_layer_passes=True)
    torch.testing.assert_close(torch.tensor(per_layer.values), torch.tensor(both.values))


def test_capture_span_anchored_after_header(tiny_gemma2):
    """The answer also occurs in the question: only the body after the header is averaged."""
    from fsnn.steering.references import reference_inputs

    item = ReferenceItem(question="Is Paris the capital of France?", answer="Paris", explanation="")
    ids, att, span, _ = reference_inputs(tiny_gemma2, [item])
    body_tokens = [
        tiny_gemma2.tokenizer.decode([t])
        for t, s in zip(ids[0].tolist(), span[0].tolist(), strict=True)
        if s
    ]
    assert "".join(body_tokens).strip() == "Paris"


def test_bad_inputs(tiny_gemma2):
    model = tiny_gemma2
    h = _refs(model, 1)
    ok = torch.full((1, model.n_layers), 0.5)
    with pytest.raises(FsnnError, match="layers"):
        steered_generate(model, PROMPTS[:1], h[:, :-1], ok[:, :-1], ok[:, :-1])
    bad = ok.clone()
    bad[0, 1] = float("nan")
    with pytest.raises(FsnnError, match="NaN or inf"):
        steered_generate(model, PROMPTS[:1], h, bad, ok)
    bad[0, 1] = float("inf")
    with pytest.raises(FsnnError, match="NaN or inf"):
        steered_generate(model, PROMPTS[:1], h, ok, bad)
    with pytest.raises(FsnnError, match="exceeds the model's context"):
        steered_generate(model, ["word " * 600], h, ok, ok, max_new_tokens=5)
    with pytest.raises(FsnnError, match="unknown steering mode"):
        steered_generate(model, PROMPTS[:1], h, ok, ok, mode="fast")
    with pytest.raises(FsnnError, match="span is empty"):
        capture_references(
            model, [ReferenceItem(question="long question " * 30, answer="Paris")], max_length=20
        )


# --------------------------------------------------------------------------- SmolLM2


@pytest.mark.real
def test_smollm2_faithful_matches_oracle_and_steering_changes_output(smollm2):
    model = smollm2
    item = ReferenceItem(
        question="Who received the IEEE Frank Rosenblatt Award in 2010?",
        answer="Michio Sugeno",
        explanation="Michio Sugeno is a Japanese researcher known for fuzzy control.",
    )
    h = torch.tensor(capture_references(model, [item]).values)
    spec = Strengths.full(model.n_layers, 0.8, 0.9)
    alpha, gamma = spec.per_layer(model.n_layers)
    ours = steered_generate(
        model, PROMPTS[:1], h, alpha[None], gamma[None], mode="faithful", max_new_tokens=12
    )[0]
    oracle = HookOracle(model, h[0], alpha, gamma, cached=False).generate(PROMPTS[0], 12)
    assert ours.ids == oracle
    plain = generate(model, PROMPTS[:1], max_new_tokens=12, stop_at_eos=False)[0]
    assert ours.ids != plain.ids[: len(ours.ids)] or len(ours.ids) != len(plain.ids)  # non-vacuity
    assert ours.text.startswith("Question:")


def test_stop_at_eos_false_ignores_the_checkpoint_eos(tiny_factory):
    """stop_at_eos=False generates max_new_tokens even when the checkpoint names an EOS."""
    model = tiny_factory("llama")
    h = _refs(model, 1)
    a = torch.full((1, model.n_layers), 0.5)
    free = steered_generate(
        model, PROMPTS[:1], h, a, a, mode="cached", max_new_tokens=6, stop_at_eos=False
    )[0]
    cfg = model.hf_model.generation_config
    original = cfg.eos_token_id
    cfg.eos_token_id = free.ids[0]  # the first token the row emits
    try:
        for mode in ("cached", "faithful"):
            again = steered_generate(
                model, PROMPTS[:1], h, a, a, mode=mode, max_new_tokens=6, stop_at_eos=False
            )[0]
            assert len(again.ids) == 6
        assert (
            steered_generate(model, PROMPTS[:1], h, a, a, mode="cached", max_new_tokens=6)[0].ids
            == []
        )
    finally:
        cfg.eos_token_id = original


@pytest.mark.parametrize("mode", ["faithful", "cached"])
def test_steer_each_equals_each_value_alone_and_the_raw_call(tiny_gemma2, mode):
    """The search's call: one layerwise Steering value per row, batched, is the same
    generation as each value alone and as steered_generate on the stacked tensors."""
    from fsnn.steering.steer import Steering, steer_each

    model = tiny_gemma2
    n = len(PROMPTS)
    h = _refs(model, n, seed=7)
    torch.manual_seed(8)
    alpha, gamma = torch.rand(n, model.n_layers), torch.rand(n, model.n_layers)
    gamma[0, 1:] = 0.0  # a row steering one layer only
    values = [Steering.layerwise(h[i], alpha=alpha[i], gamma=gamma[i], mode=mode) for i in range(n)]
    for i, v in enumerate(values):  # per-layer strengths kept bit for bit
        a, g = v.per_layer()
        assert torch.equal(a, alpha[i]) and torch.equal(g, gamma[i])
    batched = steer_each(model, PROMPTS, values, max_new_tokens=6)
    raw = steered_generate(model, PROMPTS, h, alpha, gamma, mode=mode, max_new_tokens=6)
    assert [o.ids for o in batched] == [o.ids for o in raw]
    for i, v in enumerate(values):
        assert v.generate(model, PROMPTS[i : i + 1], max_new_tokens=6)[0].ids == batched[i].ids


def test_steer_each_refuses_values_that_cannot_share_a_call(tiny_gemma2):
    from fsnn.steering.steer import Steering, steer_each

    model = tiny_gemma2
    h = _refs(model, 2)
    ones = torch.ones(model.n_layers)
    a = Steering.layerwise(h[0], alpha=ones, gamma=0.1 * ones, mode="cached")
    b = Steering.layerwise(h[1], alpha=ones, gamma=0.1 * ones, mode="faithful")
    with pytest.raises(FsnnError, match="value 1 differs from value 0 in mode"):
        steer_each(model, PROMPTS[:2], [a, b], max_new_tokens=2)
    with pytest.raises(FsnnError, match="1 prompt\\(s\\) for 2 steering value\\(s\\)"):
        steer_each(model, PROMPTS[:1], [a, a], max_new_tokens=2)
    both = Steering.layerwise(h, alpha=ones, gamma=ones, mode="cached")
    with pytest.raises(FsnnError, match="holds 2 prompts' references, want 1"):
        steer_each(model, PROMPTS[:1], [both], max_new_tokens=2)
    with pytest.raises(FsnnError, match="needs 4 alpha and gamma values, got 3 and 4"):
        Steering.layerwise(h[0], alpha=ones[:3], gamma=ones)
    assert steer_each(model, [], [], max_new_tokens=2) == []
