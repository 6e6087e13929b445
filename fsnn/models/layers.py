"""Where the decoder blocks live, and how to read/write a block's residual output.

Fusion Steering reads and writes the *output of decoder block l* (the residual stream
after the block), docs/method.md §3 eq. (1). Architectures keep their blocks in different
places, and a block returns a plain tensor in transformers 5 but a tuple in older
releases and some custom models: indexing ``[0]`` on a tensor silently takes batch row 0,
so every access goes through :func:`residual` / :func:`with_residual`.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["LAYER_PATHS", "find_layers_path", "residual", "with_residual"]

# model_type -> dotted path of the ModuleList holding the decoder blocks.
LAYER_PATHS: dict[str, str] = {
    "gemma2": "model.layers",
    "gemma3_text": "model.layers",
    "gemma": "model.layers",
    "llama": "model.layers",
    "mistral": "model.layers",
    "qwen2": "model.layers",
    "qwen3": "model.layers",
    "phi3": "model.layers",
    "gpt2": "transformer.h",
    "gpt_neox": "gpt_neox.layers",
    "gemma3": "model.language_model.layers",
}


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def find_layers_path(model: torch.nn.Module) -> str:
    """Return the dotted path of the decoder-block ModuleList of a HF causal LM.

    Known architectures use :data:`LAYER_PATHS`; anything else falls back to the first
    ``ModuleList`` whose length equals ``config.num_hidden_layers``.

    Raises:
        ValueError: when no such list exists (an architecture fsnn cannot steer).
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type in LAYER_PATHS:
        path = LAYER_PATHS[model_type]
        try:
            _get(model, path)
            return path
        except AttributeError:
            pass
    n = getattr(getattr(config, "get_text_config", lambda: config)(), "num_hidden_layers", None)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and n is not None and len(module) == n:
            return name
    raise ValueError(
        f"cannot find the decoder blocks of model_type={model_type!r}: "
        f"add its path to fsnn.models.layers.LAYER_PATHS"
    )


def residual(output: Any) -> torch.Tensor:
    """The residual stream (batch, seq, hidden) from a decoder block's output.

    Works for blocks returning a tensor (transformers 5) and blocks returning a tuple
    whose first element is the hidden state (older transformers, custom models).
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"unexpected decoder block output of type {type(output).__name__}")


def with_residual(output: Any, hidden: torch.Tensor) -> Any:
    """``output`` with its residual stream replaced by ``hidden`` (same container type)."""
    if isinstance(output, torch.Tensor):
        return hidden
    return type(output)((hidden, *output[1:]))
