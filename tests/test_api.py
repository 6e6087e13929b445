"""The steering value object and execution backends: exact equivalence, validation, retries."""

from __future__ import annotations

import pytest
import torch

import fsnn
from fsnn.backends.base import LocalBackend, NdifBackend, SerialisedBackend, resolve_backend
from fsnn.backends.retry import RetryPolicy
from fsnn.errors import FsnnError
from fsnn.steering.layout import SegmentLayout, Strengths
from fsnn.steering.steer import Steering, steered_generate

PROMPTS = [
    "Question: Who received the IEEE Frank Rosenblatt Award in 2010?\nAnswer and explanation:",
    "Question: Which river flows through Vienna?\nAnswer and explanation:",
]


def _refs(model, n, seed=0):
    torch.manual_seed(seed)
    return torch.randn(n, model.n_layers, model.d_model)


@pytest.mark.parametrize("mode", ["faithful", "cached"])
def test_steering_generate_equals_per_row_call(tiny_gemma2, mode):
    model = tiny_gemma2
    h = _refs(model, 2)
    steering = Steering.segmented(h, alpha=(0.9, 0.2, 0.6), gamma=(0.5, 0.7, 0.3), mode=mode)
    alpha, gamma = steering.per_layer()
    ours = steering.generate(model, PROMPTS, max_new_tokens=6)
    direct = steered_generate(
        model, PROMPTS, h, alpha.expand(2, -1), gamma.expand(2, -1), mode=mode, max_new_tokens=6
    )
    assert [o.ids for o in ours] == [o.ids for o in direct]
    # non-vacuity: the same prompts unsteered give other tokens
    plain = fsnn.generate(model, PROMPTS, max_new_tokens=6)
    assert [o.ids for o in ours] != [o.ids for o in plain]


def test_steering_per_layer_expands_segments(tiny_gemma2):
    h = _refs(tiny_gemma2, 1)[0]  # (layer, hidden): one prompt
    steering = Steering(
        references=h,
        strengths=Strengths(
            layout=SegmentLayout(name="mid", ranges=((1, 2),)), alpha=(0.5,), gamma=(0.25,)
        ),
    )
    alpha, gamma = steering.per_layer()
    assert alpha.tolist() == [0.0, 0.5, 0.5, 0.0] and gamma.tolist() == [0.0, 0.25, 0.25, 0.0]
    rows_h, rows_a, _ = steering.rows(3)
    assert (
        rows_h.shape == (3, 4, tiny_gemma2.d_model)
        and torch.equal(rows_h[2], h)
        and rows_a.shape == (3, 4)
    )


def test_steering_apply_in_a_user_trace_equals_faithful_first_step(tiny_gemma2):
    """Inside the user's own trace the pass is steered exactly as the first generated token."""
    model = tiny_gemma2
    h = _refs(model, 1, seed=2)
    steering = Steering.full(h, alpha=0.7, gamma=0.6)
    first = steering.generate(model, PROMPTS[:1], max_new_tokens=1)[0].ids
    enc = model.tokenizer(PROMPTS[:1], return_tensors="pt")
    with model.lm.trace(enc):
        steering.apply(model)
        logits = model.lm.lm_head.output.save()
    assert [int(logits[0, -1].argmax())] == first
    with model.lm.trace(enc):
        plain = model.lm.lm_head.output.save()
    assert not torch.equal(plain, logits)


def test_steering_accepts_the_captured_dataarray(tiny_gemma2):
    h = fsnn.capture_references(
        tiny_gemma2, [fsnn.ReferenceItem(question="Capital of France?", answer="Paris")]
    )
    steering = Steering.full(h, alpha=1.0, gamma=0.1, mode="cached")
    assert steering.references.dtype == torch.float32 and steering.references.shape[0] == 1
    assert steering.describe()["mode"] == "cached"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"references": torch.full((4, 64), float("nan"))}, "NaN"),
        ({"references": torch.zeros(64)}, "references must be"),
        ({"mode": "fast"}, "unknown steering mode"),
        (
            {
                "strengths": Strengths(
                    layout=SegmentLayout(name="x", ranges=((2, 9),)), alpha=(1.0,), gamma=(1.0,)
                )
            },
            "outside a model with 4 layers",
        ),
    ],
)
def test_steering_refuses_bad_values(kwargs, message):
    base = {
        "references": torch.zeros(4, 64),
        "strengths": Strengths.full(4, 0.5, 0.5),
        "mode": "faithful",
    }
    with pytest.raises(FsnnError, match=message):
        Steering(**{**base, **kwargs})


def test_steering_rows_must_match_prompts(tiny_gemma2):
    steering = Steering.full(_refs(tiny_gemma2, 2), alpha=0.5, gamma=0.5)
    with pytest.raises(FsnnError, match="2 reference rows for 3 prompt"):
        steering.generate(tiny_gemma2, PROMPTS + PROMPTS[:1], max_new_tokens=1)


# --------------------------------------------------------------------------- backends


def test_resolve_backend_names_and_objects():
    assert isinstance(resolve_backend(None), LocalBackend)
    assert isinstance(resolve_backend("serialised"), SerialisedBackend)
    ndif = NdifBackend(host="https://example.invalid")
    assert resolve_backend(ndif) is ndif and ndif.remote_model and ndif.nnsight_remote is True
    assert SerialisedBackend().nnsight_remote == "local" and not SerialisedBackend().remote_model
    assert {b.identity for b in (LocalBackend(), SerialisedBackend(), ndif)} == {
        "local",
        "serialised",
        "ndif",
    }
    with pytest.raises(FsnnError, match="unknown backend 'gpu'"):
        resolve_backend("gpu")


def test_serialised_backend_retries_transient_failures_and_passes_input_errors():
    backend = SerialisedBackend(policy=RetryPolicy(attempts=3, backoff_base=0.0))
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("connection reset")
        return "ok"

    assert backend.call(flaky, what="test call") == "ok" and len(calls) == 3

    def always_down():
        raise ConnectionError("down")

    with pytest.raises(
        FsnnError, match="test call failed .* after 3 attempts: ConnectionError: down"
    ):
        backend.call(always_down, what="test call")

    def bad_input():
        calls.append(1)
        raise FsnnError("bad input")

    before = len(calls)
    with pytest.raises(FsnnError, match="^bad input$"):
        backend.call(bad_input)
    assert len(calls) == before + 1  # not retried


def test_local_and_serialised_backends_agree(tiny_gemma2):
    h = _refs(tiny_gemma2, 2, seed=5)
    steering = Steering.segmented(h, alpha=(0.4, 0.8, 0.2), gamma=(0.9, 0.1, 0.5), mode="faithful")
    local = steering.generate(tiny_gemma2, PROMPTS, max_new_tokens=4)
    serialised = steering.generate(
        tiny_gemma2, PROMPTS, max_new_tokens=4, backend=SerialisedBackend()
    )
    assert [o.ids for o in local] == [o.ids for o in serialised]


def test_open_run_refuses_non_run_folders(tmp_path):
    with pytest.raises(FsnnError, match="run folder not found"):
        fsnn.open_run(tmp_path / "missing")
    with pytest.raises(FsnnError, match="not an fsnn run folder"):
        fsnn.open_run(tmp_path)


def test_public_surface_is_small_and_documented():
    assert set(fsnn.__all__) == {"__version__", *fsnn._EXPORTS}
    assert len(fsnn.__all__) <= 30
    for name in fsnn.__all__:
        if name == "__version__":
            continue
        assert getattr(fsnn, name).__doc__, f"fsnn.{name} has no docstring"
