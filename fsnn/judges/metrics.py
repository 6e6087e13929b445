"""Metrics of generated text: token overlap (docs/method.md §5) and perplexity.

S_opt (eq. 6), the search objective built on them, is :mod:`fsnn.search.objective`.

Token overlap is *recall of the answer's word types*: TO = |G ∩ P| / |G| where G and P
are the sets of NLTK word tokens of the lower-cased ground truth and prediction. NLTK's
``word_tokenize`` first splits sentences with the trained Punkt model, which is NLTK
*data* and not downloadable here; an untrained ``PunktSentenceTokenizer()`` reproduces
all 520 released ``token_overlap`` values exactly (skipping the sentence split gets 10
wrong: a sentence-final "range." would stay one token).
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import torch

__all__ = [
    "Perplexity",
    "token_overlap",
    "word_types",
]

_PUNCT = frozenset(string.punctuation)


@lru_cache(maxsize=1)
def _tokenizers() -> tuple[Any, Any]:
    from nltk.tokenize.destructive import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    return PunktSentenceTokenizer(), NLTKWordTokenizer()


@lru_cache(maxsize=65536)
def word_types(text: str) -> frozenset[str]:
    """Lower-cased NLTK word types of ``text``, single punctuation characters dropped."""
    sentences, words = _tokenizers()
    lowered = text.lower()
    return frozenset(
        tok
        for sent in sentences.tokenize(lowered)
        for tok in words.tokenize(sent)
        if not (len(tok) == 1 and tok in _PUNCT)
    )


def token_overlap(ground_truth: str, prediction: str) -> float:
    """TO = |G ∩ P| / |G| over word types, rounded to 4 decimals; 0 when G is empty.

    Example:
        >>> token_overlap("Michio Sugeno", "The award went to Michio Sugeno.")
        1.0
    """
    gt = word_types(ground_truth)
    if not gt:
        return 0.0
    return round(len(gt & word_types(prediction)) / len(gt), 4)


class Perplexity:
    """Perplexity of texts under a scorer causal LM, with a cache of scored texts.

    PPL = exp(mean over windows of the window's mean token loss), windows of ``window``
    tokens (paper: GPT-2 small, 512), as the release computed it. Identical texts are
    scored once (the search produces many duplicates).

    Every window is scored in a forward pass of its own, without padding: a text's PPL
    is then bit-identical whichever texts it is asked with. Batched and padded passes
    differ in the last float bits with the batch's composition (matmul blocking and the
    padded width), so a resumed run, which batches differently, would feed the sampler
    a slightly different history than an uninterrupted one.

    Args:
        model: a transformers causal LM (any ``torch.nn.Module`` returning ``.logits``).
        tokenizer: its tokenizer.
        window: tokens per window.
        batch_size: kept for compatibility; windows are scored one per pass (see above).
    """

    def __init__(
        self, model: torch.nn.Module, tokenizer: Any, *, window: int = 512, batch_size: int = 16
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.window = window
        self.batch_size = batch_size
        self._cache: dict[str, float] = {}
        self.calls = 0  # texts actually scored (cache misses), for tests and benchmarks

    def __call__(self, texts: Sequence[str]) -> list[float]:
        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if todo:
            self._score(todo)
        return [self._cache[t] for t in texts]

    @torch.no_grad()
    def _score(self, texts: list[str]) -> None:
        device = next(self.model.parameters()).device
        losses: list[list[float]] = [[] for _ in texts]
        for i, text in enumerate(texts):
            ids = self.tokenizer(text, add_special_tokens=False).input_ids
            for start in range(0, len(ids), self.window):
                chunk = ids[start : start + self.window]
                if len(chunk) < 2:  # a 1-token window predicts nothing
                    continue
                window = torch.tensor([chunk], dtype=torch.long, device=device)  # (1, tokens)
                logits = self.model(input_ids=window, attention_mask=torch.ones_like(window)).logits
                logp = torch.log_softmax(logits[0, :-1].float(), dim=-1)  # (tokens-1, vocab)
                nll = -logp.gather(-1, window[0, 1:].unsqueeze(-1)).squeeze(-1)
                losses[i].append(float(nll.mean()))
        self.calls += len(texts)
        for text, text_losses in zip(texts, losses, strict=True):
            self._cache[text] = (
                math.exp(sum(text_losses) / len(text_losses)) if text_losses else math.nan
            )
