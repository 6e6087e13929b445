"""OpenAI-compatible chat-completions judge (Mistral, OpenAI, vLLM, Ollama, llama.cpp).

``POST {base_url}/chat/completions`` with one user message, ``temperature`` and
``max_tokens``; the answer is ``choices[0].message.content``. Requests run on a bounded
thread pool (``concurrency``). A request is retried at most ``max_retries`` times after
timeouts, connection errors, malformed replies and the HTTP statuses of
:data:`fsnn.backends.retry.RETRYABLE_STATUS`, waiting as :class:`fsnn.backends.retry.RetryPolicy` says
(exponential backoff with jitter, capped at ``backoff_max``, or what a ``Retry-After``
header asks); the NDIF calls of :mod:`fsnn.backends.ndif` use the same policy. Other HTTP
errors (400, 401, 404...) are not retried. Whatever happens, the item's grade is missing with
the reason and the other items go on.

The API key is read from the environment variable named in the config at request time.
It goes into the ``Authorization`` header and nowhere else: error texts are scrubbed
of it, and it is never logged, cached or stored.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

import httpx

from fsnn.backends.retry import (
    RETRYABLE_STATUS,
    RetryPolicy,
    is_retryable_status,
    parse_retry_after,
    retry_call,
)
from fsnn.errors import FsnnError

from .base import Answer, Judge, JudgeConfig, Prompt, log
from .cache import JudgeCache

__all__ = ["RETRY_STATUS", "HttpJudge"]

RETRY_STATUS = RETRYABLE_STATUS  # kept for callers of the old name
_retry_after = parse_retry_after  # kept for callers of the old name


class HttpJudge(Judge):
    """A judge behind an OpenAI-compatible chat-completions endpoint.

    Args:
        config: ``backend="http"`` settings.
        cache: the answer cache, or None.
        transport: an ``httpx`` transport (tests may mock one); default real network.
    """

    def __init__(
        self,
        config: JudgeConfig,
        *,
        cache: JudgeCache | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if config.backend != "http":
            raise FsnnError(f"HttpJudge needs backend='http', got {config.backend!r}")
        super().__init__(config, cache=cache)
        self._transport = transport
        self.policy = RetryPolicy(
            attempts=config.max_retries + 1,
            backoff_base=config.backoff_base,
            backoff_max=config.backoff_max,
        )
        self._lock = threading.Lock()
        self.requests = 0  # HTTP attempts made (every retry counts)

    @property
    def url(self) -> str:
        return f"{self.config.base_url.rstrip('/')}/chat/completions"

    def _api_key(self) -> str | None:
        name = self.config.api_key_env
        if name is None:
            return None
        key = os.environ.get(name)
        if not key:
            raise FsnnError(f"judge {self.id}: environment variable {name} is not set")
        return key

    def _answer(self, prompts: Sequence[Prompt]) -> Iterator[tuple[int, Answer]]:
        key = self._api_key()
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        timeout = httpx.Timeout(self.config.timeout)
        with httpx.Client(timeout=timeout, headers=headers, transport=self._transport) as client:
            workers = min(self.config.concurrency, len(prompts))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fsnn-judge") as pool:
                futures = {
                    pool.submit(self._safe_request, client, p, key): i
                    for i, p in enumerate(prompts)
                }
                try:
                    for future in as_completed(futures):
                        yield futures[future], future.result()
                finally:
                    for future in futures:
                        future.cancel()

    def _safe_request(self, client: httpx.Client, prompt: Prompt, key: str | None) -> Answer:
        try:
            return self._request(client, prompt)
        except Exception as exc:  # a bug or an odd library error must not end the run
            return Answer(error=_scrub(f"unexpected error: {type(exc).__name__}: {exc}", key))

    def _request(self, client: httpx.Client, prompt: Prompt) -> Answer:
        cfg = self.config
        messages: list[dict[str, str]] = [{"role": "user", "content": prompt.user}]
        if prompt.prefill:
            messages.append({"role": "assistant", "content": prompt.prefill})
        body = {
            "model": cfg.model,
            "messages": messages,
            "temperature": cfg.temperature,
            "max_tokens": cfg.max_tokens,
        }

        def attempt() -> Answer:
            with self._lock:
                self.requests += 1
            try:
                resp = client.post(self.url, json=body)
            except httpx.TimeoutException:
                raise _Transient(f"timeout after {cfg.timeout:g} s") from None
            except httpx.HTTPError as exc:
                raise _Transient(f"connection error: {type(exc).__name__}") from None
            if resp.status_code == 200:
                try:
                    raw, finish = _content(resp.json())
                except (ValueError, KeyError, IndexError, TypeError) as exc:
                    raise _Transient(f"malformed response: {type(exc).__name__}") from None
                return Answer(raw=raw, meta={"finish_reason": finish})
            if is_retryable_status(resp.status_code):
                raise _Transient(
                    f"HTTP {resp.status_code}", parse_retry_after(resp.headers.get("retry-after"))
                )
            return Answer(error=f"HTTP {resp.status_code} (not retried)")

        def retrying(exc: Exception, retry: int, delay: float) -> None:
            log.info(
                "judge %s: %s; retry %d/%d in %.2f s",
                self.id,
                exc,
                retry + 1,
                cfg.max_retries,
                delay,
            )

        def gave_up(exc: Exception, attempts: int) -> Answer:
            if not isinstance(exc, _Transient):
                raise exc  # a bug: _safe_request turns it into a missing grade
            return Answer(error=f"{exc} (gave up after {attempts} attempts)")

        return retry_call(
            attempt,
            policy=self.policy,
            transient=lambda exc: isinstance(exc, _Transient),
            retry_after=lambda exc: exc.retry_after if isinstance(exc, _Transient) else None,
            on_retry=retrying,
            on_failure=gave_up,
        )


class _Transient(Exception):
    """A failed try worth repeating: its reason, and the wait the server asked for."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def _content(payload: Any) -> tuple[str, str]:
    """(text, finish_reason) of a chat-completions reply; raises on a bad shape."""
    choice = payload["choices"][0]
    content = choice["message"]["content"]
    if content is None:
        content = ""
    elif isinstance(content, list):  # some servers return content chunks
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    elif not isinstance(content, str):
        raise TypeError("message content is not text")
    return content, str(choice.get("finish_reason") or "")


def _scrub(text: str, key: str | None) -> str:
    return text.replace(key, "***") if key else text
