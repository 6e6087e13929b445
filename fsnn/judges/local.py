"""A local transformers judge that reads its grade from constrained next-token scores.

Each prompt is wrapped in the tokenizer's chat template (when it has one and
``chat_template`` is on), the answer is pre-filled up to the grade (``Score: `` for the
quality task, nothing for the SimpleQA letter), and one batched forward pass gives the
next-token distribution. Only the allowed answers are compared: the logits are
restricted to the tokens of ``A``/``B``/``C`` or ``1``..``5`` and renormalised; the
grade is the most probable one, and the probabilities are kept (``Grade.probs``, with
``Grade.expected`` the mean score). No text is generated, so an answer is always
parseable and costs one forward pass (two with ``local_hallucination``).

Each allowed answer must be exactly one token after a context shared by all of them:
the tokenizer decides whether that token is ``" 3"`` (GPT-2 style BPE) or ``"3"`` after
a space token (SmolLM2, Qwen2), by tokenizing the prompt with each answer appended.
Batches are left-padded, sorted by length, with position ids that skip the padding.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Sequence
from typing import Any

from fsnn.errors import FsnnError

from .base import Answer, Judge, JudgeConfig, Prompt, log
from .cache import JudgeCache
from .prompts import QUALITY_PREFILL, Task

__all__ = ["CHOICES", "LocalJudge"]

CHOICES: dict[str, tuple[str, ...]] = {
    "simpleqa": ("A", "B", "C"),
    "quality": ("1", "2", "3", "4", "5"),
    "hallucination": ("Y", "N"),
}


class LocalJudge(Judge):
    """A judge run in-process on a causal LM that :func:`fsnn.models.load.load_model` loads.

    Args:
        config: ``backend="local"`` settings (``model`` is the model spec).
        cache: the answer cache, or None.
        model: an already loaded :class:`fsnn.models.load.LoadedModel` (else loaded lazily
            on the first cache miss).

    Attributes:
        load_seconds: time spent loading the model (0 when given or not yet needed).
    """

    def __init__(
        self, config: JudgeConfig, *, cache: JudgeCache | None = None, model: Any = None
    ) -> None:
        if config.backend != "local":
            raise FsnnError(f"LocalJudge needs backend='local', got {config.backend!r}")
        super().__init__(config, cache=cache)
        self._model = model
        self.load_seconds = 0.0

    @property
    def model(self) -> Any:
        """The loaded model (loads it on first use)."""
        if self._model is None:
            from fsnn.models.load import load_model

            start = time.perf_counter()
            self._model = load_model(
                self.config.model,
                dtype=self.config.dtype,
                device=self.config.device,
                revision=self.config.revision,
            )
            self.load_seconds = time.perf_counter() - start
        return self._model

    def _prefill(self, task: Task) -> str:
        return QUALITY_PREFILL if task == "quality" else ""

    # ------------------------------------------------------------------ prompting

    def _uses_chat(self) -> bool:
        return bool(
            self.config.chat_template and getattr(self.model.tokenizer, "chat_template", None)
        )

    def render(self, prompt: Prompt) -> str:
        """The exact text the model reads: chat template (or plain) + pre-filled answer."""
        tok = self.model.tokenizer
        if self._uses_chat():
            text = tok.apply_chat_template(
                [{"role": "user", "content": prompt.user}],
                tokenize=False,
                add_generation_prompt=True,
            )
        else:
            text = prompt.user + "\n\n"
        return text + prompt.prefill

    def _encode(self, text: str, choices: Sequence[str]) -> tuple[list[int], list[int]]:
        """(context ids, one target id per choice) so that context + target == text + choice."""
        tok = self.model.tokenizer
        special = not self._uses_chat()  # a chat template writes its own BOS
        seqs = [tok(text + c, add_special_tokens=special)["input_ids"] for c in choices]
        context = seqs[0][:-1]
        targets = [s[-1] for s in seqs]
        if all(s[:-1] == context for s in seqs) and len(set(targets)) == len(targets):
            return context, targets
        # Odd tokenizer: fall back to the first token of each bare answer.
        context = tok(text, add_special_tokens=special)["input_ids"]
        targets = [tok(c, add_special_tokens=False)["input_ids"][0] for c in choices]
        if len(set(targets)) != len(targets):
            raise FsnnError(f"judge {self.id}: answers {choices} share a first token")
        return context, targets

    # ------------------------------------------------------------------ scoring

    def choice_probs(
        self, texts: Sequence[str], choices: Sequence[str]
    ) -> Iterator[tuple[int, list[float], float]]:
        """Next-token probabilities of ``choices`` after each text, batched.

        The longest token prefix shared by all texts (chat header and rubric) is run
        once and its key/value cache reused by every batch (``local_prefix_cache``).

        Yields:
            (index into texts, probabilities renormalised over the choices (sum 1),
            probability mass the model put on the choices before renormalising), in
            batches sorted by length.
        """
        import torch

        encoded = [self._encode(t, choices) for t in texts]
        contexts = [c for c, _ in encoded]
        shared = _common_prefix(contexts) if self.config.local_prefix_cache else 0
        shared = shared if len(texts) > 1 and shared >= 16 else 0
        prefix_cache = self._prefix(contexts[0][:shared]) if shared else None
        order = sorted(range(len(texts)), key=lambda i: len(contexts[i]))
        for start in range(0, len(order), self.config.batch_size):
            rows = order[start : start + self.config.batch_size]
            suffixes = [contexts[i][shared:] for i in rows]
            with torch.inference_mode():
                logits = self._forward(suffixes, shared, prefix_cache)
            logp = logits.float().log_softmax(-1).cpu()  # (prompt, vocab)
            for r, i in enumerate(rows):
                chosen = logp[r, torch.tensor(encoded[i][1])]
                yield i, chosen.softmax(-1).tolist(), float(chosen.exp().sum())

    def _prefix(self, ids: list[int]) -> Any:
        import torch

        with torch.inference_mode():
            out = self.model.hf_model(
                input_ids=torch.tensor([ids], device=self.model.device), use_cache=True
            )
        cache = getattr(out, "cache", None)
        return cache if cache is not None else out.past_key_values

    def _forward(self, suffixes: list[list[int]], shared: int, prefix_cache: Any) -> Any:
        """Last-position logits (prompt, vocab) of left-padded suffixes after the prefix."""
        import torch

        hf = self.model.hf_model
        device = self.model.device
        pad = self.model.tokenizer.pad_token_id or 0
        width = max(len(s) for s in suffixes)
        ids = torch.full((len(suffixes), width), pad, dtype=torch.long)
        mask = torch.zeros((len(suffixes), width), dtype=torch.long)
        for r, suffix in enumerate(suffixes):
            ids[r, width - len(suffix) :] = torch.tensor(suffix, dtype=torch.long)
            mask[r, width - len(suffix) :] = 1
        # Padding sits between prefix and text: positions count real tokens only.
        positions = shared + (mask.cumsum(-1) - 1).clamp(min=0)
        kwargs: dict[str, Any] = {"use_cache": prefix_cache is not None}
        if prefix_cache is not None:
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(len(suffixes))
            kwargs[_cache_kwarg(hf)] = cache
            mask = torch.cat([torch.ones((len(suffixes), shared), dtype=torch.long), mask], 1)
        kwargs.update(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
        )
        if _accepts(hf, "logits_to_keep"):
            kwargs["logits_to_keep"] = 1  # spares the LM head on every other position
        return hf(**kwargs).logits[:, -1, :]

    def _answer(self, prompts: Sequence[Prompt]) -> Iterator[tuple[int, Answer]]:
        by_task: dict[str, list[int]] = {}
        for i, p in enumerate(prompts):
            by_task.setdefault(p.task, []).append(i)
        for task, idx in by_task.items():
            done: set[int] = set()
            try:
                texts = [self.render(prompts[i]) for i in idx]
                for i, answer in self._answer_task(task, [prompts[i] for i in idx], texts, idx):
                    done.add(i)
                    yield i, answer
            except FsnnError:
                raise
            except Exception as exc:  # e.g. out of memory: grades go missing, run goes on
                reason = f"local judge failed: {type(exc).__name__}: {exc}".splitlines()[0]
                log.warning("judge %s: %s", self.id, reason)
                for i in idx:
                    if i not in done:
                        yield i, Answer(error=reason)

    def _answer_task(
        self, task: str, prompts: list[Prompt], texts: list[str], idx: list[int]
    ) -> Iterator[tuple[int, Answer]]:
        choices = CHOICES[task]
        want_flag = task == "quality" and self.config.local_hallucination
        results: dict[int, tuple[str, dict[str, Any]]] = {}
        for j, probs, mass in self.choice_probs(texts, choices):
            best = choices[max(range(len(choices)), key=probs.__getitem__)]
            meta = {"probs": dict(zip(choices, probs, strict=True)), "mass": mass}
            raw = prompts[j].prefill + best
            if not want_flag:
                yield idx[j], Answer(raw=raw, meta=meta)
            else:
                results[j] = (raw, meta)
        if want_flag:
            flag_texts = [
                texts[j] + results[j][0][-1] + "\nHallucination: " for j in range(len(texts))
            ]
            for j, probs, _mass in self.choice_probs(flag_texts, CHOICES["hallucination"]):
                raw, meta = results[j]
                flag = "Y" if probs[0] >= probs[1] else "N"
                meta = {**meta, "hallucination_probs": {"Y": probs[0], "N": probs[1]}}
                yield idx[j], Answer(raw=f"{raw}\nHallucination: {flag}", meta=meta)


def _common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of all sequences, leaving each >= 1 token."""
    n = min(len(s) for s in seqs) - 1
    first = seqs[0]
    for s in seqs[1:]:
        k = 0
        while k < n and s[k] == first[k]:
            k += 1
        n = k
    return max(n, 0)


def _accepts(hf: Any, name: str) -> bool:
    import inspect

    return name in inspect.signature(hf.forward).parameters


def _cache_kwarg(hf: Any) -> str:
    """transformers >= 5.2x calls the key/value cache argument ``cache``."""
    return "cache" if _accepts(hf, "cache") else "past_key_values"
