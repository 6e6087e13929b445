"""The plain-hook path: fsnn's ``cached`` steering written with PyTorch forward hooks.

Same math, same order of operations and the same pure functions
(:mod:`fsnn.steering.fusion`: ``fuse`` on the prompt pass, ``fuse_decode_step`` after) as
:func:`fsnn.steering.steer.steer_rows` in ``cached`` mode, but applied by ``register_forward_hook`` on the decoder blocks of a transformers model that
nnsight never wrapped, inside a plain ``model.generate``. Timing it next to the nnsight
path isolates what nnsight itself costs; its tokens are compared with the nnsight
path's (they should be identical).
"""

from __future__ import annotations

from typing import Any

import torch

from fsnn.models.layers import find_layers_path, residual, with_residual
from fsnn.steering.fusion import fuse, fuse_decode_step, masked_sum

__all__ = ["hook_steered_generate", "load_raw_model", "raw_generate"]


def load_raw_model(source: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A transformers causal LM loaded without nnsight (no wrapped modules)."""
    import warnings

    from transformers import AutoModelForCausalLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoModelForCausalLM.from_pretrained(source, dtype=dtype).eval()


def _blocks(model: torch.nn.Module) -> Any:
    blocks: Any = model
    for part in find_layers_path(model).split("."):
        blocks = getattr(blocks, part)
    return blocks


@torch.no_grad()
def hook_steered_generate(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: list[str],
    h: torch.Tensor,
    alpha: torch.Tensor,
    gamma: torch.Tensor,
    *,
    max_new_tokens: int,
) -> torch.Tensor:
    """Cached-mode Fusion Steering of B rows with forward hooks; no EOS stop.

    Args:
        model: a plain transformers causal LM.
        tokenizer: its tokenizer (left padding).
        prompts: B prompts.
        h: (B, layer, hidden) references; alpha, gamma: (B, layer).
        max_new_tokens: exactly this many tokens per row.

    Returns:
        The new token ids, (B, max_new_tokens).
    """
    from transformers import GenerationConfig

    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    device = next(model.parameters()).device
    n = len(prompts)
    full_mask = torch.cat(
        [enc.attention_mask, torch.ones(n, max_new_tokens, dtype=enc.attention_mask.dtype)], dim=1
    ).to(device=device, dtype=torch.float32)
    blocks = _blocks(model)
    active = [k for k in range(len(blocks)) if bool((alpha[:, k] * gamma[:, k] != 0).any())]
    sums: dict[int, list[torch.Tensor]] = {}

    def make_hook(k: int) -> Any:
        # (B, 1, H) and (B, 1, 1), as steer_rows shapes them for fuse_decode_step
        h_k = h[:, k, None].to(device)
        a_k, g_k = alpha[:, k, None, None].to(device), gamma[:, k, None, None].to(device)

        def hook(module: torch.nn.Module, inputs: Any, output: Any) -> Any:
            a = residual(output)
            if k not in sums:  # the prompt pass, as steer_rows' step 0
                total, count = masked_sum(a, full_mask[:, : a.shape[1]])
                steered = fuse(a, h_k[:, 0], total / count, a_k[:, 0, 0], g_k[:, 0, 0])
                sums[k] = (total[:, None], count[:, None])
            else:
                steered, *sums[k] = fuse_decode_step(a, h_k, *sums[k], a_k, g_k)
            return with_residual(output, steered)

        return hook

    handles = [blocks[k].register_forward_hook(make_hook(k)) for k in active]
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        use_cache=True,
        eos_token_id=None,
        pad_token_id=tokenizer.pad_token_id,
    )
    try:
        seqs = model.generate(
            input_ids=enc.input_ids.to(device),
            attention_mask=enc.attention_mask.to(device),
            generation_config=config,
        )
    finally:
        for handle in handles:
            handle.remove()
    return seqs[:, enc.input_ids.shape[1] :].cpu()


@torch.no_grad()
def raw_generate(
    model: torch.nn.Module, tokenizer: Any, prompts: list[str], *, max_new_tokens: int
) -> torch.Tensor:
    """Plain greedy generate on the unwrapped model, exactly ``max_new_tokens`` per row."""
    from transformers import GenerationConfig

    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    device = next(model.parameters()).device
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        use_cache=True,
        eos_token_id=None,
        pad_token_id=tokenizer.pad_token_id,
    )
    seqs = model.generate(
        input_ids=enc.input_ids.to(device),
        attention_mask=enc.attention_mask.to(device),
        generation_config=config,
    )
    return seqs[:, enc.input_ids.shape[1] :].cpu()
