"""``fsnn run --workers N`` on Ray: N actors, one model each, one driver writing the folder.

The driver (the ``fsnn run`` process) holds the run folder's lock and is the only
process that writes to it. It starts a local Ray cluster in-process (or joins one,
``--ray-address``), starts N :class:`Worker` actors (one model on one device: one GPU
each when the run's device is CUDA, else one CPU with one torch thread), and hands
them work through Ray's :class:`ray.util.ActorPool`:

- baseline and references: the single run's batches (``batch_size`` questions, the
  same batches in the same composition), checkpointed by the driver as each returns;
- the search: chunks of prompts (``batch_rows // batch_trials`` each, so a round of a
  chunk is one steered generate). A worker searches its chunk in an in-memory Optuna
  storage seeded with the chunk's trials already in ``optuna.db`` and returns every
  trial; the driver writes them into ``optuna.db`` (the only writer: no shared file
  system, database server or lock across machines is needed, and a resumed run or a
  single-process rerun reads the same file);
- the final scoring: the same chunks, each row scored on its own.

Every task is a pure function of its inputs, so Ray may rerun it: an actor process that
dies (SIGKILL, OOM) is restarted and its task retried (``max_restarts``,
``max_task_retries``); the driver receives one result per task and writes by key, so
nothing is lost or written twice. A killed driver resumes from the folder on the next
identical command, as a single run does. A worker that cannot load the model is one
``FsnnError`` line. Results equal a single run's: see docs/scaling.md.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from fsnn.errors import FsnnError

from .simpleqa import Question
from .stages import RunContext, baseline_batch, reference_batch, score_results, search_methods

__all__ = ["RayPool", "Worker", "WorkerJudge", "WorkerModel"]

RAY_MISSING = "--workers needs Ray: pip install 'fsnn[ray]' (or pip install 'ray[default]')"


def _first_line(exc: BaseException) -> str:
    if isinstance(exc, FsnnError):
        return str(exc)
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


# ----------------------------------------------------------------------------- the actor


class Worker:
    """One Ray actor: one model on one device, doing the stages' model work for the driver.

    Built by Ray (``ray.remote(Worker)``) in its own process; a failed load is kept and
    reported by :meth:`info`, so the driver stops with one line instead of a restart loop.
    """

    def __init__(self, config: Any, out: str, simpleqa_sha: str, device: str, threads: int | None):
        self.error: str | None = None
        self.ctx: RunContext | None = None
        try:
            import torch

            if threads is not None:
                torch.set_num_threads(threads)
            from fsnn.backends.base import resolve_backend
            from fsnn.models.load import load_model

            model = load_model(
                config.model, dtype=config.dtype, device=device, load_in_8bit=config.load_in_8bit
            )
            judge = None
            if config.judge is not None:
                from fsnn.judges import make_judge

                judge = make_judge(config.judge)
            self.ctx = RunContext(
                config=config,
                out=Path(out),
                model=model,
                judge=judge,
                backend=resolve_backend(config.backend),
                simpleqa_sha=simpleqa_sha,
                progress=False,
            )
        except Exception as exc:  # noqa: BLE001 - any load failure is reported as one line
            self.error = _first_line(exc)

    def info(self) -> dict[str, Any]:
        """The loaded model's description (or the load error), pid and node."""
        where = {"pid": os.getpid(), "node": socket.gethostname()}
        if self.ctx is None:
            return {**where, "error": self.error or "no model"}
        model = self.ctx.model
        tokenizer = model.tokenizer if self.ctx.config.chat_template else None
        return {
            **where,
            "describe": model.describe(),
            "name": model.name,
            "n_layers": model.n_layers,
            "tokenizer": tokenizer,
            "judge": None if self.ctx.judge is None else self.ctx.judge.id,
        }

    def _loaded(self) -> RunContext:
        """The loaded model's context; the load error as one FsnnError line if it failed.

        The driver checks :meth:`info` before it hands out work, so this only fails for
        an actor that Ray restarted and that could not load the model again.
        """
        if self.ctx is None:
            raise FsnnError(self.error or "the worker has no model")
        return self.ctx

    def baseline(self, batch: list[Question]) -> xr.Dataset:
        return baseline_batch(self._loaded(), batch)

    def references(self, batch: list[Question]) -> xr.Dataset:
        return reference_batch(self._loaded(), batch)

    def search(
        self,
        chunk: int,
        items: list[Any],
        layouts: list[Any],
        prior: dict[str, list[Any]],
        progress: Any,
    ) -> tuple[int, list[xr.Dataset], dict[str, list[Any]]]:
        """Every method's search of ``items`` from the trials in ``prior``; all trials returned."""
        import optuna

        ctx = self._loaded()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = optuna.storages.InMemoryStorage()
        for name, seeded in prior.items():
            optuna.create_study(study_name=name, storage=storage, direction="maximize").add_trials(
                seeded
            )
        n_trials = ctx.config.search.n_trials

        def report() -> None:
            done = sum(
                min(
                    n_trials,
                    len(
                        storage.get_all_trials(
                            s._study_id, deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)
                        )
                    ),
                )
                for s in storage.get_all_studies()
            )
            with contextlib.suppress(Exception):  # progress is advisory
                progress.put_nowait((chunk, done))

        per_method = search_methods(ctx, items, layouts, storage, on_round=report)
        trials: dict[str, list[Any]] = {
            s.study_name: storage.get_all_trials(s._study_id, deepcopy=False)
            for s in storage.get_all_studies()
        }
        return chunk, per_method, trials

    def results(
        self, chunk: int, baseline: xr.Dataset, refs: xr.Dataset, trials: xr.Dataset
    ) -> tuple[int, xr.Dataset]:
        return chunk, score_results(self._loaded(), baseline, refs, trials)


# ----------------------------------------------------------------------------- driver side


@dataclass(frozen=True)
class WorkerModel:
    """What the driver knows of the workers' model (for provenance, layouts, chat prompts)."""

    name: str
    n_layers: int
    tokenizer: Any
    info: dict[str, Any]

    def describe(self) -> dict[str, Any]:
        return dict(self.info)


@dataclass(frozen=True)
class WorkerJudge:
    """The workers' judge, by id (provenance)."""

    id: str


@dataclass
class RayPool:
    """The Ray workers of one ``fsnn run --workers N`` (a context manager: closed on exit).

    Attributes:
        workers: actors, one model each.
        address: a Ray cluster to join (``ray start --head`` address); None starts a local
            cluster in this process, stopped on exit.
        max_restarts: restarts of a dead actor (and retries of its task) before the run
            stops with one line (the finished work is saved; rerun to resume).
        ready_timeout: seconds to wait for every worker to have loaded its model.
        progress: tqdm bars.
    """

    workers: int
    address: str | None = None
    max_restarts: int = 4
    ready_timeout: float = 1800.0
    progress: bool = True
    actors: list[Any] = field(default_factory=list, init=False, repr=False)
    pids: list[int] = field(default_factory=list, init=False, repr=False)
    _started_ray: bool = field(default=False, init=False, repr=False)
    _queue: Any = field(default=None, init=False, repr=False)
    _config: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise FsnnError(f"--workers must be >= 1, got {self.workers}")

    def __enter__(self) -> RayPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- start and stop

    def start(
        self, config: Any, out: Path, simpleqa_sha: str
    ) -> tuple[WorkerModel, WorkerJudge | None]:
        """Start Ray and the workers; wait until each has loaded the model.

        Returns:
            The model's description and the judge as the driver's stages use them.

        Raises:
            FsnnError: Ray missing, a cluster without the resources, a worker that cannot
                load the model or is not ready in time (one line each).
        """
        try:
            import ray
        except ImportError:
            raise FsnnError(RAY_MISSING) from None
        if config.backend == "ndif":
            raise FsnnError(
                "--workers runs local models; an NDIF run already runs remotely (drop --workers)"
            )
        self._config = config
        gpu = config.device.startswith("cuda")
        self._init_ray(ray)
        need = "GPU" if gpu else "CPU"
        have = int(ray.cluster_resources().get(need, 0))
        if have < self.workers:
            raise FsnnError(
                f"the Ray cluster{'' if self.address is None else ' at ' + self.address} has {have} "
                f"{need}(s); --workers {self.workers} needs {self.workers} (one {need} per worker)"
            )
        options = dict(num_gpus=1, num_cpus=1) if gpu else dict(num_cpus=1)
        remote = ray.remote(Worker).options(
            max_restarts=self.max_restarts, max_task_retries=self.max_restarts, **options
        )
        device, threads = ("cuda", None) if gpu else (config.device, 1)
        self.actors = [
            remote.remote(config, str(out), simpleqa_sha, device, threads)
            for _ in range(self.workers)
        ]
        refs = [a.info.remote() for a in self.actors]
        _, waiting = ray.wait(refs, num_returns=len(refs), timeout=self.ready_timeout)
        if waiting:
            raise FsnnError(
                f"{len(waiting)} of {self.workers} Ray worker(s) not ready after {self.ready_timeout:.0f} s "
                f"(loading {config.model}; is the cluster busy?)"
            )
        with self._errors("loading the model"):
            infos = ray.get(refs)
        for i, info in enumerate(infos):
            if "error" in info:
                raise FsnnError(
                    f"worker {i} on {info['node']} cannot load model {config.model}: {info['error']}"
                )
        self.pids = [int(info["pid"]) for info in infos]
        first = {k: v for k, v in infos[0]["describe"].items() if k != "model_source"}
        for i, info in enumerate(infos[1:], start=1):
            other = {k: v for k, v in info["describe"].items() if k != "model_source"}
            if other != first:
                diff = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
                raise FsnnError(
                    f"workers 0 and {i} loaded different models (differ in: {', '.join(diff)})"
                )
        from ray.util.queue import Queue

        self._queue = Queue(actor_options={"num_cpus": 0})
        info = infos[0]
        model = WorkerModel(
            name=info["name"],
            n_layers=int(info["n_layers"]),
            tokenizer=info["tokenizer"],
            info=info["describe"],
        )
        return model, (WorkerJudge(info["judge"]) if info["judge"] is not None else None)

    def _init_ray(self, ray: Any) -> None:
        kwargs: dict[str, Any] = dict(
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
            configure_logging=True,
        )
        if ray.is_initialized():
            return
        try:
            if self.address is None:  # a new local cluster, never one a `ray start` left running
                ray.init(address="local", num_cpus=max(os.cpu_count() or 1, self.workers), **kwargs)
                self._started_ray = True
            else:
                _check_reachable(self.address)  # ray.init retries an absent head for minutes
                ray.init(address=self.address, **kwargs)
                self._started_ray = True  # our connection: ray.shutdown() disconnects only
        except FsnnError:
            raise
        except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError, ValueError...
            where = (
                "start a local Ray cluster"
                if self.address is None
                else f"join the Ray cluster at {self.address}"
            )
            raise FsnnError(f"cannot {where}: {_first_line(exc)}") from None

    def close(self) -> None:
        """Stop the workers and the Ray connection (and the local cluster this pool started)."""
        if not self._started_ray:
            return
        import ray

        for actor in self.actors:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        self.actors = []
        with contextlib.suppress(Exception):
            ray.shutdown()
        self._started_ray = False

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Ray's errors as one FsnnError line (a worker's FsnnError passes unchanged)."""
        import ray.exceptions as rex

        try:
            yield
        except rex.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, FsnnError):
                raise FsnnError(str(cause)) from None
            raise FsnnError(
                f"a worker failed in {what}: {_first_line(cause or exc)}; finished work is saved, "
                "rerun the same command to resume"
            ) from None
        except rex.RayActorError as exc:
            raise FsnnError(
                f"a worker died in {what} and Ray gave up after {self.max_restarts} restart(s) "
                f"({_first_line(exc)}); finished work is saved, rerun the same command to resume"
            ) from None
        except rex.RayError as exc:
            raise FsnnError(
                f"Ray failed in {what}: {_first_line(exc)}; finished work is saved, rerun the same "
                "command to resume"
            ) from None

    def _run_all(
        self,
        method: str,
        jobs: Sequence[tuple[Any, ...]],
        what: str,
        on_wait: Callable[[], None] | None = None,
    ) -> Iterator[Any]:
        """Each job on an idle worker (Ray's ActorPool); results as they finish."""
        from ray.util import ActorPool

        pool = ActorPool(self.actors)

        def submit(actor: Any, job: tuple[Any, ...]) -> Any:
            self._submitted(method, actor, job)
            return getattr(actor, method).remote(*job)

        for job in jobs:
            pool.submit(submit, job)
        while pool.has_next():
            with self._errors(what):
                try:
                    result = pool.get_next_unordered(timeout=0.5 if on_wait is not None else None)
                except TimeoutError:
                    on_wait()  # type: ignore[misc]
                    continue
            yield result

    def _submitted(self, method: str, actor: Any, job: tuple[Any, ...]) -> None:
        """Called as each task is handed to a worker (a hook for the fault tests)."""

    def _reported(self, chunk: int, trials: int) -> None:
        """Called as a search chunk reports its finished trials (a hook for the fault tests)."""

    # -- the stages' work

    def map_batches(self, kind: str) -> Callable[[list[list[Question]]], Iterator[xr.Dataset]]:
        """Run ``kind``'s batches (``baseline``, ``references``) on the workers, results as they finish."""
        what = {"baseline": "a baseline batch", "references": "an enrichment+capture batch"}[kind]
        return lambda batches: self._run_all(kind, [(b,) for b in batches], what)

    def _chunks(self, n: int) -> list[slice]:
        c = self._config
        per = max(1, min(c.batch_rows // max(1, c.batch_trials), math.ceil(n / self.workers)))
        return [slice(start, min(n, start + per)) for start in range(0, n, per)]

    def search(
        self, items: Sequence[Any], layouts: Sequence[Any], storage: Any
    ) -> list[xr.Dataset]:
        """Every method's search of ``items``, in chunks on the workers; trials into ``storage``."""
        import optuna

        n_trials = self._config.search.n_trials
        chunks = self._chunks(len(items))
        jobs, done = [], {}
        for i, part in enumerate(chunks):
            prior = {}
            for layout in layouts:
                for item in items[part]:
                    trials = _stored_trials(storage, f"{layout.name}/{item.key}")
                    if trials:
                        prior[f"{layout.name}/{item.key}"] = trials
            done[i] = sum(
                min(n_trials, sum(t.state == optuna.trial.TrialState.COMPLETE for t in ts))
                for ts in prior.values()
            )
            jobs.append((i, list(items[part]), list(layouts), prior, self._queue))
        bar = tqdm(
            total=len(items) * n_trials * len(layouts),
            initial=sum(done.values()),
            disable=not self.progress,
            desc=f"search {'+'.join(layout.name for layout in layouts)} ({self.workers} workers)",
            unit="trial",
        )

        finished: set[int] = set()

        def drain() -> None:
            with contextlib.suppress(Exception):
                for chunk, count in self._queue.get_nowait_batch(self._queue.qsize()):
                    if chunk not in finished:  # a late report of a finished chunk is stale
                        done[chunk] = count
                        self._reported(chunk, count)
            bar.n = sum(done.values())
            bar.refresh()

        per_chunk: dict[int, list[xr.Dataset]] = {}
        for chunk, per_method, trials in self._run_all(
            "search", jobs, "a search chunk", on_wait=drain
        ):
            for name, study_trials in trials.items():
                _store_trials(storage, name, study_trials)
            per_chunk[chunk] = per_method
            finished.add(chunk)
            done[chunk] = sum(
                min(n_trials, sum(t.state == optuna.trial.TrialState.COMPLETE for t in ts))
                for ts in trials.values()
            )
            drain()
        bar.close()
        return [
            _concat_prompts([per_chunk[i][m] for i in range(len(chunks))])
            for m in range(len(layouts))
        ]

    def results(self, baseline: xr.Dataset, refs: xr.Dataset, trials: xr.Dataset) -> xr.Dataset:
        """``results.nc``'s rows, scored in chunks on the workers, in ``refs``' order."""
        chunks = self._chunks(refs.sizes["prompt"])
        row_of = {int(s): i for i, s in enumerate(baseline.simpleqa_id.values)}
        light_refs = refs.drop_vars("h")
        jobs = []
        for i, part in enumerate(chunks):
            r = light_refs.isel(prompt=part)
            b = baseline.isel(prompt=[row_of[int(s)] for s in r.simpleqa_id.values])
            jobs.append((i, b, r, trials.isel(prompt=part)))
        bar = tqdm(
            total=refs.sizes["prompt"], disable=not self.progress, desc="final scoring", unit="q"
        )
        parts: dict[int, xr.Dataset] = {}
        for chunk, ds in self._run_all("results", jobs, "the final scoring"):
            parts[chunk] = ds
            bar.update(ds.sizes["prompt"])
        bar.close()
        ordered = [parts[i] for i in range(len(chunks))]
        ds = _concat_prompts(ordered)
        ds.attrs["prompts_without_finished_trial"] = int(
            sum(p.attrs["prompts_without_finished_trial"] for p in ordered)
        )
        return ds


def _check_reachable(address: str) -> None:
    """A ``HOST:PORT`` Ray address must accept a TCP connection (other forms are left to Ray)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "/" in address:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as exc:
        raise FsnnError(
            f"cannot join the Ray cluster at {address}: {exc.strerror or exc} (start its head with "
            "ray start --head, or drop --ray-address to start one here)"
        ) from None


def _concat_prompts(parts: Sequence[xr.Dataset]) -> xr.Dataset:
    """Chunks' rows in order, as one process computes them at once."""
    if len(parts) == 1:
        return parts[0]
    ds = xr.concat(
        list(parts),
        dim="prompt",
        data_vars="minimal",
        coords="minimal",
        compat="equals",
        join="exact",
        combine_attrs="override",
    )
    return ds.assign_coords(prompt=np.arange(ds.sizes["prompt"])) if "prompt" in ds.indexes else ds


def _stored_trials(storage: Any, name: str) -> list[Any]:
    """Trials of study ``name`` in ``storage`` ([] when it has none)."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return []
    return storage.get_all_trials(study_id, deepcopy=True)


def _store_trials(storage: Any, name: str, trials: Sequence[Any]) -> None:
    """A worker's trials of study ``name`` into the driver's storage, by trial number.

    New numbers are added in order; a stored trial a killed run left WAITING or RUNNING
    gets the worker's parameters, attributes and state; finished trials stay as stored.
    """
    import optuna
    from optuna.trial import TrialState

    study_id = optuna.create_study(
        study_name=name, storage=storage, direction="maximize", load_if_exists=True
    )._study_id
    have = {t.number: t for t in storage.get_all_trials(study_id, deepcopy=False)}
    for trial in sorted(trials, key=lambda t: t.number):
        old = have.get(trial.number)
        if old is None:
            tid = storage.create_new_trial(study_id, template_trial=trial)
            number = storage.get_trial_number_from_id(tid)
            if number != trial.number:  # a gap: never expected, refuse to mislabel trials
                raise FsnnError(
                    f"optuna.db study {name!r}: trial {trial.number} stored as {number}; delete optuna.db "
                    "and rerun the same command"
                )
        elif not old.state.is_finished() and trial.state.is_finished():
            tid = old._trial_id
            if old.state == TrialState.WAITING:
                storage.set_trial_state_values(tid, TrialState.RUNNING)
            for key, value in trial.params.items():
                if key not in old.params:
                    dist = trial.distributions[key]
                    storage.set_trial_param(tid, key, dist.to_internal_repr(value), dist)
            for key, value in trial.user_attrs.items():
                storage.set_trial_user_attr(tid, key, value)
            storage.set_trial_state_values(tid, trial.state, trial.values)
