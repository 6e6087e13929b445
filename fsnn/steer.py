"""Steered generation through nnsight (docs/method.md §2.5, §9): where and when eqs. (2)-(5) apply.

Two named modes — different methods, not two speeds of one:

``faithful`` (parity, default for paper reproduction)
    As the release ran it: no KV cache, so every decode step re-runs the whole sequence;
    at every steered layer mu is the mean over all valid positions of the current pass
    (prompt + tokens so far, upstream layers already steered) and the shift is applied
    to every position. Cost grows quadratically with the number of new tokens.

``cached`` (speed; an approximation of faithful)
    KV cache on. The prompt pass is steered exactly as faithful step 0. Each new token
    is steered with mu = the running mean, over all positions so far (prompt and
    generated, this token included), of the layer's block outputs before this layer's
    own shift (upstream layers already steered). Earlier positions are *not* re-steered
    as the sequence grows (their cached keys/values keep the shift of the step that
    computed them), which is where it departs from faithful; docs/benchmarks.md
    measures how far.

Every row of a batch carries its own reference vectors and its own (alpha, gamma) per
layer, so one generate call evaluates many search trials (of one or several prompts).
Left padding never enters mu (masked mean) and a padded row yields the same tokens as
the row run alone. Greedy; each row stops at its own EOS.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import nnsight
import torch

from . import fusion, layers
from .errors import FsnnError
from .fusion import fuse, fuse_decode_step, masked_sum
from .generation import GenerationOutput, decode_rows, encode, eos_ids
from .layers import residual

__all__ = ["MODES", "Mode", "steered_generate", "steer_rows"]

Mode = Literal["faithful", "cached"]
MODES: tuple[str, ...] = ("faithful", "cached")

# The math helpers travel by value in remote (NDIF) requests: the server has no fsnn.
nnsight.register(fusion)
nnsight.register(layers)


def _check_inputs(model: Any, n_rows: int, h: torch.Tensor, alpha: torch.Tensor, gamma: torch.Tensor) -> None:
    if h.ndim != 3 or h.shape[0] != n_rows:
        raise FsnnError(f"references must be (rows={n_rows}, layer, hidden), got {tuple(h.shape)}")
    if h.shape[1] != model.n_layers or h.shape[2] != model.d_model:
        raise FsnnError(
            f"references are for {h.shape[1]} layers x {h.shape[2]} hidden, but model "
            f"{model.name} has {model.n_layers} layers x {model.d_model} hidden"
        )
    for name, t in (("alpha", alpha), ("gamma", gamma)):
        if tuple(t.shape) != (n_rows, model.n_layers):
            raise FsnnError(f"{name} must be (rows={n_rows}, layer={model.n_layers}), got {tuple(t.shape)}")
        if not bool(torch.isfinite(t).all()):
            raise FsnnError(f"{name} holds NaN or inf")
    if not bool(torch.isfinite(h).all()):
        raise FsnnError("reference vectors hold NaN or inf")


def validated_inputs(
    model: Any, n_rows: int, h: Any, alpha: Any, gamma: Any, *, mode: str, max_new_tokens: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check a steering request and return (h, alpha, gamma) as float32 tensors.

    Shared by every entry point (local, remote session) so they refuse the same input.
    """
    if mode not in MODES:
        raise FsnnError(f"unknown steering mode {mode!r}; choose one of {MODES}")
    if max_new_tokens < 1:
        raise FsnnError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    h = torch.as_tensor(h, dtype=torch.float32)
    alpha = torch.as_tensor(alpha, dtype=torch.float32)
    gamma = torch.as_tensor(gamma, dtype=torch.float32)
    _check_inputs(model, n_rows, h, alpha, gamma)
    return h, alpha, gamma


def steered_generate(
    model: Any,
    prompts: Sequence[str],
    h: torch.Tensor,
    alpha: torch.Tensor,
    gamma: torch.Tensor,
    *,
    mode: Mode = "faithful",
    max_new_tokens: int = 100,
    batch_size: int | None = None,
    remote: bool | str = False,
    stop_at_eos: bool = True,
) -> list[GenerationOutput]:
    """Greedy generation with every row steered toward its own reference.

    Args:
        model: a :class:`fsnn.models.LoadedModel`.
        prompts: B prompt texts (the steering prompt of each row).
        h: reference vectors, (B, layer, hidden) — eq. (1) of each row's prompt.
        alpha: interpolation weight, (B, layer); 0 outside the steered layers.
        gamma: additive strength, (B, layer); 0 outside the steered layers.
        mode: ``faithful`` (no cache, parity) or ``cached`` (KV cache, running mean).
        max_new_tokens: tokens to generate per row (fewer when the row hits EOS).
        batch_size: rows per generate call (default: all B in one call).
        remote: forwarded to nnsight (``True`` for NDIF, ``"local"`` to test the
            serialised path locally).
        stop_at_eos: False generates exactly ``max_new_tokens`` per row (benchmarks).

    Returns:
        One :class:`GenerationOutput` per row, in order.

    Raises:
        FsnnError: shapes that do not match the model, NaN/inf coefficients, an unknown
            mode, a prompt too long for the context.
    """
    n = len(prompts)
    h, alpha, gamma = validated_inputs(model, n, h, alpha, gamma, mode=mode, max_new_tokens=max_new_tokens)
    step = batch_size or n
    outputs: list[GenerationOutput] = []
    for start in range(0, n, step):
        sl = slice(start, start + step)
        outputs.extend(
            steer_rows(model, list(prompts[sl]), h[sl], alpha[sl], gamma[sl], mode=mode,
                       max_new_tokens=max_new_tokens, remote=remote, stop_at_eos=stop_at_eos)
        )
    return outputs


def _vocab_size(model: Any) -> int:
    cfg = model.hf_model.config
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    return int(text_cfg.vocab_size)


def _generation_config(model: Any, max_new_tokens: int, use_cache: bool, eos: set[int]) -> Any:
    """Plain greedy: no processors from the checkpoint's config, so the token chosen is
    exactly the argmax of the last position's logits (which the trace records)."""
    from transformers import GenerationConfig

    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        use_cache=use_cache,
        # no EOS: an id the model cannot emit, since None would let transformers fill
        # in the checkpoint's EOS and stop the row anyway
        eos_token_id=sorted(eos) or [_vocab_size(model)],
        pad_token_id=model.tokenizer.pad_token_id,
    )


@torch.no_grad()
def steer_rows(
    model: Any,
    prompts: list[str],
    h: torch.Tensor,
    alpha: torch.Tensor,
    gamma: torch.Tensor,
    *,
    mode: Mode,
    max_new_tokens: int,
    remote: bool | str = False,
    stop_at_eos: bool = True,
) -> list[GenerationOutput]:
    """One nnsight-traced generate call over one batch of rows (see steered_generate)."""
    enc = encode(model, prompts, max_new_tokens)
    eos = eos_ids(model) if stop_at_eos else set()
    device = model.device
    # Layers whose coefficients are zero for every row are the identity: skip them.
    active = [l for l in range(model.n_layers) if bool((alpha[:, l] * gamma[:, l] != 0).any())]
    envoys = [model.layer(l) for l in active]
    # clone: a slice is a view, and a remote request would carry its whole storage
    # (all L layers) once per layer. Shaped once for a decode step's (B, 1, H)
    # activations (fuse_decode_step); the prompt pass takes [:, 0] views for fuse.
    h_act = [h[:, l, None].clone().to(device) for l in active]  # (B, 1, H)
    a_act = [alpha[:, l, None, None].clone().to(device) for l in active]  # (B, 1, 1)
    g_act = [gamma[:, l, None, None].clone().to(device) for l in active]
    # Valid positions of every pass: the prompt's mask, then one real token per step
    # (float32 already, as masked_sum uses it).
    full_mask = torch.cat(
        [enc.attention_mask, torch.ones(len(prompts), max_new_tokens, dtype=enc.attention_mask.dtype)], dim=1
    ).to(device=device, dtype=torch.float32)
    faithful = mode == "faithful"
    config = _generation_config(model, max_new_tokens, use_cache=not faithful, eos=eos)
    lm_head = model.lm.lm_head
    with model.lm.generate(enc, generation_config=config, remote=remote) as tracer:
        picked = nnsight.save([])  # saved before the loop: survives an early EOS stop
        sums = {}
        for step in tracer.iter[0:max_new_tokens]:
            for i in range(len(envoys)):
                a = residual(envoys[i].output)
                if faithful or step == 0:
                    total, count = masked_sum(a, full_mask[:, : a.shape[1]])
                    steered = fuse(a, h_act[i][:, 0], total / count, a_act[i][:, 0, 0], g_act[i][:, 0, 0])
                    sums[i] = (total[:, None], count[:, None])
                else:
                    steered, total, count = fuse_decode_step(a, h_act[i], sums[i][0], sums[i][1], a_act[i], g_act[i])
                    sums[i] = (total, count)
                # written in place: assigning .output would cost a second switch per layer
                a.copy_(steered)
            picked.append(lm_head.output[:, -1].argmax(dim=-1).cpu())
    new = torch.stack(list(picked), dim=1) if len(picked) else torch.empty(len(prompts), 0, dtype=torch.long)
    sequences = torch.cat([enc.input_ids, new], dim=1)
    return decode_rows(model, prompts, enc, sequences, eos)
