"""Storage: the run-data contract (what every file of a run folder holds) and its I/O.

- :mod:`.schema`: the schema of every run file, and the functions that build them.
- :mod:`.files`: atomic writes, checked reads, provenance, :func:`open_run`.
- :mod:`.lock`: one process per run folder.
- :mod:`.environment`: the environment variables fsnn reads (data paths, cache folder).

May import: :mod:`fsnn.errors`.
"""

from __future__ import annotations

import importlib
from typing import Any

# 0.2 kept the I/O in one module ``fsnn.store``: its names still resolve here
_NAMES = {
    name: ".files"
    for name in (
        "Run",
        "open_run",
        "SCHEMA_VERSION",
        "atomic_write",
        "atomic_write_bytes",
        "atomic_write_text",
        "check_dims",
        "package_versions",
        "provenance",
        "read_dataset",
        "remove_stale_temp_files",
        "write_dataset",
    )
}


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_NAMES[name], __name__), name)
