"""Partial versions of fsnn's steered generate, to see where its overhead goes.

:func:`nnsight_probe` runs the same nnsight generate as :func:`fsnn.steering.steer.steer_rows`
(same generation config, same ``tracer.iter`` loop, the same per-step read of the
chosen token) but intervenes less: nothing at the layers, or only a read of every
layer's output. Steered minus read-only is the steering itself; read-only minus
no-layers is nnsight's cost of stopping at every layer; no-layers minus plain generate
is the cost of running generate under an nnsight trace at all.
"""

from __future__ import annotations

from typing import Any

import nnsight
import torch

from fsnn.steering.decode import encode, greedy_config

__all__ = ["nnsight_probe"]


@torch.no_grad()
def nnsight_probe(
    model: Any, prompts: list[str], *, max_new_tokens: int, read_layers: bool
) -> list[torch.Tensor]:
    """Greedy nnsight generate of exactly ``max_new_tokens``; optionally read every layer."""
    enc = encode(model, prompts, max_new_tokens)
    config = greedy_config(model, max_new_tokens, use_cache=True, eos=set())
    envoys = [model.layer(k) for k in range(model.n_layers)] if read_layers else []
    lm_head = model.lm.lm_head
    with model.lm.generate(enc, generation_config=config) as tracer:
        picked = nnsight.save([])
        for _step in tracer.iter[0:max_new_tokens]:
            for i in range(len(envoys)):
                envoys[i].output  # noqa: B018 - the read is the point
            picked.append(lm_head.output[:, -1].argmax(dim=-1).cpu())
    return list(picked)
