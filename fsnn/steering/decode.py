"""Tokenising, greedy decoding settings and the output record every generation shares.

The building blocks under plain generation (:mod:`fsnn.steering.generation`) and steered
generation (:mod:`fsnn.steering.steer`): left-padded encoding checked against the context,
the EOS set, the greedy ``GenerationConfig``, and :class:`GenerationOutput`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fsnn.errors import FsnnError

__all__ = ["GenerationOutput", "decode_rows", "encode", "eos_ids", "greedy_config"]


@dataclass(frozen=True, kw_only=True)
class GenerationOutput:
    """One generated row.

    Attributes:
        prompt: the prompt text.
        completion: decoded new tokens only, special tokens skipped, stopped at EOS.
        ids: the new token ids (EOS excluded).
        text: prompt + completion decoded together, as the release scored it.
        stopped: True when the row ended on EOS before max_new_tokens.
        strength_scale: with the ``kl:EPS`` schedule, the multiplier m the bound allowed
            at the step of each new token (in [0, 1]); None otherwise.
    """

    prompt: str
    completion: str
    ids: list[int]
    text: str
    stopped: bool
    strength_scale: tuple[float, ...] | None = None


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


def _vocab_size(model: Any) -> int:
    cfg = model.hf_model.config
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    return int(text_cfg.vocab_size)


def greedy_config(model: Any, max_new_tokens: int, *, use_cache: bool, eos: set[int]) -> Any:
    """Plain greedy: no processors from the checkpoint's config, so the token chosen is
    exactly the argmax of the last position's logits (which a trace records)."""
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
