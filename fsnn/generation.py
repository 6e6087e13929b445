"""Plain (unsteered) batched greedy generation and the output record all stages share.

Used for the baseline (stage 1) and enrichment (stage 3); steered generation
(:mod:`fsnn.steer`) returns the same :class:`GenerationOutput`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .errors import FsnnError

__all__ = ["GenerationOutput", "decode_rows", "encode", "eos_ids", "generate"]


@dataclass(frozen=True, kw_only=True)
class GenerationOutput:
    """One generated row.

    Attributes:
        prompt: the prompt text.
        completion: decoded new tokens only, special tokens skipped, stopped at EOS.
        ids: the new token ids (EOS excluded).
        text: prompt + completion decoded together, as the release scored it.
        stopped: True when the row ended on EOS before max_new_tokens.
    """

    prompt: str
    completion: str
    ids: list[int]
    text: str
    stopped: bool


def encode(model: Any, prompts: Sequence[str], max_new_tokens: int = 0) -> Any:
    """Tokenise ``prompts`` as one left-padded batch; check they fit the context.

    Raises:
        FsnnError: empty prompt list, or a prompt + ``max_new_tokens`` longer than the
            model's context (names the prompt).
    """
    if not prompts:
        raise FsnnError("no prompt to generate from")
    enc = model.tokenizer(list(prompts), return_tensors="pt", padding=True)
    limit = model.max_length
    if limit is not None:
        lengths = enc.attention_mask.sum(1)
        for i, n in enumerate(lengths.tolist()):
            if n + max_new_tokens > limit:
                raise FsnnError(
                    f"prompt {i} is {n} tokens; with {max_new_tokens} new tokens it exceeds "
                    f"the model's context of {limit} ({prompts[i][:60]!r}...)"
                )
    return enc


def eos_ids(model: Any) -> set[int]:
    """Token ids that end a row: the tokenizer's EOS plus the generation config's."""
    ids: set[int] = set()
    if model.tokenizer.eos_token_id is not None:
        ids.add(int(model.tokenizer.eos_token_id))
    cfg_eos = getattr(getattr(model.hf_model, "generation_config", None), "eos_token_id", None)
    if isinstance(cfg_eos, int):
        ids.add(cfg_eos)
    elif isinstance(cfg_eos, (list, tuple)):
        ids.update(int(i) for i in cfg_eos)
    return ids


def decode_rows(
    model: Any, prompts: Sequence[str], enc: Any, sequences: torch.Tensor, eos: set[int]
) -> list[GenerationOutput]:
    """Cut each row of ``sequences`` (B, prompt+new) at its first EOS and decode it."""
    width = enc.input_ids.shape[1]
    outputs = []
    for row, prompt in enumerate(prompts):
        new = sequences[row, width:].tolist()
        stopped = False
        for j, tok in enumerate(new):
            if tok in eos:
                new, stopped = new[:j], True
                break
        prompt_ids = enc.input_ids[row][enc.attention_mask[row].bool()].tolist()
        outputs.append(
            GenerationOutput(
                prompt=prompt,
                completion=model.tokenizer.decode(new, skip_special_tokens=True),
                ids=new,
                text=model.tokenizer.decode(prompt_ids + new, skip_special_tokens=True),
                stopped=stopped,
            )
        )
    return outputs


@torch.no_grad()
def generate(
    model: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 100,
    batch_size: int = 8,
    stop_at_eos: bool = True,
    remote: bool | str = False,
) -> list[GenerationOutput]:
    """Greedy, unsteered generation of many prompts, ``batch_size`` at a time.

    Runs the transformers model directly (no tracing needed to read nothing).
    ``stop_at_eos=False`` generates exactly ``max_new_tokens`` per row (benchmarks).
    A remote model (NDIF, meta weights) or ``remote`` set generates through an nnsight
    trace instead: steered generation with every coefficient 0 is plain greedy.
    """
    if remote or getattr(model, "remote", False):
        from .steer import steered_generate

        n, zeros = len(prompts), torch.zeros(len(prompts), model.n_layers)
        return steered_generate(model, prompts, torch.zeros(n, model.n_layers, model.d_model), zeros, zeros,
                                mode="cached", max_new_tokens=max_new_tokens, batch_size=batch_size,
                                remote=remote or True, stop_at_eos=stop_at_eos)
    if max_new_tokens < 1:
        raise FsnnError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
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
