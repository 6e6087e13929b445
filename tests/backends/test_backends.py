"""fsnn.backends.base: the three backends' flags, name resolution, and how a call is run."""

from __future__ import annotations

import pytest

from fsnn.backends.base import (
    BACKENDS,
    Backend,
    LocalBackend,
    NdifBackend,
    SerialisedBackend,
    resolve_backend,
)
from fsnn.backends.retry import RetryPolicy
from fsnn.errors import BackendUnavailable, FsnnError

NO_WAIT = RetryPolicy(attempts=3, backoff_base=0.0)


def test_flags_of_each_backend():
    local, serialised, ndif = (
        LocalBackend(),
        SerialisedBackend(),
        NdifBackend(host="https://ndif.invalid"),
    )
    assert [
        (b.nnsight_remote, b.traced, b.remote_model, b.identity) for b in (local, serialised, ndif)
    ] == [
        (False, False, False, "local"),
        ("local", True, False, "serialised"),
        (True, True, True, "ndif"),  # the host is not part of the identity
    ]
    assert serialised.policy == RetryPolicy() and ndif.policy == RetryPolicy()


def test_resolve_by_name_object_or_default():
    assert resolve_backend(None) == LocalBackend()
    for name, cls in BACKENDS.items():
        assert type(resolve_backend(name)) is cls and cls.name == name
    custom = SerialisedBackend(policy=NO_WAIT)
    assert resolve_backend(custom) is custom
    with pytest.raises(
        FsnnError, match="unknown backend 'gpu': choose one of local, serialised, ndif"
    ):
        resolve_backend("gpu")
    with pytest.raises(TypeError):
        Backend()  # abstract: nnsight_remote


def test_local_call_runs_once_and_never_retries():
    calls = []

    def fail():
        calls.append(1)
        raise ConnectionError("down")

    assert LocalBackend().call(lambda: 42) == 42
    with pytest.raises(ConnectionError):
        LocalBackend().call(fail)
    assert len(calls) == 1


def test_serialised_call_retries_transient_failures_like_ndif():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("dropped")
        return "done"

    def raising(exc):
        def fn():
            calls.append(1)
            raise exc

        return fn

    backend = SerialisedBackend(policy=NO_WAIT)
    assert backend.call(flaky, what="batch 1") == "done" and len(calls) == 3
    calls.clear()
    with pytest.raises(
        BackendUnavailable, match=r"batch 2 failed at the serialised-local backend after 3 attempts"
    ):
        backend.call(raising(ConnectionError("down")), what="batch 2")
    assert len(calls) == 3
    # bad input: an FsnnError passes through at once; a bug is one FsnnError line, not retried
    calls.clear()
    with pytest.raises(FsnnError, match="^prompt 3 is too long$"):
        backend.call(raising(FsnnError("prompt 3 is too long")))
    with pytest.raises(
        FsnnError, match="trace failed at the serialised-local backend: ValueError: bug"
    ) as info:
        backend.call(raising(ValueError("bug")))
    assert not isinstance(info.value, BackendUnavailable) and len(calls) == 2


@pytest.mark.parametrize(
    ("backend", "flag", "registers"),
    [
        (LocalBackend(), False, False),
        (SerialisedBackend(), "local", True),
        (NdifBackend(), True, True),
    ],
)
def test_trace_remote_is_the_flag_and_registers_only_for_remote(
    monkeypatch, backend, flag, registers
):
    from fsnn.steering import remote_code

    calls = []
    monkeypatch.setattr(remote_code, "register_for_remote", lambda: calls.append(1))
    assert remote_code.trace_remote(backend) == flag
    assert calls == ([1] if registers else [])


def test_load_model_remote_flag_is_deprecated_for_backend():
    from fsnn.models.load import load_model

    # the warning comes first, then the spec is checked (no load, no network)
    with pytest.warns(FutureWarning, match=r"backend='ndif'"), pytest.raises(FsnnError):
        load_model("no-such-model-alias", remote=True)
