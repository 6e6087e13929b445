"""The code that travels by value to a remote (NDIF) server, registered once at first use.

The server has no fsnn: the loop body (:mod:`.intervention`) and the math it calls
(:mod:`.fusion`, :mod:`.operators`, :mod:`fsnn.models.layers`) are handed to nnsight with
``nnsight.register`` so they ship inside each request. Registering at import instead
would patch nnsight for every user of ``import fsnn``.
"""

from __future__ import annotations

import functools

__all__ = ["register_for_remote"]


@functools.cache
def register_for_remote() -> None:
    """Register the shipped modules with nnsight (once per process; later calls do nothing)."""
    import nnsight

    from fsnn.models import layers

    from . import fusion, intervention, operators

    for module in (fusion, operators, layers, intervention):
        nnsight.register(module)
