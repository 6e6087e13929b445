"""End to end: stages, files and schema, crash/resume, bad input."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from fsnn.errors import FsnnError
from fsnn.experiment.pipeline import RunConfig, run_pipeline
from fsnn.experiment.simpleqa import load_simpleqa, select_questions
from fsnn.judges.scoring import proxy_grade
from fsnn.search.objective import guarded_objective, objective
from fsnn.store.files import read_dataset
from tests.conftest import shared_path

ROWS = [
    (
        "{'topic': 'Geography', 'answer_type': 'Place', 'urls': ['u']}",
        "What is the capital of France?",
        "Paris",
    ),
    (
        "{'topic': 'Science', 'answer_type': 'Person', 'urls': []}",
        "Who received the IEEE Frank Rosenblatt Award in 2010?",
        "Michio Sugeno",
    ),
    (
        "{'topic': 'Music', 'answer_type': 'Number', 'urls': []}",
        "How many strings does a violin have?",
        "4",
    ),
    (
        "{'topic': 'Geography', 'answer_type': 'Place', 'urls': []}",
        "Which river flows through Vienna?",
        "Danube",
    ),
]


def write_csv(path: Path, rows=ROWS, header=("metadata", "problem", "answer")) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def small_config(**kw) -> RunConfig:
    base = dict(
        model="tiny-gemma2",
        limit=3,
        methods=("full", "segmented"),
        n_trials=2,
        batch_trials=2,
        max_new_tokens=4,
        mode="cached",
        sampler="random",
        select="not-correct",
    )
    return RunConfig(**{**base, **kw})


def test_proxy_grade():
    assert proxy_grade("Paris", "It is Paris.") == "CORRECT"
    assert proxy_grade("The Danube", "danube river") == "CORRECT"
    assert proxy_grade("Paris", "Lyon") == "INCORRECT"
    assert proxy_grade("Paris", "  ") == "NOT_ATTEMPTED"
    assert proxy_grade("4", "14 strings") == "INCORRECT"  # whole words only


def test_end_to_end_tiny(tiny_gemma2, tmp_path):
    csv_path = write_csv(tmp_path / "qa.csv")
    out = tmp_path / "run"
    results = run_pipeline(
        small_config(), out, simpleqa_csv=csv_path, model=tiny_gemma2, progress=False
    )
    assert results.method.values.tolist() == ["baseline", "full", "segmented"]
    for name, kind in (
        ("baseline.nc", None),
        ("references.nc", "references"),
        ("trials.nc", "trials"),
        ("results.nc", "results"),
    ):
        ds = read_dataset(out / name, kind)
        for key in (
            "config",
            "model",
            "model_revision",
            "quantization",
            "mode",
            "version_torch",
            "created",
        ):
            assert key in ds.attrs, (name, key)
        with xr.open_dataset(out / name) as raw:
            xr.testing.assert_identical(raw.load(), ds)
    res = read_dataset(out / "results.nc", "results")
    assert set(res.coords) >= {"question", "answer", "topic", "simpleqa_id", "method"}
    assert res.token_overlap.dims == ("method", "prompt")
    assert np.isnan(res.judge_score.values).all() and res.attrs["judge"] == "none"
    # `objective` is one rule on every row, baseline included: the search's guarded objective
    search = small_config().search
    for m, i in np.ndindex(res.objective.shape):
        want = guarded_objective(
            float(res.token_overlap.values[m, i]),
            float(res.perplexity.values[m, i]),
            bool(res.readable.values[m, i]),
            search.objective,
            search.unreadable_penalty,
        )
        assert res.objective.values[m, i] == pytest.approx(want, rel=1e-4), (m, i)
    refs = read_dataset(out / "references.nc")
    assert refs.h.dims == ("prompt", "layer", "hidden") and refs.h.dtype == np.float32
    trials = read_dataset(out / "trials.nc")
    assert trials.objective.dims == ("method", "prompt", "trial")
    assert (trials.is_best.sum("trial").values == 1).all()
    assert not list(out.glob(".*.tmp"))
    # rerunning the finished run changes nothing and reuses everything
    again = run_pipeline(
        small_config(), out, simpleqa_csv=csv_path, model=tiny_gemma2, progress=False
    )
    xr.testing.assert_equal(again.drop_attrs(), results.drop_attrs())


def test_the_baseline_objective_carries_the_readability_guard(tiny_gemma2, tmp_path, monkeypatch):
    # an unreadable baseline scores as the search would score it (guard included), not eq. (6)
    import fsnn.experiment.stages as stages

    monkeypatch.setattr(stages, "readable", lambda text: False)
    res = run_pipeline(
        small_config(methods=("full",)),
        tmp_path / "run",
        simpleqa_csv=write_csv(tmp_path / "qa.csv"),
        model=tiny_gemma2,
        progress=False,
    )
    search = small_config().search
    assert search.unreadable_penalty > 0
    assert res.method.values[0] == "baseline"
    for i in range(res.sizes["prompt"]):
        to, ppl = float(res.token_overlap.values[0, i]), float(res.perplexity.values[0, i])
        want = objective(to, ppl, search.objective) - search.unreadable_penalty
        assert res.objective.values[0, i] == pytest.approx(want), i


def test_other_config_refuses_then_force_new(tiny_gemma2, tmp_path):
    csv_path = write_csv(tmp_path / "qa.csv")
    out = tmp_path / "run"
    run_pipeline(
        small_config(limit=2, methods=("full",)),
        out,
        simpleqa_csv=csv_path,
        model=tiny_gemma2,
        progress=False,
    )
    with pytest.raises(FsnnError, match="another config.*n_trials"):
        run_pipeline(
            small_config(limit=2, methods=("full",), n_trials=3),
            out,
            simpleqa_csv=csv_path,
            model=tiny_gemma2,
            progress=False,
        )
    res = run_pipeline(
        small_config(limit=2, methods=("full",), n_trials=3),
        out,
        simpleqa_csv=csv_path,
        model=tiny_gemma2,
        progress=False,
        force_new=True,
    )
    assert read_dataset(out / "trials.nc").sizes["trial"] == 3 and res.sizes["method"] == 2


def test_bad_csv_rows(tmp_path):
    with pytest.raises(FsnnError, match=r"qa.csv: missing column\(s\) answer"):
        load_simpleqa(
            write_csv(tmp_path / "qa.csv", [r[:2] for r in ROWS], header=("metadata", "problem"))
        )
    bad = [*ROWS[:2], ("{'topic': 'x'}", "Question?", ""), ("{not a dict", "Q2?", "A")]
    path = write_csv(tmp_path / "bad.csv", bad)
    with pytest.raises(FsnnError, match="row 3: empty field 'answer'"):
        load_simpleqa(path)
    kept = load_simpleqa(path, on_bad="skip")
    assert [q.id for q in kept] == [0, 1]
    with pytest.raises(FsnnError, match="row 4: field 'metadata'"):
        load_simpleqa(write_csv(tmp_path / "meta.csv", [*ROWS[:3], bad[3]]))


def test_unwritable_folder(tiny_gemma2, tmp_path):
    if os.geteuid() == 0:
        blocker = tmp_path / "file"
        blocker.write_text("x")
        out = blocker / "run"  # a folder under a regular file cannot exist, even for root
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        out = ro / "run"
    with pytest.raises(FsnnError, match="cannot write to run folder"):
        run_pipeline(
            small_config(),
            out,
            simpleqa_csv=write_csv(tmp_path / "qa.csv"),
            model=tiny_gemma2,
            progress=False,
        )


def test_real_simpleqa_subsets():
    questions = load_simpleqa(shared_path("FSNN_SIMPLEQA_CSV"))
    assert len(questions) == 4326
    assert [q.id for q in select_questions(questions, first=500)] == list(range(500))
    strat = select_questions(questions, stratified=40, seed=1)
    assert len(strat) == 40 and strat == select_questions(questions, stratified=40, seed=1)
    assert len({q.topic for q in strat}) > 5


SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {root!r})
    from tests.conftest import make_tiny
    from tests.experiment.test_pipeline import small_config
    import fsnn.search.run
    from fsnn.models.load import ALIASES, resolve_alias
    from fsnn.experiment.pipeline import run_pipeline
    model = make_tiny("gemma2", resolve_alias(ALIASES["smollm2-135m"]))
    calls = []
    real = fsnn.search.run.steer_each
    def counting(*a, **k):
        calls.append(1)
        if sys.argv[3] == "kill" and len(calls) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*a, **k)
    fsnn.search.run.steer_each = counting
    run_pipeline(small_config(batch_rows=2, sampler="tpe"), sys.argv[1], simpleqa_csv=sys.argv[2], model=model,
                 progress=False)
    """
)


def test_crash_resume_equals_uninterrupted(tmp_path):
    root = str(Path(__file__).resolve().parents[2])
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(root=root))
    csv_path = str(write_csv(tmp_path / "qa.csv"))
    crashed, clean = tmp_path / "crashed", tmp_path / "clean"
    env = {**os.environ, "PYTHONPATH": root}
    first = subprocess.run(
        [sys.executable, str(script), str(crashed), csv_path, "kill"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert first.returncode == -9, first.stderr[-3000:]
    assert (crashed / "references.nc").exists() and not (crashed / "results.nc").exists()
    for folder in (crashed, clean):
        proc = subprocess.run(
            [sys.executable, str(script), str(folder), csv_path, "run"],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = read_dataset(crashed / "results.nc"), read_dataset(clean / "results.nc")
    xr.testing.assert_equal(a.drop_attrs(), b.drop_attrs())
    assert a.sizes["prompt"] == len(set(a.simpleqa_id.values.tolist()))
    assert not list(crashed.glob(".*.tmp"))


def test_remote_serialised_run_equals_local(tiny_factory, tmp_path):
    """Every trace of the pipeline serialised as for NDIF (remote="local") == plain local."""
    model = tiny_factory("llama")
    csv_path = write_csv(tmp_path / "qa.csv")
    cfg = small_config(limit=2, methods=("segmented",), n_trials=2)
    local = run_pipeline(
        cfg, tmp_path / "local", simpleqa_csv=csv_path, model=model, progress=False
    )
    remote = run_pipeline(
        replace(cfg, backend="serialised"),
        tmp_path / "remote",
        simpleqa_csv=csv_path,
        model=model,
        progress=False,
    )
    xr.testing.assert_equal(local.drop_attrs(), remote.drop_attrs())
    xr.testing.assert_allclose(
        read_dataset(tmp_path / "local" / "references.nc").h,
        read_dataset(tmp_path / "remote" / "references.nc").h,
    )


# --------------------------------------------------------------------------- defects (issue 12)


def test_backend_is_part_of_the_folder_identity(tiny_gemma2, tmp_path):
    """A folder made locally refuses to be continued on another backend (numbers could mix)."""
    csv_path = write_csv(tmp_path / "qa.csv")
    cfg = small_config(limit=2, methods=("full",), n_trials=1, batch_trials=1)
    run_pipeline(cfg, tmp_path / "run", simpleqa_csv=csv_path, model=tiny_gemma2, progress=False)
    with pytest.raises(FsnnError, match="another config.*backend"):
        run_pipeline(
            replace(cfg, backend="serialised"),
            tmp_path / "run",
            simpleqa_csv=csv_path,
            model=tiny_gemma2,
            progress=False,
        )


def test_folder_made_before_a_new_identity_field_continues(tiny_gemma2, tmp_path):
    """A folder whose config.json predates ``n_startup_trials`` ran Optuna's 10: it continues at 10 only."""
    import json

    csv_path = write_csv(tmp_path / "qa.csv")
    cfg = small_config(limit=2, methods=("full",), n_trials=1, batch_trials=1, n_startup_trials=10)
    run_pipeline(cfg, tmp_path / "run", simpleqa_csv=csv_path, model=tiny_gemma2, progress=False)
    cfg_path = tmp_path / "run" / "config.json"
    saved = json.loads(cfg_path.read_text())
    del saved["n_startup_trials"]
    cfg_path.write_text(json.dumps(saved))
    run_pipeline(cfg, tmp_path / "run", simpleqa_csv=csv_path, model=tiny_gemma2, progress=False)
    cfg_path.write_text(json.dumps(saved))
    with pytest.raises(FsnnError, match="another config.*n_startup_trials"):
        run_pipeline(
            replace(cfg, n_startup_trials=2),
            tmp_path / "run",
            simpleqa_csv=csv_path,
            model=tiny_gemma2,
            progress=False,
        )


class FlakyJudge:
    """A judge whose calls fail for one question: the failure must be recorded, not dropped."""

    id = "flaky-judge"

    def __init__(self, failing_question: str, tasks=("simpleqa", "quality")):
        self.failing, self.tasks = failing_question, tasks

    def _grades(self, task, items, value):
        from fsnn.judges import Grade

        return [
            Grade(
                task=task, value=None, raw="", judge_id=self.id, error="HTTP 503 after 5 attempts"
            )
            if q == self.failing and task in self.tasks
            else Grade(task=task, value=value, raw=str(value), judge_id=self.id)
            for q, _, _ in items
        ]

    def grade_simpleqa(self, items):
        return self._grades("simpleqa", items, "INCORRECT")

    def grade_quality(self, items):
        return self._grades("quality", items, 2)


def test_missing_baseline_grade_stops_then_resumes(tiny_gemma2, tmp_path):
    """A judge failure at the baseline never drops the question silently: the run stops with
    one line, and the rerun (judge answering again) steers it; grade sources are per row."""
    csv_path = write_csv(tmp_path / "qa.csv")
    cfg = small_config(limit=3, methods=("full",), n_trials=1, batch_trials=1, batch_size=1)
    judge = FlakyJudge(ROWS[1][1])
    with pytest.raises(FsnnError, match="1 of 1 baseline grade.*missing.*HTTP 503.*rerun"):
        run_pipeline(
            cfg,
            tmp_path / "run",
            simpleqa_csv=csv_path,
            model=tiny_gemma2,
            judge=judge,
            progress=False,
        )
    saved = read_dataset(tmp_path / "run" / "baseline.nc")
    assert saved.simpleqa_id.values.tolist() == [0]  # the batch before the failure is kept
    judge.failing = "the endpoint is back"
    results = run_pipeline(
        cfg, tmp_path / "run", simpleqa_csv=csv_path, model=tiny_gemma2, judge=judge, progress=False
    )
    assert 1 in results.simpleqa_id.values.tolist()
    # every steered row's grade source is stored per row, not read from the first row
    assert results.baseline_grade_source.dims == ("prompt",)
    assert set(results.baseline_grade_source.values.tolist()) == {"flaky-judge"}
    assert "baseline_grade_source" not in results.attrs


def test_judge_error_variable_in_results(tiny_gemma2, tmp_path):
    csv_path = write_csv(tmp_path / "qa.csv")
    cfg = small_config(limit=3, methods=("full",), n_trials=1, batch_trials=1)
    judge = FlakyJudge("no question fails", tasks=("quality",))
    results = run_pipeline(
        cfg, tmp_path / "run", simpleqa_csv=csv_path, model=tiny_gemma2, judge=judge, progress=False
    )
    assert results.judge_error.dims == ("method", "prompt")
    assert (results.judge_error.values == "").all()
    judge.failing = str(results.question.values[0])  # now the 1-5 grade of prompt 0 fails
    rerun = run_pipeline(
        cfg,
        tmp_path / "run2",
        simpleqa_csv=csv_path,
        model=tiny_gemma2,
        judge=judge,
        progress=False,
    )
    assert all("HTTP 503" in e for e in rerun.judge_error.values[:, 0])
    assert np.isnan(rerun.judge_score.values[:, 0]).all()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ids", "1,abc"], "ids must be comma-separated integers"),
        (["--device", "cuda"], "no CUDA device"),
        (["--dtype", "float8"], "dtype must be one of"),
        (["--judge", "bogus"], "bad judge spec"),
        (["--methods", "full,weird"], "unknown method 'weird'"),
        (["--trials", "0"], "positive integer"),
    ],
)
def test_cli_options_fail_in_one_line_before_any_model_loads(tmp_path, args, message):
    # a model name that cannot load: if it were loaded first, the error would name it instead
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fsnn",
            "run",
            "--model",
            "no-such-model-xyz",
            "--out",
            str(tmp_path / "run"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fsnn: error:") and message in lines[0], (
        proc.stderr
    )
    assert not (tmp_path / "run").exists()
