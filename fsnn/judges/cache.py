"""On-disk cache of judge answers, keyed by (judge cache key, sha256 of the full prompt).

The judge cache key (:attr:`fsnn.judges.JudgeConfig.cache_key`) is the judge id plus a
hash of every setting that changes an answer, so answers made under other settings
are never reused (the ``judge_id`` column holds that key).

One SQLite file (default ``$FSNN_CACHE_DIR/judges/answers.sqlite``) so that writes are
transactional and several threads or processes can share it (WAL journal, busy
timeout). A row holds the judge's raw answer and a small JSON ``meta`` (for local
judges, the probabilities over the allowed tokens); grades are parsed from the raw
answer on every read, so a parser fix needs no regrading. Only answers are stored:
failures (timeouts, HTTP errors) are not, so a rerun retries them. Requests, headers
and keys never enter the file.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from fsnn.errors import FsnnError
from fsnn.store.environment import cache_dir

__all__ = ["JudgeCache", "prompt_sha256"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    judge_id TEXT NOT NULL,
    prompt_sha256 TEXT NOT NULL,
    task TEXT NOT NULL,
    raw TEXT NOT NULL,
    meta TEXT NOT NULL,
    created TEXT NOT NULL,
    PRIMARY KEY (judge_id, prompt_sha256)
)
"""


def prompt_sha256(prompt: str) -> str:
    """Hex sha256 of the UTF-8 prompt text."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


class JudgeCache:
    """A thread-safe SQLite store of judge answers with hit/miss counters.

    Args:
        path: the SQLite file; default ``cache_dir("judges") / "answers.sqlite"``.

    Attributes:
        path: the file in use.
        hits: lookups answered from the file since this object was made.
        misses: lookups that found nothing.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else cache_dir("judges") / "answers.sqlite"
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(_SCHEMA)
            self._conn.commit()
        except (OSError, sqlite3.Error) as exc:
            raise FsnnError(f"cannot open judge cache {self.path}: {exc}") from None

    def get(self, judge_id: str, prompt_hash: str) -> tuple[str, dict[str, Any]] | None:
        """(raw answer, meta) stored for this judge and prompt hash, or None."""
        with self._lock:
            row = self._conn.execute(
                "SELECT raw, meta FROM answers WHERE judge_id = ? AND prompt_sha256 = ?",
                (judge_id, prompt_hash),
            ).fetchone()
            if row is None:
                self.misses += 1
                return None
            self.hits += 1
        return row[0], json.loads(row[1])

    def put(
        self,
        judge_id: str,
        prompt_hash: str,
        raw: str,
        meta: dict[str, Any] | None = None,
        *,
        task: str = "",
    ) -> None:
        """Store one answer (replacing an older one for the same key), committed at once."""
        created = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?)",
                (judge_id, prompt_hash, task, raw, json.dumps(meta or {}, sort_keys=True), created),
            )
            self._conn.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def stats(self) -> dict[str, int]:
        """``{"hits": ..., "misses": ...}`` since this object was made."""
        return {"hits": self.hits, "misses": self.misses}

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> JudgeCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"JudgeCache(path={str(self.path)!r}, hits={self.hits}, misses={self.misses})"
