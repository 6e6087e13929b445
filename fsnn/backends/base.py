"""Where traces run: an execution backend object passed wherever a stage runs a trace.

Three backends, one small interface (``traced``, ``nnsight_remote``, ``call``):

- :class:`LocalBackend` (default): traces run here on the loaded weights.
- :class:`SerialisedBackend`: every trace is serialised exactly as for NDIF, then
  deserialised and run here (nnsight's ``remote="local"``). It is the test of the
  remote path, and it retries like NDIF so fault injection can exercise the policy.
- :class:`NdifBackend`: traces run on NDIF (key from ``NDIF_API_KEY``), every stage
  call wrapped in :func:`fsnn.backends.ndif.call_remote`: bounded retries of transient
  failures, one-line errors naming the request.

A stage runs ``backend.call(lambda: <traces with remote=backend.nnsight_remote>,
what=...)``. Every stage is a pure function of its inputs (greedy decoding, fixed
strengths), so a retried call returns what the first attempt would have.
``backend.identity`` goes into a run folder's identity: a folder made on one backend
refuses to be continued on another (their numbers may differ in the last bits).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

from fsnn.errors import FsnnError

from .retry import RetryPolicy

__all__ = [
    "BACKENDS",
    "Backend",
    "LocalBackend",
    "NdifBackend",
    "SerialisedBackend",
    "resolve_backend",
]

_T = TypeVar("_T")


class Backend(abc.ABC):
    """Where a stage's traces run. Subclasses are frozen dataclasses."""

    name: ClassVar[str]

    @property
    @abc.abstractmethod
    def nnsight_remote(self) -> bool | str:
        """The ``remote=`` argument nnsight's traces get."""

    @property
    def traced(self) -> bool:
        """Whether even plain generation must run as a trace (weights not usable here)."""
        return self.nnsight_remote is not False

    @property
    def remote_model(self) -> bool:
        """Whether the model is built on the meta device (weights live elsewhere)."""
        return False

    @property
    def identity(self) -> str:
        """What a run folder records of the backend (no secret, no host credentials)."""
        return self.name

    def call(self, fn: Callable[[], _T], *, what: str = "trace") -> _T:
        """Run one stage call ``fn()`` (which makes traces) on this backend."""
        return fn()


@dataclass(frozen=True)
class LocalBackend(Backend):
    """Traces run in this process on the loaded weights."""

    name: ClassVar[str] = "local"

    @property
    def nnsight_remote(self) -> bool:
        return False


@dataclass(frozen=True)
class SerialisedBackend(Backend):
    """Traces serialised as for NDIF, then run here (the test of the remote path).

    Attributes:
        policy: retries of transient failures, as on NDIF.
    """

    name: ClassVar[str] = "serialised"
    policy: RetryPolicy = field(default_factory=RetryPolicy)

    @property
    def nnsight_remote(self) -> str:
        return "local"

    def call(self, fn: Callable[[], _T], *, what: str = "trace") -> _T:
        from .ndif import call_with_retries

        return call_with_retries(
            fn, policy=self.policy, what=what, where="the serialised-local backend"
        )


@dataclass(frozen=True)
class NdifBackend(Backend):
    """Traces run on NDIF.

    Attributes:
        host: NDIF URL (default ``$NDIF_HOST``, else nnsight's configured host).
        policy: retries of transient failures.
    """

    name: ClassVar[str] = "ndif"
    host: str | None = None
    policy: RetryPolicy = field(default_factory=RetryPolicy)

    @property
    def nnsight_remote(self) -> bool:
        return True

    @property
    def remote_model(self) -> bool:
        return True

    def call(self, fn: Callable[[], _T], *, what: str = "NDIF request") -> _T:
        from .ndif import call_remote

        return call_remote(fn, host=self.host, policy=self.policy, what=what)


BACKENDS: dict[str, type[Backend]] = {
    "local": LocalBackend,
    "serialised": SerialisedBackend,
    "ndif": NdifBackend,
}


def resolve_backend(value: Backend | str | None) -> Backend:
    """A backend from an object or a name (``local``, ``serialised``, ``ndif``).

    Raises:
        FsnnError: an unknown name.
    """
    if value is None:
        return LocalBackend()
    if isinstance(value, Backend):
        return value
    if isinstance(value, str) and value in BACKENDS:
        return BACKENDS[value]()
    raise FsnnError(f"unknown backend {value!r}: choose one of {', '.join(BACKENDS)}")
