"""Labeled result files: atomic writes, checked reads, provenance on every file.

The schema of every file (what each holds, and the functions building it) is
:mod:`fsnn.store.schema`; this module only reads and writes.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import re
import secrets
import subprocess
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import xarray as xr

from fsnn.errors import FsnnError

from .schema import REQUIRED

__all__ = [
    "RUN_FILES",
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
    "remove_stale_temp_files",
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
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
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


TEMP_SUFFIX = ".tmp"
# ".NAME.XXXXXXXX.tmp": the temp file of an atomic write of NAME (8 characters of
# [a-z0-9_], as tempfile's names in older versions). Only files matching it are swept.
TEMP_PATTERN = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")


def _create_temp(path: Path) -> Path:
    """A new empty ``.NAME.XXXXXXXX.tmp`` next to ``path``, mode 0666 less the umask.

    ``tempfile.mkstemp`` would make it 0600 whatever the umask; a result file should get
    the permissions a plain ``open(path, "w")`` gives (e.g. 0644 under umask 022).
    """
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(path.parent))


def _write_failed(path: Path, exc: BaseException) -> FsnnError:
    cause = getattr(exc, "strerror", None) or _first_line(exc)
    return FsnnError(
        f"cannot write {path.name} in {path.parent}: {cause}; the previous {path.name} (if any) is intact; "
        "free space / fix permissions and rerun the same command to resume"
    )


def atomic_write(path: str | Path, writer: Callable[[Path], object]) -> Path:
    """Write a file so that readers see the old file or the whole new one, never half.

    ``writer`` receives a temporary path ``.NAME.XXXXXXXX.tmp`` in the same folder (so
    the final rename stays on one file system) and writes the complete file there; the
    temp file is then flushed to disk (fsync), renamed over ``path`` (``os.replace``,
    atomic on POSIX and Windows) and the folder entry synced. On any error, or an
    interrupt, the temp file is removed and ``path`` is left as it was. The new file
    gets the mode a plain ``open()`` would give (0666 less the umask).

    Args:
        path: the file to write; its folder is created when missing.
        writer: called once with the temp path; must write the full content there.

    Returns:
        ``path``.

    Raises:
        FsnnError: the folder cannot be created or written, or the write fails with an
            ``OSError`` (disk full, permission denied...): one line naming the file and
            the cause. Other errors raised by ``writer`` propagate unchanged (after the
            cleanup).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _create_temp(path)
    except OSError as exc:
        raise _write_failed(path, exc) from None
    try:
        writer(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _write_failed(path, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temp files that killed atomic writes left in ``folder`` (not below it).

    Only files named as :func:`atomic_write` names them (:data:`TEMP_PATTERN`) are
    removed. Call it only while no other process writes the folder (under
    :func:`fsnn.store.lock.run_folder_lock`): a live writer's temp file matches too.

    Returns:
        The removed files.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        if TEMP_PATTERN.match(entry.name) and entry.is_file() and not entry.is_symlink():
            try:
                entry.unlink()
            except FileNotFoundError:
                continue
            removed.append(entry)
    return sorted(removed)


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
        FsnnError: a package file (``fsnn_schema``) with a dimension outside
            :data:`fsnn.store.schema.DIMENSIONS`; the folder cannot be created or written, or the write fails (disk
            full, permission denied, an HDF5 write error): one line naming the file.
    """
    if "fsnn_schema" in ds.attrs:  # a package file: one dimension vocabulary
        from .schema import DIMENSIONS

        unknown = sorted(str(d) for d in set(ds.dims) - set(DIMENSIONS))
        if unknown:
            raise FsnnError(
                f"{path}: dimension(s) {unknown} are not in fsnn.store.schema.DIMENSIONS"
            )
    ds = ds.copy()
    for name, var in {**ds.data_vars, **ds.coords}.items():
        if var.dtype.kind == "U":
            ds[name] = var.astype(object)
    ds.attrs = {k: _attr(v) for k, v in ds.attrs.items()}
    encoding = _encoding(ds)

    def write(tmp: Path) -> None:
        try:
            ds.to_netcdf(tmp, engine="netcdf4", encoding=encoding)
        except RuntimeError as exc:
            # HDF5 reports a full disk or a failed write as "NetCDF: HDF error", no errno
            if "NetCDF" not in str(exc) and "HDF" not in str(exc):
                raise
            raise OSError(
                errno.EIO, f"{_first_line(exc)} ({_free_space(tmp.parent)} free on that disk)"
            ) from None

    return atomic_write(path, write)


def _free_space(folder: Path) -> str:
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs on Windows
        return "unknown space"
    return f"{st.f_bavail * st.f_frsize / 1e6:.1f} MB"


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
    except (
        Exception
    ) as exc:  # netCDF4/HDF5 raise OSError, RuntimeError, KeyError... on a damaged file
        raise FsnnError(
            f"cannot read {path} (truncated or corrupt? {_first_line(exc)}); {RECOVER}"
        ) from None
    if kind is not None:
        check_dims(ds, kind, str(path))
    return ds


RECOVER = (
    "if it is a run folder's stage file, delete it and rerun the same command to recompute "
    "that stage (or use --force-new to start the folder over)"
)


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


# Stage files of ``fsnn run``, then the imported release's own files (fsnn.analysis.release).
RUN_FILES = ("baseline", "references", "trials", "results", "trial_grades", "subsets")

# what to run when a file a reader requires is missing
_MAKES = {
    "baseline": "`fsnn run`",
    "references": "`fsnn run`",
    "trials": "`fsnn run`",
    "results": "`fsnn run` or `fsnn import-release`",
    "trial_grades": "`fsnn import-release`",
    "subsets": "`fsnn import-release` with a SimpleQA CSV",
}


class Run:
    """A run folder's datasets (see :mod:`fsnn.store.schema` for what each holds).

    The one reader of run folders: ``fsnn show``, ``compare``, ``report``, ``figures`` and
    the experiments open folders through :func:`open_run`, so every one of them applies the
    same checks (schema attribute, dims). Each file is read on first use and kept, so that
    looking at ``results.nc`` does not load a large ``references.nc``.

    Attributes:
        path: the run folder.
        config: ``config.json`` (the run's identity), {} when absent.
        baseline, references, trials, results, trial_grades, subsets: the datasets
            present, None for a file the folder lacks (a stage not written yet; the
            release files exist only in an imported release). :meth:`require` raises
            instead of returning None.
    """

    def __init__(
        self,
        *,
        path: str | Path,
        config: Mapping[str, Any] | None = None,
        baseline: xr.Dataset | None = None,
        references: xr.Dataset | None = None,
        trials: xr.Dataset | None = None,
        results: xr.Dataset | None = None,
        trial_grades: xr.Dataset | None = None,
        subsets: xr.Dataset | None = None,
        files: Mapping[str, Path] | None = None,
    ) -> None:
        """A run of the given datasets; ``files`` (name -> path, from :func:`open_run`)
        are read when first used."""
        self.path = Path(path)
        self.config: dict[str, Any] = dict(config or {})
        given = {"baseline": baseline, "references": references, "trials": trials,
                 "results": results, "trial_grades": trial_grades, "subsets": subsets}  # fmt: skip
        self._data: dict[str, xr.Dataset] = {k: v for k, v in given.items() if v is not None}
        self._files = {k: Path(v) for k, v in (files or {}).items() if k not in self._data}

    def __repr__(self) -> str:
        return f"Run(path={str(self.path)!r}, files={list(self.files)!r})"

    @property
    def files(self) -> tuple[str, ...]:
        """Names of the datasets this run holds, in :data:`RUN_FILES` order."""
        return tuple(n for n in RUN_FILES if n in self._data or n in self._files)

    def _get(self, name: str) -> xr.Dataset | None:
        if name not in self._data and name in self._files:
            self._data[name] = _read_run_file(self._files[name], name)
        return self._data.get(name)

    @property
    def baseline(self) -> xr.Dataset | None:
        return self._get("baseline")

    @property
    def references(self) -> xr.Dataset | None:
        return self._get("references")

    @property
    def trials(self) -> xr.Dataset | None:
        return self._get("trials")

    @property
    def results(self) -> xr.Dataset | None:
        return self._get("results")

    @property
    def trial_grades(self) -> xr.Dataset | None:
        return self._get("trial_grades")

    @property
    def subsets(self) -> xr.Dataset | None:
        return self._get("subsets")

    def require(self, name: str) -> xr.Dataset:
        """The dataset ``name``, or a one-line FsnnError saying the folder lacks it.

        For readers that cannot do without a file (``fsnn show`` needs ``results.nc``).
        """
        if name not in RUN_FILES:
            raise ValueError(f"unknown run file {name!r}; one of {', '.join(RUN_FILES)}")
        ds = self._get(name)
        if ds is None and name == "results":  # the text fsnn show has always given
            raise FsnnError(f"not a run folder: {self.path} has no results.nc (run {_MAKES[name]})")
        if ds is None:
            raise FsnnError(f"{self.path} has no {name}.nc (written by {_MAKES[name]})")
        return ds

    @property
    def methods(self) -> list[str]:
        """The methods of ``results.nc`` (baseline first in runs of ``fsnn run``)."""
        return [str(m) for m in self.require("results")["method"].values]


def _read_run_file(file: Path, name: str) -> xr.Dataset:
    """Read one run file and check it is one: its ``fsnn_schema`` kind, then its dims.

    ``results.nc`` must carry ``fsnn_schema`` (``fsnn show`` has always refused a results
    file without it); other files are refused only when it names another kind.
    """
    ds = read_dataset(file)
    schema = str(ds.attrs.get("fsnn_schema", ""))
    if not schema.startswith(f"{name}/") and (schema or name == "results"):
        raise FsnnError(f"{file} is not an fsnn {name} file (fsnn_schema {schema or 'missing'!r})")
    if name in REQUIRED:
        check_dims(ds, name, str(file))
    return ds


def open_run(path: str | Path, *, require: Iterable[str] = ()) -> Run:
    """Open a run folder (``fsnn run`` or ``fsnn import-release`` output): the one reader.

    Args:
        path: the run folder.
        require: files the caller cannot do without (e.g. ``("results",)``): read and
            checked now, and their absence is the error instead of a None later.

    Raises:
        FsnnError: the folder does not exist or is not a directory, holds no fsnn file,
            lacks a required file, a required file is unreadable or not of its kind, or
            ``config.json`` is not JSON. Other files raise the same way when first used.
    """
    folder = Path(path)
    if not folder.exists():
        raise FsnnError(f"run folder not found: {folder}")
    if not folder.is_dir():
        raise FsnnError(f"not a run folder (not a directory): {folder}")
    files = {n: folder / f"{n}.nc" for n in RUN_FILES if (folder / f"{n}.nc").is_file()}
    config: dict[str, Any] = {}
    cfg_path = folder / "config.json"
    if cfg_path.exists():
        try:
            config = json.loads(cfg_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise FsnnError(
                f"{cfg_path} is not valid JSON (remove it, or rerun with --force-new)"
            ) from None
    run = Run(path=folder, config=config, files=files)
    for name in require:
        run.require(name)
    if not files:
        raise FsnnError(f"{folder} is not an fsnn run folder (no {'/'.join(RUN_FILES)} .nc file)")
    return run
