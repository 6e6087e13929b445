"""A real (tiny) run folder: its optuna.db reads through Optuna's public API as the dashboard
reads it, and show / report work on the pipeline's own output."""

from __future__ import annotations

import csv
import json
import math
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest

from fsnn.experiment.pipeline import RunConfig, run_pipeline
from fsnn.store.files import read_dataset

ROWS = [
    ("{'topic': 'Science', 'answer_type': 'Person', 'urls': []}",
     "Who received the IEEE Frank Rosenblatt Award in 2010?", "Michio Sugeno"),
    ("{'topic': 'Music', 'answer_type': 'Number', 'urls': []}", "How many strings does a violin have?", "4"),
]  # fmt: skip


@pytest.fixture(scope="module")
def run_folder(tiny_gemma2, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dash")
    csv_path = root / "qa.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(("metadata", "problem", "answer"))
        w.writerows(ROWS)
    config = RunConfig(model="tiny-gemma2", limit=2, methods=("full", "segmented"), n_trials=2, batch_trials=2,
                       max_new_tokens=3, mode="cached", sampler="random", select="not-correct")  # fmt: skip
    out = root / "run"
    run_pipeline(config, out, simpleqa_csv=csv_path, model=tiny_gemma2, progress=False)
    return out


def test_study_names_and_user_attrs_through_optuna_public_api(run_folder):
    import optuna

    url = f"sqlite:///{run_folder / 'optuna.db'}"
    trials = read_dataset(run_folder / "trials.nc", "trials")
    summaries = optuna.get_all_study_summaries(url)
    names = sorted(s.study_name for s in summaries)
    ids = [int(i) for i in trials.simpleqa_id.values]
    assert names == sorted(f"{m}/{i}" for m in ("full", "segmented") for i in ids)
    assert all(
        s.n_trials == 2 and s.direction == optuna.study.StudyDirection.MAXIMIZE for s in summaries
    )
    for m in ("full", "segmented"):
        for p, sid in enumerate(ids):
            study = optuna.load_study(study_name=f"{m}/{sid}", storage=url)
            t = trials.sel({"method": m}).isel(prompt=p)
            for k, trial in enumerate(study.trials):
                attrs = trial.user_attrs
                assert set(attrs) >= {
                    "completion",
                    "text",
                    "token_overlap",
                    "perplexity",
                    "objective",
                }
                assert attrs["completion"] == str(t.completion.values[k])
                assert math.isclose(attrs["objective"], float(t.objective.values[k]), rel_tol=1e-12)
                assert trial.value == pytest.approx(attrs["objective"])
            assert study.best_trial.number == int(np.argmax(t.objective.values))


def _get(app, path: str) -> dict:
    """One GET through the dashboard's WSGI app, in process (no server, no network)."""
    status: list[str] = []
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "localhost",
               "SERVER_PORT": "80", "wsgi.url_scheme": "http", "wsgi.input": BytesIO(b""),
               "wsgi.errors": BytesIO(), "SCRIPT_NAME": ""}  # fmt: skip
    body = b"".join(app(environ, lambda s, h, exc_info=None: status.append(s)))
    assert status[0].startswith("200"), (path, status, body[:200])
    return json.loads(body)


def test_optuna_dashboard_reads_the_run(run_folder):
    dashboard = pytest.importorskip(
        "optuna_dashboard", reason="optional extra: pip install 'fsnn[dashboard]'"
    )
    app = dashboard.wsgi(f"sqlite:///{run_folder / 'optuna.db'}")
    listing = _get(app, "/api/studies")
    studies = (
        listing.get("study_summaries") or listing["studies"]
    )  # renamed upstream (a TODO there)
    by_name = {s["study_name"]: s for s in studies}
    trials = read_dataset(run_folder / "trials.nc", "trials")
    sid = int(trials.simpleqa_id.values[0])
    detail = _get(app, f"/api/studies/{by_name[f'segmented/{sid}']['study_id']}")
    keys = {a["key"] for a in detail["union_user_attrs"]}
    assert keys >= {"completion", "text", "token_overlap", "perplexity", "objective"}
    first = {a["key"]: a["value"] for a in detail["trials"][0]["user_attrs"]}
    assert first["completion"] == str(trials.sel({"method": "segmented"}).completion.values[0, 0])


def test_show_and_report_on_the_pipeline_s_own_run(run_folder):
    from fsnn.analysis.inspect import format_prompt, prompt_table
    from fsnn.analysis.report import build_report
    from fsnn.store.files import open_run

    run = open_run(run_folder)
    rows = prompt_table(run)
    assert len(rows) == run.results.sizes["prompt"] >= 1
    text = format_prompt(run, rows[0]["simpleqa_id"], width=100)
    assert "trials (segmented)" in text and "no trials.nc" not in text
    assert "nan" not in text  # each method shows only its own segments (the union holds NaN)
    html = build_report(run)
    assert html.count('src="data:image/png;base64,') == 6  # fig0, fig2..fig6
    summary = json.loads((run_folder / "summary.json").read_text())
    assert [e["method"] for e in summary["methods"]] == ["baseline", "full", "segmented"]
    assert "[" in (run_folder / "summary.md").read_text()  # the run's summary has intervals
