"""Labeled result files: one schema, atomic writes, provenance on every file.

Dimension vocabulary (shared by tensors, datasets and files): ``prompt``, ``layer``,
``hidden``, ``segment``, ``trial``, ``method``, ``param``, ``token``.

Files of a run folder (all netCDF4, written atomically: temp file + rename):

``references.nc``
    ``h`` (prompt, layer, hidden) float32 — eq. (1) reference vectors;
    ``span_length`` (prompt) int — tokens averaged; ``explanation``,
    ``reference_text``, ``enrichment_raw`` (prompt) str; coords ``question``,
    ``answer``, ``simpleqa_id`` on ``prompt``.

``trials.nc``
    dims (method, prompt, trial): ``alpha``/``gamma`` (method, prompt, trial, segment),
    ``token_overlap``, ``perplexity``, ``objective`` (S_opt), ``completion``,
    ``text`` (decoded prompt + completion), ``is_best`` (int 0/1).

``results.nc``
    dims (method, prompt), ``method`` values ``baseline``, ``full``, ``segmented`` (+
    custom spec names). Variables: ``completion`` (str, generated text only), ``text``
    (str, prompt + completion as the release scored it), ``token_overlap``,
    ``perplexity``, ``objective``, ``judge_score`` (1-5, NaN = not graded),
    ``simpleqa_grade`` (``CORRECT``/``INCORRECT``/``NOT_ATTEMPTED``, "" = not graded),
    ``composite`` (S_eval, NaN when no judge score), ``alpha``/``gamma`` (method, prompt,
    segment; NaN for baseline). Coords on ``prompt``: ``question``, ``answer``, ``topic``,
    ``simpleqa_id``. Optional: ``baseline_grade`` (our runs: the grade that selected the
    prompt); ``token_overlap_completion``, ``token_overlap_released``, ``judge_notes``,
    ``explanation``, ``answer_simpleqa`` (the imported release, :mod:`fsnn.release`).

``baseline.nc`` (our runs)
    dim ``prompt`` over every question answered: ``completion``, ``text``, ``grade``,
    ``grade_source`` (judge id or ``proxy:containment``), ``token_overlap``.

Attributes on every file: ``fsnn_schema`` (file kind and version), ``config`` (the run
config as JSON), ``model``, ``model_revision``, ``quantization``, ``mode``, package
versions, ``git_sha`` when available, ``created``. Secrets never enter a file: configs
hold the *name* of an environment variable, never its value.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .errors import FsnnError

__all__ = [
    "SCHEMA_VERSION",
    "check_dims",
    "package_versions",
    "provenance",
    "read_dataset",
    "write_dataset",
]

SCHEMA_VERSION = 1

# Variables each file kind must hold with exactly these dims (checked on read).
REQUIRED: dict[str, dict[str, tuple[str, ...]]] = {
    "results": {
        "token_overlap": ("method", "prompt"),
        "completion": ("method", "prompt"),
        "judge_score": ("method", "prompt"),
        "simpleqa_grade": ("method", "prompt"),
        "composite": ("method", "prompt"),
    },
    "trials": {"objective": ("method", "prompt", "trial")},
    "references": {"h": ("prompt", "layer", "hidden")},
}


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


def write_dataset(ds: xr.Dataset, path: str | Path) -> Path:
    """Write ``ds`` to netCDF4 atomically (temp file in the same folder, then rename).

    A crash mid-write leaves the previous file (or none) in place, never half a file.

    Raises:
        FsnnError: the folder cannot be created or written.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise FsnnError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        ds = ds.copy()
        for name, var in {**ds.data_vars, **ds.coords}.items():
            if var.dtype.kind == "U":
                ds[name] = var.astype(object)
        ds.attrs = {k: _attr(v) for k, v in ds.attrs.items()}
        ds.to_netcdf(tmp, engine="netcdf4", encoding=_encoding(ds))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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


def str_array(values: Any) -> np.ndarray:
    """An object array of Python str (netCDF variable-length strings); None -> ""."""
    arr = np.asarray(values, dtype=object)
    flat = arr.reshape(-1)
    for i, v in enumerate(flat):
        flat[i] = "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
    return arr
