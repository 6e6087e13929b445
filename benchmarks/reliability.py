"""Reliability campaign: crashes, faults and bad input, counted (writes docs/reliability.md).

    PYTHONPATH=. python benchmarks/reliability.py --quick   # CI, < 3 min on 2 cores
    PYTHONPATH=. python benchmarks/reliability.py           # full campaign

Campaigns (one row each in the table): SIGKILL at random moments of every stage then
resume; an OpenAI-compatible judge endpoint injecting faults; NDIF faults through the
serialised-local path; storage faults (failed and corrupt writes); two processes on one
run folder; malformed input over the CLI and the public API; secrets in files, logs and
errors. Every pipeline run happens in a forked child (the parent computes nothing with
torch, so forking is safe), on tiny random models (tests/conftest.py) and the fake
judge server (tests/fake_openai.py, 127.0.0.1 only).

Counts: ``tried`` (faults or cases delivered), ``lost`` (rows, trials or grades missing
or different from the uninterrupted reference), ``duplicated`` (rows or trials twice),
``crashes`` (a process ending with an exception that is not a one-line ``FsnnError``),
``tracebacks`` (tracebacks a user would see), ``secrets`` (fake key values found).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import json
import logging
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SECRETS = {
    "FSNN_BENCH_JUDGE_KEY": "sk-fsnn-FAKE-judge-7c1e5d",
    "NDIF_API_KEY": "ndif-FAKE-key-93b2aa",
    "MISTRAL_API_KEY": "mistral-FAKE-key-41f0c2",
}
os.environ.update(SECRETS)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(1)  # no OpenMP pool in the parent: forking stays safe


@dataclass
class Row:
    campaign: str
    tried: int = 0
    lost: int = 0
    duplicated: int = 0
    crashes: int = 0
    tracebacks: int = 0
    secrets: int = 0
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    cpu: float = 0.0  # CPU seconds of this process and its waited-for children


MESSAGES: list[str] = []  # every error text seen (scanned for secrets at the end)


# ----------------------------------------------------------------------------- helpers


def fork_call(fn: Callable[[], Any], stderr_path: Path | None = None) -> tuple[int, dict]:
    """Run ``fn()`` in a forked child; returns (exit code, {"result"|"fsnn"|"crash": ...})."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        if stderr_path is not None:
            fd = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, 2)
        try:
            payload = {"result": fn()}
        except BaseException as exc:  # noqa: BLE001 - the campaign classifies every ending
            from fsnn.errors import FsnnError

            payload = (
                {"fsnn": str(exc)}
                if isinstance(exc, FsnnError)
                else {"crash": traceback.format_exc()}
            )
        data = json.dumps(payload, default=str).encode()
        view = memoryview(data)
        while view:
            view = view[os.write(w, view) :]
        os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 1 << 16):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    payload = json.loads(b"".join(chunks)) if chunks else {}
    for key in ("fsnn", "crash"):
        if key in payload:
            MESSAGES.append(payload[key])
    return code, payload


class Env:
    """The shared fixtures: tiny model, CSV, fake judge server, work folder."""

    def __init__(self, work: Path, quick: bool):
        from fsnn.models.load import ALIASES, resolve_alias
        from tests.conftest import make_tiny
        from tests.experiment.test_pipeline import ROWS, write_csv

        self.work, self.quick = work, quick
        # imported once here, not in each of the ~40 forked children (about 2 s each on this
        # machine); importing starts no thread, so forking stays safe
        import httpx  # noqa: F401
        import netCDF4  # noqa: F401
        import optuna  # noqa: F401

        import fsnn.backends.base  # noqa: F401
        import fsnn.backends.ndif  # noqa: F401
        import fsnn.experiment.pipeline  # noqa: F401
        import fsnn.experiment.stages  # noqa: F401
        import fsnn.judges.http  # noqa: F401
        import fsnn.search.run  # noqa: F401

        self.model = make_tiny("gemma2", resolve_alias(ALIASES["smollm2-135m"]))
        rows = list(ROWS)
        src = os.environ.get("FSNN_SIMPLEQA_CSV")
        if src and Path(src).is_file() and not quick:
            import csv

            with open(src, newline="", encoding="utf-8") as fh:
                rows = [tuple(r) for r in list(csv.reader(fh))[1:7]]
        self.csv = write_csv(work / "qa.csv", rows)
        self.n_rows = len(rows)
        self.server = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "tests" / "fake_openai.py"),
                "--lifetime",
                "900" if quick else "3600",
                "--api-key-env",
                "FSNN_BENCH_JUDGE_KEY",
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self.url = self.server.stdout.readline().strip()

    def close(self) -> None:
        self.server.kill()
        self.server.wait()

    def config(self, **kw: Any):
        from fsnn.experiment.pipeline import RunConfig

        if self.quick:  # every stage, a few batches each
            base = dict(
                methods=("segmented",), n_trials=2, batch_trials=1, batch_rows=2, max_new_tokens=3
            )
        else:
            base = dict(
                methods=("full", "segmented"),
                n_trials=4,
                batch_trials=2,
                batch_rows=3,
                max_new_tokens=4,
            )
        base.update(
            model="tiny-gemma2",
            limit=self.n_rows,
            batch_size=2,
            mode="cached",
            sampler="tpe",
            select="not-correct",
            judge_missing="zero",
        )
        return RunConfig(**{**base, **kw})

    def judge(self, cache: Path, url: str | None = None, **kw: Any):
        from fsnn.judges import JudgeCache, JudgeConfig, make_judge

        cfg = JudgeConfig(
            backend="http",
            model="fake-judge",
            base_url=url or self.url,
            api_key_env="FSNN_BENCH_JUDGE_KEY",
            timeout=5.0,
            max_retries=kw.pop("max_retries", 3),
            backoff_base=0.001,
            backoff_max=0.01,
            concurrency=2,
            **kw,
        )
        return make_judge(cfg, cache=JudgeCache(cache))

    def run(self, out: Path, *, cache: Path | None = None, judge_url: str | None = None, **kw: Any):
        from fsnn.experiment.pipeline import run_pipeline

        judge = self.judge(cache or out.parent / f"{out.name}.judge.sqlite", judge_url)
        return run_pipeline(
            self.config(**kw),
            out,
            simpleqa_csv=self.csv,
            model=self.model,
            judge=judge,
            progress=False,
        )


FILES = ("baseline.nc", "references.nc", "trials.nc", "results.nc")


def compare_folders(got: Path, want: Path, n_trials: int) -> tuple[int, int, list[str]]:
    """(lost, duplicated, notes) of run folder ``got`` against the reference ``want``."""
    import numpy as np

    from fsnn.store.files import read_dataset

    lost = dup = 0
    notes = []
    for name in FILES:
        if not (got / name).exists():
            lost += 1
            notes.append(f"{name} missing")
            continue
        a, b = read_dataset(got / name).drop_attrs(), read_dataset(want / name).drop_attrs()
        if "simpleqa_id" in a.coords:
            ids = a.simpleqa_id.values.tolist()
            dup += len(ids) - len(set(ids))
        if not a.identical(b):
            bad = [str(v) for v in a.data_vars if v in b and not a[v].identical(b[v])]
            lost += 1
            notes.append(f"{name} differs in {bad or 'coords/shape'}")
            for v in bad:
                if a[v].dtype.kind == "f":
                    rel = float(
                        np.nanmax(
                            np.abs(a[v].values - b[v].values)
                            / np.maximum(np.abs(b[v].values), 1e-30)
                        )
                    )
                    notes.append(f"{name}:{v} max relative difference {rel:.1e}")
    with sqlite3.connect(got / "optuna.db") as db:
        studies = db.execute("select study_id from studies").fetchall()
        for (sid,) in studies:
            rows = db.execute(
                "select number, state from trials where study_id=? order by number", (sid,)
            ).fetchall()
            numbers = [n for n, _ in rows]
            complete = [n for n, s in rows if s == "COMPLETE"]
            dup += len(numbers) - len(set(numbers)) + max(0, len(complete) - n_trials)
            if numbers != list(range(n_trials)) or len(complete) != n_trials:
                lost += max(0, n_trials - len(complete)) or 1
                notes.append(f"study {sid}: trial numbers {numbers}, {len(complete)} complete")
    leftovers = [p.name for p in got.glob(".*.tmp")]
    if leftovers:
        notes.append(f"{len(leftovers)} temp file(s) left by killed writes: {leftovers[:2]}")
    return lost, dup, notes


# ----------------------------------------------------------------------------- crash/resume

HOOKS = (
    "baseline batch",
    "judge call",
    "enrichment batch",
    "reference capture",
    "netcdf write",
    "search batch",
    "trial tell",
    "perplexity",
)  # roughly in pipeline order: the kills of one folder go in this order


def install_hooks(kill: tuple[str, int] | None, counts: Counter) -> None:
    """Count hook events in this (child) process; SIGKILL at event ``kill`` = (hook, n)."""
    import optuna
    import xarray as xr

    import fsnn.judges.http as http
    import fsnn.judges.metrics
    import fsnn.search.run

    def event(name: str) -> None:
        counts[name] += 1
        if kill is not None and kill == (name, counts[name]):
            os.kill(os.getpid(), signal.SIGKILL)

    import fsnn.backends.base

    real_call = fsnn.backends.base.Backend.call  # every stage call of the local backend

    def call(self, fn, *, what="trace"):
        out = real_call(self, fn, what=what)
        event(what)  # the stage's work is done and not yet saved
        return out

    fsnn.backends.base.Backend.call = call
    real_request = http.HttpJudge._request

    def request(self, client, prompt):
        out = real_request(self, client, prompt)
        event("judge call")
        return out

    http.HttpJudge._request = request
    real_steer = fsnn.search.run.steer_each

    def steer(*a, **k):
        out = real_steer(*a, **k)
        event("search batch")
        return out

    fsnn.search.run.steer_each = steer
    real_tell = optuna.study.Study.tell

    def tell(self, *a, **k):
        out = real_tell(self, *a, **k)
        event("trial tell")  # mid batch: some trials of the batch told, others not
        return out

    optuna.study.Study.tell = tell
    real_score = fsnn.judges.metrics.Perplexity._score

    def score(self, texts):
        event("perplexity")
        return real_score(self, texts)

    fsnn.judges.metrics.Perplexity._score = score
    real_write = xr.Dataset.to_netcdf

    def write(self, path=None, *a, **k):
        out = real_write(self, path, *a, **k)
        counts["netcdf write"] += 1
        if kill is not None and kill == ("netcdf write", counts["netcdf write"]):
            with open(path, "r+b") as fh:  # half the temp file on disk, then death
                fh.truncate(max(1, os.path.getsize(path) // 2))
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    xr.Dataset.to_netcdf = write


def crash_campaign(env: Env, n_kills: int, rng: random.Random) -> Row:
    row = Row("crash/resume (SIGKILL + resume)")
    n_trials = env.config().n_trials
    clean = env.work / "crash-clean"
    counts: Counter = Counter()

    def clean_run():
        install_hooks(None, counts)
        env.run(clean)
        return dict(counts)

    code, payload = fork_call(clean_run, env.work / "stderr.log")
    if code != 0 or "result" not in payload:
        raise SystemExit(f"reference run failed: {payload}")
    totals = payload["result"]
    # (moment, n): die at the n-th event of that moment; n drawn in the first half of what an
    # uninterrupted run sees, so that a resumed process (which has less to do) still gets there
    plan = [
        (hook, rng.randint(1, max(1, (totals.get(hook, 1) + 1) // 2)))
        for hook in (HOOKS[i % len(HOOKS)] for i in range(n_kills))
    ]
    rng.shuffle(plan)
    per_folder = 4
    stages_hit: Counter = Counter()
    missed: list[str] = []
    folders: list[Path] = []

    def resume_and_compare(folder: Path) -> None:
        code, payload = fork_call(
            lambda folder=folder: bool(env.run(folder)), env.work / "stderr.log"
        )
        if code != 0 or "result" not in payload:
            row.crashes += 1
            row.tracebacks += "crash" in payload
            row.notes.append(f"resume of {folder.name}: {str(payload)[-300:]}")
            return
        lost, dup, notes = compare_folders(folder, clean, n_trials)
        row.lost += lost
        row.duplicated += dup
        row.notes += [f"{folder.name}: {n}" for n in notes]

    queue = [
        sorted(plan[f : f + per_folder], key=lambda k: HOOKS.index(k[0]))
        for f in range(0, len(plan), per_folder)
    ]
    while queue:
        kills = queue.pop(0)
        folder = env.work / f"crash-{len(folders)}"
        folders.append(folder)
        for i, kill in enumerate(kills):

            def killed(kill=kill, folder=folder):
                install_hooks(kill, Counter())
                env.run(folder)

            code, payload = fork_call(killed, env.work / "stderr.log")
            if code == -signal.SIGKILL:
                row.tried += 1
                stages_hit[kill[0]] += 1
            elif code != 0 or "crash" in payload:
                row.crashes += 1
                row.tracebacks += "crash" in payload
                row.notes.append(f"kill at {kill}: {str(payload)[-300:]}")
            elif "fsnn" in payload:  # a resume after a kill refused to go on
                row.lost += 1
                row.notes.append(f"kill at {kill}: the run refused: {payload['fsnn'][:200]}")
            else:  # the run finished before that moment came: the rest go to a fresh folder
                missed.append(f"{kill[0]} #{kill[1]}")
                if kills[i + 1 :] and len(folders) < 3 * len(plan):
                    queue.insert(0, kills[i + 1 :])
                break
        resume_and_compare(folder)
    if missed:
        row.notes.insert(
            0,
            f"{len(missed)} planned kill(s) found the run already finished (not counted as tried; "
            f"the kills after it moved to a fresh folder): {', '.join(missed)}",
        )
    row.notes.insert(
        0, "events of an uninterrupted run: " + ", ".join(f"{k} {totals.get(k, 0)}" for k in HOOKS)
    )
    row.notes.insert(
        0,
        "kills delivered per moment: "
        + ", ".join(f"{k} {v}" for k, v in sorted(stages_hit.items())),
    )
    row.notes.insert(
        1,
        f"{len(plan)} kills planned, {row.tried} delivered; {len(folders)} run folders, up to "
        f"{per_folder} kills each, "
        f"{n_trials} trials x {env.n_rows} rows x {len(env.config().methods)} method(s); compared bit for bit with an "
        "uninterrupted run (baseline, references, trials, results; optuna.db trial numbers)",
    )
    return row


# ----------------------------------------------------------------------------- judge faults


def judge_campaign(env: Env, n_items: int, n_faults: int, rng: random.Random) -> list[Row]:
    from fsnn.judges import JudgeCache, JudgeConfig, make_judge
    from fsnn.judges.parse import parse_quality, parse_simpleqa
    from tests.fake_openai import FAULTS, FakeOpenAI, expected_answer

    row = Row("judge endpoint faults (fake OpenAI server)")
    items = [
        (
            f"Question {i}: who wrote book {i}?",
            f"Author {i}",
            f"I think it was Author {i * 7 % 13}.",
        )
        for i in range(n_items)
    ]
    script = [FAULTS[i % len(FAULTS)] for i in range(n_faults)]
    rng.shuffle(script)
    key = SECRETS["FSNN_BENCH_JUDGE_KEY"]
    cache = env.work / "judge-faults.sqlite"
    with FakeOpenAI(script, api_key=key, sleep_timeout=0.6, max_requests=20 * n_faults) as server:
        cfg = JudgeConfig(
            backend="http",
            model="fake-judge",
            base_url=server.url,
            api_key_env="FSNN_BENCH_JUDGE_KEY",
            timeout=0.25,
            max_retries=25,
            backoff_base=0.001,
            backoff_max=0.01,
            concurrency=4,
        )
        judge = make_judge(cfg, cache=JudgeCache(cache))
        try:
            first = judge.grade_simpleqa(items) + judge.grade_quality(items)
        except Exception:  # noqa: BLE001
            row.crashes += 1
            row.tracebacks += 1
            row.notes.append(traceback.format_exc()[-300:])
            return [row]
        injected = sum(server.injected.values())
        semantic = sum(
            1 for g in first if g.defaulted or (g.missing and "unparseable" in (g.error or ""))
        )
        transport_seen = judge.requests - int(judge.stats["answered"])
        MESSAGES.extend(g.error or "" for g in first)
        # the endpoint answers again (script used up): a rerun regrades what was bad
        second = judge.grade_simpleqa(items) + judge.grade_quality(items)
        asked_again = judge.requests - (transport_seen + int(judge.stats["answered"]))
    want = [parse_simpleqa(expected_answer(p)).grade for p in _prompts(items, "simpleqa")]
    want += [parse_quality(expected_answer(p)).score for p in _prompts(items, "quality")]
    row.tried = injected
    row.lost = sum(g.value != w for g, w in zip(second, want, strict=True))
    counted = transport_seen + semantic
    if counted != injected:
        row.lost += abs(injected - counted)
        row.notes.append(f"faults injected {injected} but counted {counted}")
    row.notes.append(
        f"{2 * n_items} grades; faults by kind: "
        + ", ".join(f"{k} {v}" for k, v in sorted(server.injected.items()))
    )
    row.notes.append(
        f"counted: {transport_seen} retried requests + {semantic} invalid grades "
        f"(missing/defaulted, not cached); rerun asked {asked_again} again; "
        "final grades equal to the fault-free answers"
    )
    rows = [row]

    perm = Row("judge endpoint down for good (pipeline)")
    down = FakeOpenAI(always="503", api_key=key, lifetime=600)
    folder = env.work / "judge-down"
    code, payload = fork_call(
        lambda: bool(env.run(folder, judge_url=down.url)), env.work / "stderr.log"
    )
    down.stop()
    perm.tried = 1
    msg = payload.get("fsnn", "")
    if "crash" in payload or code != 0:
        perm.crashes += 1
        perm.tracebacks += "crash" in payload
    if not msg or "\n" in msg:
        perm.lost += 1
        perm.notes.append(f"no one-line error: {str(payload)[-300:]}")
    else:
        perm.notes.append(f"error: `{msg}`")
    # resumable: the endpoint comes back, the rerun ends equal to an uninterrupted run
    code, payload = fork_call(lambda: bool(env.run(folder)), env.work / "stderr.log")
    if "result" not in payload:
        perm.crashes += 1
        perm.notes.append(f"resume failed: {str(payload)[-300:]}")
    elif (env.work / "crash-clean").exists():
        lost, dup, notes = compare_folders(folder, env.work / "crash-clean", env.config().n_trials)
        perm.lost, perm.duplicated = perm.lost + lost, dup
        perm.notes += notes or ["resumed run equal to the uninterrupted one"]
    rows.append(perm)
    return rows


def _prompts(items, task):
    from fsnn.judges.prompts import render_quality, render_simpleqa

    return [render_simpleqa(*i) if task == "simpleqa" else render_quality(*i) for i in items]


# ----------------------------------------------------------------------------- NDIF faults


def ndif_campaign(env: Env, rounds: int) -> Row:
    row = Row("NDIF faults (serialised-local path)")

    def body():
        import httpx

        from fsnn.backends.ndif import call_remote
        from fsnn.backends.retry import RetryPolicy
        from fsnn.errors import FsnnError
        from fsnn.steering.generation import generate

        def status_error(code: int) -> Exception:
            req = httpx.Request("POST", "https://ndif.example/request")
            return httpx.HTTPStatusError(
                f"{code}", request=req, response=httpx.Response(code, request=req)
            )

        transient = [
            lambda: httpx.ConnectError("connection refused"),
            lambda: httpx.ReadTimeout("read timeout"),
            lambda: status_error(503),
            lambda: status_error(429),
            lambda: status_error(502),
            lambda: ConnectionResetError("reset by peer"),
            lambda: TimeoutError("timed out"),
        ]
        permanent = [
            lambda: status_error(401),
            lambda: status_error(422),
            lambda: RuntimeError(f"job ERROR: out of memory (key {SECRETS['NDIF_API_KEY']})"),
        ]
        prompts = [
            "Question: What is the capital of France?\nAnswer:",
            "Question: Who wrote Hamlet?\nAnswer:",
        ]
        want = [o.ids for o in generate(env.model, prompts, max_new_tokens=4, backend="serialised")]
        stats = Counter()
        policy = RetryPolicy(attempts=3, backoff_base=0.0)
        for r in range(rounds):
            make = (transient + permanent)[r % (len(transient) + len(permanent))]
            is_permanent = make in permanent
            fails = 1 if is_permanent else 1 + r % 2
            calls = Counter()

            def flaky(make=make, fails=fails, calls=calls):
                calls["n"] += 1
                if calls["n"] <= fails:
                    raise make()
                return generate(env.model, prompts, max_new_tokens=4, backend="serialised")

            stats["tried"] += fails
            try:
                out = call_remote(flaky, what=f"round {r}", policy=policy, sleep=lambda s: None)
            except FsnnError as exc:
                stats["reported"] += 1
                stats["bad_message"] += "\n" in str(exc) or not is_permanent
                MESSAGES.append(str(exc))
                continue
            except Exception:  # noqa: BLE001
                stats["crash"] += 1
                continue
            stats["retried"] += fails
            stats["lost"] += [o.ids for o in out] != want or is_permanent
        return dict(stats)

    code, payload = fork_call(body, env.work / "stderr.log")
    stats = payload.get("result", {})
    if "result" not in payload:
        row.crashes += 1
        row.notes.append(str(payload)[-300:])
    row.tried = stats.get("tried", 0)
    row.lost = stats.get("lost", 0) + stats.get("bad_message", 0)
    row.crashes += stats.get("crash", 0)
    row.notes.append(
        f"{stats.get('retried', 0)} transient faults retried to an output equal to the fault-free "
        f"one; {stats.get('reported', 0)} permanent faults reported as one FsnnError line"
    )

    # never half-applied: a permanent failure mid-search, then a resume, equals the clean run
    folder = env.work / "ndif-half"

    def failing():
        import httpx

        import fsnn.search.run

        real = fsnn.search.run.steer_each
        calls = Counter()

        def steer(*a, **k):
            calls["n"] += 1
            if calls["n"] == 2:  # the service refuses the second steering batch (not retried)
                req = httpx.Request("POST", "https://ndif.example/request")
                raise httpx.HTTPStatusError(
                    "401", request=req, response=httpx.Response(401, request=req)
                )
            return real(*a, **k)

        fsnn.search.run.steer_each = steer
        env.run(folder, cache=env.work / "ndif-half.judge.sqlite", backend="serialised")

    code, payload = fork_call(failing, env.work / "stderr.log")
    row.tried += 1
    if "fsnn" not in payload:  # a finished run means the failure was swallowed as failed trials
        row.crashes += "crash" in payload
        row.lost += "crash" not in payload
        row.notes.append(
            f"mid-search failure did not stop the run with one line: {str(payload)[-300:]}"
        )
    else:
        row.notes.append(f"mid-search failure: `{payload['fsnn'][:200]}`")
    code, payload = fork_call(
        lambda: bool(
            env.run(folder, cache=env.work / "ndif-half.judge.sqlite", backend="serialised")
        ),
        env.work / "stderr.log",
    )
    if "result" not in payload:
        row.crashes += 1
        row.notes.append(f"resume: {str(payload)[-300:]}")
    else:
        lost, dup, notes = compare_folders(folder, env.work / "crash-clean", env.config().n_trials)
        row.lost += lost
        row.duplicated += dup
        row.notes += notes or [
            "a permanent failure mid-search (backend='serialised', HTTP 401 on the 2nd steering "
            "batch), then a resume: equal to the uninterrupted run, no trial half-applied or failed"
        ]
    return row


# ----------------------------------------------------------------------------- storage faults


def storage_campaign(env: Env, quick: bool) -> Row:
    row = Row("storage faults (failed writes, corrupt files)")
    clean = env.work / "crash-clean"
    n_trials = env.config().n_trials
    write_message: list[str] = []
    # 0. modes: files written atomically get what open() gives under the umask (not mkstemp's 0600)
    umask = os.umask(0)
    os.umask(umask)
    modes = {
        p.name: p.stat().st_mode & 0o777
        for p in clean.iterdir()
        if p.suffix in (".nc", ".json", ".md")
    }
    wrong = {n: oct(m) for n, m in modes.items() if m != 0o666 & ~umask}
    row.tried += 1
    if wrong:
        row.lost += 1
        row.notes.append(
            f"found: file modes {wrong}, expected {oct(0o666 & ~umask)} under umask {oct(umask)}"
        )
    else:
        row.notes.append(
            f"modes of the {len(modes)} result files of a run: all {oct(0o666 & ~umask)} "
            f"(umask {oct(umask)})"
        )
    # 1. a write failing mid-way, for each netCDF stage file
    for name in ("baseline.nc", "references.nc", "trials.nc", "results.nc"):
        for err in (errno.ENOSPC,) if quick else (errno.ENOSPC, errno.EACCES):
            folder = env.work / f"wfail-{name}-{err}"
            shutil.copytree(clean, folder)
            if (
                name == "references.nc"
            ):  # a finished stage is not written again: drop it and what follows
                for later in ("references.nc", "trials.nc", "results.nc"):
                    (folder / later).unlink()
            before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}

            def failing(name=name, err=err, folder=folder):
                import xarray as xr

                real = xr.Dataset.to_netcdf

                def write(self, path=None, *a, **k):
                    real(self, path, *a, **k)
                    if Path(path).name.startswith(f".{name}."):
                        with open(path, "r+b") as fh:
                            fh.truncate(100)
                        raise OSError(err, os.strerror(err), str(path))
                    return None

                xr.Dataset.to_netcdf = write
                env.run(folder)

            code, payload = fork_call(failing, env.work / "stderr.log")
            row.tried += 1
            after = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
            changed = [name] if before.get(name) != after.get(name) else []
            junk = [n for n in after if n.endswith(".tmp")]
            if changed or junk:
                row.lost += 1
                row.notes.append(f"{name} write failure changed {changed} left {junk}")
            msg = payload.get("fsnn")
            if msg is None:
                row.tracebacks += 1
                row.crashes += 1
                first = str(payload.get("crash", payload)).strip().splitlines()[-1][:160]
                row.notes.append(
                    f"found: write failure ({name}, {os.strerror(err)}) surfaces as a raw "
                    f"exception (traceback in the CLI), not one FsnnError line: `{first}`"
                )
            elif (
                "\n" in msg
                or f"cannot write {name} in " not in msg
                or os.strerror(err) not in msg
                or "rerun the same command" not in msg
            ):
                row.lost += 1
                row.notes.append(f"found: write failure ({name}) -> unclear error `{msg[:200]}`")
            elif not write_message:
                write_message.append(msg)
    # 2. corrupt files of a finished run: a one-line error naming the file, or a clean recompute
    damages = {
        "truncated": lambda b: b[: len(b) // 2],
        "garbage": lambda b: os.urandom(len(b) or 64),
        "empty": lambda b: b"",
    }
    if quick:
        damages = {"truncated": damages["truncated"]}
    for name in (
        "baseline.nc",
        "references.nc",
        "trials.nc",
        "results.nc",
        "optuna.db",
        "config.json",
    ):
        for damage, fn in damages.items():
            folder = env.work / f"corrupt-{name}-{damage}"
            shutil.copytree(clean, folder)
            (folder / name).write_bytes(fn((folder / name).read_bytes()))
            code, payload = fork_call(
                lambda folder=folder: bool(env.run(folder)), env.work / "stderr.log"
            )
            row.tried += 1
            if "result" in payload:
                lost, dup, notes = compare_folders(folder, clean, n_trials)
                row.lost += lost
                row.duplicated += dup
                row.notes += [f"corrupt {name} ({damage}): {n}" for n in notes]
                continue
            msg = payload.get("fsnn")
            if msg is None:
                row.crashes += 1
                row.tracebacks += 1
                last = str(payload.get("crash", payload)).strip().splitlines()[-1][:200]
                row.notes.append(f"found: corrupt {name} ({damage}) -> traceback `{last}`")
                continue
            named = name in msg
            recover = any(w in msg for w in ("delete", "remove", "--force-new"))
            if "\n" in msg or not named or not recover:
                row.lost += 1
                row.notes.append(f"found: corrupt {name} ({damage}) -> unclear error `{msg[:200]}`")
                continue
            # follow the message: delete the file, rerun -> equal to the uninterrupted run
            (folder / name).unlink()
            code, payload = fork_call(
                lambda folder=folder: bool(env.run(folder)), env.work / "stderr.log"
            )
            if "result" not in payload:
                row.lost += 1
                row.notes.append(f"recovery of corrupt {name} failed: {str(payload)[-200:]}")
            else:
                lost, dup, notes = compare_folders(folder, clean, n_trials)
                row.lost += lost
                row.duplicated += dup
    n_err = 1 if quick else 2
    if write_message:
        row.notes.insert(0, f"a failed write reads: `{write_message[0]}`")
    row.notes.insert(
        0,
        f"{4 * n_err} writes failing mid-way ({'ENOSPC' if quick else 'ENOSPC, EACCES'} at the "
        f"netCDF writer) on 4 files; {6 * len(damages)} corrupt files (6 files x "
        f"{'/'.join(damages)}) under a finished run, then a rerun (and, after a one-line error, "
        "the recovery it names)",
    )
    return row


# ----------------------------------------------------------------------------- two processes


def lock_campaign(env: Env) -> Row:
    row = Row("two processes on one run folder")
    folder = env.work / "two"
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        import fsnn.experiment.pipeline

        real = fsnn.experiment.pipeline.baseline_stage

        def slow(ctx, questions):
            os.write(w, b"x")
            time.sleep(60)  # holds the folder until killed
            return real(ctx, questions)

        fsnn.experiment.pipeline.baseline_stage = slow
        with contextlib.suppress(BaseException):
            env.run(folder)
        os._exit(0)
    os.close(w)
    os.read(r, 1)
    code, payload = fork_call(lambda: bool(env.run(folder)), env.work / "stderr.log")
    row.tried += 1
    msg = payload.get("fsnn", "")
    if not ("in use" in msg and str(pid) in msg and str(folder) in msg):
        row.lost += 1
        row.notes.append(f"second process did not refuse clearly: {str(payload)[-200:]}")
    else:
        row.notes.append(f"second process: `{msg}`")
    files_while_locked = sorted(p.name for p in folder.iterdir())
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os.close(r)
    code, payload = fork_call(lambda: bool(env.run(folder)), env.work / "stderr.log")
    row.tried += 1
    if "result" not in payload:
        row.lost += 1
        row.notes.append(f"stale lock after SIGKILL blocked the resume: {str(payload)[-200:]}")
    else:
        lost, dup, notes = compare_folders(folder, env.work / "crash-clean", env.config().n_trials)
        row.lost += lost
        row.duplicated += dup
        row.notes.append(
            f"holder SIGKILLed, lock file left behind, resume went through (files while locked: "
            f"{files_while_locked})"
        )
    return row


# ----------------------------------------------------------------------------- malformed input


class _ModelLoadReached(Exception):
    pass


def malformed_campaign(env: Env) -> Row:
    """Bad input over ``fsnn run`` (in process, model loading stubbed) and the public API."""
    row = Row("malformed input (CLI + public API)")
    w = env.work / "bad"
    w.mkdir()
    good = str(env.csv)

    def csv_file(name: str, data: bytes) -> str:
        p = w / name
        p.write_bytes(data)
        return str(p)

    header = b"metadata,problem,answer\n"
    line = "{'topic': 'Art'},Who painted the Mona Lisa?,Leonardo da Vinci\n"
    (w / "a_dir.csv").mkdir()
    (w / "file_not_folder").write_text("x")
    corrupt_cfg = w / "corrupt-cfg"
    corrupt_cfg.mkdir()
    (corrupt_cfg / "config.json").write_text("{not json")
    cli_cases: list[tuple[str, list[str]]] = [
        ("ids not a number", ["--ids", "1,abc"]),
        ("ids negative", ["--ids", "-1"]),
        ("ids beyond the CSV", ["--ids", "99999"]),
        ("ids empty item", ["--ids", "1,,2"]),
        ("ids duplicated", ["--ids", "1,1"]),
        ("limit 0", ["--limit", "0"]),
        ("limit negative", ["--limit", "-3"]),
        ("stratified 0", ["--stratified", "0"]),
        ("limit not an int", ["--limit", "ten"]),
        ("trials 0", ["--trials", "0"]),
        ("batch-trials 0", ["--batch-trials", "0"]),
        ("batch-rows 0", ["--batch-rows", "0"]),
        ("max-new-tokens 0", ["--max-new-tokens", "0"]),
        ("method unknown", ["--methods", "bogus"]),
        ("method layer range past the model", ["--methods", "x=0-99"]),
        ("method reversed range", ["--methods", "x=3-1"]),
        ("method not numbers", ["--methods", "x=a-b"]),
        ("method overlapping segments", ["--methods", "x=0-2,1-3"]),
        ("methods empty", ["--methods", ","]),
        ("judge spec nonsense", ["--judge", "nonsense"]),
        ("judge http without URL", ["--judge", "http:model"]),
        ("judge local without model", ["--judge", "local:"]),
        ("judge URL not http", ["--judge", "http:m@ftp//x"]),
        ("device cuda without CUDA", ["--device", "cuda"]),
        ("device unknown", ["--device", "tpu9"]),
        ("dtype unknown", ["--dtype", "float7"]),
        ("dtype int8", ["--dtype", "int8"]),
        ("model file missing", ["--model", str(w / "missing.gguf")]),
        ("model empty name", ["--model", ""]),
        ("model a text file", ["--model", csv_file("model.gguf", b"not a gguf")]),
        ("ppl-model missing file", ["--ppl-model", str(w / "none.gguf")]),
        ("ndif without ppl-model", ["--backend", "ndif"]),
        ("ndif with 8-bit", ["--backend", "ndif", "--ppl-model", "smollm2-135m", "--load-in-8bit"]),
        ("csv missing", ["--simpleqa-csv", str(w / "missing.csv")]),
        ("csv is a folder", ["--simpleqa-csv", str(w / "a_dir.csv")]),
        ("csv empty", ["--simpleqa-csv", csv_file("empty.csv", b"")]),
        ("csv header only", ["--simpleqa-csv", csv_file("header.csv", header)]),
        (
            "csv latin-1",
            [
                "--simpleqa-csv",
                csv_file(
                    "latin1.csv",
                    header
                    + "{'topic': 'Art'},Qu'est-ce que \u00e9t\u00e9?,\u00e9t\u00e9\n".encode(
                        "latin-1"
                    ),
                ),
            ],
        ),
        (
            "csv utf-16",
            ["--simpleqa-csv", csv_file("utf16.csv", (header.decode() + line).encode("utf-16"))],
        ),
        ("csv binary", ["--simpleqa-csv", csv_file("binary.csv", bytes(range(256)) * 4)]),
        (
            "csv missing column",
            ["--simpleqa-csv", csv_file("cols.csv", b"metadata,problem\nx,y\n")],
        ),
        (
            "csv ragged row",
            ["--simpleqa-csv", csv_file("ragged.csv", header + b"{'topic': 'A'},Q?\n")],
        ),
        (
            "csv bad metadata",
            ["--simpleqa-csv", csv_file("meta.csv", header + b"{not a dict,Q?,A\n")],
        ),
        (
            "csv empty answer",
            ["--simpleqa-csv", csv_file("noans.csv", header + b"{'topic': 'A'},Q?,\n")],
        ),
        ("out is a file", ["--out", str(w / "file_not_folder")]),
        ("out under a file", ["--out", str(w / "file_not_folder" / "run")]),
        ("out corrupt config.json", ["--out", str(corrupt_cfg)]),
        ("seed not an int", ["--seed", "x"]),
    ]
    import fsnn.cli
    import fsnn.models.load

    real_load = fsnn.models.load.load_model
    loads: list[str] = []

    def stub_load(spec, *a, **k):
        loads.append(str(spec))
        if str(spec).startswith(str(w)) or spec == "":  # model-file cases: the real loader answers
            return real_load(spec, *a, **k)
        raise _ModelLoadReached(spec)

    fsnn.models.load.load_model = stub_load
    found_cli: list[str] = []
    try:
        for label, extra in cli_cases:
            out_given = "--out" in extra
            out = w / f"out-{len(loads)}-{abs(hash(label)) % 10**6}"
            argv = [
                "run",
                "--simpleqa-csv",
                good,
                "--model",
                "smollm2-135m",
                "--trials",
                "2",
                *([] if out_given else ["--out", str(out)]),
                *extra,
            ]
            before = (
                sorted(
                    p.name
                    for p in (Path(extra[extra.index("--out") + 1]) if out_given else out).glob("*")
                    if p.name != ".fsnn.lock"
                )
                if (Path(extra[extra.index("--out") + 1]) if out_given else out).is_dir()
                else []
            )
            err = io.StringIO()
            n_loads = len(loads)
            start = time.perf_counter()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    rc = fsnn.cli.main(argv)
                except SystemExit as exc:
                    rc = exc.code if isinstance(exc.code, int) else 1
                except _ModelLoadReached:
                    rc = "model-load"
                except Exception:  # noqa: BLE001
                    rc = "traceback"
                    err.write(traceback.format_exc())
            seconds = time.perf_counter() - start
            text = err.getvalue()
            MESSAGES.append(text)
            lines = [ln for ln in text.splitlines() if ln.strip()]
            row.tried += 1
            target = Path(extra[extra.index("--out") + 1]) if out_given else out
            after = (
                sorted(p.name for p in target.glob("*") if p.name != ".fsnn.lock")
                if target.is_dir()
                else []
            )
            problems = []
            if rc == "traceback" or "Traceback" in text:
                row.tracebacks += 1
                row.crashes += 1
                problems.append("traceback")
            if rc == "model-load" or (
                len(loads) > n_loads and rc != 2 and not str(loads[-1]).startswith(str(w))
            ):
                problems.append("reached model load")
            if rc not in (2, "model-load", "traceback"):
                problems.append(f"exit {rc}")
            if len(lines) != 1 or not lines[0].startswith("fsnn: error:"):
                if rc != "model-load":
                    problems.append(f"{len(lines)} stderr lines")
            if after != before:
                problems.append(f"wrote {sorted(set(after) - set(before))}")
            if problems:
                row.lost += 1
                shown = (lines[-1] if lines else "")[:110]
                found_cli.append(
                    f"`fsnn run {' '.join(extra)}`: {', '.join(problems)}"
                    + (f" (`{shown}`)" if shown else "")
                    + f" [{seconds:.1f} s]"
                )
    finally:
        fsnn.models.load.load_model = real_load
    # public API
    from fsnn.errors import FsnnError
    from fsnn.experiment.pipeline import RunConfig
    from fsnn.experiment.simpleqa import load_simpleqa, select_questions
    from fsnn.judges import JudgeConfig
    from fsnn.steering.layout import SegmentLayout, parse_strengths
    from fsnn.store.files import read_dataset

    qs = load_simpleqa(good)
    api_cases: list[tuple[str, Callable[[], Any]]] = [
        ("RunConfig n_trials 0", lambda: RunConfig(n_trials=0)),
        ("RunConfig mode", lambda: RunConfig(mode="fast")),
        ("RunConfig unknown backend", lambda: RunConfig(backend="yes")),
        ("RunConfig max_new_tokens -1", lambda: RunConfig(max_new_tokens=-1)),
        ("RunConfig dtype unknown", lambda: RunConfig(dtype="float7")),
        ("RunConfig device unknown", lambda: RunConfig(device="tpu9")),
        ("RunConfig limit 0", lambda: RunConfig(limit=0)),
        ("parse_strengths garbage", lambda: parse_strengths("garbage", 4)),
        ("parse_strengths too few values", lambda: parse_strengths("seg:0.1,0.2", 4)),
        ("SegmentLayout past the model", lambda: SegmentLayout.named("x=0-99", 4)),
        ("JudgeConfig bad spec", lambda: JudgeConfig.from_spec("http:nourl")),
        (
            "JudgeConfig key as env name",
            lambda: JudgeConfig(
                backend="http",
                model="m",
                base_url="http://x",
                api_key_env=SECRETS["MISTRAL_API_KEY"],
            ),
        ),
        ("select ids beyond", lambda: select_questions(qs, ids=(99999,))),
        ("select stratified 0", lambda: select_questions(qs, stratified=0)),
        ("read_dataset missing", lambda: read_dataset(w / "none.nc")),
        ("read_dataset a CSV", lambda: read_dataset(good)),
        ("load_simpleqa a folder", lambda: load_simpleqa(w / "a_dir.csv")),
        ("load_model missing file", lambda: real_load(str(w / "missing.safetensors"))),
    ]
    found_api = []
    for label, fn in api_cases:
        row.tried += 1
        try:
            fn()
        except FsnnError as exc:
            MESSAGES.append(str(exc))
            if "\n" in str(exc):
                row.lost += 1
                found_api.append(f"{label}: multi-line error")
            continue
        except Exception as exc:  # noqa: BLE001
            MESSAGES.append(str(exc))
            row.crashes += 1
            row.tracebacks += 1
            found_api.append(
                f"{label}: {type(exc).__name__}: {str(exc).splitlines()[0][:100] if str(exc) else ''}"
            )
            continue
        row.lost += 1
        found_api.append(f"{label}: accepted (no error)")
    row.notes.append(
        f"{len(cli_cases)} CLI cases (`fsnn run` in process, model loading stubbed to detect "
        f"a late check), {len(api_cases)} public-API cases"
    )
    row.notes += [f"found (CLI): {f}" for f in found_cli] + [f"found (API): {f}" for f in found_api]
    return row


# ----------------------------------------------------------------------------- secrets


def secrets_campaign(env: Env, log_path: Path) -> Row:
    row = Row("secrets (files, logs, error texts)")
    # a run whose judge needs the key, plus a CLI run through the real process path
    folder = env.work / "secret-run"
    code, payload = fork_call(
        lambda: bool(env.run(folder, cache=env.work / "secret.sqlite")), env.work / "stderr.log"
    )
    if "result" not in payload:
        row.crashes += 1
        row.notes.append(str(payload)[-300:])
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "fsnn",
            "run",
            "--simpleqa-csv",
            str(env.csv),
            "--model",
            str(env.work / "missing.gguf"),
            "--judge",
            "mistral",
            "--out",
            str(env.work / "cli-run"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    (env.work / "cli.stderr").write_text(cli.stdout + cli.stderr)
    if "Traceback" in cli.stderr:
        row.tracebacks += 1
    files = [p for p in env.work.rglob("*") if p.is_file()]
    values = [v.encode() for v in SECRETS.values()]
    hits = []
    for p in files:
        data = p.read_bytes()
        hits += [f"{p.relative_to(env.work)}" for v in values if v in data]
    for text in MESSAGES:
        hits += ["an error message" for v in SECRETS.values() if v in text]
    row.tried = len(files) + len(MESSAGES)
    row.secrets = len(hits)
    row.notes.append(
        f"{len(files)} files scanned (run folders, judge caches, logs, stderr of every child and of a "
        f"CLI process) and {len(MESSAGES)} error texts, for {len(SECRETS)} fake key values "
        "(judge, NDIF, Mistral); the fake judge server required the key, so it was sent"
    )
    row.notes += [f"found: secret in {h}" for h in hits[:5]]
    return row


# ----------------------------------------------------------------------------- report


GUARANTEES = """\
## What the campaign relies on (and the fixes it brought)

- **Bit-identical resume.** `fsnn.judges.metrics.Perplexity` scores every window in a forward pass
  of its own, without padding: a text's perplexity no longer depends on which texts it is
  batched with (before, a resumed process batched differently and PPL moved by ~1e-7
  relative, so TPE saw another history). Test: `test_perplexity_does_not_depend_on_the_batch`.
- **One process per run folder.** `fsnn.store.lock.run_folder_lock(out)` holds an exclusive
  `fcntl.flock` on `<out>/.fsnn.lock` for the run (`run_pipeline` wraps its stages in
  `with run_folder_lock(out):`); a second process gets `run folder X is in use by another
  fsnn process (pid N)`. The kernel releases a flock when its holder dies, so the lock file
  a SIGKILLed run leaves behind never blocks the resume.
- **Corrupt result files** give one line naming the file and the recovery
  (`fsnn.store.files.read_dataset`: "delete it and rerun the same command to recompute that stage
  (or use --force-new ...)"); an HDF5 `RuntimeError` used to escape as a traceback.
- **No silent judge drop.** A judge answer without a valid grade (no rubric letter A/B/C, a
  score outside 1-5) is not cached, so a rerun asks again (`fsnn.judges.base.Judge._grade`);
  a baseline grade still missing after the retries stops the run with one line and a
  resumable folder instead of quietly dropping the question from the steered set
  (`fsnn.experiment.stages._grade`).
- **Failed writes are one line.** `fsnn.store.files.atomic_write` turns an `OSError` of the write (disk
  full, permission denied; HDF5's `RuntimeError: NetCDF: HDF error` too, with the free space) into
  `cannot write NAME in FOLDER: CAUSE; the previous NAME (if any) is intact; free space / fix
  permissions and rerun the same command to resume`, after removing its temp file.
- **No temp file outlives a kill.** Temp files are `.NAME.XXXXXXXX.tmp`
  (`fsnn.store.files.TEMP_PATTERN`); `run_pipeline` removes the ones in the run folder at start, under
  the run-folder lock (`fsnn.store.files.remove_stale_temp_files`), nothing else.
- **Modes.** Atomic writes create their temp file with mode 0666 less the umask (0644 under
  umask 022), as `open()` would, not `mkstemp`'s 0600.
- **A corrupt `optuna.db`** reads `cannot open Optuna storage PATH (corrupt? ...); delete
  optuna.db and rerun the same command: baseline.nc and references.nc are kept, every method's
  search is recomputed from trial 0 (same seeds, same trials; ...)`. `trials.nc` is rebuilt from
  `optuna.db` on every run, so the search's trials are what is lost.
- **An NDIF outage never changes the trial history.** A service failure after the retries
  (`fsnn.errors.BackendUnavailable`: transport errors, HTTP statuses) stops the search with one
  line; the batch's trials stay RUNNING and a rerun evaluates them with the same parameters
  (before, they were marked FAILED and replaced by new trials).
- **No pickle.** `tests/store/test_reliability_store.py::test_no_pickle_loads_in_the_package` parses
  every module of `fsnn/` and fails on `pickle`/`joblib`/`dill`/`shelve`/`marshal` imports or
  loads and on `torch.load` without `weights_only=True`.
"""


def render(rows: list[Row], *, quick: bool, wall: float, machine: str, seed: int) -> str:
    head = [
        "# Reliability campaign (measured)",
        "",
        f"`PYTHONPATH=. python benchmarks/reliability.py{' --quick' if quick else ''} --seed {seed}` — "
        f"{'quick' if quick else 'full'} campaign, machine: {machine}, wall time {wall:.0f} s.",
        "",
        "Counts per campaign: **tried** (faults, kills or cases delivered), **lost** (rows, trials or grades "
        "missing or different from an uninterrupted run, unclear errors, a case not refused cleanly), "
        "**duplicated** (rows or trials twice), **crashes** (an ending that is not a one-line `FsnnError`), "
        "**tracebacks** (shown to a user), **secrets** (fake key values found); **seconds** (wall) and **CPU s** "
        "(CPU time of the campaign's processes: what the row costs on an idle machine, whatever the load).",
        "",
        "| campaign | tried | lost | duplicated | crashes | tracebacks | secrets | seconds | CPU s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        head.append(
            f"| {r.campaign} | {r.tried} | {r.lost} | {r.duplicated} | {r.crashes} | {r.tracebacks} | "
            f"{r.secrets} | {r.seconds:.0f} | {r.cpu:.0f} |"
        )
    head += ["", GUARANTEES]
    for r in rows:
        head.append(f"## {r.campaign}")
        head.append("")
        head += [f"- {n}" for n in r.notes] or ["- (no notes)"]
        head.append("")
    return "\n".join(head)


def _cpu() -> float:
    """CPU seconds so far of this process and its finished children (forks, the CLI run)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="fsnn reliability campaign",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="the CI campaign (< 3 min on 2 cores)")
    parser.add_argument("--seed", type=int, default=0, help="kill moments and fault order")
    parser.add_argument(
        "--out", default=str(ROOT / "docs" / "reliability.md"), help="markdown report"
    )
    parser.add_argument(
        "--machine", default="2-core shared CPU", help="machine named in the report"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument(
        "--only",
        default=None,
        help="comma separated campaign names (crash,judge,ndif,storage,lock,malformed,secrets)",
    )
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="fsnn-reliability-"))
    log_path = work / "fsnn.log"
    handler = logging.FileHandler(log_path)
    handler.setLevel(logging.DEBUG)
    logging.getLogger().addHandler(handler)
    logging.getLogger("fsnn").setLevel(logging.DEBUG)
    start = time.perf_counter()
    env = Env(work, args.quick)
    os.environ["FSNN_CACHE_DIR"] = str(
        work / "cache"
    )  # judge caches of CLI runs land in the scanned folder
    only = set(args.only.split(",")) if args.only else None
    rows: list[Row] = []

    loads: list[float] = [os.getloadavg()[0]]  # the machine is shared: say how busy it was

    def timed(name: str, fn: Callable[[], Row | list[Row]]) -> None:
        if only is not None and name not in only and name != "crash":
            return
        t, c = time.perf_counter(), _cpu()
        got = fn()
        loads.append(os.getloadavg()[0])
        got = got if isinstance(got, list) else [got]
        for r in got:
            r.seconds = (time.perf_counter() - t) / len(got)
            r.cpu = (_cpu() - c) / len(got)
            print(
                f"{r.campaign}: tried {r.tried} lost {r.lost} dup {r.duplicated} crashes {r.crashes} "
                f"tracebacks {r.tracebacks} secrets {r.secrets} ({r.seconds:.0f} s)",
                flush=True,
            )
        rows.extend(got)

    try:
        timed("crash", lambda: crash_campaign(env, len(HOOKS) if args.quick else 16, rng))
        timed(
            "judge",
            lambda: judge_campaign(env, 20 if args.quick else 60, 110 if args.quick else 300, rng),
        )
        timed("ndif", lambda: ndif_campaign(env, 10 if args.quick else 30))
        timed("storage", lambda: storage_campaign(env, args.quick))
        timed("lock", lambda: lock_campaign(env))
        timed("malformed", lambda: malformed_campaign(env))
        timed("secrets", lambda: secrets_campaign(env, log_path))
    finally:
        env.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work folder kept: {work}")
    wall = time.perf_counter() - start
    cpu_total = _cpu()
    machine = (
        f"{args.machine} ({os.cpu_count()} cores), 1-min load average {min(loads):.1f}-{max(loads):.1f} "
        f"(mean {sum(loads) / len(loads):.1f} over {len(loads)} readings between campaigns)"
    )
    machine += f"; CPU time {cpu_total:.0f} s (this process and its children, a 1-thread campaign)"
    report = render(rows, quick=args.quick, wall=wall, machine=machine, seed=args.seed)
    report = report.replace(str(work), "<work>")  # no machine paths in the report
    from fsnn.store.files import atomic_write_text

    atomic_write_text(args.out, report + "\n")
    print(f"wrote {args.out} ({wall:.0f} s; {machine})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
