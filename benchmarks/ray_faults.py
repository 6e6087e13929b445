"""Faults under ``fsnn run --workers 2`` (issue 24): SIGKILLed workers and a SIGKILLed driver.

    PYTHONPATH=. python benchmarks/ray_faults.py [--kills 5] [--driver-kills 2] [--seed 0]

1. An uninterrupted single-process run (one torch thread) is the reference, and an
   uninterrupted ``--workers 2`` run gives the work time (from every worker holding its
   model to the end) the kill moments are spread over.
2. Worker kills: a ``--workers 2`` run (in this process, ``RayPool(2, max_restarts=10)``)
   while a thread sends ``--kills`` SIGKILLs to random worker processes (descendants of
   this process titled ``ray::Worker.<method>``; the title, i.e. the task it ran, is
   recorded as the moment), each a random 0 to work/kills seconds after the previous
   victim has reloaded its model. Ray restarts the actor and retries its task.
3. Driver kills: ``fsnn run --workers 2`` in a child process, SIGKILLed at a random
   moment after its first worker is busy, then the identical command again until it
   finishes; the killed driver's descendants still alive two minutes later are counted
   (``leaked``).

Every finished folder is compared with the reference: ``lost`` counts rows, trials or
scores missing or different; ``duplicated`` rows or trials present twice (trial numbers
of a study not exactly 0..n-1). The tiny random Gemma-2 of tests/conftest.py, 8 rows.
Writes ``benchmarks/ray_faults.json``; nothing is asserted, CI never runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402  (a dependency of ray[default])
import torch  # noqa: E402
import xarray as xr  # noqa: E402

from fsnn.errors import FsnnError  # noqa: E402
from fsnn.experiment.pipeline import RunConfig, run_pipeline  # noqa: E402
from fsnn.experiment.workers import RayPool  # noqa: E402
from fsnn.store.files import read_dataset  # noqa: E402

FILES = ("baseline", "references", "trials", "results")
VOLATILE = ("created", "git_sha", "model_source")


def worker_processes(root: int) -> list[psutil.Process]:
    """Ray worker actors among the descendants of process ``root`` (only what we started)."""
    found = []
    for proc in psutil.Process(root).children(recursive=True):
        try:
            if proc.cmdline() and proc.cmdline()[0].startswith("ray::Worker"):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def compare(reference: Path, folder: Path, n_trials: int) -> dict[str, int]:
    """lost / duplicated / different counts of ``folder`` against ``reference``."""
    import optuna

    counts = Counter(lost=0, duplicated=0)
    for name in FILES:
        want, got = read_dataset(reference / f"{name}.nc"), read_dataset(folder / f"{name}.nc")
        ids_w, ids_g = list(want.simpleqa_id.values), list(got.simpleqa_id.values)
        counts["lost"] += len(set(ids_w) - set(ids_g))
        counts["duplicated"] += len(ids_g) - len(set(ids_g))
        for ds in (want, got):
            ds.attrs = {
                k: v
                for k, v in ds.attrs.items()
                if k not in VOLATILE and not k.startswith("version_")
            }
        try:
            xr.testing.assert_identical(want, got)
        except AssertionError:
            counts[f"{name}.nc differs"] += 1
    storage = optuna.storages.RDBStorage(f"sqlite:///{folder / 'optuna.db'}")
    try:
        for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
            trials = optuna.load_study(study_name=summary.study_name, storage=storage).get_trials()
            numbers = [t.number for t in trials]
            complete = sum(t.state.name == "COMPLETE" for t in trials)
            counts["duplicated"] += len(numbers) - len(set(numbers)) + max(0, complete - n_trials)
            counts["lost"] += max(0, n_trials - complete)
    finally:
        storage.engine.dispose()
    return dict(counts)


def busy_workers(root: int) -> list[tuple[psutil.Process, str]]:
    """Workers running a stage task (not loading the model, not idle), with their title."""
    found = []
    for proc in worker_processes(root):
        with contextlib.suppress(psutil.Error):
            title = proc.cmdline()[0]
            if "." in title and "__init__" not in title:
                found.append((proc, title))
    return found


class ReadyPool(RayPool):
    """A pool that records when every worker holds its model (and tells ``ready``)."""

    def __init__(self, *args, ready: threading.Event | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.ready, self.ready_at = ready or threading.Event(), None

    def start(self, *args, **kwargs):
        out = super().start(*args, **kwargs)
        self.ready_at = time.perf_counter()
        self.ready.set()
        return out


class Killer(threading.Thread):
    """``kills`` SIGKILLs of random worker processes of this process, at random moments:
    once the pool is ready, each kill waits until no worker is loading the model (the
    previous victim restarted), then a random 0-``gap`` s, then kills a random worker
    (busy or idle; its process title, ``ray::Worker.<method>``, is the moment)."""

    def __init__(self, kills: int, gap: float, rng: random.Random):
        super().__init__(daemon=True)
        self.kills, self.gap, self.rng = kills, gap, rng
        self.ready, self.stop, self.log = threading.Event(), threading.Event(), []

    def _loading(self) -> bool:
        procs = worker_processes(os.getpid())
        with contextlib.suppress(psutil.Error):
            return len(procs) < 2 or any("__init__" in p.cmdline()[0] for p in procs)
        return True

    def run(self) -> None:
        self.ready.wait()
        start = time.perf_counter()
        for _ in range(self.kills):
            while self._loading():
                if self.stop.wait(0.05):
                    return
            if self.stop.wait(self.rng.uniform(0.0, self.gap)):
                return
            procs = worker_processes(os.getpid())
            if not procs:
                continue
            proc = self.rng.choice(procs)
            try:
                title = proc.cmdline()[0]
                proc.send_signal(signal.SIGKILL)
                self.log.append(
                    {
                        "at_s": round(time.perf_counter() - start, 1),
                        "pid": proc.pid,
                        "moment": title,
                    }
                )
            except psutil.Error:
                self.log.append({"moment": "gone before the kill"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--driver-kills", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    torch.set_num_threads(1)
    from fsnn.models.load import ALIASES, resolve_alias
    from tests.conftest import make_tiny
    from tests.experiment.test_pipeline import ROWS, write_csv

    tmp = Path(tempfile.mkdtemp(prefix="fsnn-ray-faults-"))
    model = make_tiny("gemma2", resolve_alias(ALIASES["smollm2-135m"]))
    model.hf_model.save_pretrained(tmp / "tiny")
    model.tokenizer.save_pretrained(tmp / "tiny")
    csv = write_csv(
        tmp / "qa.csv", [*ROWS, *[(m, f"{q} ({i})", a) for i in (1,) for m, q, a in ROWS]]
    )
    config = RunConfig(
        model=str(tmp / "tiny"),
        limit=8,
        n_trials=4,
        batch_trials=1,
        batch_rows=4,
        batch_size=2,
        max_new_tokens=16,
        mode="cached",
        sampler="tpe",
        select="not-correct",
    )
    report: dict = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "load_before": os.getloadavg(),
        "config": {
            "rows": 8,
            "n_trials": 4,
            "methods": list(config.methods),
            "batch_size": 2,
            "batch_rows": 4,
            "max_new_tokens": 16,
        },
    }
    run_pipeline(config, tmp / "reference", simpleqa_csv=csv, progress=False)
    start = time.perf_counter()
    with ReadyPool(2, progress=False) as pool:
        run_pipeline(config, tmp / "clean", simpleqa_csv=csv, progress=False, pool=pool)
    duration = time.perf_counter() - start
    work = time.perf_counter() - pool.ready_at
    report["clean_workers_run_s"], report["clean_workers_work_s"] = (
        round(duration, 1),
        round(work, 1),
    )
    report["clean"] = compare(tmp / "reference", tmp / "clean", config.n_trials)
    print(
        "clean --workers 2 run",
        round(duration, 1),
        "s, work",
        round(work, 1),
        "s",
        report["clean"],
        flush=True,
    )

    # 2. worker kills at random moments (each after the previous victim has restarted)
    killer = Killer(args.kills, gap=work / max(1, args.kills), rng=rng)
    killer.start()
    attempts, errors = 0, []
    while True:
        attempts += 1
        try:
            with ReadyPool(2, max_restarts=10, progress=False, ready=killer.ready) as pool:
                run_pipeline(config, tmp / "killed", simpleqa_csv=csv, progress=False, pool=pool)
            break
        except FsnnError as exc:  # restarts exhausted: the same command resumes
            errors.append(str(exc))
            if attempts > 5:
                raise
    killer.stop.set()
    killer.join()
    report["worker_kills"] = {
        "delivered": sum("pid" in k for k in killer.log),
        "log": killer.log,
        "runs": attempts,
        "errors": errors,
        **compare(tmp / "reference", tmp / "killed", config.n_trials),
    }
    print("worker kills", json.dumps(report["worker_kills"]), flush=True)

    # 3. driver kills
    toml = tmp / "run.toml"
    toml.write_text(
        "\n".join(
            f"{k} = {json.dumps(list(v) if isinstance(v, tuple) else v)}"
            for k, v in (
                ("model", config.model),
                ("limit", 8),
                ("n_trials", 4),
                ("batch_trials", 1),
                ("batch_rows", 4),
                ("batch_size", 2),
                ("max_new_tokens", 16),
                ("mode", "cached"),
                ("sampler", "tpe"),
                ("methods", config.methods),
                ("select", "not-correct"),
            )
        )
        + "\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    driver_log, leaked, totals = [], 0, Counter(lost=0, duplicated=0)
    for k in range(args.driver_kills):  # each on a fresh folder: a kill per full run
        out = tmp / f"driver{k}"
        cmd = [
            sys.executable,
            "-m",
            "fsnn",
            "run",
            "--config",
            str(toml),
            "--simpleqa-csv",
            str(csv),
            "--out",
            str(out),
            "--workers",
            "2",
            "--no-progress",
        ]
        at = rng.uniform(0.05, 0.9) * work
        child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 180  # the moment counts from the first busy worker
        while not busy_workers(child.pid) and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(at)
        descendants = psutil.Process(child.pid).children(recursive=True)
        stage = sorted({title for _, title in busy_workers(child.pid)})
        files = sorted(p.name for p in out.iterdir()) if out.exists() else []
        child.send_signal(signal.SIGKILL)
        child.wait()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and any(
            p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in descendants
        ):
            time.sleep(2)
        leaked += sum(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in descendants)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        counts = compare(tmp / "reference", out, config.n_trials)
        totals.update(counts)
        driver_log.append(
            {
                "at_s": round(at, 1),
                "workers_were": stage,
                "files_at_kill": files,
                "resume_rc": done.returncode,
                "resume_stderr": done.stderr.strip()[-300:],
                **counts,
            }
        )
    report["driver_kills"] = {
        "delivered": args.driver_kills,
        "log": driver_log,
        "leaked": leaked,
        **totals,
    }
    print("driver kills", json.dumps(report["driver_kills"]), flush=True)
    report["load_after"] = os.getloadavg()
    (ROOT / "benchmarks" / "ray_faults.json").write_text(json.dumps(report, indent=1))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
