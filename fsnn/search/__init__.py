"""The search: per-prompt Optuna search of steering strengths, and its objective.

- :mod:`.config`: :class:`SearchConfig` (torch-free) and the names a search accepts.
- :mod:`.objective`: the search objective S_opt (eq. 6) and its readability guard.
- :mod:`.strength`: what a search samples (parametrizations) and the per-layer
  (alpha, gamma) it means; log-spaced start trials.
- :mod:`.run`: :class:`SearchItem`, :func:`run_search` (trials batched by ask-and-tell,
  resumable Optuna storage).
- :mod:`.label_free`: strengths and references that need no answer (docs/beyond_oracle.md).

May import: :mod:`fsnn.errors`, :mod:`fsnn.store` (the trials' schema), :mod:`fsnn.backends`,
:mod:`fsnn.models`, :mod:`fsnn.steering`, :mod:`fsnn.judges`.
"""

from __future__ import annotations

import importlib
from typing import Any

# 0.2 kept all of this in one module ``fsnn.search``: its names still resolve here
_NAMES = {name: ".run" for name in ("SearchItem", "open_storage", "run_search", "storage_error")}
_NAMES.update({"SAMPLERS": ".config", "SearchConfig": ".config"})


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_NAMES[name], __name__), name)
