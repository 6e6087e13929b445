"""One process per run folder: an exclusive ``fcntl.flock`` on ``<folder>/.fsnn.lock``.

Two processes writing one run folder would interleave batches and trials. The lock is
held for the whole run; a second process refuses at once with a one-line error naming
the folder and the holder's pid. The kernel drops a flock when its holder dies
(SIGKILL included), so a lock file left behind by a killed run never blocks a resume.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from fsnn.errors import FsnnError

__all__ = ["LOCK_NAME", "run_folder_lock"]

LOCK_NAME = ".fsnn.lock"


@contextlib.contextmanager
def run_folder_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold the run folder's exclusive lock for the ``with`` block.

    Args:
        folder: the run folder (created when missing).

    Yields:
        The lock file's path.

    Raises:
        FsnnError: another live process holds the lock (message names the folder and
            its pid), or the folder cannot hold a lock file.
    """
    import fcntl

    folder = Path(folder)
    path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise FsnnError(f"cannot write to run folder {folder}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise FsnnError(
                f"run folder {folder} is in use by another fsnn process (pid {holder}); "
                "wait for it to finish or use another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)  # the file stays (unlinking it would race a waiting locker)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
