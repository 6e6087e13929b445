"""fsnn.store.lock: one process per run folder (an exclusive flock holding the holder's pid)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fsnn.errors import FsnnError
from fsnn.store.lock import LOCK_NAME, run_folder_lock

ROOT = Path(__file__).resolve().parents[2]


def test_lock_writes_the_pid_and_empties_it_on_release(tmp_path):
    folder = tmp_path / "new" / "run"  # created when missing
    with run_folder_lock(folder) as path:
        assert path == folder / LOCK_NAME
        assert path.read_text() == f"{os.getpid()}\n"
    assert path.exists() and path.read_text() == ""  # the file stays, empty
    with run_folder_lock(folder):  # released: the same process takes it again
        pass


def test_a_second_holder_is_refused_with_the_pid(tmp_path):
    # flock locks belong to open file descriptions: a second open in this process conflicts too
    with run_folder_lock(tmp_path):
        with pytest.raises(
            FsnnError, match=rf"in use by another fsnn process \(pid {os.getpid()}\)"
        ):
            with run_folder_lock(tmp_path):
                pass


def test_another_process_is_refused_while_held_and_admitted_after(tmp_path):
    code = (
        "import sys\nfrom fsnn.store.lock import run_folder_lock\n"
        "try:\n    with run_folder_lock(sys.argv[1]):\n        print('got it')\n"
        "except Exception as exc:\n    print(exc)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def other() -> str:
        return subprocess.run(
            [sys.executable, "-c", code, str(tmp_path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=True,
        ).stdout.strip()

    with run_folder_lock(tmp_path):
        message = other()
    assert str(tmp_path) in message and f"pid {os.getpid()}" in message and "\n" not in message
    assert other() == "got it"


def test_an_unwritable_folder_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(FsnnError, match="cannot write to run folder"):
        with run_folder_lock(blocker / "run"):
            pass
