"""The code that travels by value to a remote (NDIF) server, registered once at first use.

The server has no fsnn: the loop body (:mod:`.intervention`) and the math it calls
(:mod:`.fusion`, :mod:`.operators`, :mod:`fsnn.models.layers`) are handed to nnsight with
``nnsight.register`` so they ship inside each request. Registering at import instead
would patch nnsight for every user of ``import fsnn``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fsnn.backends.base import Backend

__all__ = ["register_for_remote", "trace_remote"]


@functools.cache
def register_for_remote() -> None:
    """Register the shipped modules with nnsight (once per process; later calls do nothing)."""
    import nnsight

    from fsnn.models import layers

    from . import fusion, intervention, operators

    for module in (fusion, operators, layers, intervention):
        nnsight.register(module)


def trace_remote(backend: Backend) -> bool | str:
    """The ``remote=`` argument of a trace that runs on ``backend``.

    The one place a backend object becomes nnsight's flag, called where the trace is
    made; the shipped code is registered here, at the first trace that leaves (or
    serialises as if leaving) this process.
    """
    remote = backend.nnsight_remote
    if remote:
        register_for_remote()
    return remote
