"""``fsnn run --workers N`` on Ray == one process (issue 24): a local cluster, a killed
worker, a worker that cannot load the model, a second driver, and a two-node cluster.

Skipped, with the reason shown, when Ray is not installed (``pip install 'fsnn[ray]'``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from fsnn.errors import FsnnError
from fsnn.experiment.pipeline import run_pipeline
from fsnn.store.files import read_dataset
from tests.experiment.conftest import assert_same_run, shard_config

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'fsnn[ray]')")

from fsnn.experiment.workers import RayPool  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


class KillingPool(RayPool):
    """Sends SIGKILL to the process of the worker running the first search chunk, once
    that chunk has reported finished trials (so mid-chunk), and records it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.chunk_worker: dict[int, int] = {}
        self.killed: list[tuple[int, int, int]] = []  # (chunk, pid, trials done when killed)
        self.chunk_trials = 0

    def _submitted(self, method, actor, job):
        if method == "search":
            self.chunk_worker[job[0]] = self.actors.index(actor)
            self.chunk_trials = len(job[1]) * len(job[2]) * self._config.n_trials

    def _reported(self, chunk, trials):
        if not self.killed and 0 < trials < self.chunk_trials:
            pid = self.pids[self.chunk_worker[chunk]]
            os.kill(pid, signal.SIGKILL)
            self.killed.append((chunk, pid, trials))


def test_two_workers_equal_one_process_and_survive_a_killed_worker(
    tiny_folder, single_run, tmp_path
):
    csv, one = single_run
    # batch_trials 1, 3 trials: 6 rounds per chunk, so the kill lands inside a chunk
    config = shard_config(tiny_folder)
    with KillingPool(2, progress=False) as pool:
        run_pipeline(config, tmp_path / "w", simpleqa_csv=csv, progress=False, pool=pool)
        assert len(pool.killed) == 1, "the kill never happened"
        pids_after = [ray.get(a.info.remote())["pid"] for a in pool.actors]
    assert pool.killed[0][1] not in pids_after  # the killed worker was restarted by Ray
    assert_same_run(one, tmp_path / "w")  # nothing lost, nothing twice (trial numbers 0..n-1)
    assert not ray.is_initialized()  # the local cluster is stopped with the pool


KILLED_SEARCH = """
import os, signal, sys
sys.path.insert(0, {root!r})
import torch
import fsnn.search.run
from fsnn.experiment.pipeline import run_pipeline
from tests.experiment.conftest import shard_config
torch.set_num_threads(1)
calls = []
real = fsnn.search.run.steer_each
def counting(*a, **k):
    calls.append(1)
    if len(calls) == 3:  # the second round: the first trials told, the second ones RUNNING
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*a, **k)
fsnn.search.run.steer_each = counting
run_pipeline(shard_config(sys.argv[1]), sys.argv[2], simpleqa_csv=sys.argv[3], progress=False)
"""


def test_a_single_run_killed_mid_search_resumes_on_workers(tiny_folder, single_run, tmp_path):
    """optuna.db of a killed single process (finished and RUNNING trials) is continued by
    the workers to the trials an uninterrupted run has."""
    import optuna

    csv, one = single_run
    script = tmp_path / "run.py"
    script.write_text(KILLED_SEARCH.format(root=str(ROOT)))
    out = tmp_path / "run"
    killed = subprocess.run(
        [sys.executable, str(script), tiny_folder, str(out), str(csv)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    storage = optuna.storages.RDBStorage(f"sqlite:///{out / 'optuna.db'}")
    states = {
        t.state.name for s in storage.get_all_studies() for t in storage.get_all_trials(s._study_id)
    }
    storage.engine.dispose()
    assert {"COMPLETE", "RUNNING"} <= states, states
    with RayPool(2, progress=False) as pool:
        run_pipeline(shard_config(tiny_folder), out, simpleqa_csv=csv, progress=False, pool=pool)
    assert_same_run(one, out)


def test_a_worker_that_cannot_load_the_model_is_one_line(tiny_folder, single_run, tmp_path, capsys):
    from fsnn.cli import main

    csv, _ = single_run
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_folder, broken)
    (broken / "model.safetensors").write_bytes(b"not a checkpoint")  # the driver's checks pass
    started = time.perf_counter()
    code = main(
        [
            "run",
            "--model",
            str(broken),
            "--limit",
            "2",
            "--trials",
            "1",
            "--max-new-tokens",
            "2",
            "--simpleqa-csv",
            str(csv),
            "--out",
            str(tmp_path / "run"),
            "--workers",
            "2",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0, err
    assert err.startswith("fsnn: error: worker ") and f"cannot load model {broken}" in err
    assert time.perf_counter() - started < 300  # not a hung run
    assert not ray.is_initialized()


def test_a_second_driver_is_refused_and_ray_errors_are_one_line(tiny_folder, single_run, tmp_path):
    from fsnn.store.lock import run_folder_lock

    csv, _ = single_run
    with (
        run_folder_lock(tmp_path / "busy"),
        pytest.raises(FsnnError, match="in use by another fsnn process"),
    ):
        with RayPool(2, progress=False) as pool:
            run_pipeline(
                shard_config(tiny_folder),
                tmp_path / "busy",
                simpleqa_csv=csv,
                progress=False,
                pool=pool,
            )
    assert not ray.is_initialized()  # refused before Ray started
    with (
        pytest.raises(FsnnError, match=r"cannot join the Ray cluster at 127\.0\.0\.1:9"),
        RayPool(1, "127.0.0.1:9", progress=False) as pool,
    ):
        run_pipeline(
            shard_config(tiny_folder),
            tmp_path / "nocluster",
            simpleqa_csv=csv,
            progress=False,
            pool=pool,
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """``ray start ... --block`` in the foreground of a child we own (stopped by its pid)."""
    fh = open(log, "w")  # noqa: SIM115 - closed with the process
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    proc = subprocess.Popen(
        [ray_cli, "start", *args, "--block"],
        env=env,
        stdout=fh,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    proc._log = fh  # type: ignore[attr-defined]
    deadline = time.monotonic() + 180
    while "block forever" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"ray start failed: {log.read_text()[-2000:]}")
        time.sleep(0.5)
    return proc


def _ray_stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # --block: Ray drains and stops the node's processes
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: only what this test started
            proc.wait()
    proc._log.close()  # type: ignore[attr-defined]


def test_two_nodes_on_this_machine(tiny_folder, single_run, tmp_path):
    """A Ray head and a second node (one CPU each), joined with --ray-address."""
    csv, one = single_run
    port = _free_port()
    temp = Path(
        tempfile.mkdtemp(prefix="fsnnray", dir="/tmp")
    )  # Ray's socket paths must stay short
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    nodes = []
    try:
        nodes.append(
            _ray_start(
                [
                    "--head",
                    f"--port={port}",
                    "--node-ip-address=127.0.0.1",
                    "--num-cpus=1",
                    "--include-dashboard=false",
                    f"--temp-dir={temp}",
                ],
                env,
                tmp_path / "head.log",
            )
        )
        nodes.append(
            _ray_start(
                [f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1", "--num-cpus=1"],
                env,
                tmp_path / "node.log",
            )
        )
        c = shard_config(tiny_folder)
        toml = tmp_path / "run.toml"  # the single run's config (batch_size has no flag)
        toml.write_text(
            "\n".join(
                f"{k} = {json.dumps(list(v) if isinstance(v, tuple) else v)}"
                for k, v in (
                    ("model", c.model),
                    ("limit", c.limit),
                    ("batch_size", c.batch_size),
                    ("batch_rows", c.batch_rows),
                    ("n_trials", c.n_trials),
                    ("batch_trials", c.batch_trials),
                    ("start_trials", c.start_trials),
                    ("max_new_tokens", c.max_new_tokens),
                    ("mode", c.mode),
                    ("sampler", c.sampler),
                    ("methods", c.methods),
                    ("select", c.select),
                )
            )
            + "\n"
        )
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
            str(tmp_path / "w"),
            "--workers",
            "2",
            "--ray-address",
            f"127.0.0.1:{port}",
            "--no-progress",
        ]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert_same_run(one, tmp_path / "w")
        assert env["RAY_AUTH_TOKEN"] not in "".join(
            p.read_bytes().decode(errors="replace")
            for p in (tmp_path / "w").iterdir()
            if p.is_file()
        )
    finally:
        for proc in reversed(nodes):
            _ray_stop(proc)
        shutil.rmtree(temp, ignore_errors=True)


def test_results_read_back(single_run):
    """Guard of the fixture itself: the single run steered every row (non-vacuous comparisons)."""
    _, one = single_run
    res = read_dataset(one / "results.nc")
    assert res.sizes["prompt"] == 6 and res.sizes["method"] == 3
    assert (res.completion.values[1:] != "").all()
