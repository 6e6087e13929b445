"""The SimpleQA experiment end to end (docs/method.md §2), as resumable stages over a run folder.

    baseline -> grade -> select failures -> enrichment + reference capture
             -> search per method -> final evaluation -> summary

The stages are plain functions in :mod:`fsnn.experiment.stages`; this module holds the run's
configuration and the run folder. A run folder is the unit of work. ``config.json`` (the
run's identity, the execution backend included) is written first; rerunning the same
command continues from the last finished batch/stage (greedy decoding and per-trial
seeded sampling make the final numbers equal to an uninterrupted run's); a folder made
with another config refuses to mix (``force_new`` starts it over). Every option is
checked when the :class:`RunConfig` is built, before any model loads. Files (schema in
:mod:`fsnn.store.schema`): ``baseline.nc``, ``references.nc``, ``optuna.db``, ``trials.nc``,
``results.nc``, ``summary.md``/``summary.json``. All writes are atomic.

This is the paper's *oracle* setting: the ground truth builds the reference and scores
the search, so the numbers bound what per-prompt activation control can do; they are
not a deployable QA accuracy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import xarray as xr

from fsnn.analysis.summary import summary_rows, summary_table
from fsnn.backends.base import resolve_backend
from fsnn.errors import FsnnError
from fsnn.store.files import atomic_write_text, remove_stale_temp_files
from fsnn.store.lock import LOCK_NAME, run_folder_lock

from .config import RunConfig  # re-exported: fsnn.experiment.pipeline.RunConfig is 0.2's path
from .simpleqa import load_simpleqa, select_questions, simpleqa_path
from .stages import (
    RunContext,
    baseline_stage,
    reference_stage,
    results_stage,
    search_stage,
    select_failures,
)

__all__ = ["RunConfig", "run_pipeline", "summary_rows", "summary_table"]


def _check_methods_fit(config: RunConfig, model: Any) -> None:
    """Layer ranges against the model's depth, before the folder: from the loaded model,
    else from a config.json already on disk (left to the load when there is none)."""
    from fsnn.models.load import model_depth
    from fsnn.steering.layout import SegmentLayout

    depth = model.n_layers if model is not None else model_depth(config.model)
    if depth is not None:
        for method in config.methods:
            SegmentLayout.named(method, depth)


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# Identity fields added after a folder may have been made, with the value every earlier
# run had: a folder that predates the field still matches when it ran that value.
_IDENTITY_ADDED = {"n_startup_trials": 10}


def _prepare_folder(out: Path, identity: dict[str, Any], force_new: bool) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".fsnn-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise FsnnError(f"cannot write to run folder {out}: {exc.strerror or exc}") from None
    cfg_path = out / "config.json"
    if cfg_path.exists():
        try:
            saved = json.loads(cfg_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):  # truncated or garbage bytes
            if not force_new:
                raise FsnnError(
                    f"{cfg_path} is not valid JSON; remove the folder or use --force-new"
                ) from None
            saved = None  # --force-new starts over, as the message says
        if isinstance(saved, dict):
            saved = {**_IDENTITY_ADDED, **saved}
        if saved != identity:
            if not force_new:
                diff = sorted(
                    k for k in set(saved) | set(identity) if saved.get(k) != identity.get(k)
                )
                raise FsnnError(
                    f"run folder {out} was made with another config (differs in: {', '.join(diff)}); "
                    "use another --out or --force-new to start it over"
                )
            for child in (c for c in out.iterdir() if c.name != LOCK_NAME):  # the held lock stays
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    atomic_write_text(cfg_path, json.dumps(identity, indent=2, sort_keys=True))


def run_pipeline(
    config: RunConfig,
    out: str | os.PathLike,
    *,
    simpleqa_csv: str | os.PathLike | None = None,
    model: Any = None,
    judge: Any = None,
    force_new: bool = False,
    progress: bool = True,
    shard: Any = None,
    pool: Any = None,
) -> xr.Dataset:
    """Run (or resume) the SimpleQA Fusion Steering experiment into run folder ``out``.

    Args:
        config: the run's settings.
        out: the run folder.
        simpleqa_csv: SimpleQA CSV path (else ``$FSNN_SIMPLEQA_CSV``, else download).
        model: an already loaded model to use instead of loading ``config.model``.
        judge: an already built judge to use instead of ``config.judge``.
        force_new: wipe a folder made with another config instead of refusing.
        progress: tqdm bars.
        shard: run only this part of the selected questions (``fsnn run --shard I/N``,
            :class:`fsnn.experiment.shards.Shard`; ``fsnn merge`` joins the parts).
        pool: run the model work on these workers (``fsnn run --workers N``,
            :class:`fsnn.experiment.workers.RayPool`) instead of a model here.

    Returns:
        ``results.nc`` as a Dataset (dims method, prompt).
    """
    out = Path(out)
    csv_path = simpleqa_path(simpleqa_csv)
    sha = _file_sha256(csv_path)
    questions = load_simpleqa(csv_path, on_bad=config.on_bad_rows)  # type: ignore[arg-type]
    first = config.limit if config.ids is None and config.stratified is None else None
    subset = select_questions(
        questions, first=first, ids=config.ids, stratified=config.stratified, seed=config.seed
    )
    # ---- issue 24 (fsnn.experiment.shards): --shard I/N keeps its part of the selection
    selected = subset
    if shard is not None:
        subset = shard.take(subset)
    # ---- end issue 24
    if (
        model is None and pool is None
    ):  # everything that names a model is checked before the folder or a load
        from fsnn.models.load import check_model_spec

        check_model_spec(config.model)
    if config.ppl_model is not None:
        from fsnn.models.load import check_model_spec

        check_model_spec(config.ppl_model)
    _check_methods_fit(config, model)
    identity = {**config.identity(), "simpleqa_sha256": sha}
    if (
        shard is not None
    ):  # issue 24: a shard's folder is its own identity (fsnn merge drops the field)
        identity["shard"] = str(shard)
    with run_folder_lock(out):  # one process per run folder (fsnn/lock.py)
        remove_stale_temp_files(out)  # left by a killed write; safe only under the lock
        _prepare_folder(out, identity, force_new)
        backend = resolve_backend(config.backend)
        if shard is not None:  # issue 24
            shard.write_manifest(out, subset, selected)
        if pool is not None:  # issue 24: the models live in the pool's workers
            model, judge = pool.start(config, out, sha)
        elif model is None:
            from fsnn.models.load import load_model

            if backend.remote_model:
                from fsnn.backends.ndif import preflight

                preflight(config.model)
            model = load_model(
                config.model,
                dtype=config.dtype,
                device=config.device,
                load_in_8bit=config.load_in_8bit,
                backend=backend,
            )
        if judge is None and config.judge is not None:
            from fsnn.judges import make_judge

            judge = make_judge(config.judge)
        ctx = RunContext(
            config=config,
            out=out,
            model=model,
            judge=judge,
            backend=backend,
            simpleqa_sha=sha,
            progress=progress,
            pool=pool,
        )
        started = time.perf_counter()
        baseline = baseline_stage(ctx, subset)
        failures = select_failures(subset, baseline, config.select)
        if not failures:
            raise FsnnError(
                f"no baseline failure to steer among {len(subset)} question(s) (select={config.select})"
                + (f"; shard {shard} is complete: fsnn merge takes its baseline" if shard else "")
            )
        refs = reference_stage(ctx, failures)
        trials = search_stage(ctx, refs)
        results = results_stage(ctx, baseline, refs, trials)
        table = summary_table(results)
        atomic_write_text(
            out / "summary.md",
            table + f"\n\nwall time this invocation: {time.perf_counter() - started:.1f} s\n",
        )
        atomic_write_text(out / "summary.json", json.dumps(summary_rows(results), indent=2))
        return results
