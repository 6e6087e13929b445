"""Reference capture (docs/method.md §2.4, eq. (1)): h_l for every layer in ONE traced pass.

For each (question, answer, explanation) the reference text is
``header + body`` = ``"Question: {q}\\nAnswer and explanation:\\n" + "{gt}\\n{exp}"``.
The averaged positions T are the tokens whose character span lies inside ``body``
(found through the tokenizer's offset mapping, so an occurrence of the answer inside
the question is never used). h_l = mean over T of decoder block l's output. The
release ran one pass per layer; one pass for all layers gives the same vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import nnsight
import numpy as np
import torch
import xarray as xr

from fsnn.backends.base import Backend, resolve_backend
from fsnn.errors import FsnnError
from fsnn.models.layers import residual

from .fusion import masked_sum
from .prompts import PAPER_TEMPLATES, Templates, apply_chat
from .remote_code import trace_remote

__all__ = [
    "GENERIC_PROMPTS",
    "ReferenceItem",
    "capture_generic_mean",
    "capture_references",
    "generic_inputs",
    "reference_inputs",
]

# Neutral, generic texts whose mean activation is mu_generic (docs/operators.md): questions and
# statements of everyday knowledge, written for fsnn (no SimpleQA text), varied in form and topic
# so that their mean holds what every text shares rather than what one topic does.
GENERIC_PROMPTS: tuple[str, ...] = (
    "Question: What is a good way to start the morning?\nAnswer and explanation:",
    "Question: How do plants use sunlight?\nAnswer and explanation:",
    "Question: Why do people keep a written calendar?\nAnswer and explanation:",
    "Question: What should you bring on a short walk?\nAnswer and explanation:",
    "Question: How does a bicycle stay upright when it moves?\nAnswer and explanation:",
    "Question: What makes a meal balanced?\nAnswer and explanation:",
    "Question: Why is it useful to learn a second language?\nAnswer and explanation:",
    "Question: How can you tell that it is going to rain?\nAnswer and explanation:",
    "The library opens at nine and closes in the early evening on most weekdays.",
    "A small garden needs water, light and a little patience to grow well.",
    "Many people enjoy reading a book with a cup of tea in the afternoon.",
    "The train was a few minutes late, so the passengers waited on the platform.",
    "Cooking rice is simple: rinse it, add water and let it simmer until soft.",
    "The children drew pictures of animals and hung them on the classroom wall.",
    "Clear instructions make a task easier to finish on time.",
    "In the evening the street grew quiet and the lamps came on one by one.",
)


@dataclass(frozen=True, kw_only=True)
class ReferenceItem:
    """One prompt's reference ingredients."""

    question: str
    answer: str
    explanation: str = ""


def reference_inputs(
    model: Any,
    items: Sequence[ReferenceItem],
    templates: Templates = PAPER_TEMPLATES,
    max_length: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """Tokenise reference texts as one left-padded batch and mark each body span.

    Returns:
        (input_ids (B, T), attention_mask (B, T), span_mask (B, T), texts).

    Raises:
        FsnnError: a prompt whose span comes out empty (names the prompt index).
    """
    tok = model.tokenizer
    limit = max_length or model.max_length
    rows: list[tuple[list[int], list[int]]] = []
    texts = []
    for i, item in enumerate(items):
        header, body = templates.reference_parts(item.question, item.answer, item.explanation)
        if templates.use_chat_template:
            header = apply_chat(tok, header.rstrip("\n"))
        text = header + body
        texts.append(text)
        enc = tok(text, return_offsets_mapping=True, truncation=limit is not None, max_length=limit)
        start, end = len(header), len(text)
        # special tokens (BOS) carry the empty span (0, 0) and are never in the body
        span = [int(s >= start and e <= end and e > s) for s, e in enc["offset_mapping"]]
        if not any(span):
            raise FsnnError(
                f"reference prompt {i}: the answer+explanation span is empty after tokenisation "
                f"(answer {item.answer!r}; truncated at {limit} tokens?)"
            )
        rows.append((list(enc["input_ids"]), span))
    width = max(len(ids) for ids, _ in rows)
    pad = tok.pad_token_id
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    span_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (ids, span) in enumerate(rows):  # left padding, as generation uses
        input_ids[r, width - len(ids) :] = torch.tensor(ids)
        attention[r, width - len(ids) :] = 1
        span_mask[r, width - len(ids) :] = torch.tensor(span)
    return input_ids, attention, span_mask, texts


@torch.no_grad()
def _span_means(
    model: Any,
    input_ids: torch.Tensor,
    attention: torch.Tensor,
    span_mask: torch.Tensor,
    backend: Backend,
    per_layer_passes: bool = False,
) -> torch.Tensor:
    """Mean of every layer's block output over each row's span, from one traced pass: (B, layer, hidden)."""
    envoys = [model.layer(li) for li in range(model.n_layers)]
    enc = {"input_ids": input_ids, "attention_mask": attention}
    span_mask = span_mask.to(model.device)
    layer_groups = (
        [[li] for li in range(model.n_layers)]
        if per_layer_passes
        else [list(range(model.n_layers))]
    )
    per_layer: dict[int, torch.Tensor] = {}
    for group in layer_groups:
        with model.lm.trace(enc, remote=trace_remote(backend)):
            means = nnsight.save([])
            for li in group:
                total, count = masked_sum(residual(envoys[li].output), span_mask)
                means.append((total / count).cpu())
        for li, mean in zip(group, means, strict=True):
            per_layer[li] = mean
    return torch.stack([per_layer[li] for li in range(model.n_layers)], dim=1)


@torch.no_grad()
def capture_references(
    model: Any,
    items: Sequence[ReferenceItem],
    *,
    templates: Templates = PAPER_TEMPLATES,
    batch_size: int = 8,
    max_length: int | None = None,
    backend: Backend | str | None = None,
    per_layer_passes: bool = False,
) -> xr.DataArray:
    """Eq. (1) reference vectors of every prompt at every layer.

    Args:
        model: a :class:`fsnn.models.load.LoadedModel`.
        items: the prompts' (question, answer, explanation).
        templates: where the reference header/body come from.
        batch_size: prompts per traced forward pass.
        max_length: truncate reference texts to this many tokens (default: context).
        backend: where the traces run (:mod:`fsnn.backends.base`; default local).
        per_layer_passes: run one pass per layer as the original did (benchmarks only;
            same result, L times the cost).

    Returns:
        DataArray ``h`` with dims (prompt, layer, hidden), float32; coords ``prompt``,
        ``layer``, and ``span_length`` on ``prompt``; attrs name the model.
    """
    if not items:
        raise FsnnError("no prompt to capture references for")
    where = resolve_backend(backend)
    chunks: list[torch.Tensor] = []
    spans: list[int] = []
    texts: list[str] = []
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        input_ids, attention, span_mask, batch_texts = reference_inputs(
            model, batch, templates, max_length
        )
        texts.extend(batch_texts)
        spans.extend(span_mask.sum(1).tolist())
        chunks.append(_span_means(model, input_ids, attention, span_mask, where, per_layer_passes))
    h = torch.cat(chunks, dim=0).float()
    return xr.DataArray(
        h.numpy(),
        dims=("prompt", "layer", "hidden"),
        coords={
            "prompt": np.arange(len(items)),
            "layer": np.arange(model.n_layers),
            "span_length": ("prompt", np.asarray(spans, dtype=np.int64)),
            "reference_text": ("prompt", np.asarray(texts, dtype=object)),
        },
        name="h",
        attrs={
            "model": model.name,
            "n_layers": model.n_layers,
            "equation": "docs/method.md eq. (1)",
        },
    )


def generic_inputs(
    model: Any, prompts: Sequence[str], max_length: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokenise generic texts as one left-padded batch; the span is every token but the special ones.

    Special tokens (BOS and the like, empty character span) are left out as eq. (1)
    leaves them out of a reference: a BOS position's outsized activation would
    otherwise dominate the mean.

    Returns:
        (input_ids (P, T), attention_mask (P, T), span_mask (P, T)).
    """
    tok = model.tokenizer
    limit = max_length or model.max_length
    rows = []
    for i, text in enumerate(prompts):
        enc = tok(text, return_offsets_mapping=True, truncation=limit is not None, max_length=limit)
        span = [int(e > s) for s, e in enc["offset_mapping"]]
        if not any(span):
            raise FsnnError(f"generic prompt {i} has no token ({text!r})")
        rows.append((list(enc["input_ids"]), span))
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    span_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (ids, span) in enumerate(rows):
        input_ids[r, width - len(ids) :] = torch.tensor(ids)
        attention[r, width - len(ids) :] = 1
        span_mask[r, width - len(ids) :] = torch.tensor(span)
    return input_ids, attention, span_mask


@torch.no_grad()
def capture_generic_mean(
    model: Any,
    prompts: Sequence[str] = GENERIC_PROMPTS,
    *,
    batch_size: int = 8,
    backend: Backend | str | None = None,
) -> xr.DataArray:
    """mu_generic: the mean block output of every layer over fixed generic texts (docs/operators.md).

        mu_generic,l = (1/P) sum_p mean_{t in span_p} a_{p,l,t}

    Each text weighs 1 whatever its length (``fsnn.steering.operators.generic_mean`` with
    ``per="prompt"``); its span is every token but the special ones (:func:`generic_inputs`).
    The same traced pass as :func:`capture_references` (one pass per batch, all layers).
    The ``centred`` and ``angular`` operators steer along h_l - mu_generic,l.

    Args:
        model: a :class:`fsnn.models.load.LoadedModel`.
        prompts: the generic texts (default :data:`GENERIC_PROMPTS`, 16 texts).
        batch_size: texts per traced forward pass.
        backend: where the traces run (:mod:`fsnn.backends.base`; default local).

    Returns:
        DataArray ``mu_generic`` with dims (layer, hidden), float32; attrs name the model,
        the number of texts and a sha256 prefix of the texts.
    """
    import hashlib

    if not prompts:
        raise FsnnError("no generic prompt to average")
    where = resolve_backend(backend)
    per_prompt = []
    for start in range(0, len(prompts), batch_size):
        ids, attention, span = generic_inputs(model, list(prompts[start : start + batch_size]))
        per_prompt.append(_span_means(model, ids, attention, span, where))
    mu = torch.cat(per_prompt, dim=0).float().mean(dim=0)
    digest = hashlib.sha256("\x00".join(prompts).encode()).hexdigest()[:16]
    return xr.DataArray(
        mu.numpy(),
        dims=("layer", "hidden"),
        coords={"layer": np.arange(model.n_layers)},
        name="mu_generic",
        attrs={
            "model": model.name,
            "n_prompts": len(prompts),
            "prompts_sha256": digest,
            "equation": "docs/operators.md, mean-centred reference",
        },
    )
