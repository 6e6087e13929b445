"""Running fsnn's traces on NDIF (the National Deep Inference Fabric) through nnsight.

Every traced stage (:func:`fsnn.steering.references.capture_references`,
:func:`fsnn.steering.steer.steered_generate`) takes a ``backend`` (:mod:`fsnn.backends.base`):
:class:`~fsnn.backends.base.NdifBackend` ships the traces to NDIF,
:class:`~fsnn.backends.base.SerialisedBackend` serialises them exactly as for NDIF and runs
them here (the test of the remote path). This module adds what a long remote run needs
around those calls:

- :func:`api_key` / :func:`ndif_config`: the key comes from ``NDIF_API_KEY`` and is set
  into nnsight's in-memory ``CONFIG`` only for the duration of a call (never written to
  nnsight's config file, never logged, scrubbed from error texts); the host is the
  ``host`` argument, else ``NDIF_HOST``, else nnsight's ``CONFIG.API.HOST``.
- :func:`preflight`: one ``GET /status`` (nnsight's status endpoint) before a run; a
  model that is not RUNNING raises one line naming the models that are.
- :func:`call_remote`: run a remote call with bounded retries of transient failures
  (connection errors, timeouts, the HTTP statuses of :data:`fsnn.backends.retry.RETRYABLE_STATUS`,
  a dropped websocket; :class:`fsnn.backends.retry.RetryPolicy`) and turn
  any failure into one :class:`~fsnn.errors.FsnnError` line with the request id.
- :func:`payload_sizes` / :func:`result_size`: measure what a request uploads and what
  its saved values weigh on the way back (docs/ndif.md quotes the numbers).

A retried call is re-run from scratch: every fsnn stage is a pure function of its
inputs (greedy decoding, fixed coefficients), so a retry returns the same result.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import torch

from fsnn.errors import BackendUnavailable, FsnnError

from .retry import RETRYABLE_STATUS, RetryPolicy, is_retryable_status, retry_call

__all__ = [
    "API_KEY_ENV",
    "HOST_ENV",
    "Payload",
    "RetryPolicy",
    "api_key",
    "call_remote",
    "call_with_retries",
    "is_transient",
    "ndif_config",
    "ndif_host",
    "payload_sizes",
    "preflight",
    "result_size",
]

log = logging.getLogger("fsnn.remote")  # its 0.2 name: logging configs that name it keep working

API_KEY_ENV = "NDIF_API_KEY"
HOST_ENV = "NDIF_HOST"  # the variable nnsight itself reads for CONFIG.API.HOST
RETRY_STATUS = RETRYABLE_STATUS  # one set for NDIF and HTTP judges (fsnn.backends.retry)
_DEPLOYED_LEVELS = ("HOT", "WARM")  # what nnsight.ndif.status() counts as deployed
_T = TypeVar("_T")


# --------------------------------------------------------------------------- config


def api_key() -> str | None:
    """The NDIF API key from ``$NDIF_API_KEY``, or None when unset or empty.

    Read at call time, returned to the caller only; fsnn never stores, logs or prints it.
    """
    key = os.environ.get(API_KEY_ENV, "").strip()
    return key or None


def ndif_host(host: str | None = None) -> str:
    """The NDIF base URL: ``host``, else ``$NDIF_HOST``, else nnsight's ``CONFIG.API.HOST``.

    Raises:
        FsnnError: a host that is not an ``http://`` or ``https://`` URL.
    """
    from nnsight.schema.config import CONFIG

    url = (host or os.environ.get(HOST_ENV) or CONFIG.API.HOST or "").strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise FsnnError(f"NDIF host must be an http:// or https:// URL, got {url!r}")
    return url


@contextmanager
def ndif_config(host: str | None = None) -> Iterator[str]:
    """Point nnsight's in-memory ``CONFIG.API`` at ``host`` and the env key, then restore.

    nnsight reads ``CONFIG.API.HOST`` / ``CONFIG.API.APIKEY`` when it builds a remote
    backend, so everything run inside the block talks to this host with this key.
    Nothing is written to nnsight's config file (``CONFIG.save`` is never called). The
    config is process-global: do not run two blocks for different hosts concurrently.

    Yields:
        The resolved host URL.
    """
    from nnsight.schema.config import CONFIG

    url = ndif_host(host)
    saved = (CONFIG.API.HOST, CONFIG.API.APIKEY)
    key = api_key()
    CONFIG.API.HOST = url
    if key is not None:
        CONFIG.API.APIKEY = key
    try:
        yield url
    finally:
        CONFIG.API.HOST, CONFIG.API.APIKEY = saved


# --------------------------------------------------------------------------- errors


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and its causes/contexts, each once."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen or len(seen) > 16:
            continue
        seen.add(id(e))
        yield e
        todo.extend([e.__cause__, e.__context__])


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status behind ``exc`` (httpx response or websocket handshake), if any."""
    import httpx

    for e in _chain(exc):
        if isinstance(e, httpx.HTTPStatusError):
            return e.response.status_code
        status = getattr(e, "status_code", None)  # websocket.WebSocketBadStatusException
        if isinstance(status, int):
            return status
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether a failed remote call is worth retrying unchanged.

    Transient: an HTTP status in :data:`fsnn.backends.retry.RETRYABLE_STATUS` (from the request
    POST, the status GET or the websocket handshake), connection errors and timeouts (httpx, websocket, OS). Not
    transient: any other HTTP status (401 bad key, 404, 422...), and a job the server
    ran and reported as ERROR (an exception in the trace, out of memory...).
    """
    import httpx
    import websocket

    status = _http_status(exc)
    if status is not None:
        return is_retryable_status(status)
    for e in _chain(exc):
        if isinstance(e, httpx.TransportError):  # connect/read errors and timeouts
            return True
        if isinstance(
            e,
            websocket.WebSocketConnectionClosedException
            | websocket.WebSocketTimeoutException
            | websocket.WebSocketAddressException,
        ):
            return True
        if isinstance(e, ConnectionError | TimeoutError):
            return True
    return False


def _scrub(text: str) -> str:
    key = api_key()
    if key:
        text = text.replace(key, "***")
    return text


def _one_line(exc: BaseException) -> str:
    """``Type: first line of the message``, key scrubbed, at most 300 characters."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if lines and lines[0].startswith("Traceback (most recent call last)"):
        lines = lines[-1:]  # a server-side traceback: its last line names the error
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    text = _scrub(text)
    return text if len(text) <= 300 else text[:297] + "..."


_tracking = threading.local()  # this thread's list of response ids, while tracked
_patch_lock = threading.Lock()
_patch_users = 0
# RemoteBackend.note as nnsight defines it, saved before the first wrap (and kept after)
_original_note: Callable[[Any, Any], bool] | None = None


def _tracked_note(self: Any, response: Any) -> bool:
    ids = getattr(_tracking, "ids", None)
    if ids is not None:
        ids.append(str(response.id))
    assert _original_note is not None, "RemoteBackend.note wrapped before it was saved"
    return _original_note(self, response)


@contextmanager
def _track_request_ids() -> Iterator[list[str]]:
    """Record the id of every NDIF status response this thread sees inside the block.

    nnsight's blocking backend raises ``RemoteError(description)`` without the request
    id; the id is on each status response, which passes through
    ``RemoteBackend.note``. That method is wrapped while at least one block is open
    (in any thread) and restored after. The model object is not touched: its
    attributes travel inside every request.
    """
    global _patch_users, _original_note
    from nnsight.intervention.backends.remote import RemoteBackend

    with _patch_lock:
        if _patch_users == 0:
            _original_note = RemoteBackend.note
            RemoteBackend.note = _tracked_note
        _patch_users += 1
    outer = getattr(_tracking, "ids", None)
    ids: list[str] = []
    _tracking.ids = ids
    try:
        yield ids
    finally:
        _tracking.ids = outer
        with _patch_lock:
            _patch_users -= 1
            if _patch_users == 0:
                RemoteBackend.note = _original_note


def _failure(what: str, url: str, exc: BaseException, attempts: int, request_id: str | None) -> str:
    rid = f" (request {request_id})" if request_id else ""
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    hint = ""
    status = _http_status(exc)
    if status in (401, 403):
        hint = f"; check {API_KEY_ENV}"
    elif status == 404:
        hint = f"; is {url} an NDIF API host?"
    return f"{what} failed at {url}{rid}{tries}: {_one_line(exc)}{hint}"


def call_with_retries(
    fn: Callable[[], _T],
    *,
    policy: RetryPolicy | None = None,
    what: str = "remote call",
    where: str = "NDIF",
    sleep: Callable[[float], None] = time.sleep,
    request_ids: Sequence[str] = (),
) -> _T:
    """Run ``fn()`` with bounded retries of transient failures and one-line errors.

    The retries of every remote trace (:func:`call_remote` for NDIF, the serialised-local
    backend for its tests), on :func:`fsnn.backends.retry.retry_call`. An :class:`FsnnError` raised by ``fn``
    (bad input) passes through untouched and is not retried; any other failure ends as
    one ``FsnnError`` line ``<what> failed at <where> (request <id>) after N attempts``.
    """
    policy = policy or RetryPolicy()

    def retrying(exc: Exception, retry: int, wait: float) -> None:
        log.debug("%s attempt %d failed: %s", what, retry + 1, _one_line(exc))
        log.warning(
            "%s failed (%s); retry %d of %d in %.1f s",
            what,
            _one_line(exc),
            retry + 1,
            policy.attempts - 1,
            wait,
        )

    def failed(exc: Exception, attempts: int) -> NoReturn:
        log.debug("%s attempt %d failed: %s", what, attempts, _one_line(exc))
        # a service failure (transport, HTTP status) is not the call's fault: its own type
        error = (
            BackendUnavailable if is_transient(exc) or _http_status(exc) is not None else FsnnError
        )
        raise error(
            _failure(what, where, exc, attempts, request_ids[-1] if request_ids else None)
        ) from None

    # An FsnnError raised by fn (bad input) passes through untouched and is not retried;
    # any other failure becomes one FsnnError line.
    return retry_call(
        fn,
        policy=policy,
        transient=is_transient,
        on_retry=retrying,
        on_failure=failed,
        passthrough=(FsnnError,),
        sleep=sleep,
    )


def call_remote(
    fn: Callable[[], _T],
    *,
    host: str | None = None,
    policy: RetryPolicy | None = None,
    what: str = "NDIF request",
    sleep: Callable[[float], None] = time.sleep,
) -> _T:
    """Run ``fn()`` (which makes remote traces) with NDIF config, retries and clear errors.

    Args:
        fn: a call such as ``lambda: steered_generate(m, ..., backend="ndif")``.
        host: NDIF URL override (see :func:`ndif_host`).
        policy: retry policy (default :class:`~fsnn.backends.retry.RetryPolicy`).
        what: how the message names the call (e.g. ``"steering batch 3"``).
        sleep: the wait function (tests pass a no-op).

    Returns:
        What ``fn`` returns.

    Raises:
        FsnnError: one line ``<what> failed at <host> (request <id>) after N attempts:
            <Type>: <message>``; the key never appears in it. An FsnnError raised by
            ``fn`` itself (bad input) passes through untouched and is not retried.
    """
    with ndif_config(host) as url, _track_request_ids() as ids:
        return call_with_retries(
            fn, policy=policy, what=what, where=url, sleep=sleep, request_ids=ids
        )


# --------------------------------------------------------------------------- preflight


def _status_json() -> dict:
    """``GET {CONFIG.API.HOST}/status`` through nnsight's own status client."""
    from nnsight import ndif

    get = getattr(ndif, "_get", None)
    if get is None:  # pragma: no cover - a future nnsight; status() swallows errors
        return ndif.status(raw=True) or {}
    return get("/status")


def preflight(
    model_id: str,
    *,
    host: str | None = None,
    revision: str = "main",
    task: str = "text-generation",
    policy: RetryPolicy | None = None,
) -> dict[str, Any]:
    """Check before a run that NDIF serves ``model_id``; fail early with the alternatives.

    Reads NDIF's ``/status`` (what ``nnsight.ndif.status()`` prints) and looks for a
    deployment of ``model_id`` at ``revision`` (and ``task`` when the deployment states
    one) that is HOT or WARM and RUNNING. Repo ids are compared case-insensitively; the
    Hub is not asked to canonicalise them (``nnsight.is_model_running`` does that, and
    needs the Hub).

    Returns:
        The deployment entry (``repo_id``, ``revision``, ``task``, ``level``, ``state``).

    Raises:
        FsnnError: NDIF unreachable (after retries), or the model not running — the
            message lists the models that are.
    """
    policy = policy or RetryPolicy()
    raw = call_remote(_status_json, host=host, policy=policy, what="NDIF status check")
    url = ndif_host(host)
    entries = []
    for name, value in (raw.get("deployments") or {}).items() if isinstance(raw, dict) else []:
        if not isinstance(value, dict):
            continue
        entries.append(
            {
                "repo_id": str(value.get("repo_id") or name),
                "revision": value.get("revision") or "main",
                "task": value.get("task"),
                "level": value.get("deployment_level"),
                "state": value.get("application_state", "UNHEALTHY"),
            }
        )
    running = [e for e in entries if e["level"] in _DEPLOYED_LEVELS and e["state"] == "RUNNING"]
    mine = [
        e
        for e in entries
        if e["repo_id"].lower() == model_id.lower()
        and e["revision"] == revision
        and e["task"] in (None, task)
    ]
    for entry in mine:
        if entry in running:
            return entry
    if mine:
        states = ", ".join(sorted({f"{e['level']}/{e['state']}" for e in mine}))
        raise FsnnError(
            f"model {model_id} is on NDIF at {url} but not running ({states}); retry later"
        )
    names = sorted(
        {
            e["repo_id"] if e["revision"] == "main" else f"{e['repo_id']}@{e['revision']}"
            for e in running
        }
    )
    listed = ", ".join(names[:30]) + (f" (+{len(names) - 30} more)" if len(names) > 30 else "")
    rev = "" if revision == "main" else f"@{revision}"
    raise FsnnError(
        f"model {model_id}{rev} is not running on NDIF at {url}; "
        + (f"running models: {listed}" if names else "NDIF lists no running model")
    )


# --------------------------------------------------------------------------- sizes


@dataclass(frozen=True, kw_only=True)
class Payload:
    """Bytes of one serialised request or result.

    Attributes:
        raw: uncompressed bytes.
        compressed: zstd bytes (level 6, what nnsight sends with ``COMPRESS: true``).
    """

    raw: int
    compressed: int


def _zstd_sizes(blob: bytes, compressed: bool) -> Payload:
    import zstandard as zstd

    if compressed:
        return Payload(raw=len(zstd.ZstdDecompressor().decompress(blob)), compressed=len(blob))
    return Payload(raw=len(blob), compressed=len(zstd.ZstdCompressor(level=6).compress(blob)))


@contextmanager
def payload_sizes() -> Iterator[list[Payload]]:
    """Record the size of every request nnsight serialises inside the block.

    Works for ``remote=True`` and ``remote="local"`` alike (both serialise through
    ``nnsight.schema.request.RequestModel.serialize``, which is wrapped for the block).

    Yields:
        A list that receives one :class:`Payload` per serialised request.
    """
    from nnsight.schema.request import RequestModel

    original = RequestModel.__dict__["serialize"]
    sizes: list[Payload] = []

    def serialize(cls: Any, tracer: Any, compress: bool = False) -> bytes:
        blob = original.__func__(cls, tracer, compress)
        sizes.append(_zstd_sizes(blob, compress))
        return blob

    RequestModel.serialize = classmethod(serialize)
    try:
        yield sizes
    finally:
        RequestModel.serialize = original


def result_size(saved: dict[str, Any]) -> Payload:
    """Bytes of a result holding ``saved`` values, as NDIF returns it (``torch.save``).

    Args:
        saved: name -> saved value (tensors, lists of tensors).
    """
    buffer = io.BytesIO()
    torch.save(saved, buffer, pickle_protocol=4)
    return _zstd_sizes(buffer.getvalue(), compressed=False)
