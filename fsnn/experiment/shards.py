"""Shards of a run without Ray: ``fsnn run --shard I/N`` and ``fsnn merge`` (docs/scaling.md).

``--shard I/N`` splits the selected questions by position: with ``n`` selected, shard
``I`` (0-based) runs positions ``[I*n//N, (I+1)*n//N)``, every stage on its own, into its
own folder. Its ``config.json`` is the single run's identity plus ``"shard": "I/N"`` (a
folder never mixes shards), and ``shard.json`` lists the SimpleQA ids it covers.

:func:`merge_runs` joins finished shard folders into the folder one process would have
made: the same ``config.json`` (no ``shard``), ``baseline.nc``, ``references.nc``,
``trials.nc`` and ``results.nc`` with the same dims and order (rows in selection order),
one ``optuna.db`` holding every study, and the summary. It refuses folders of different
configurations or models and overlapping prompts, and names the prompts still missing.
Each prompt's numbers are computed on its own (unpadded capture, norm-scale and
perplexity passes; greedy decoding; a seed per prompt and trial), so the merged files
equal a single run's (docs/scaling.md says where that stops: argmax near-ties).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from fsnn.analysis.summary import summary_rows, summary_table
from fsnn.errors import FsnnError
from fsnn.store.environment import env_path
from fsnn.store.files import (
    atomic_write,
    atomic_write_text,
    read_dataset,
    remove_stale_temp_files,
    write_dataset,
)
from fsnn.store.lock import LOCK_NAME, run_folder_lock

from .simpleqa import Question, load_simpleqa, select_questions, simpleqa_path

__all__ = ["SHARD_FILE", "MergeReport", "Shard", "merge_runs"]

SHARD_FILE = "shard.json"
# attrs of the model a folder ran (from the files' provenance): merged folders must agree
_MODEL_ATTRS = (
    "model",
    "model_revision",
    "model_type",
    "n_layers",
    "d_model",
    "quantization",
    "dtype",
    "remote",
    "backend",
    "judge",
    "mode",
)
_STAGE_FILES = ("baseline", "references", "trials", "results")


@dataclass(frozen=True)
class Shard:
    """Part ``index`` of ``count`` of the selected questions, by position.

    Attributes:
        index: 0-based part number, ``0 <= index < count``.
        count: number of parts.
    """

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise FsnnError(f"shard must be I/N with 0 <= I < N, got {self.index}/{self.count}")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"I/N"`` as a Shard (one-line FsnnError otherwise)."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if match is None:
            raise FsnnError(f"shard must be I/N (e.g. 0/4), got {text!r}")
        return cls(int(match[1]), int(match[2]))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def bounds(self, n: int) -> tuple[int, int]:
        """Positions ``[start, stop)`` of this shard among ``n`` selected questions."""
        return self.index * n // self.count, (self.index + 1) * n // self.count

    def take(self, selected: Sequence[Question]) -> list[Question]:
        """This shard's questions (raises when it is empty)."""
        start, stop = self.bounds(len(selected))
        if start == stop:
            raise FsnnError(
                f"shard {self} of {len(selected)} selected question(s) is empty; use at most "
                f"{len(selected)} shards"
            )
        return list(selected[start:stop])

    def write_manifest(
        self, out: Path, part: Sequence[Question], selected: Sequence[Question]
    ) -> None:
        """``shard.json``: which questions this folder covers (read by :func:`merge_runs`)."""
        start, stop = self.bounds(len(selected))
        manifest = {
            "shard": str(self),
            "index": self.index,
            "count": self.count,
            "selected": len(selected),
            "positions": [start, stop],
            "simpleqa_ids": [q.id for q in part],
        }
        atomic_write_text(Path(out) / SHARD_FILE, json.dumps(manifest, indent=1))


@dataclass(frozen=True)
class MergeReport:
    """What :func:`merge_runs` wrote.

    Attributes:
        out: the merged run folder.
        shards: the shard folders, in shard order.
        prompts: selected questions in the merged folder.
        steered: prompts of ``results.nc`` (0 when no shard had a baseline failure).
        files: the files written.
    """

    out: Path
    shards: tuple[Path, ...]
    prompts: int
    steered: int
    files: tuple[Path, ...]


@dataclass
class _Part:
    path: Path
    config: dict[str, Any]
    shard: Shard
    manifest: dict[str, Any]
    data: dict[str, xr.Dataset]


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise FsnnError(
            f"{path.parent} is not a shard folder of fsnn run --shard (no {path.name}); {what}"
        )
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise FsnnError(
            f"{path} is not valid JSON; rerun the shard's fsnn run command with --force-new"
        ) from None
    if not isinstance(value, dict):
        raise FsnnError(f"{path} is not an fsnn {path.name}")
    return value


def _read_part(folder: Path) -> _Part:
    if not folder.is_dir():
        raise FsnnError(f"run folder not found: {folder}")
    config = _read_json(folder / "config.json", "run fsnn run --shard I/N into it first")
    if "shard" not in config:
        raise FsnnError(
            f"{folder} is not a shard (its config.json has no shard field); merge the folders of "
            "fsnn run --shard I/N"
        )
    shard = Shard.parse(str(config["shard"]))
    manifest = _read_json(folder / SHARD_FILE, "rerun its fsnn run --shard command")
    data = {}
    for name in _STAGE_FILES:
        if (folder / f"{name}.nc").exists():
            data[name] = read_dataset(folder / f"{name}.nc", name if name != "baseline" else None)
    return _Part(path=folder, config=config, shard=shard, manifest=manifest, data=data)


def _check_same(parts: list[_Part]) -> None:
    """Same configuration and model everywhere (one line naming two folders and the fields)."""
    first = parts[0]
    base = {k: v for k, v in first.config.items() if k != "shard"}
    for part in parts[1:]:
        other = {k: v for k, v in part.config.items() if k != "shard"}
        diff = sorted(k for k in set(base) | set(other) if base.get(k) != other.get(k))
        if part.shard.count != first.shard.count:
            diff.append("shard count")
        if diff:
            raise FsnnError(
                f"cannot merge {first.path} and {part.path}: their configurations differ in: "
                f"{', '.join(diff)}"
            )
    for part in parts[1:]:
        for name in _STAGE_FILES:
            a, b = first.data.get(name), part.data.get(name)
            if a is None or b is None:
                continue
            diff = sorted(k for k in _MODEL_ATTRS if a.attrs.get(k) != b.attrs.get(k))
            if diff:
                raise FsnnError(
                    f"cannot merge {first.path} and {part.path}: their {name}.nc differ in model "
                    f"attribute(s): {', '.join(diff)}"
                )


def _check_cover(parts: list[_Part], simpleqa_csv: str | os.PathLike | None) -> None:
    """No prompt twice; every shard present and finished (else one line naming what is missing)."""
    seen: dict[int, Path] = {}
    by_index: dict[int, _Part] = {}
    for part in parts:
        if part.shard.index in by_index:
            raise FsnnError(
                f"cannot merge {by_index[part.shard.index].path} and {part.path}: both are shard "
                f"{part.shard} (overlapping prompts)"
            )
        by_index[part.shard.index] = part
        for sid in part.manifest.get("simpleqa_ids", []):
            if sid in seen:
                raise FsnnError(
                    f"cannot merge {seen[sid]} and {part.path}: both hold SimpleQA prompt {sid} "
                    "(overlapping prompts)"
                )
            seen[sid] = part.path
    count = parts[0].shard.count
    missing = [i for i in range(count) if i not in by_index]
    if missing:
        raise FsnnError(
            f"missing prompts: {_describe_missing(parts, missing, simpleqa_csv)}; run "
            f"{'that shard' if len(missing) == 1 else 'those shards'} (fsnn run --shard I/{count}), then "
            "merge again"
        )
    for part in parts:
        want = [int(i) for i in part.manifest.get("simpleqa_ids", [])]
        baseline = part.data.get("baseline")
        have = set(baseline.simpleqa_id.values.tolist()) if baseline is not None else set()
        lacking = [i for i in want if i not in have]
        if lacking:
            raise FsnnError(
                f"shard {part.shard} in {part.path} is not finished ({len(lacking)} of {len(want)} "
                f"baseline answer(s) missing, e.g. SimpleQA {_ids_text(lacking)}); rerun its fsnn run "
                "command, then merge again"
            )
        if "results" not in part.data and _n_selected(part) > 0:
            raise FsnnError(
                f"shard {part.shard} in {part.path} is not finished (no results.nc); rerun its fsnn run "
                "command, then merge again"
            )


def _n_selected(part: _Part) -> int:
    from .config import SELECTED_GRADES

    wanted = SELECTED_GRADES[part.config.get("select", "not-correct")]
    return int(np.isin(part.data["baseline"].grade.values.astype(str), wanted).sum())


def _ids_text(ids: Sequence[int], shown: int = 10) -> str:
    text = ", ".join(str(i) for i in ids[:shown])
    return text + (f" ... ({len(ids)} in all)" if len(ids) > shown else "")


def _describe_missing(
    parts: list[_Part], missing: list[int], simpleqa_csv: str | os.PathLike | None
) -> str:
    """The missing shards, their positions and, when the CSV is at hand, their SimpleQA ids."""
    count = parts[0].shard.count
    n = int(parts[0].manifest.get("selected", 0))
    spans = []
    for i in missing:
        start, stop = Shard(i, count).bounds(n)
        spans.append(f"shard {i}/{count} (positions {start}-{stop - 1} of {n})")
    ids = _missing_ids(parts, missing, simpleqa_csv)
    return "; ".join(spans) + (f": SimpleQA {_ids_text(ids)}" if ids else "")


def _missing_ids(
    parts: list[_Part], missing: list[int], simpleqa_csv: str | os.PathLike | None
) -> list[int]:
    """The SimpleQA ids of the missing shards, re-selected from the CSV when its sha matches."""
    with contextlib.suppress(FsnnError, OSError, KeyError, TypeError, ValueError):
        selected = _selected(parts[0].config, simpleqa_csv)
        if selected is not None:
            count = parts[0].shard.count
            return [q.id for i in missing for q in Shard(i, count).take(selected)]
    return []


def _selected(
    config: dict[str, Any], simpleqa_csv: str | os.PathLike | None
) -> list[Question] | None:
    """The run's selected questions, from its config.json and the CSV (None: no CSV at hand,
    never a download, or another CSV than the run's)."""
    if simpleqa_csv is None and env_path("FSNN_SIMPLEQA_CSV") is None:
        return None
    path = simpleqa_path(simpleqa_csv)
    if hashlib.sha256(path.read_bytes()).hexdigest() != config.get("simpleqa_sha256"):
        return None
    questions = load_simpleqa(path, on_bad=config.get("on_bad_rows", "error"))
    ids = tuple(config["ids"]) if config.get("ids") else None
    first = config.get("limit") if ids is None and config.get("stratified") is None else None
    return select_questions(
        questions,
        first=first,
        ids=ids,
        stratified=config.get("stratified"),
        seed=config.get("seed", 0),
    )


def _concat(parts: Sequence[xr.Dataset]) -> xr.Dataset:
    """Rows of the shards in order, ``prompt`` renumbered as one run numbers them."""
    try:
        ds = (
            xr.concat(
                list(parts),
                dim="prompt",
                data_vars="minimal",
                coords="minimal",
                compat="equals",
                join="exact",
                combine_attrs="override",
            )
            if len(parts) > 1
            else parts[0]
        )
    except (
        ValueError
    ) as exc:  # other methods, segments, layers...: a config difference missed above
        raise FsnnError(
            f"cannot merge the shards: their files differ beyond the prompts ({exc})"
        ) from None
    return ds.assign_coords(prompt=np.arange(ds.sizes["prompt"])) if "prompt" in ds.indexes else ds


def _merge_optuna(sources: Sequence[Path], target: Path) -> None:
    """Every study of the shards' ``optuna.db`` into one new ``optuna.db`` (atomic)."""
    import optuna

    from fsnn.search.run import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def write(tmp: Path) -> None:
        tmp.unlink()  # an empty file is not an SQLite database: let Optuna create it
        dst = open_storage(f"sqlite:///{tmp}")
        names: dict[str, Path] = {}
        try:
            for src_path in sources:
                src = open_storage(f"sqlite:///{src_path}", "rerun that shard's fsnn run command")
                try:
                    for summary in optuna.get_all_study_summaries(src, include_best_trial=False):
                        if summary.study_name in names:
                            raise FsnnError(
                                f"cannot merge {names[summary.study_name].parent} and "
                                f"{src_path.parent}: both hold the Optuna study {summary.study_name!r} "
                                "(overlapping prompts)"
                            )
                        names[summary.study_name] = src_path
                        optuna.copy_study(
                            from_study_name=summary.study_name, from_storage=src, to_storage=dst
                        )
                finally:
                    src.engine.dispose()
        finally:
            dst.engine.dispose()

    atomic_write(target, write)


def _prepare_out(out: Path, identity: dict[str, Any], force_new: bool) -> None:
    cfg = out / "config.json"
    if cfg.exists():
        try:
            saved = json.loads(cfg.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            saved = None
        if saved != identity:
            if not force_new:
                raise FsnnError(
                    f"run folder {out} was made with another config; use another --out or --force-new"
                )
    if force_new and out.exists():
        for child in (c for c in out.iterdir() if c.name != LOCK_NAME):
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    atomic_write_text(cfg, json.dumps(identity, indent=2, sort_keys=True))


def merge_runs(
    folders: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    simpleqa_csv: str | os.PathLike | None = None,
    force_new: bool = False,
) -> MergeReport:
    """Join the shard folders of ``fsnn run --shard I/N`` into the folder of a single run.

    Args:
        folders: every shard folder of one run (any order).
        out: the merged run folder (new, or one an earlier merge of the same run made).
        simpleqa_csv: the SimpleQA CSV, only to name the ids of missing prompts
            (default ``$FSNN_SIMPLEQA_CSV``).
        force_new: wipe ``out`` when it holds another run.

    Raises:
        FsnnError: one line: a folder that is not a finished shard, folders of different
            configurations or models (naming both and the fields), overlapping prompts,
            missing shards (naming their positions and, with the CSV, their ids).
    """
    paths = [Path(f) for f in folders]
    if not paths:
        raise FsnnError("nothing to merge: name the shard folders")
    out = Path(out)
    if out.resolve() in {p.resolve() for p in paths}:
        raise FsnnError(f"--out {out} is one of the shard folders; merge into a new folder")
    with contextlib.ExitStack() as stack:
        for path in paths:  # no shard is written while it is read
            if path.is_dir():
                stack.enter_context(run_folder_lock(path))
        parts = [_read_part(p) for p in paths]
        _check_same(parts)
        _check_cover(parts, simpleqa_csv)
        parts.sort(key=lambda p: p.shard.index)
        identity = {k: v for k, v in parts[0].config.items() if k != "shard"}
        stack.enter_context(run_folder_lock(out))
        remove_stale_temp_files(out)
        _prepare_out(out, identity, force_new)
        written = []
        datasets = {}
        for name in _STAGE_FILES:
            present = [p.data[name] for p in parts if name in p.data]
            if not present:
                continue
            ds = _concat(present)
            if name == "results":
                ds.attrs["prompts_without_finished_trial"] = int(
                    sum(int(p.attrs.get("prompts_without_finished_trial", 0)) for p in present)
                )
            datasets[name] = ds
            written.append(write_dataset(ds, out / f"{name}.nc"))
        dbs = [p.path / "optuna.db" for p in parts if (p.path / "optuna.db").exists()]
        if dbs:
            _merge_optuna(dbs, out / "optuna.db")
            written.append(out / "optuna.db")
        results = datasets.get("results")
        if results is not None:
            table = summary_table(results)
            written.append(
                atomic_write_text(
                    out / "summary.md",
                    table + f"\n\nmerged from {len(parts)} shard folders by fsnn merge\n",
                )
            )
            written.append(
                atomic_write_text(out / "summary.json", json.dumps(summary_rows(results), indent=2))
            )
        baseline = datasets["baseline"]
        return MergeReport(
            out=out,
            shards=tuple(p.path for p in parts),
            prompts=baseline.sizes["prompt"],
            steered=0 if results is None else results.sizes["prompt"],
            files=tuple(written),
        )
