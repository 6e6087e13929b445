"""One retry policy for every network call fsnn makes (HTTP judges and NDIF).

A transient failure (timeout, dropped connection, or an HTTP status in
:data:`RETRYABLE_STATUS`) is retried a bounded number of times. The wait before retry
``k`` (0-based) is ``min(backoff_max, backoff_base * 2**k)`` times a jitter factor drawn
uniformly from ``[1 - jitter, 1]``; when the server sends ``Retry-After``, its value wins
(capped at ``max_retry_after``), because the server knows when it will accept again.

:func:`retry_call` is the one retry loop: the NDIF calls (:func:`fsnn.backends.ndif.call_with_retries`)
and the HTTP judges (:class:`fsnn.judges.http.HttpJudge`) each say which failures are transient
and what a final failure becomes; the loop, the waits and the count are here.

The status set is the one the OpenAI and Mistral clients retry, plus 425: 408 (request
timeout), 409 (conflict: a concurrent request on the same resource), 425 (too early),
429 (rate limit) and every 5xx. Any other status (400, 401, 403, 404, 422...) means the
request itself is wrong, and repeating it unchanged cannot help.
"""

from __future__ import annotations

import datetime as _dt
import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from fsnn.errors import FsnnError

__all__ = [
    "RETRYABLE_STATUS",
    "RetryPolicy",
    "is_retryable_status",
    "parse_retry_after",
    "retry_call",
]

_T = TypeVar("_T")

RETRYABLE_STATUS: frozenset[int] = frozenset({408, 409, 425, 429, *range(500, 600)})


def is_retryable_status(code: int) -> bool:
    """Whether an HTTP status code is worth retrying unchanged."""
    return int(code) in RETRYABLE_STATUS


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How many times, and how long apart, a transient failure is retried.

    Attributes:
        attempts: tries in all (1 = no retry).
        backoff_base: seconds before the first retry; doubles each retry.
        backoff_max: cap of one computed wait, seconds.
        jitter: fraction in [0, 1] by which a wait may be shortened at random (so that
            many clients do not retry in lockstep); 0 = exact waits.
        max_retry_after: cap of a server's ``Retry-After`` wait, seconds.
        rng: the random source of the jitter (tests may seed one).
    """

    attempts: int = 3
    backoff_base: float = 2.0
    backoff_max: float = 60.0
    jitter: float = 0.5
    max_retry_after: float = 600.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise FsnnError(f"RetryPolicy.attempts must be >= 1, got {self.attempts}")
        if self.backoff_base < 0 or self.backoff_max < 0 or self.max_retry_after < 0:
            raise FsnnError("RetryPolicy backoff times must be >= 0")
        if not 0 <= self.jitter <= 1:
            raise FsnnError(f"RetryPolicy.jitter must be in [0, 1], got {self.jitter}")

    @property
    def retries(self) -> int:
        """Retries after the first attempt."""
        return self.attempts - 1

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0-based).

        Args:
            retry: how many retries came before this one.
            retry_after: seconds a ``Retry-After`` header asked for, if any (wins).
        """
        if retry_after is not None:
            return min(max(0.0, float(retry_after)), self.max_retry_after)
        factor = 1.0 - self.jitter * self.rng.random() if self.jitter else 1.0
        return min(self.backoff_max, self.backoff_base * 2**retry) * factor


def parse_retry_after(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.UTC)
    return max(0.0, (when - _dt.datetime.now(_dt.UTC)).total_seconds())


def retry_call(
    fn: Callable[[], _T],
    *,
    policy: RetryPolicy,
    transient: Callable[[Exception], bool],
    retry_after: Callable[[Exception], float | None] | None = None,
    on_retry: Callable[[Exception, int, float], None] | None = None,
    on_failure: Callable[[Exception, int], _T] | None = None,
    passthrough: tuple[type[BaseException], ...] = (),
    sleep: Callable[[float], None] | None = None,
) -> _T:
    """Call ``fn()`` until it returns, at most ``policy.attempts`` times: the one retry loop.

    A failure ``transient(exc)`` calls worth retrying is retried while tries remain, after
    ``policy.delay(retry, retry_after(exc))`` seconds; any other failure, or the last,
    ends the loop.

    Args:
        fn: one try.
        policy: how many tries and how long apart.
        transient: whether a failure is worth retrying unchanged.
        retry_after: the wait a failure asks for (a server's ``Retry-After``), or None.
        on_retry: called as ``on_retry(exc, retry, wait)`` before each wait (``retry``
            0-based), to log it.
        on_failure: what the final failure becomes, called as ``on_failure(exc, tries)``
            inside the ``except`` block (so it may return a value, raise another error
            or re-raise); None re-raises the failure.
        passthrough: exception types that leave at once, untouched, never retried.
        sleep: the wait function (default :func:`time.sleep`, looked up at call time).
    """
    for attempt in range(policy.attempts):
        try:
            return fn()
        except passthrough:
            raise
        except Exception as exc:
            if transient(exc) and attempt + 1 < policy.attempts:
                wait = policy.delay(attempt, retry_after(exc) if retry_after is not None else None)
                if on_retry is not None:
                    on_retry(exc, attempt, wait)
                (sleep or time.sleep)(wait)
                continue
            if on_failure is None:
                raise
            return on_failure(exc, attempt + 1)
    raise AssertionError("unreachable")  # pragma: no cover - the last try returns or raises
