"""Labeled result files: atomic writes, checked reads, provenance on every file.

The schema of every file (what each holds, and the functions building it) is
:mod:`fsnn.schema`; this module only reads and writes.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xarray as xr

from .errors import FsnnError
from .schema import REQUIRED

__all__ = [
    "Run",
    "open_run",
    "SCHEMA_VERSION",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_dims",
    "package_versions",
    "provenance",
    "read_dataset",
    "write_dataset",
]

SCHEMA_VERSION = 1

def package_versions() -> dict[str, str]:
    """Versions of the packages a result depends on."""
    import importlib.metadata as md

    out = {}
    for name in ("fsnn", "nnsight", "torch", "transformers", "optuna", "xarray", "bitsandbytes"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "absent"
    return out


def _git_sha() -> str:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def provenance(kind: str, config: Mapping[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """netCDF-safe attributes for a file of ``kind`` (results, trials, references...).

    ``extra`` values must be str/number; dicts and lists are stored as JSON strings and
    bools as ints (netCDF attributes hold no dicts or bools).
    """
    attrs: dict[str, Any] = {
        "fsnn_schema": f"{kind}/{SCHEMA_VERSION}",
        "config": json.dumps(dict(config or {}), sort_keys=True, default=str),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "git_sha": _git_sha(),
    }
    for name, version in package_versions().items():
        attrs[f"version_{name}"] = version
    for key, value in extra.items():
        attrs[key] = _attr(value)
    return attrs


def _attr(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    if value is None:
        return ""
    return value


def _encoding(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    enc: dict[str, dict[str, Any]] = {}
    for name, var in {**ds.data_vars, **ds.coords}.items():
        if var.dtype.kind in "OU":  # variable-length strings in netCDF4
            enc[str(name)] = {"dtype": str}
    return enc


def atomic_write(path: str | Path, writer: Callable[[Path], object]) -> Path:
    """Write a file so that readers see the old file or the whole new one, never half.

    ``writer`` receives a temporary path in the same folder (so the final rename stays
    on one file system) and writes the complete file there; the temp file is then
    flushed to disk (fsync), renamed over ``path`` (``os.replace``, atomic on POSIX and
    Windows) and the folder entry synced. On any error, or an interrupt, the temp file
    is removed and ``path`` is left as it was.

    Args:
        path: the file to write; its folder is created when missing.
        writer: called once with the temp path; must write the full content there.

    Returns:
        ``path``.

    Raises:
        FsnnError: the folder cannot be created or written. Errors raised by ``writer``
            propagate unchanged (after the cleanup).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise FsnnError(f"cannot write {path}: {exc.strerror or exc}") from None
    tmp = Path(name)
    try:
        writer(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """:func:`atomic_write` of ``data``."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write` of ``text`` as UTF-8."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(text.encode("utf-8")))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible on every platform (Windows).
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_dataset(ds: xr.Dataset, path: str | Path) -> Path:
    """Write ``ds`` to netCDF4 atomically (temp file in the same folder, then rename).

    A crash mid-write leaves the previous file (or none) in place, never half a file.

    Raises:
        FsnnError: the folder cannot be created or written.
    """
    ds = ds.copy()
    for name, var in {**ds.data_vars, **ds.coords}.items():
        if var.dtype.kind == "U":
            ds[name] = var.astype(object)
    ds.attrs = {k: _attr(v) for k, v in ds.attrs.items()}
    encoding = _encoding(ds)
    return atomic_write(path, lambda tmp: ds.to_netcdf(tmp, engine="netcdf4", encoding=encoding))


def read_dataset(path: str | Path, kind: str | None = None) -> xr.Dataset:
    """Open a result file fully into memory (the file is closed on return).

    Args:
        path: a ``.nc`` file written by :func:`write_dataset`.
        kind: when given, check the file's dims against the schema of that kind.

    Raises:
        FsnnError: missing or unreadable file, or dims that do not match the schema.
    """
    path = Path(path)
    if not path.is_file():
        raise FsnnError(f"result file not found: {path}")
    try:
        with xr.open_dataset(path, engine="netcdf4") as ds:
            ds = ds.load()
    except Exception as exc:  # netCDF4/HDF5 raise OSError, RuntimeError, KeyError... on a damaged file
        raise FsnnError(f"cannot read {path} (truncated or corrupt? {_first_line(exc)}); {RECOVER}") from None
    if kind is not None:
        check_dims(ds, kind, str(path))
    return ds


RECOVER = ("if it is a run folder's stage file, delete it and rerun the same command to recompute "
           "that stage (or use --force-new to start the folder over)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def check_dims(ds: xr.Dataset, kind: str, where: str = "dataset") -> None:
    """Raise FsnnError when ``ds`` lacks a variable of ``kind`` or has it with other dims."""
    for name, dims in REQUIRED.get(kind, {}).items():
        if name not in ds.variables:
            raise FsnnError(f"{where}: not a {kind} file, variable {name!r} is missing")
        if tuple(ds[name].dims) != dims:
            raise FsnnError(
                f"{where}: variable {name!r} has dims {tuple(ds[name].dims)}, expected {dims}"
            )


RUN_FILES = ("baseline", "references", "trials", "results")


@dataclass(frozen=True, kw_only=True)
class Run:
    """A run folder's datasets, opened (see :mod:`fsnn.schema` for what each holds).

    Attributes:
        path: the run folder.
        config: ``config.json`` (the run's identity), {} when absent.
        baseline, references, trials, results: the datasets present (None when the
            stage has not written its file yet).
    """

    path: Path
    config: dict[str, Any]
    baseline: xr.Dataset | None = None
    references: xr.Dataset | None = None
    trials: xr.Dataset | None = None
    results: xr.Dataset | None = None


def open_run(path: str | Path) -> Run:
    """Open every dataset of a run folder (``fsnn run`` or ``fsnn import-release`` output).

    Raises:
        FsnnError: the folder does not exist, holds no fsnn file, or a file is unreadable.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FsnnError(f"run folder not found: {folder}")
    datasets = {}
    for name in RUN_FILES:
        file = folder / f"{name}.nc"
        if file.exists():
            datasets[name] = read_dataset(file, name if name in REQUIRED else None)
    config: dict[str, Any] = {}
    cfg_path = folder / "config.json"
    if cfg_path.exists():
        try:
            config = json.loads(cfg_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise FsnnError(f"{cfg_path} is not valid JSON (remove it, or rerun with --force-new)") from None
    if not datasets:
        raise FsnnError(f"{folder} is not an fsnn run folder (no baseline/references/trials/results .nc file)")
    return Run(path=folder, config=config, **datasets)
