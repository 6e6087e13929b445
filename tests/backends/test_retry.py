"""One retry policy (fsnn.backends.retry) shared by the HTTP judges and the NDIF calls."""

from __future__ import annotations

import random

import httpx
import pytest

from fsnn.backends.ndif import is_transient
from fsnn.backends.retry import RETRYABLE_STATUS, RetryPolicy, is_retryable_status
from fsnn.errors import FsnnError
from fsnn.judges import JudgeConfig
from fsnn.judges.http import HttpJudge

CODES = [c for c in range(100, 600) if c != 200]


def _judge_retries(code: int) -> bool:
    """Whether HttpJudge sends a second request after one reply with ``code``."""
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(code)
        return httpx.Response(code, json={})

    config = JudgeConfig(
        backend="http",
        model="m",
        base_url="http://judge.invalid/v1",
        max_retries=1,
        backoff_base=0.0,
    )
    judge = HttpJudge(config, transport=httpx.MockTransport(handler))
    grades = judge.grade_quality([("q", "a", "p")])
    assert grades[0].missing
    return len(seen) > 1


def _ndif_retries(code: int) -> bool:
    request = httpx.Request("POST", "http://ndif.invalid/request")
    response = httpx.Response(code, request=request)
    return is_transient(httpx.HTTPStatusError("x", request=request, response=response))


def test_judges_and_ndif_retry_exactly_the_same_status_codes() -> None:
    judge = {c for c in CODES if _judge_retries(c)}
    ndif = {c for c in CODES if _ndif_retries(c)}
    assert judge == ndif
    assert judge == {c for c in CODES if is_retryable_status(c)} == set(RETRYABLE_STATUS)
    assert {429, 503, 408}.issubset(judge) and not {400, 401, 404, 422}.intersection(judge)


def test_delay_backoff_cap_jitter_and_retry_after() -> None:
    exact = RetryPolicy(backoff_base=1.0, backoff_max=5.0, jitter=0.0)
    assert [exact.delay(k) for k in range(4)] == [1.0, 2.0, 4.0, 5.0]
    assert exact.delay(0, retry_after=30.0) == 30.0
    assert RetryPolicy(max_retry_after=10.0).delay(0, retry_after=99.0) == 10.0
    jittered = RetryPolicy(backoff_base=2.0, backoff_max=60.0, jitter=0.5, rng=random.Random(0))
    waits = [jittered.delay(1) for _ in range(50)]
    assert all(2.0 <= w <= 4.0 for w in waits) and len(set(waits)) > 1


@pytest.mark.parametrize(
    "kwargs", [{"attempts": 0}, {"backoff_base": -1.0}, {"jitter": 1.5}, {"max_retry_after": -1}]
)
def test_policy_validation(kwargs) -> None:
    with pytest.raises(FsnnError):
        RetryPolicy(**kwargs)


def test_judge_policy_comes_from_its_config() -> None:
    config = JudgeConfig(
        backend="http",
        model="m",
        base_url="http://x/v1",
        max_retries=4,
        backoff_base=0.5,
        backoff_max=7.0,
    )
    policy = HttpJudge(config).policy
    assert (policy.attempts, policy.backoff_base, policy.backoff_max) == (5, 0.5, 7.0)


def test_retry_call_is_the_one_loop() -> None:
    from fsnn.backends.retry import retry_call

    policy = RetryPolicy(attempts=4, backoff_base=1.0, backoff_max=3.0, jitter=0.0)
    calls, waits, retries = [], [], []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TimeoutError("slow")
        return "ok"

    got = retry_call(
        flaky,
        policy=policy,
        transient=lambda e: isinstance(e, TimeoutError),
        on_retry=lambda e, k, w: retries.append((str(e), k, w)),
        sleep=waits.append,
    )
    assert got == "ok" and len(calls) == 3
    assert waits == [1.0, 2.0] and retries == [("slow", 0, 1.0), ("slow", 1, 2.0)]

    # the last failure: on_failure gets the tries made; a server's wait wins over the backoff
    waits.clear()

    def down() -> str:
        raise TimeoutError("down")

    got = retry_call(
        down,
        policy=policy,
        transient=lambda e: True,
        retry_after=lambda e: 0.5,
        on_failure=lambda e, n: f"{e} after {n}",
        sleep=waits.append,
    )
    assert got == "down after 4" and waits == [0.5, 0.5, 0.5]
    # a failure that is not transient ends at once; without on_failure it is re-raised
    with pytest.raises(KeyError):
        retry_call(lambda: {}["x"], policy=policy, transient=lambda e: False, sleep=waits.append)
    assert len(waits) == 3
    # passthrough types leave untouched, never retried, never given to on_failure
    with pytest.raises(FsnnError, match="bad input"):
        retry_call(
            lambda: (_ for _ in ()).throw(FsnnError("bad input")),
            policy=policy,
            transient=lambda e: True,
            on_failure=lambda e, n: "no",
            passthrough=(FsnnError,),
            sleep=waits.append,
        )
    assert len(waits) == 3


def test_judge_retry_defaults_are_the_policys() -> None:
    config = JudgeConfig(backend="http", model="m", base_url="http://x/v1")
    default = RetryPolicy()
    assert (config.max_retries + 1, config.backoff_base, config.backoff_max) == (
        default.attempts,
        default.backoff_base,
        default.backoff_max,
    )
    assert HttpJudge(config).policy == default
