"""Reliability of storage: one process per folder, corrupt and failed writes as one-line errors, atomic writes, temp files swept, no pickle loads.

(The whole campaign is benchmarks/reliability.py.)
"""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from fsnn.errors import FsnnError
from fsnn.store.files import read_dataset, write_dataset
from fsnn.store.lock import LOCK_NAME, run_folder_lock

ROOT = Path(__file__).resolve().parents[2]


def _locker_script(folder: Path, then: str) -> str:
    return textwrap.dedent(f"""
        import sys, time, os, signal
        sys.path.insert(0, {str(ROOT)!r})
        from fsnn.store.lock import run_folder_lock
        with run_folder_lock({str(folder)!r}):
            print("locked", flush=True)
            {"os.kill(os.getpid(), signal.SIGKILL)" if then == "die" else "time.sleep(60)"}
    """)


def test_second_process_refuses_and_killed_holder_does_not_block(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", _locker_script(folder, "hold")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(
            FsnnError,
            match=rf"run folder .*run is in use by another fsnn process \(pid {holder.pid}\)",
        ):
            with run_folder_lock(folder):
                pass
    finally:
        holder.kill()
        holder.wait()
    # the holder died by SIGKILL: its lock file stays, but the kernel released the lock
    assert (folder / LOCK_NAME).exists()
    with run_folder_lock(folder):
        assert (folder / LOCK_NAME).read_text().strip() == str(os.getpid())
    dead = subprocess.run(
        [sys.executable, "-c", _locker_script(folder, "die")], capture_output=True, text=True
    )
    assert dead.returncode == -signal.SIGKILL
    with run_folder_lock(folder):
        pass


def test_lock_inside_one_process_is_exclusive_too(tmp_path):
    with run_folder_lock(tmp_path):
        with pytest.raises(FsnnError, match="in use"):
            with run_folder_lock(tmp_path):
                pass


@pytest.mark.parametrize("damage", ["truncated", "empty", "zeroed", "json"])
def test_corrupt_result_file_is_one_line_naming_it_and_the_recovery(tmp_path, damage):
    ds = xr.Dataset(
        {"a": ("x", np.arange(2000.0)), "s": ("x", np.array(["q"] * 2000, dtype=object))}
    )
    path = write_dataset(ds, tmp_path / "results.nc")
    raw = path.read_bytes()
    path.write_bytes(
        {
            "truncated": raw[: len(raw) // 2],
            "empty": b"",
            "zeroed": raw[:2000] + bytes(300) + raw[2300:],
            "json": b'{"a": 1}',
        }[damage]
    )
    with pytest.raises(FsnnError) as info:
        read_dataset(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "delete it and rerun" in message


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    import errno

    path = write_dataset(xr.Dataset({"a": ("x", np.arange(3.0))}), tmp_path / "trials.nc")
    before = path.read_bytes()
    real = xr.Dataset.to_netcdf

    def disk_full(self, target, *a, **k):
        real(self, target, *a, **k)
        with open(target, "r+b") as fh:  # half a file on disk, then the disk fills
            fh.truncate(100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", disk_full)
    with pytest.raises(FsnnError, match="No space left on device"):
        write_dataset(xr.Dataset({"a": ("x", np.arange(5.0))}), path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "trials.nc"
    ]


_UNSAFE_MODULES = {"pickle", "cPickle", "joblib", "dill", "cloudpickle", "shelve", "marshal"}


def _unsafe_loads(source: str, filename: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + (
                [node.module] if isinstance(node, ast.ImportFrom) else []
            )
            found += [
                f"{filename}:{node.lineno} imports {n}"
                for n in names
                if n and n.split(".")[0] in _UNSAFE_MODULES
            ]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            owner_name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
            if node.func.attr == "load" and owner_name == "torch":
                safe = any(
                    k.arg == "weights_only"
                    and isinstance(k.value, ast.Constant)
                    and k.value.value is True
                    for k in node.keywords
                )
                if not safe:
                    found.append(f"{filename}:{node.lineno} torch.load without weights_only=True")
            if node.func.attr in ("load", "loads") and owner_name in _UNSAFE_MODULES:
                found.append(f"{filename}:{node.lineno} {owner_name}.{node.func.attr}")
    return found


def test_the_scanner_finds_unsafe_loads():
    bad = (
        "import pickle\nimport torch\nfrom joblib import load\ntorch.load('x')\npickle.loads(b'')\n"
    )
    assert len(_unsafe_loads(bad, "bad.py")) == 4
    assert _unsafe_loads("import torch\ntorch.load('x', weights_only=True)\n", "ok.py") == []


def test_no_pickle_loads_in_the_package():
    found = []
    for path in sorted((ROOT / "fsnn").rglob("*.py")):
        found += _unsafe_loads(path.read_text(), str(path.relative_to(ROOT)))
    assert found == []


@pytest.mark.parametrize(
    ("err", "cause"), [(28, "No space left on device"), (13, "Permission denied")]
)
def test_failed_write_is_one_fsnn_line_naming_the_file(tmp_path, monkeypatch, err, cause):
    """ENOSPC/EACCES mid-write: one FsnnError line (file, folder, cause, what to do), old file kept."""
    import os as _os

    path = write_dataset(xr.Dataset({"a": ("x", np.arange(3.0))}), tmp_path / "results.nc")
    before = path.read_bytes()
    real = xr.Dataset.to_netcdf

    def failing(self, target, *a, **k):
        real(self, target, *a, **k)
        with open(target, "r+b") as fh:  # half a file on disk, then the error
            fh.truncate(100)
        raise OSError(err, _os.strerror(err), str(target))

    monkeypatch.setattr(xr.Dataset, "to_netcdf", failing)
    with pytest.raises(FsnnError) as info:
        write_dataset(xr.Dataset({"a": ("x", np.arange(5.0))}), path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        f"cannot write results.nc in {tmp_path}: {cause}; the previous results.nc"
    )
    assert "rerun the same command" in message
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "results.nc"
    ]


def test_hdf5_write_error_is_one_fsnn_line(tmp_path, monkeypatch):
    """A full disk under HDF5 raises RuntimeError('NetCDF: HDF error'), not an OSError."""
    real = xr.Dataset.to_netcdf

    def hdf_error(self, target, *a, **k):
        real(self, target, *a, **k)
        raise RuntimeError("NetCDF: HDF error")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", hdf_error)
    with pytest.raises(
        FsnnError, match=r"cannot write trials.nc in .*: RuntimeError: NetCDF: HDF error \(.* free"
    ):
        write_dataset(xr.Dataset({"a": ("x", np.arange(5.0))}), tmp_path / "trials.nc")
    assert list(tmp_path.iterdir()) == []

    def a_bug(self, target, *a, **k):  # not an I/O error: not disguised as one
        raise RuntimeError("some bug")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", a_bug)
    with pytest.raises(RuntimeError, match="some bug"):
        write_dataset(xr.Dataset({"a": ("x", np.arange(5.0))}), tmp_path / "trials.nc")
    assert list(tmp_path.iterdir()) == []


def test_failed_text_write_is_one_line_and_cli_prints_one_line(tmp_path, monkeypatch, capsys):
    import errno as _errno

    import fsnn.cli
    from fsnn.store.files import atomic_write_text

    atomic_write_text(tmp_path / "config.json", "{}")

    def full(self, data):
        raise OSError(_errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(
        FsnnError, match=r"^cannot write config.json in .*: No space left on device; the previous"
    ):
        atomic_write_text(tmp_path / "config.json", '{"a": 1}')
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]
    assert (tmp_path / "config.json").read_text() == "{}"

    def handler(args):  # the CLI's entry point meets the error as a stage would raise it
        atomic_write_text(tmp_path / "results.json", "x")

    monkeypatch.setattr(fsnn.cli, "_report", handler)
    assert fsnn.cli.main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fsnn: error: cannot write results.json in ")


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_honour_the_umask(tmp_path, umask, mode):
    from fsnn.store.files import atomic_write_text

    old = os.umask(umask)
    try:
        nc = write_dataset(xr.Dataset({"a": ("x", np.arange(3.0))}), tmp_path / "results.nc")
        js = atomic_write_text(tmp_path / "summary.json", "{}")
    finally:
        os.umask(old)
    assert oct(nc.stat().st_mode & 0o777) == oct(mode)
    assert oct(js.stat().st_mode & 0o777) == oct(mode)


def test_stale_temp_files_are_swept_and_nothing_else(tmp_path):
    from fsnn.store.files import TEMP_PATTERN, atomic_write_text, remove_stale_temp_files

    seen = []

    def spy(tmp):
        seen.append(tmp.name)
        tmp.write_bytes(b"x")

    from fsnn.store.files import atomic_write

    atomic_write(tmp_path / "references.nc", spy)
    assert TEMP_PATTERN.match(seen[0]) and TEMP_PATTERN.match(seen[0])["name"] == "references.nc"
    stale = [".references.nc.mcf4et6n.tmp", ".trials.nc.4_tai379.tmp", ".config.json.0123abcd.tmp"]
    kept = [
        "results.nc",
        "notes.tmp",
        ".results.nc.short.tmp",
        ".results.nc.UPPERCAS.tmp",
        "x.results.nc.abcdefgh.tmp",
        ".fsnn.lock",
        ".results.nc.abcdefgh.tmp.bak",
    ]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"half")
    (tmp_path / ".dir.nc.abcdefgh.tmp").mkdir()  # a folder, not a temp file
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".baseline.nc.abcdefgh.tmp").write_bytes(b"half")  # only the folder itself
    removed = remove_stale_temp_files(tmp_path)
    assert sorted(p.name for p in removed) == sorted(stale)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([*kept, ".dir.nc.abcdefgh.tmp", "references.nc", "sub"])
    assert (tmp_path / "sub" / ".baseline.nc.abcdefgh.tmp").exists()
    assert remove_stale_temp_files(tmp_path / "missing") == []
    atomic_write_text(tmp_path / "summary.md", "ok")  # its own temp file is gone after a write
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".summary.md.")]


def test_run_start_sweeps_temp_files_under_the_lock(tiny_gemma2, tmp_path, monkeypatch):
    """A SIGKILLed netCDF write leaves .NAME.nc.XXXX.tmp; the next run removes it, under the lock."""
    import fsnn.experiment.pipeline
    from fsnn.experiment.pipeline import run_pipeline
    from tests.experiment.test_pipeline import small_config, write_csv

    csv_path = write_csv(tmp_path / "qa.csv")
    out = tmp_path / "run"
    out.mkdir()
    (out / ".references.nc.mcf4et6n.tmp").write_bytes(b"half a netCDF file")
    (out / "my-notes.txt").write_text("kept")
    held = []
    real = fsnn.experiment.pipeline.remove_stale_temp_files

    def spy(folder):
        with pytest.raises(FsnnError, match="in use"):  # the run holds the folder's lock now
            with run_folder_lock(folder):
                pass
        held.append(True)
        return real(folder)

    monkeypatch.setattr(fsnn.experiment.pipeline, "remove_stale_temp_files", spy)
    run_pipeline(
        small_config(limit=2, batch_size=2),
        out,
        simpleqa_csv=csv_path,
        model=tiny_gemma2,
        progress=False,
    )
    assert held == [True]
    assert not list(out.glob(".*.tmp")) and (out / "my-notes.txt").read_text() == "kept"
