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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import xarray as xr

from fsnn.backends.base import BACKENDS, resolve_backend
from fsnn.errors import FsnnError
from fsnn.store.lock import LOCK_NAME, run_folder_lock
from fsnn.judges.metrics import ObjectiveConfig
from fsnn.search.run import SearchConfig
from .simpleqa import load_simpleqa, select_questions, simpleqa_path
from .stages import SELECTED_GRADES, RunContext, baseline_stage, reference_stage, results_stage, search_stage, select_failures
from fsnn.store.files import atomic_write_text, remove_stale_temp_files
from fsnn.analysis.summary import summary_rows, summary_table

__all__ = ["RunConfig", "config_from_args", "run_pipeline", "summary_rows", "summary_table"]

_SEARCH_DEFAULTS = SearchConfig()



@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything that decides a run's numbers (saved as ``config.json`` and in attrs).

    Attributes:
        model: model spec (alias, path, hub id).
        load_in_8bit, dtype, device: loading options (paper: 8-bit, fp16).
        limit: the first N SimpleQA rows (paper 500); ``ids``/``stratified`` instead.
        ids: explicit SimpleQA row ids.
        stratified: N rows sampled per topic (seeded by ``seed``).
        seed: subset sampling and search seed.
        methods: layouts to search: ``full``, ``segmented``, ``NAME=0-3,8-11``.
        n_trials, batch_trials, batch_rows, sampler, parametrization, start_trials,
            n_startup_trials, unreadable_penalty: the search
            (:class:`fsnn.search.run.SearchConfig`).
        mode: ``faithful`` (parity) or ``cached``.
        max_new_tokens: baseline, enrichment and steered generation (paper 100).
        baseline_prompt: ``qa`` (``Question: {q}\\nAnswer:``) or ``bare`` (the question).
        chat_template: wrap prompts in the tokenizer's chat template (paper: off).
        select: which baseline grades are steered: ``incorrect`` (paper) or
            ``not-correct`` (INCORRECT and NOT_ATTEMPTED).
        score_on: TO/PPL on the ``full`` decoded text (parity) or the ``completion``.
        judge: judge spec (``local:MODEL``, ``http:MODEL@URL``) or None (offline proxy
            for the baseline grade; judge variables left missing).
        judge_missing: composite with a missing judge score: ``zero`` (release) or
            ``exclude``.
        ppl_model: perplexity scorer spec; None = the unsteered base model (offline);
            ``gpt2`` for paper parity when the hub is reachable.
        on_bad_rows: ``error`` or ``skip`` bad SimpleQA rows.
        backend: where traces run: ``local``; ``ndif`` (model built on the meta
            device; needs ``NDIF_API_KEY`` and a local ``ppl_model``); or ``serialised``
            (every trace serialised as for NDIF and run here, the test of the remote
            path). Part of the folder's identity. See docs/ndif.md.
    """

    model: str = "smollm2-135m"
    load_in_8bit: bool = False
    dtype: str = "float32"
    device: str = "cpu"
    limit: int | None = 500
    ids: tuple[int, ...] | None = None
    stratified: int | None = None
    seed: int = 0
    methods: tuple[str, ...] = ("full", "segmented")
    # the search's defaults are SearchConfig's (one place; docs/strength_study.md says why)
    n_trials: int = _SEARCH_DEFAULTS.n_trials
    batch_trials: int = _SEARCH_DEFAULTS.batch_trials
    batch_rows: int = _SEARCH_DEFAULTS.batch_rows
    sampler: str = _SEARCH_DEFAULTS.sampler
    parametrization: str = _SEARCH_DEFAULTS.parametrization
    start_trials: int = _SEARCH_DEFAULTS.start_trials
    n_startup_trials: int = _SEARCH_DEFAULTS.n_startup_trials
    unreadable_penalty: float = _SEARCH_DEFAULTS.unreadable_penalty
    mode: str = "faithful"
    max_new_tokens: int = 100
    baseline_prompt: str = "qa"
    chat_template: bool = False
    select: str = "not-correct"
    score_on: str = "full"
    judge: str | None = None
    judge_missing: str = "zero"
    ppl_model: str | None = None
    on_bad_rows: str = "error"
    backend: str = "local"
    batch_size: int = 8
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)

    def __post_init__(self) -> None:
        from fsnn.steering.layout import SegmentLayout

        if self.mode not in ("faithful", "cached"):
            raise FsnnError(f"mode must be faithful or cached, got {self.mode!r}")
        if self.select not in SELECTED_GRADES:
            raise FsnnError(f"select must be incorrect or not-correct, got {self.select!r}")
        if self.baseline_prompt not in ("qa", "bare"):
            raise FsnnError(f"baseline_prompt must be qa or bare, got {self.baseline_prompt!r}")
        if not self.methods:
            raise FsnnError("no method to search")
        if self.max_new_tokens < 1:
            raise FsnnError("max_new_tokens must be >= 1")
        if self.judge_missing not in ("zero", "exclude"):
            raise FsnnError("judge_missing must be zero or exclude")
        if self.backend not in BACKENDS:
            raise FsnnError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.backend == "ndif" and self.ppl_model is None:
            raise FsnnError("an NDIF run needs a local perplexity scorer: set ppl_model (e.g. gpt2 or smollm2-135m)")
        if self.backend != "local" and self.load_in_8bit:
            raise FsnnError("8-bit loading is a local option; NDIF serves its own precision")
        if self.score_on not in ("full", "completion"):
            raise FsnnError(f"score_on must be full or completion, got {self.score_on!r}")
        from fsnn.models.load import DTYPES

        if self.dtype not in DTYPES:
            raise FsnnError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        _check_device(self.device)
        for name in ("limit", "stratified"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise FsnnError(f"{name} must be >= 1, got {value}")
        if self.ids is not None and (not self.ids or min(self.ids) < 0):
            raise FsnnError("ids must be a non-empty list of SimpleQA row numbers >= 0")
        if self.batch_size < 1:
            raise FsnnError(f"batch_size must be >= 1, got {self.batch_size}")
        for method in self.methods:  # names and ranges; ranges vs depth are checked once loaded
            SegmentLayout.named(method, 10**6)
        if self.judge is not None:
            from fsnn.judges import check_judge_spec

            check_judge_spec(self.judge)  # the spec, its model and key variable; loads nothing
        self.search_config()  # validates n_trials, ranges, sampler

    def search_config(self) -> SearchConfig:
        return SearchConfig(
            n_trials=self.n_trials, batch_trials=self.batch_trials, batch_rows=self.batch_rows,
            sampler=self.sampler, parametrization=self.parametrization, seed=self.seed,
            start_trials=self.start_trials, n_startup_trials=self.n_startup_trials,
            unreadable_penalty=self.unreadable_penalty,
            score_on=self.score_on, objective=self.objective,
        )

    def identity(self) -> dict[str, Any]:
        """The fields that must match for a run folder to be continued."""
        data = asdict(self)
        data.pop("batch_rows")  # batching changes speed, not numbers
        data.pop("batch_size")
        data.pop("device")
        return json.loads(json.dumps(data, default=list))


def _check_device(device: str) -> None:
    """A torch device this machine has (checked before any model loads)."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise FsnnError(f"unknown device {device!r} (use cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FsnnError(f"device {device!r} asked for, but this machine has no CUDA device (use --device cpu)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise FsnnError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise FsnnError("device 'mps' asked for, but MPS is not available here")


def _check_methods_fit(config: RunConfig, model: Any) -> None:
    """Layer ranges against the model's depth, before the folder: from the loaded model,
    else from a config.json already on disk (left to the load when there is none)."""
    from fsnn.steering.layout import SegmentLayout
    from fsnn.models.load import model_depth

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
                raise FsnnError(f"{cfg_path} is not valid JSON; remove the folder or use --force-new") from None
            saved = None  # --force-new starts over, as the message says
        if isinstance(saved, dict):
            saved = {**_IDENTITY_ADDED, **saved}
        if saved != identity:
            if not force_new:
                diff = sorted(k for k in set(saved) | set(identity) if saved.get(k) != identity.get(k))
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
    subset = select_questions(questions, first=first, ids=config.ids, stratified=config.stratified, seed=config.seed)
    # ---- issue 24 (fsnn.experiment.shards): --shard I/N keeps its part of the selection
    selected = subset
    if shard is not None:
        subset = shard.take(subset)
    # ---- end issue 24
    if model is None and pool is None:  # everything that names a model is checked before the folder or a load
        from fsnn.models.load import check_model_spec

        check_model_spec(config.model)
    if config.ppl_model is not None:
        from fsnn.models.load import check_model_spec

        check_model_spec(config.ppl_model)
    _check_methods_fit(config, model)
    identity = {**config.identity(), "simpleqa_sha256": sha}
    if shard is not None:  # issue 24: a shard's folder is its own identity (fsnn merge drops the field)
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
            model = load_model(config.model, dtype=config.dtype, device=config.device, load_in_8bit=config.load_in_8bit,
                               remote=backend.remote_model)
        if judge is None and config.judge is not None:
            from fsnn.judges import make_judge

            judge = make_judge(config.judge)
        ctx = RunContext(config=config, out=out, model=model, judge=judge, backend=backend, simpleqa_sha=sha,
                         progress=progress, pool=pool)
        started = time.perf_counter()
        baseline = baseline_stage(ctx, subset)
        failures = select_failures(subset, baseline, config.select)
        if not failures:
            raise FsnnError(f"no baseline failure to steer among {len(subset)} question(s) (select={config.select})"
                            + (f"; shard {shard} is complete: fsnn merge takes its baseline" if shard else ""))
        refs = reference_stage(ctx, failures)
        trials = search_stage(ctx, refs)
        results = results_stage(ctx, baseline, refs, trials)
        table = summary_table(results)
        atomic_write_text(out / "summary.md", table + f"\n\nwall time this invocation: {time.perf_counter() - started:.1f} s\n")
        atomic_write_text(out / "summary.json", json.dumps(summary_rows(results), indent=2))
        return results


def config_from_args(**kwargs: Any) -> RunConfig:
    """A RunConfig from CLI keyword arguments (None means: keep the default)."""
    base = RunConfig()
    return replace(base, **{k: v for k, v in kwargs.items() if v is not None})
