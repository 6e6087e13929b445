"""The golden run: a fixed small run whose ``results.nc`` and ``trials.nc`` must not move.

Recorded before the package was reorganised into stage folders (issue 23) and kept as a
guard: any change to the code that alters a number, a completion or a trial fails here.
4 SimpleQA rows, both modes, both methods, 2 trials per prompt, seed 0, SmolLM2-135M, the
default search. Volatile attributes (creation time, git sha, versions, wall times) are
dropped before comparing; everything else, values and attributes, must be identical.

To re-record after an intended change: ``python -m tests.test_golden --record`` (say why
in the commit).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest
import xarray as xr

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"
IDS = (0, 1, 2, 3)
MODES = ("cached", "faithful")
FILES = ("results.nc", "trials.nc")
_VOLATILE = (
    "created",
    "git_sha",
    "wall_s",
    "stage_walls_s",
    "model_source",
)  # model_source: a cache path


def _stable(ds: xr.Dataset) -> xr.Dataset:
    ds = ds.load()
    ds.attrs = {
        k: v for k, v in ds.attrs.items() if not k.startswith("version_") and k not in _VOLATILE
    }
    return ds


def golden_run(mode: str, out: Path, csv: str) -> None:
    import torch

    from fsnn.experiment.pipeline import RunConfig, run_pipeline

    config = RunConfig(
        model="smollm2-135m",
        ids=IDS,
        methods=("full", "segmented"),
        n_trials=2,
        seed=0,
        mode=mode,
        max_new_tokens=12,
        score_on="completion",
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # float sums split over threads differ in the last bit: pin them
    try:
        run_pipeline(config, out, simpleqa_csv=csv, progress=False)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.real
@pytest.mark.parametrize("mode", MODES)
def test_golden_run_is_unchanged(mode, tmp_path):
    from tests.conftest import shared_path

    csv = shared_path("FSNN_SIMPLEQA_CSV")
    golden_run(mode, tmp_path / mode, csv)
    for name in FILES:
        with (
            xr.open_dataset(GOLDEN / mode / name) as want,
            xr.open_dataset(tmp_path / mode / name) as got,
        ):
            xr.testing.assert_identical(_stable(got), _stable(want))


def _record() -> None:
    csv = os.environ["FSNN_SIMPLEQA_CSV"]
    for mode in MODES:
        with tempfile.TemporaryDirectory() as tmp:
            golden_run(mode, Path(tmp) / mode, csv)
            (GOLDEN / mode).mkdir(parents=True, exist_ok=True)
            for name in FILES:
                with xr.open_dataset(Path(tmp) / mode / name) as ds:
                    _stable(ds).to_netcdf(GOLDEN / mode / name)
            print(mode, "recorded")


if __name__ == "__main__" and "--record" in sys.argv:
    _record()
