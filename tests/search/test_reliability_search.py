"""A damaged optuna.db: one line naming it and a recovery that works.

(The whole campaign is benchmarks/reliability.py.)
"""

from __future__ import annotations

import pytest

from fsnn.errors import FsnnError
from fsnn.store.files import read_dataset


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
