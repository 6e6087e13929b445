"""Atomic writes: one helper (fsnn.store.files.atomic_write) behind every file fsnn writes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import xarray as xr

from fsnn.errors import FsnnError
from fsnn.store import files as store
from fsnn.store.files import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    read_dataset,
    write_dataset,
)


@pytest.fixture
def fsyncs(monkeypatch):
    """Every fd passed to os.fsync (by fsnn.store.files) during the test."""
    calls: list[int] = []
    real = os.fsync

    def spy(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(store.os, "fsync", spy)
    return calls


def test_atomic_write_replaces_whole_file_and_syncs(tmp_path, fsyncs) -> None:
    path = tmp_path / "sub" / "a.txt"
    assert atomic_write_text(path, "one\n") == path
    assert path.read_text() == "one\n"
    atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"two"
    assert len(fsyncs) >= 2  # the data reached the disk before the rename
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.txt"]


def test_atomic_write_error_keeps_old_file_and_removes_temp(tmp_path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("old")

    def broken(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt  # an interrupt too, not only Exception

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, broken)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_atomic_write_unwritable_folder_is_one_line_error(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(FsnnError, match="cannot write"):
        atomic_write_text(blocker / "a.txt", "y")


def test_write_dataset_goes_through_the_helper(tmp_path, fsyncs) -> None:
    ds = xr.Dataset({"x": ("prompt", np.arange(3.0))}, attrs={"kind": "t"})
    path = write_dataset(ds, tmp_path / "d.nc")
    assert fsyncs, "write_dataset must fsync before renaming"
    xr.testing.assert_identical(read_dataset(path)["x"], ds["x"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.nc"]


def test_agreement_json_goes_through_the_helper(tmp_path, fsyncs) -> None:
    from fsnn.analysis.judge_agreement import _write_json

    _write_json({"a": float("nan"), "b": [1, 2]}, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": None, "b": [1, 2]}
    assert fsyncs
