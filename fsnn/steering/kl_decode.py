"""Cached steered generation with a KL-bounded strength per step: the ``kl:EPS`` schedule.

At each decode step t and for each row, the strength actually used is m(t) times the
row's strength k (alpha * gamma per layer, any operator), with m(t) the largest value in
[0, 1] whose next-token distribution stays within EPS nats of the unsteered step's:

    KL(p_steered(m) || p_plain) <= EPS,

p_plain the distribution of the same step with this step's positions *not* steered (the
cache still holds the earlier steps' steering). m(t) is found by
:func:`fsnn.steering.operators.kl_bounded_strength` (m = 1 when feasible, else
:data:`KL_BISECTIONS` halvings of [0, 1]); m = 0 leaves the step's position exactly as
the model computed it. Step 0 is the prompt pass: every prompt position is steered with
m(0) k, the bound is read at the last position. The token picked is the argmax of the
step's logits at the chosen m. docs/operators.md says why this direction of the KL.

Why a loop of its own: each step needs 1 + n probes of its one new position on the
*same* KV cache, and an nnsight generate trace runs exactly one forward per step. Here
every forward is one nnsight trace with the transformers cache passed in; a probe's
positions are cropped off the cache after it, and the chosen strength's forward is the
one kept. The inputs (left padding, position ids) are those transformers' generate
builds, so with EPS large enough that m = 1 at every step the tokens equal
:func:`fsnn.steering.steer.steered_generate` in ``cached`` mode with the constant
schedule, and with EPS = 0 (m = 0 everywhere, unless steering leaves the logits exactly
unchanged) the plain model's greedy tokens (tests/steering/test_kl_decode.py).

Cost: per step the plain forward, the probe at m = 1, ``KL_BISECTIONS`` probes where some
row's m = 1 exceeds the bound, and the kept forward: 3 to 3 + KL_BISECTIONS forwards of
one position per row, against 1 for a fixed schedule. ``faithful`` mode and remote
models are refused (:func:`fsnn.steering.specs.check_schedule_mode`).
"""

from __future__ import annotations

import inspect
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import nnsight
import torch

from fsnn.models.layers import residual

from .decode import GenerationOutput
from .fusion import fuse, fuse_decode_step, masked_sum
from .operators import _rotate, _shift, kl_bounded_strength

if TYPE_CHECKING:
    from .steer import RowPlan

__all__ = ["KL_BISECTIONS", "kl_bounded_rows"]

# halvings of [0, 1] when m = 1 exceeds the bound: m is resolved to 1/32 of the strength
KL_BISECTIONS = 5


def _cache_keyword(hf_model: Any) -> str:
    """The name under which this transformers version's forward takes the KV cache."""
    params = inspect.signature(hf_model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _new_cache(hf_model: Any) -> Any:
    from transformers import DynamicCache

    return DynamicCache(config=hf_model.config)


def _steer_forward(
    plan: RowPlan,
    m: torch.Tensor | None,
    sums: list[Any] | None,
    new_sums: list[Any],
    width: int,
) -> None:
    """Steer the active layers of the current trace's forward with m (B,) times the strengths.

    ``m`` None: no steering (fusion still records the running sums, which count every
    position). Rows with m == 0 keep the layer's output bit for bit. Fusion's running
    state: ``sums`` None on the prompt pass (mu = the pass's masked mean), else the
    per-layer (sum, count) before this step; the state after it goes into ``new_sums``.
    """
    for i, envoy in enumerate(plan.envoys):
        a = residual(envoy.output)
        if plan.operator != "fusion":
            if m is None:
                continue
            k = plan.alpha[i] * m[:, None, None]
            steered = (
                _shift(a, plan.h[i], k) if plan.operator == "centred" else _rotate(a, plan.h[i], k)
            )
            a.copy_(steered)
            continue
        assert plan.gamma is not None  # fusion plans carry gamma
        al = plan.alpha[i] * (0.0 if m is None else m[:, None, None])
        if sums is None:
            total, count = masked_sum(a, plan.mask[:, :width])
            steered = fuse(a, plan.h[i][:, 0], total / count, al[:, 0, 0], plan.gamma[i][:, 0, 0])
            total, count = total[:, None], count[:, None]
        else:
            steered, total, count = fuse_decode_step(
                a, plan.h[i], sums[i][0], sums[i][1], al, plan.gamma[i]
            )
        new_sums.append((total, count))
        if m is None:
            continue
        keep = m[:, None, None] != 0
        if plan.gates is not None and plan.gates[i] is not None:
            keep = keep & plan.gates[i]
        a.copy_(torch.where(keep, steered, a))


@torch.no_grad()
def kl_bounded_rows(
    model: Any, plan: RowPlan, *, epsilon: float, max_new_tokens: int
) -> list[GenerationOutput]:
    """Greedy cached generation of one planned batch with the KL-bounded strength per step.

    Args:
        model: a local :class:`fsnn.models.load.LoadedModel`.
        plan: the rows (:func:`fsnn.steering.steer.plan_rows`, any operator).
        epsilon: the bound in nats (>= 0).
        max_new_tokens: tokens per row (fewer when every row has hit EOS).

    Returns:
        One :class:`GenerationOutput` per row, its ``strength_scale`` the m of each
        generated token's step.
    """
    hf = model.hf_model
    lm, device = model.lm, model.device
    cache_kw = _cache_keyword(hf)
    enc = plan.enc
    ids = enc.input_ids.to(device)
    attention = enc.attention_mask.to(device)
    # the position ids transformers' generate gives a left-padded batch
    positions = (attention.long().cumsum(-1) - 1).masked_fill(attention == 0, 0)
    n_rows = ids.shape[0]
    pad = model.tokenizer.pad_token_id
    eos = torch.tensor(sorted(plan.eos), dtype=torch.long, device=device)
    cache = _new_cache(hf)
    # sliding-window layers trim their states at each update unless told to keep them for
    # a crop; without this, a crop past the window (probes on long inputs) would fail
    if hasattr(cache, "activate_past_recording"):
        cache.activate_past_recording()
    sums: list[Any] | None = None
    done = torch.zeros(n_rows, dtype=torch.bool, device=device)
    picked: list[torch.Tensor] = []
    scales: list[torch.Tensor] = []

    def forward(m: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, list[Any]]:
        """One step's forward at multipliers m (appends its positions to the cache):
        (the token generate would pick, the final logits, fusion's running sums)."""
        inputs = {"input_ids": ids, "attention_mask": attention}
        with lm.trace(inputs, position_ids=positions, use_cache=True, **{cache_kw: cache}):
            new_sums = nnsight.save([])
            _steer_forward(plan, m, sums, new_sums, attention.shape[1])
            # the token as the generate trace picks it (argmax of lm_head's output) ...
            token = lm.lm_head.output[:, -1].argmax(dim=-1).save()
            # ... and the distribution the model samples from: Gemma-2 soft-caps lm_head
            logits = lm.output.logits[:, -1].float().save()
        return token, logits, list(new_sums)

    def probe(m: torch.Tensor) -> torch.Tensor:
        _, logits, _ = forward(m)
        cache.crop(-ids.shape[1])
        return logits

    for _ in range(max_new_tokens):
        _, plain, _ = forward(None)
        cache.crop(-ids.shape[1])
        m, _ = kl_bounded_strength(probe, plain, epsilon, s_max=1.0, n_iter=KL_BISECTIONS)
        token, _, sums = forward(m)
        if pad is not None:  # rows already ended feed padding, as generate does
            token = torch.where(done, torch.full_like(token, pad), token)
        picked.append(token.cpu())
        scales.append(m.cpu())
        if eos.numel():
            done = done | torch.isin(token, eos)
            if bool(done.all()):
                break
        ids = token[:, None]
        attention = torch.cat([attention, attention.new_ones(n_rows, 1)], dim=1)
        positions = positions[:, -1:] + 1
    outputs = plan.outputs(model, picked)
    per_step = torch.stack(scales, dim=1) if scales else torch.empty(n_rows, 0)
    return [
        _with_scales(out, per_step[row, : len(out.ids)].tolist()) for row, out in enumerate(outputs)
    ]


def _with_scales(out: GenerationOutput, scale: list[float]) -> GenerationOutput:
    return replace(out, strength_scale=tuple(scale))
