"""A fake OpenAI-compatible chat-completions server that injects faults (tests, benchmarks).

Listens on 127.0.0.1 only, on a free port; answers ``POST /chat/completions`` with a
grade that is a pure function of the prompt (so a fault-free run has known grades), or
with the next fault of its script. It serves at most ``max_requests`` requests and at
most ``lifetime`` seconds, then stops by itself; ``stop()`` ends it at once.

Faults (one per request, in script order): ``429`` (with ``Retry-After``), ``500``,
``502``, ``503``, ``timeout`` (answers after the client gave up), ``drop`` (closes the
connection without a reply), ``truncated`` / ``invalid`` JSON, ``empty_choices``,
``bad_score`` (a quality grade outside 1-5), ``bad_letter`` (a rubric answer without
A/B/C), ``401`` (a permanent refusal).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["FAULTS", "TRANSPORT_FAULTS", "FakeOpenAI", "expected_answer"]

TRANSPORT_FAULTS = (
    "429",
    "500",
    "502",
    "503",
    "timeout",
    "drop",
    "truncated",
    "invalid",
    "empty_choices",
)
FAULTS = (*TRANSPORT_FAULTS, "bad_score", "bad_letter")


def expected_answer(user: str) -> str:
    """The fault-free answer to a prompt: a rubric letter or a 1-5 quality grade."""
    digest = int(hashlib.sha256(user.encode()).hexdigest(), 16)
    if "NOT_ATTEMPTED" in user:  # the SimpleQA rubric
        return "ABC"[digest % 3]
    return f"Score: {1 + digest % 5}\nHallucination: N\nNotes: fake judge."


class FakeOpenAI:
    """The server; use as a context manager or call :meth:`stop`.

    Args:
        faults: the fault script, consumed one per request; then every request succeeds.
        always: a fault every request gets once the script is used up (e.g. ``"503"``
            for an endpoint that never recovers), or None.
        api_key: when set, requests without ``Authorization: Bearer <key>`` get 401.
        sleep_timeout: seconds a ``timeout`` fault waits before answering.
        retry_after: the ``Retry-After`` value of a 429.
        max_requests: requests served before the server stops by itself.
        lifetime: seconds before the server stops by itself.
        port: the port on 127.0.0.1 (0: a free one).
    """

    def __init__(
        self,
        faults: Iterable[str] = (),
        *,
        always: str | None = None,
        api_key: str | None = None,
        sleep_timeout: float = 0.5,
        retry_after: str = "0.01",
        max_requests: int = 5000,
        lifetime: float = 300.0,
        port: int = 0,
    ):
        self.script = list(faults)
        unknown = sorted(
            {f for f in [*self.script, *([always] if always else [])] if f not in (*FAULTS, "401")}
        )
        if unknown:
            raise ValueError(f"unknown fault(s) {unknown}")
        self.always, self.api_key = always, api_key
        self.sleep_timeout, self.retry_after = sleep_timeout, retry_after
        self.max_requests, self.deadline = max_requests, time.monotonic() + lifetime
        self.injected: Counter[str] = Counter()
        self.served = 0
        self.auth_seen: list[str] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        self.server.timeout = 0.1
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._serve, name="fake-openai", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while (
            not self._stopped.is_set()
            and time.monotonic() < self.deadline
            and self.served < self.max_requests
        ):
            self.server.handle_request()
        self.server.server_close()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _next_fault(self) -> str | None:
        with self._lock:
            self.served += 1
            fault = self.script.pop(0) if self.script else self.always
            if fault:
                self.injected[fault] += 1
            return fault

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _send(
                self, status: int, body: bytes, headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                payload = json.loads(self.rfile.read(length) or b"{}")
                auth = self.headers.get("Authorization", "")
                with fake._lock:
                    fake.auth_seen.append(auth)
                if fake.api_key is not None and auth != f"Bearer {fake.api_key}":
                    self._send(401, b'{"error": "bad key"}')
                    return
                fault = fake._next_fault()
                user = payload["messages"][0]["content"]
                content = expected_answer(user)
                if fault in ("429", "500", "502", "503", "401"):
                    headers = {"Retry-After": fake.retry_after} if fault == "429" else {}
                    self._send(int(fault), b'{"error": "injected"}', headers)
                    return
                if fault == "timeout":
                    time.sleep(fake.sleep_timeout)
                elif fault == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                elif fault == "bad_score":
                    content = "Score: 7\nHallucination: N"
                elif fault == "bad_letter":
                    content = "D"
                body = {
                    "choices": [
                        {
                            "message": {"role": "assistant", "content": content},
                            "finish_reason": "stop",
                        }
                    ]
                }
                if fault == "empty_choices":
                    body = {"choices": []}
                raw = json.dumps(body).encode()
                if fault == "truncated":
                    raw = raw[: len(raw) // 2]
                elif fault == "invalid":
                    raw = b"<html>upstream error</html>"
                try:
                    self._send(200, raw)
                except OSError:
                    pass  # the client gave up (timeout fault)

        return Handler


def main(argv: list[str] | None = None) -> int:
    """Serve fault-free (or with ``--always FAULT``) until ``--lifetime`` s; print the URL."""
    import argparse

    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--lifetime", type=float, default=600.0, help="seconds before it stops by itself"
    )
    parser.add_argument(
        "--always", default=None, choices=(*FAULTS, "401"), help="fault every request gets"
    )
    parser.add_argument(
        "--api-key-env", default=None, help="NAME of an env var holding the key to require"
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    args = parser.parse_args(argv)
    import os

    key = os.environ.get(args.api_key_env) if args.api_key_env else None
    server = FakeOpenAI(always=args.always, api_key=key, lifetime=args.lifetime, port=args.port)
    print(server.url, flush=True)
    server._thread.join()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
