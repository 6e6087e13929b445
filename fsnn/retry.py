"""One retry policy for every network call fsnn makes (HTTP judges, NDIF)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from .errors import FsnnError

__all__ = ["RETRYABLE_STATUS", "RetryPolicy"]

# 408 timeout, 425 too early, 429 rate limit, every 5xx: worth the same request again
RETRYABLE_STATUS = frozenset({408, 425, 429, *range(500, 600)})


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How transient failures are retried.

    Attributes:
        attempts: tries in all (1 = no retry).
        backoff_base: seconds before the first retry; doubles each time, times a
            jitter factor in [0.5, 1].
        backoff_max: cap of one wait, seconds.
    """

    attempts: int = 3
    backoff_base: float = 2.0
    backoff_max: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise FsnnError(f"RetryPolicy.attempts must be >= 1, got {self.attempts}")
        if self.backoff_base < 0 or self.backoff_max < 0:
            raise FsnnError("RetryPolicy backoff times must be >= 0")

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0-based); a server's
        ``Retry-After`` wins when given (capped at ``backoff_max``)."""
        if retry_after is not None and retry_after >= 0:
            return min(self.backoff_max, retry_after)
        return min(self.backoff_max, self.backoff_base * 2**retry) * random.uniform(0.5, 1.0)
