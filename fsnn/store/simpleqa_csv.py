"""The SimpleQA CSV: where it is (a path, ``$FSNN_SIMPLEQA_CSV``, or a one-time download)
and its one reader, used by the experiment (:mod:`fsnn.experiment.simpleqa`) and by the
release import (:mod:`fsnn.analysis.release`).

The CSV has columns ``metadata, problem, answer``; ``metadata`` is a Python dict literal
(parsed with ``ast.literal_eval``, never ``eval``) holding ``topic``, ``answer_type`` and
``urls``. Bad rows are reported by their row number (1 = first data row) and either
stop the read (``on_bad="error"``) or are skipped with a count (``on_bad="skip"``).
"""

from __future__ import annotations

import ast
import csv
import hashlib
import io
import os
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fsnn.errors import FsnnError

from .environment import cache_dir, env_path
from .files import atomic_write_bytes

__all__ = [
    "COLUMNS",
    "SIMPLEQA_SHA256",
    "SIMPLEQA_URL",
    "SimpleQARecord",
    "read_simpleqa_csv",
    "simpleqa_path",
]

SIMPLEQA_URL = "https://openaipublic.blob.core.windows.net/simple-evals/simple_qa_test_set.csv"
SIMPLEQA_SHA256 = "feee3f7e7db3617e94e8fcf1977b756ec420ef8568f4e0fcbbe0e92e9d5fc032"
COLUMNS = ("metadata", "problem", "answer")


@dataclass(frozen=True, kw_only=True)
class SimpleQARecord:
    """One data row of the CSV, as written (text not stripped).

    Attributes:
        id: the row's 0-based position among the data rows (bad rows count too).
        problem, answer: the fields as in the file.
        metadata: the parsed ``metadata`` dict (``topic``, ``answer_type``, ``urls``).
    """

    id: int
    problem: str
    answer: str
    metadata: dict[str, Any]


def simpleqa_path(path: str | os.PathLike | None = None) -> Path:
    """The SimpleQA CSV: ``path``, else ``$FSNN_SIMPLEQA_CSV``, else downloaded once.

    The download goes to ``$FSNN_CACHE_DIR/data`` and is checked against the known
    sha256 before it is renamed into place.
    """
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise FsnnError(f"SimpleQA CSV not found: {p}")
        return p
    from_env = env_path("FSNN_SIMPLEQA_CSV")
    if from_env is not None:
        if not from_env.is_file():
            raise FsnnError(f"FSNN_SIMPLEQA_CSV points to a missing file: {from_env}")
        return from_env
    target = cache_dir("data") / "simple_qa_test_set.csv"
    if target.is_file():
        return target
    try:
        with urllib.request.urlopen(SIMPLEQA_URL, timeout=60) as resp:
            data = resp.read()
    except OSError as exc:
        raise FsnnError(
            f"cannot download SimpleQA from {SIMPLEQA_URL} ({exc}); "
            "pass --simpleqa-csv PATH or set FSNN_SIMPLEQA_CSV"
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != SIMPLEQA_SHA256:
        raise FsnnError(
            f"downloaded SimpleQA has sha256 {digest[:16]}..., expected {SIMPLEQA_SHA256[:16]}..."
        )
    atomic_write_bytes(target, data)
    return target


def read_simpleqa_csv(
    path: str | os.PathLike | None = None, *, on_bad: Literal["error", "skip"] = "error"
) -> list[SimpleQARecord]:
    """Every good row of the SimpleQA CSV (:func:`simpleqa_path` finds it).

    Raises:
        FsnnError: one line naming the file and the problem: text that is not UTF-8
            (with the byte offset and the data row holding it), an empty file, a
            missing column, a malformed CSV record, or (``on_bad="error"``) a bad row
            (row number and field).
    """
    if on_bad not in ("error", "skip"):
        raise FsnnError(f"on_bad must be 'error' or 'skip', got {on_bad!r}")
    csv_path = simpleqa_path(path)
    text = _read_text(csv_path)
    if not text.strip():
        raise FsnnError(f"{csv_path}: empty file (expected a header {', '.join(COLUMNS)} and rows)")
    records: list[SimpleQARecord] = []
    bad: list[str] = []
    reader = csv.DictReader(io.StringIO(text, newline=""))
    i = 0
    try:
        fields = reader.fieldnames or []
        missing = [c for c in COLUMNS if c not in fields]
        if missing:
            raise FsnnError(
                f"{csv_path}: missing column(s) {', '.join(missing)} (have {', '.join(fields)})"
            )
        for i, row in enumerate(reader):
            problem = _row_problem(row, len(fields))
            if problem:
                message = f"{csv_path}: row {i + 1}: {problem}"
                if on_bad == "error":
                    raise FsnnError(message + " (use on_bad='skip' / --skip-bad-rows to skip it)")
                bad.append(message)
                continue
            records.append(
                SimpleQARecord(
                    id=i,
                    problem=row["problem"],
                    answer=row["answer"],
                    metadata=ast.literal_eval(row["metadata"]),
                )
            )
    except csv.Error as exc:
        raise FsnnError(f"{csv_path}: row {i + 1}: malformed CSV record ({exc})") from None
    if not records and not bad:
        raise FsnnError(f"{csv_path}: no question rows (header only?)")
    if bad:
        print(f"fsnn: skipped {len(bad)} bad SimpleQA row(s), first: {bad[0]}", file=sys.stderr)
    return records


def _read_text(path: Path) -> str:
    """The file as UTF-8 text; a bad byte is named by its offset and data row."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FsnnError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        prefix = data[: exc.start].decode("utf-8")
        line = prefix.count("\n") + 1
        try:  # records before the bad byte; the header is record 0
            records = sum(1 for _ in csv.reader(io.StringIO(prefix, newline="")))
        except csv.Error:
            records = line
        row = records if prefix.endswith("\n") or not prefix else records - 1
        where = f"data row {row}, line {line}" if row >= 1 else f"header, line {line}"
        raise FsnnError(
            f"{path}: not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} "
            f"({where}); re-save the file as UTF-8"
        ) from None


def _row_problem(row: dict, n_fields: int) -> str:
    if None in row:
        return f"{n_fields + len(row[None])} fields, expected {n_fields}"
    if any(v is None for v in row.values()):
        return f"{sum(v is not None for v in row.values())} fields, expected {n_fields}"
    if not (row.get("problem") or "").strip():
        return "empty field 'problem'"
    if not (row.get("answer") or "").strip():
        return "empty field 'answer'"
    try:
        meta = ast.literal_eval(row.get("metadata") or "")
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return "field 'metadata' is not a Python dict literal"
    if not isinstance(meta, dict):
        return "field 'metadata' is not a dict"
    urls = meta.get("urls", ()) or ()
    if not isinstance(urls, list | tuple):
        return "field 'metadata': 'urls' is not a list"
    return ""
