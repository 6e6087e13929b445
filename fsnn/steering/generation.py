"""Plain (unsteered) batched greedy generation: the baseline and the enrichment stages.

Locally the transformers model generates directly (no trace is needed to read
nothing). On a remote backend (NDIF, or the serialised-local test of that path) the
model's weights are not here, so generation goes through an nnsight trace instead:
steered generation with every strength 0 is exactly plain greedy decoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from fsnn.backends.base import Backend, resolve_backend

from .decode import GenerationOutput, decode_rows, encode, eos_ids
from .modes import check_generation

__all__ = ["generate"]


@torch.no_grad()
def generate(
    model: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 100,
    batch_size: int = 8,
    stop_at_eos: bool = True,
    backend: Backend | str | None = None,
) -> list[GenerationOutput]:
    """Greedy, unsteered generation of many prompts, ``batch_size`` at a time.

    Args:
        model: a :class:`fsnn.models.load.LoadedModel`.
        prompts: B prompt texts.
        max_new_tokens: tokens per row (fewer when a row hits EOS).
        batch_size: rows per generate call.
        stop_at_eos: False generates exactly ``max_new_tokens`` per row (benchmarks).
        backend: where it runs (:mod:`fsnn.backends.base`; default local).

    Returns:
        One :class:`~fsnn.steering.decode.GenerationOutput` per prompt, in order.
    """
    backend = resolve_backend(backend)
    check_generation(max_new_tokens=max_new_tokens)
    if backend.traced or getattr(model, "remote", False):
        from .steer import steered_generate

        n, zeros = len(prompts), torch.zeros(len(prompts), model.n_layers)
        return steered_generate(
            model,
            prompts,
            torch.zeros(n, model.n_layers, model.d_model),
            zeros,
            zeros,
            mode="cached",
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            backend=backend,
            stop_at_eos=stop_at_eos,
        )
    eos = eos_ids(model) if stop_at_eos else set()
    outputs: list[GenerationOutput] = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        enc = encode(model, chunk, max_new_tokens)
        seqs = model.hf_model.generate(
            input_ids=enc.input_ids.to(model.device),
            attention_mask=enc.attention_mask.to(model.device),
            max_new_tokens=max_new_tokens,
            min_new_tokens=0 if stop_at_eos else max_new_tokens,
            do_sample=False,
            pad_token_id=model.tokenizer.pad_token_id,
        )
        outputs.extend(decode_rows(model, chunk, enc, seqs.cpu(), eos))
    return outputs
