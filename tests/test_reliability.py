"""Reliability guarantees, fast checks (the whole campaign is benchmarks/reliability.py)."""

from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from fsnn.errors import FsnnError
from fsnn.judges.metrics import Perplexity
from fsnn.store.files import read_dataset, write_dataset
from fsnn.store.lock import LOCK_NAME, run_folder_lock

ROOT = Path(__file__).resolve().parents[1]

TEXTS = [
    "Question: What is the capital of France?\nAnswer: Paris, on the Seine.",
    "The Danube flows through Vienna.",
    "A violin has four strings, tuned in fifths: G, D, A and E. " * 3,
    "Hi",
    "Michio Sugeno received the award in 2010.",
]


def test_perplexity_does_not_depend_on_the_batch(tiny_gemma2):
    """A resumed run batches texts differently: each text's PPL must be bit-identical."""
    model, tok = tiny_gemma2.hf_model, tiny_gemma2.tokenizer
    together = Perplexity(model, tok, window=16)(TEXTS)
    for i, text in enumerate(TEXTS):
        alone = Perplexity(model, tok, window=16)([text])[0]
        assert alone == together[i] or (np.isnan(alone) and np.isnan(together[i])), text
    shuffled = Perplexity(model, tok, window=16)(TEXTS[::-1])[::-1]
    assert shuffled == together
    assert np.isfinite(together[0]) and together[0] > 1


def _locker_script(folder: Path, then: str) -> str:
    return textwrap.dedent(f"""
        import sys, time, os, signal
        sys.path.insert(0, {str(ROOT)!r})
        from fsnn.store.lock import run_folder_lock
        with run_folder_lock({str(folder)!r}):
            print("locked", flush=True)
            {"os.kill(os.getpid(), signal.SIGKILL)" if then == "die" else "time.sleep(60)"}
    """)


def test_second_process_refuses_and_killed_holder_does_not_block(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", _locker_script(folder, "hold")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(
            FsnnError,
            match=rf"run folder .*run is in use by another fsnn process \(pid {holder.pid}\)",
        ):
            with run_folder_lock(folder):
                pass
    finally:
        holder.kill()
        holder.wait()
    # the holder died by SIGKILL: its lock file stays, but the kernel released the lock
    assert (folder / LOCK_NAME).exists()
    with run_folder_lock(folder):
        assert (folder / LOCK_NAME).read_text().strip() == str(os.getpid())
    dead = subprocess.run(
        [sys.executable, "-c", _locker_script(folder, "die")], capture_output=True, text=True
    )
    assert dead.returncode == -signal.SIGKILL
    with run_folder_lock(folder):
        pass


def test_lock_inside_one_process_is_exclusive_too(tmp_path):
    with run_folder_lock(tmp_path):
        with pytest.raises(FsnnError, match="in use"):
            with run_folder_lock(tmp_path):
                pass


@pytest.mark.parametrize("damage", ["truncated", "empty", "zeroed", "json"])
def test_corrupt_result_file_is_one_line_naming_it_and_the_recovery(tmp_path, damage):
    ds = xr.Dataset(
        {"a": ("x", np.arange(2000.0)), "s": ("x", np.array(["q"] * 2000, dtype=object))}
    )
    path = write_dataset(ds, tmp_path / "results.nc")
    raw = path.read_bytes()
    path.write_bytes(
        {
            "truncated": raw[: len(raw) // 2],
            "empty": b"",
            "zeroed": raw[:2000] + bytes(300) + raw[2300:],
            "json": b'{"a": 1}',
        }[damage]
    )
    with pytest.raises(FsnnError) as info:
        read_dataset(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "delete it and rerun" in message


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    import errno

    path = write_dataset(xr.Dataset({"a": ("x", np.arange(3.0))}), tmp_path / "trials.nc")
    before = path.read_bytes()
    real = xr.Dataset.to_netcdf

    def disk_full(self, target, *a, **k):
        real(self, target, *a, **k)
        with open(target, "r+b") as fh:  # half a file on disk, then the disk fills
            fh.truncate(100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", disk_full)
    with pytest.raises(FsnnError, match="No space left on device"):
        write_dataset(xr.Dataset({"a": ("x", np.arange(5.0))}), path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "trials.nc"
    ]


_UNSAFE_MODULES = {"pickle", "cPickle", "joblib", "dill", "cloudpickle", "shelve", "marshal"}


def _unsafe_loads(source: str, filename: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + (
                [node.module] if isinstance(node, ast.ImportFrom) else []
            )
            found += [
                f"{filename}:{node.lineno} imports {n}"
                for n in names
                if n and n.split(".")[0] in _UNSAFE_MODULES
            ]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            owner_name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
            if node.func.attr == "load" and owner_name == "torch":
                safe = any(
                    k.arg == "weights_only"
                    and isinstance(k.value, ast.Constant)
                    and k.value.value is True
                    for k in node.keywords
                )
                if not safe:
                    found.append(f"{filename}:{node.lineno} torch.load without weights_only=True")
            if node.func.attr in ("load", "loads") and owner_name in _UNSAFE_MODULES:
                found.append(f"{filename}:{node.lineno} {owner_name}.{node.func.attr}")
    return found


def test_the_scanner_finds_unsafe_loads():
    bad = (
        "import pickle\nimport torch\nfrom joblib import load\ntorch.load('x')\npickle.loads(b'')\n"
    )
    assert len(_unsafe_loads(bad, "bad.py")) == 4
    assert _unsafe_loads("import torch\ntorch.load('x', weights_only=True)\n", "ok.py") == []


def test_no_pickle_loads_in_the_package():
    found = []
    for path in sorted((ROOT / "fsnn").rglob("*.py")):
        found += _unsafe_loads(path.read_text(), str(path.relative_to(ROOT)))
    assert found == []


def _http_judge(url, cache_path, **kw):
    from fsnn.judges import JudgeCache, JudgeConfig, make_judge

    cfg = JudgeConfig(
        backend="http",
        model="fake",
        base_url=url,
        timeout=kw.pop("timeout", 2.0),
        max_retries=kw.pop("max_retries", 12),
        backoff_base=0.001,
        backoff_max=0.01,
        concurrency=2,
    )
    return make_judge(cfg, cache=JudgeCache(cache_path) if cache_path else None)


ITEMS = [(f"Who wrote book {i}?", f"Author {i}", f"Author {i * 3}") for i in range(4)]


def test_transport_faults_are_retried_to_the_fault_free_grades(tmp_path):
    from fsnn.judges.parse import parse_quality
    from fsnn.judges.prompts import render_quality
    from tests.fake_openai import TRANSPORT_FAULTS, FakeOpenAI, expected_answer

    with FakeOpenAI(TRANSPORT_FAULTS, sleep_timeout=0.5) as server:
        judge = _http_judge(server.url, None, timeout=0.2)
        grades = judge.grade_quality(ITEMS)
    assert sum(server.injected.values()) == len(TRANSPORT_FAULTS)
    assert judge.requests == len(ITEMS) + len(
        TRANSPORT_FAULTS
    )  # every fault is one retried request
    assert [g.value for g in grades] == [
        parse_quality(expected_answer(render_quality(*i))).score for i in ITEMS
    ]


@pytest.mark.parametrize("fault", ["bad_letter", "bad_score"])
def test_an_answer_without_a_valid_grade_is_not_cached(tmp_path, fault):
    from tests.fake_openai import FakeOpenAI

    with FakeOpenAI([fault]) as server:
        judge = _http_judge(server.url, tmp_path / "cache.sqlite")
        grade = judge.grade_simpleqa if fault == "bad_letter" else judge.grade_quality
        first = grade(ITEMS[:1])[0]
        assert first.defaulted or first.missing
        again = grade(ITEMS[:1])[0]  # a rerun asks again and gets the real grade
        assert not again.defaulted and not again.missing and not again.cached
        assert grade(ITEMS[:1])[0].cached  # a valid answer is cached
    assert server.served == 2


def test_fake_server_stops_by_itself():
    from tests.fake_openai import FakeOpenAI

    server = FakeOpenAI(lifetime=0.3)
    server._thread.join(timeout=5)
    assert not server._thread.is_alive()
    with pytest.raises(ValueError, match="unknown fault"):
        FakeOpenAI(["nope"])


def test_a_missing_baseline_grade_stops_the_run_resumably(tiny_gemma2, tmp_path):
    from fsnn.experiment.pipeline import run_pipeline
    from tests.experiment.test_pipeline import small_config, write_csv
    from tests.fake_openai import FakeOpenAI

    csv_path = write_csv(tmp_path / "qa.csv")
    with FakeOpenAI(always="503") as down:
        judge = _http_judge(down.url, tmp_path / "cache.sqlite", max_retries=1)
        with pytest.raises(
            FsnnError,
            match=r"judge http:fake@.*: 2 of 2 baseline grade\(s\) missing \(HTTP 503.*rerun",
        ):
            run_pipeline(
                small_config(limit=2, batch_size=2),
                tmp_path / "run",
                simpleqa_csv=csv_path,
                model=tiny_gemma2,
                judge=judge,
                progress=False,
            )
    assert not (tmp_path / "run" / "baseline.nc").exists()  # no batch saved with a grade missing


HEADER = "metadata,problem,answer\n"
ROW = "{'topic': 'Art'},Qu'est-ce que l'\u00e9t\u00e9?,\u00e9t\u00e9\n"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ((HEADER + ROW).encode("latin-1"), "not UTF-8 text"),
        ((HEADER + ROW).encode("utf-16"), "not UTF-8 text"),
        (bytes(range(256)) * 2, "not UTF-8 text"),
        (HEADER.encode(), "no question rows"),
    ],
)
def test_bad_csv_files_are_one_line_errors(tmp_path, data, message):
    from fsnn.experiment.simpleqa import load_simpleqa

    path = tmp_path / "qa.csv"
    path.write_bytes(data)
    with pytest.raises(FsnnError, match=message) as info:
        load_simpleqa(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(FsnnError, match="SimpleQA CSV not found"):
        load_simpleqa(tmp_path / "folder.csv")
    path.write_bytes((HEADER + ROW).encode("utf-8"))
    assert load_simpleqa(path)[0].answer == "\u00e9t\u00e9"


def test_select_refuses_repeated_ids_and_empty_strata(tmp_path):
    from fsnn.experiment.simpleqa import load_simpleqa, select_questions

    path = tmp_path / "qa.csv"
    path.write_text(HEADER + ROW + ROW.replace("Art", "Music"), encoding="utf-8")
    questions = load_simpleqa(path)
    with pytest.raises(FsnnError, match=r"more than once: \[1\]"):
        select_questions(questions, ids=(1, 0, 1))
    with pytest.raises(FsnnError, match="stratified questions must be > 0"):
        select_questions(questions, stratified=0)
    assert [q.id for q in select_questions(questions, ids=(1, 0))] == [1, 0]


@pytest.mark.parametrize("damage", [b"{not json", b"\x91\xff\x00garbage", b""])
def test_corrupt_config_json_is_one_line_naming_it(tmp_path, damage):
    from fsnn.experiment.pipeline import _prepare_folder

    (tmp_path / "config.json").write_bytes(damage)
    with pytest.raises(
        FsnnError, match=r"config.json is not valid JSON; remove the folder or use --force-new"
    ):
        _prepare_folder(tmp_path, {"a": 1}, force_new=False)
    _prepare_folder(tmp_path, {"a": 1}, force_new=True)  # the way out the message names


# ----------------------------------------------------------------------------- store: failed writes, temp files, modes


@pytest.mark.parametrize(
    ("err", "cause"), [(28, "No space left on device"), (13, "Permission denied")]
)
def test_failed_write_is_one_fsnn_line_naming_the_file(tmp_path, monkeypatch, err, cause):
    """ENOSPC/EACCES mid-write: one FsnnError line (file, folder, cause, what to do), old file kept."""
    import os as _os

    path = write_dataset(xr.Dataset({"a": ("x", np.arange(3.0))}), tmp_path / "results.nc")
    before = path.read_bytes()
    real = xr.Dataset.to_netcdf

    def failing(self, target, *a, **k):
        real(self, target, *a, **k)
        with open(target, "r+b") as fh:  # half a file on disk, then the error
            fh.truncate(100)
        raise OSError(err, _os.strerror(err), str(target))

    monkeypatch.setattr(xr.Dataset, "to_netcdf", failing)
    with pytest.raises(FsnnError) as info:
        write_dataset(xr.Dataset({"a": ("x", np.arange(5.0))}), path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        f"cannot write results.nc in {tmp_path}: {cause}; the previous results.nc"
    )
    assert "rerun the same command" in message
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "results.nc"
    ]


def test_hdf5_write_error_is_one_fsnn_line(tmp_path, monkeypatch):
    """A full disk under HDF5 raises RuntimeError('NetCDF: HDF error'), not an OSError."""
    real = xr.Dataset.to_netcdf

    def hdf_error(self, target, *a, **k):
        real(self, target, *a, **k)
        raise RuntimeError("NetCDF: HDF error")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", hdf_error)
    with pytest.raises(
        FsnnError, match=r"cannot write trials.nc in .*: RuntimeError: NetCDF: HDF error \(.* free"
    ):
        write_dataset(xr.Dataset({"a": ("x", np.arange(5.0))}), tmp_path / "trials.nc")
    assert list(tmp_path.iterdir()) == []

    def a_bug(self, target, *a, **k):  # not an I/O error: not disguised as one
        raise RuntimeError("some bug")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", a_bug)
    with pytest.raises(RuntimeError, match="some bug"):
        write_dataset(xr.Dataset({"a": ("x", np.arange(5.0))}), tmp_path / "trials.nc")
    assert list(tmp_path.iterdir()) == []


def test_failed_text_write_is_one_line_and_cli_prints_one_line(tmp_path, monkeypatch, capsys):
    import errno as _errno

    import fsnn.cli
    from fsnn.store.files import atomic_write_text

    atomic_write_text(tmp_path / "config.json", "{}")

    def full(self, data):
        raise OSError(_errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(
        FsnnError, match=r"^cannot write config.json in .*: No space left on device; the previous"
    ):
        atomic_write_text(tmp_path / "config.json", '{"a": 1}')
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]
    assert (tmp_path / "config.json").read_text() == "{}"

    def handler(args):  # the CLI's entry point meets the error as a stage would raise it
        atomic_write_text(tmp_path / "results.json", "x")

    monkeypatch.setattr(fsnn.cli, "_report", handler)
    assert fsnn.cli.main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fsnn: error: cannot write results.json in ")


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_honour_the_umask(tmp_path, umask, mode):
    from fsnn.store.files import atomic_write_text

    old = os.umask(umask)
    try:
        nc = write_dataset(xr.Dataset({"a": ("x", np.arange(3.0))}), tmp_path / "results.nc")
        js = atomic_write_text(tmp_path / "summary.json", "{}")
    finally:
        os.umask(old)
    assert oct(nc.stat().st_mode & 0o777) == oct(mode)
    assert oct(js.stat().st_mode & 0o777) == oct(mode)


def test_stale_temp_files_are_swept_and_nothing_else(tmp_path):
    from fsnn.store.files import TEMP_PATTERN, atomic_write_text, remove_stale_temp_files

    seen = []

    def spy(tmp):
        seen.append(tmp.name)
        tmp.write_bytes(b"x")

    from fsnn.store.files import atomic_write

    atomic_write(tmp_path / "references.nc", spy)
    assert TEMP_PATTERN.match(seen[0]) and TEMP_PATTERN.match(seen[0])["name"] == "references.nc"
    stale = [".references.nc.mcf4et6n.tmp", ".trials.nc.4_tai379.tmp", ".config.json.0123abcd.tmp"]
    kept = [
        "results.nc",
        "notes.tmp",
        ".results.nc.short.tmp",
        ".results.nc.UPPERCAS.tmp",
        "x.results.nc.abcdefgh.tmp",
        ".fsnn.lock",
        ".results.nc.abcdefgh.tmp.bak",
    ]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"half")
    (tmp_path / ".dir.nc.abcdefgh.tmp").mkdir()  # a folder, not a temp file
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".baseline.nc.abcdefgh.tmp").write_bytes(b"half")  # only the folder itself
    removed = remove_stale_temp_files(tmp_path)
    assert sorted(p.name for p in removed) == sorted(stale)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([*kept, ".dir.nc.abcdefgh.tmp", "references.nc", "sub"])
    assert (tmp_path / "sub" / ".baseline.nc.abcdefgh.tmp").exists()
    assert remove_stale_temp_files(tmp_path / "missing") == []
    atomic_write_text(tmp_path / "summary.md", "ok")  # its own temp file is gone after a write
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".summary.md.")]


def test_run_start_sweeps_temp_files_under_the_lock(tiny_gemma2, tmp_path, monkeypatch):
    """A SIGKILLed netCDF write leaves .NAME.nc.XXXX.tmp; the next run removes it, under the lock."""
    import fsnn.experiment.pipeline
    from fsnn.experiment.pipeline import run_pipeline
    from tests.experiment.test_pipeline import small_config, write_csv

    csv_path = write_csv(tmp_path / "qa.csv")
    out = tmp_path / "run"
    out.mkdir()
    (out / ".references.nc.mcf4et6n.tmp").write_bytes(b"half a netCDF file")
    (out / "my-notes.txt").write_text("kept")
    held = []
    real = fsnn.experiment.pipeline.remove_stale_temp_files

    def spy(folder):
        with pytest.raises(FsnnError, match="in use"):  # the run holds the folder's lock now
            with run_folder_lock(folder):
                pass
        held.append(True)
        return real(folder)

    monkeypatch.setattr(fsnn.experiment.pipeline, "remove_stale_temp_files", spy)
    run_pipeline(
        small_config(limit=2, batch_size=2),
        out,
        simpleqa_csv=csv_path,
        model=tiny_gemma2,
        progress=False,
    )
    assert held == [True]
    assert not list(out.glob(".*.tmp")) and (out / "my-notes.txt").read_text() == "kept"


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_optuna_db_is_one_line_with_a_correct_recovery(tiny_gemma2, tmp_path, damage):
    from fsnn.experiment.pipeline import run_pipeline
    from tests.experiment.test_pipeline import small_config, write_csv

    csv_path = write_csv(tmp_path / "qa.csv")
    out = tmp_path / "run"
    config = small_config(limit=2, batch_size=2)
    first = run_pipeline(config, out, simpleqa_csv=csv_path, model=tiny_gemma2, progress=False)
    db = out / "optuna.db"
    raw = db.read_bytes()
    db.write_bytes(raw[: len(raw) // 2] if damage == "truncated" else bytes(range(256)) * 64)
    refs = read_dataset(out / "references.nc").drop_attrs()
    with pytest.raises(FsnnError) as info:
        run_pipeline(config, out, simpleqa_csv=csv_path, model=tiny_gemma2, progress=False)
    message = str(info.value)
    assert "\n" not in message and f"{db} (corrupt?" in message
    assert (
        "delete optuna.db and rerun the same command" in message
        and "recomputed from trial 0" in message
    )
    db.unlink()  # the recovery the message names: the search is redone, to the same numbers
    again = run_pipeline(config, out, simpleqa_csv=csv_path, model=tiny_gemma2, progress=False)
    assert read_dataset(out / "references.nc").drop_attrs().identical(refs)
    assert again.drop_attrs().identical(first.drop_attrs())


# ----------------------------------------------------------------------------- NDIF down mid-search


def test_call_with_retries_tells_a_service_failure_from_a_job_error():
    import httpx

    from fsnn.backends.ndif import call_with_retries
    from fsnn.backends.retry import RetryPolicy
    from fsnn.errors import BackendUnavailable

    req = httpx.Request("POST", "https://ndif.example/request")

    def status(code):
        def fn():
            raise httpx.HTTPStatusError(
                str(code), request=req, response=httpx.Response(code, request=req)
            )

        return fn

    policy = RetryPolicy(attempts=2, backoff_base=0.0)
    for fn in (
        status(503),
        status(401),
        lambda: (_ for _ in ()).throw(httpx.ConnectError("refused")),
    ):
        with pytest.raises(BackendUnavailable):
            call_with_retries(fn, policy=policy, sleep=lambda s: None)

    def job_error():
        raise RuntimeError("job ERROR: shape mismatch in the trace")

    with pytest.raises(FsnnError) as info:
        call_with_retries(job_error, policy=policy, sleep=lambda s: None)
    assert not isinstance(info.value, BackendUnavailable)


def test_backend_down_mid_search_stops_and_resumes_to_the_same_trials(monkeypatch, tmp_path):
    """An outage is not the trial's fault: no FAILED trial, the resume asks nothing new."""
    import optuna

    import fsnn.search.run as search
    from fsnn.errors import BackendUnavailable
    from fsnn.search.run import SearchConfig, open_storage, run_search
    from fsnn.steering.layout import SegmentLayout
    from tests.search.test_search import _stub_generate, _stub_items, _stub_ppl, _StubModel

    cfg = SearchConfig(n_trials=3, batch_trials=1, batch_rows=2, sampler="tpe", n_startup_trials=1)
    monkeypatch.setattr(search, "steered_generate", _stub_generate())
    clean = run_search(
        _StubModel(),
        _stub_items(),
        SegmentLayout.full(4),
        cfg,
        storage=open_storage(f"sqlite:///{tmp_path}/clean.db"),
        ppl=_stub_ppl,
        progress=False,
    )
    works = _stub_generate()
    calls = []

    def down_once(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise BackendUnavailable(
                "steering batch of 2 rows failed at NDIF after 3 attempts: HTTP 503"
            )
        return works(*a, **k)

    monkeypatch.setattr(search, "steered_generate", down_once)
    storage = open_storage(f"sqlite:///{tmp_path}/down.db")
    with pytest.raises(BackendUnavailable):
        run_search(
            _StubModel(),
            _stub_items(),
            SegmentLayout.full(4),
            cfg,
            storage=storage,
            ppl=_stub_ppl,
            progress=False,
        )
    states = [
        t.state
        for s in optuna.get_all_study_summaries(storage)
        for t in optuna.load_study(study_name=s.study_name, storage=storage).trials
    ]
    assert optuna.trial.TrialState.FAIL not in states and optuna.trial.TrialState.RUNNING in states
    again = run_search(
        _StubModel(),
        _stub_items(),
        SegmentLayout.full(4),
        cfg,
        storage=storage,
        ppl=_stub_ppl,
        progress=False,
    )
    assert int(clean.failed_trials.sum()) == 0 and (clean.best_trial.values >= 0).all()
    assert again.drop_attrs().identical(clean.drop_attrs())


# ----------------------------------------------------------------------------- malformed input, before any load


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--limit", "ten"], "--limit"),
        (["--seed", "x"], "--seed"),
        (["--ids", "1,,2"], "--ids"),
        (["--ids", "1,abc"], "--ids"),
        (["--trials", "0"], "--trials"),
    ],
)
def test_cli_option_errors_are_one_line_naming_the_option(tmp_path, capsys, argv, option):
    import fsnn.cli

    with pytest.raises(SystemExit) as info:
        fsnn.cli.main(["run", "--out", str(tmp_path / "run"), *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"fsnn: error: fsnn run: argument {option}: ")
    assert not (tmp_path / "run").exists()


def _refuse_load(*a, **k):
    raise AssertionError("a model was loaded before the options were checked")


def test_a_text_file_named_gguf_is_refused_before_the_run_folder(tmp_path, monkeypatch, capsys):
    import fsnn.cli
    import fsnn.models.load
    from tests.experiment.test_pipeline import write_csv

    monkeypatch.setattr(fsnn.models.load, "load_model", _refuse_load)
    fake = tmp_path / "model.gguf"
    fake.write_text("not a gguf")
    csv_path = write_csv(tmp_path / "qa.csv")
    rc = fsnn.cli.main(
        [
            "run",
            "--simpleqa-csv",
            str(csv_path),
            "--model",
            str(fake),
            "--out",
            str(tmp_path / "run"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert f"{fake} is not a GGUF file" in err
    assert not (tmp_path / "run").exists()


def test_layer_range_past_the_model_is_refused_before_the_run_folder(
    tmp_path, monkeypatch, tiny_gemma2
):
    import json

    import fsnn.models.load
    from fsnn.experiment.pipeline import run_pipeline
    from fsnn.models.load import model_depth
    from tests.experiment.test_pipeline import small_config, write_csv

    monkeypatch.setattr(fsnn.models.load, "load_model", _refuse_load)
    csv_path = write_csv(tmp_path / "qa.csv")
    folder = tmp_path / "model"  # a model folder: its depth is read from config.json, no weights
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"num_hidden_layers": 6}))
    assert model_depth(str(folder)) == 6 and model_depth(str(tmp_path / "none")) is None
    (folder / "config.json").write_text(json.dumps({"text_config": {"num_hidden_layers": 5}}))
    assert model_depth(str(folder)) == 5
    with pytest.raises(FsnnError, match=r"layer range 0-99 outside a model with 5 layers"):
        run_pipeline(
            small_config(model=str(folder), methods=("x=0-99",)),
            tmp_path / "a",
            simpleqa_csv=csv_path,
        )
    assert not (tmp_path / "a").exists()
    with pytest.raises(
        FsnnError, match=rf"layer range 2-40 outside a model with {tiny_gemma2.n_layers} layers"
    ):
        run_pipeline(
            small_config(methods=("x=2-40",)),
            tmp_path / "b",
            simpleqa_csv=csv_path,
            model=tiny_gemma2,
        )
    assert not (tmp_path / "b").exists()


def _gguf_header(pairs):
    import struct

    def s(text):
        raw = text.encode()
        return struct.pack("<Q", len(raw)) + raw

    out = b"GGUF" + struct.pack("<IQQ", 3, 0, len(pairs))
    for key, kind, payload in pairs:
        out += s(key) + struct.pack("<I", kind) + payload
    return out


def test_gguf_depth_is_read_from_the_header_without_loading(tmp_path):
    import struct

    from fsnn.models.load import _gguf_block_count, model_depth

    def s(text):
        return struct.pack("<Q", len(text.encode())) + text.encode()

    tokens = (
        struct.pack("<IQ", 8, 3) + s("a") + s("bb") + s("ccc")
    )  # an array of strings before the depth
    scores = struct.pack("<IQ", 6, 3) + struct.pack("<3f", 0.1, 0.2, 0.3)
    path = tmp_path / "m.gguf"
    path.write_bytes(
        _gguf_header(
            [
                ("general.architecture", 8, s("llama")),
                ("tokenizer.ggml.tokens", 9, tokens),
                ("tokenizer.ggml.scores", 9, scores),
                ("general.flag", 7, struct.pack("<?", True)),
                ("llama.block_count", 4, struct.pack("<I", 7)),
            ]
        )
        + b"\0" * 64
    )
    assert _gguf_block_count(path) == 7
    assert model_depth(str(path)) == 7  # no converted copy in the cache: the header answers
    path.write_bytes(_gguf_header([("general.architecture", 8, s("llama"))])[:30])  # truncated
    with pytest.raises(
        FsnnError, match=rf"malformed GGUF header in {re.escape(str(path))}: truncated"
    ):
        _gguf_block_count(path)
    path.write_bytes(b"not a gguf")
    with pytest.raises(FsnnError, match=r"is not a GGUF file"):
        _gguf_block_count(path)
