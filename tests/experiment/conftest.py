"""Fixtures of the scale-out tests (test_shards.py, test_workers.py): the tiny random
Gemma-2 of tests/conftest.py saved as a model folder (a spec any process, a Ray worker
included, loads), and one uninterrupted single-process run to compare with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import xarray as xr

from fsnn.experiment.pipeline import run_pipeline
from fsnn.store.files import read_dataset
from tests.experiment.test_pipeline import ROWS, small_config, write_csv

FILES = ("baseline", "references", "trials", "results")
VOLATILE = ("created", "git_sha", "model_source")  # time, checkout, cache path
ROWS6 = [*ROWS, *[(m, f"{q} (again)", a) for m, q, a in ROWS[:2]]]


def stable(ds: xr.Dataset) -> xr.Dataset:
    ds.attrs = {
        k: v for k, v in ds.attrs.items() if k not in VOLATILE and not k.startswith("version_")
    }
    return ds


def assert_same_run(a: Path, b: Path) -> None:
    """Two run folders hold the same numbers, texts, dims, order and attributes."""
    assert json.loads((a / "config.json").read_text()) == json.loads(
        (b / "config.json").read_text()
    )
    for name in FILES:
        xr.testing.assert_identical(
            stable(read_dataset(a / f"{name}.nc")), stable(read_dataset(b / f"{name}.nc"))
        )
    assert _trials(a) == _trials(b)
    assert (a / "summary.json").read_text() == (b / "summary.json").read_text()


def _trials(folder: Path) -> dict[str, list[tuple]]:
    """optuna.db as study -> (number, state, params, objective) per trial."""
    import optuna

    storage = optuna.storages.RDBStorage(f"sqlite:///{folder / 'optuna.db'}")
    try:
        return {
            s.study_name: [
                (t.number, t.state.name, t.params, t.value)
                for t in optuna.load_study(study_name=s.study_name, storage=storage).get_trials()
            ]
            for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
        }
    finally:
        storage.engine.dispose()


@pytest.fixture(scope="session")
def tiny_folder(tiny_gemma2, tmp_path_factory) -> str:
    """conftest's tiny Gemma-2 saved as a model folder (a spec any process can load)."""
    folder = tmp_path_factory.mktemp("tiny-gemma2")
    tiny_gemma2.hf_model.save_pretrained(folder)
    tiny_gemma2.tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def single_run(tiny_folder, tmp_path_factory) -> tuple[Path, Path]:
    """(the CSV, the folder of one uninterrupted single-process run of it)."""
    tmp = tmp_path_factory.mktemp("single")
    csv = write_csv(tmp / "qa.csv", ROWS6)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray worker runs
    try:
        run_pipeline(shard_config(tiny_folder), tmp / "one", simpleqa_csv=csv, progress=False)
    finally:
        torch.set_num_threads(threads)
    return csv, tmp / "one"


def shard_config(model: str, **kw):
    """6 rows; batch_size 4, so the single run's baseline batches differ from the shards'
    (3 + 3); 3 trials asked one at a time (6 rounds per search chunk of 3 prompts): one
    enqueued start point, then TPE."""
    return small_config(
        model=model,
        limit=6,
        batch_size=4,
        batch_rows=3,
        n_trials=3,
        batch_trials=1,
        start_trials=1,
        sampler="tpe",
        **kw,
    )
