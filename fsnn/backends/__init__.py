"""Where traces run: on this machine, serialised as for NDIF and run here, or on NDIF.

- :mod:`.base`: the :class:`Backend` objects (``LocalBackend``, ``SerialisedBackend``,
  ``NdifBackend``) and :func:`resolve_backend`.
- :mod:`.ndif`: the NDIF path (the National Deep Inference Fabric): the API key, the
  pre-flight check, registering fsnn's code with nnsight, errors mapped to one line.
- :mod:`.retry`: the one retry policy of every network call (NDIF and HTTP judges).

May import: :mod:`fsnn.errors`.
"""
