"""``fsnn run --shard I/N`` + ``fsnn merge`` == one process, bit for bit (issue 24).

The tiny random Gemma-2 of conftest is saved to a folder, so every run (and every Ray
worker in test_workers.py) loads the same model by its path.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from fsnn.cli import main
from fsnn.errors import FsnnError
from fsnn.experiment.pipeline import run_pipeline
from fsnn.experiment.shards import Shard, merge_runs
from fsnn.store.files import read_dataset
from tests.experiment.conftest import assert_same_run, shard_config, stable


def test_shard_bounds_cover_every_position_once():
    for n in (1, 5, 6, 17):
        for count in range(1, n + 1):
            spans = [Shard(i, count).bounds(n) for i in range(count)]
            assert spans[0][0] == 0 and spans[-1][1] == n
            assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(spans, spans[1:], strict=False))
    assert Shard.parse(" 1/4 ") == Shard(1, 4) and str(Shard(1, 4)) == "1/4"
    for bad in ("4/4", "1", "-1/2", "a/b", "1/0"):
        with pytest.raises(FsnnError, match="shard must be I/N"):
            Shard.parse(bad)
    with pytest.raises(FsnnError, match="shard 0/3 of 2 selected question"):
        Shard(0, 3).take([1, 2])


def test_search_of_a_prompt_ignores_the_other_prompts(tiny_gemma2):
    """What makes shards and workers equal to one run: a prompt's trials (norm scales
    included) are the same whichever prompts share its search."""
    from fsnn.search.run import SearchConfig, SearchItem, run_search
    from fsnn.steering.layout import SegmentLayout

    torch.manual_seed(0)
    prompts = [
        "Question: who?\nAnswer:",
        "Question: which river flows through Vienna, the capital?\nAnswer:",
        "Q: 2+2?",
    ]
    items = [
        SearchItem(
            key=str(i),
            prompt=p,
            answer="Paris",
            h=torch.randn(tiny_gemma2.n_layers, tiny_gemma2.d_model),
        )
        for i, p in enumerate(prompts)
    ]
    config = SearchConfig(n_trials=3, batch_rows=8)
    layout = SegmentLayout.named("full", tiny_gemma2.n_layers)
    together = run_search(
        tiny_gemma2, items, layout, config, max_new_tokens=4, mode="cached", progress=False
    )
    alone = run_search(
        tiny_gemma2, items[2:], layout, config, max_new_tokens=4, mode="cached", progress=False
    )
    xr.testing.assert_identical(together.isel(prompt=[2]).drop_attrs(), alone.drop_attrs())


def test_shards_merged_equal_one_process(tiny_folder, single_run, tmp_path):
    csv, one = single_run
    for i in (1, 0):
        run_pipeline(
            shard_config(tiny_folder),
            tmp_path / f"s{i}",
            simpleqa_csv=csv,
            progress=False,
            shard=Shard(i, 2),
        )
    manifest = json.loads((tmp_path / "s1" / "shard.json").read_text())
    assert (
        manifest["shard"] == "1/2" and manifest["positions"] == [3, 6] and manifest["selected"] == 6
    )
    report = merge_runs([tmp_path / "s1", tmp_path / "s0"], tmp_path / "merged")
    assert (
        report.prompts == 6
        and report.steered == 6
        and [p.name for p in report.shards] == ["s0", "s1"]
    )
    assert_same_run(one, tmp_path / "merged")
    assert "shard" in json.loads((tmp_path / "s0" / "config.json").read_text())
    assert not list((tmp_path / "merged").glob(".*.tmp"))
    # the merged folder is a finished single run: rerunning it computes nothing new
    res = run_pipeline(
        shard_config(tiny_folder), tmp_path / "merged", simpleqa_csv=csv, progress=False
    )
    xr.testing.assert_identical(stable(res), stable(read_dataset(one / "results.nc")))
    # merging again into the same folder is allowed; the shard folder refuses another shard
    merge_runs([tmp_path / "s0", tmp_path / "s1"], tmp_path / "merged")
    with pytest.raises(FsnnError, match="another config.*shard"):
        run_pipeline(
            shard_config(tiny_folder),
            tmp_path / "s0",
            simpleqa_csv=csv,
            progress=False,
            shard=Shard(1, 2),
        )


def _fake_shard(
    folder: Path, index: int, count: int, ids: list[int], *, n: int = 4, **config
) -> Path:
    """A finished-looking shard folder (config, manifest, baseline, results) without a model."""
    from fsnn.store.files import write_dataset
    from fsnn.store.schema import baseline_dataset
    from tests.run_fixtures import make_results

    folder.mkdir(parents=True)
    ident = {
        "model": "m",
        "n_trials": 2,
        "select": "not-correct",
        "simpleqa_sha256": "x",
        **config,
        "shard": f"{index}/{count}",
    }
    (folder / "config.json").write_text(json.dumps(ident))
    (folder / "shard.json").write_text(
        json.dumps(
            {
                "shard": f"{index}/{count}",
                "index": index,
                "count": count,
                "selected": n,
                "simpleqa_ids": ids,
            }
        )
    )
    rows = [
        {
            "simpleqa_id": i,
            "question": f"q{i}",
            "answer": "a",
            "topic": "t",
            "completion": "c",
            "text": "t",
            "grade": "INCORRECT",
            "grade_source": "proxy",
            "token_overlap": 0.0,
        }
        for i in ids
    ]
    write_dataset(baseline_dataset(rows, {"model": "m"}), folder / "baseline.nc")
    write_dataset(make_results(n=len(ids), simpleqa_ids=ids, judged=False), folder / "results.nc")
    return folder


def test_merge_refuses_with_one_line(tmp_path):
    a = _fake_shard(tmp_path / "a", 0, 2, [0, 1])
    b = _fake_shard(tmp_path / "b", 1, 2, [2, 3], n_trials=3)
    with pytest.raises(
        FsnnError, match=r"cannot merge .*a and .*b: their configurations differ in: n_trials$"
    ):
        merge_runs([a, b], tmp_path / "out")
    c = _fake_shard(tmp_path / "c", 1, 2, [1, 2])
    with pytest.raises(
        FsnnError, match=r"cannot merge .*a and .*c: both hold SimpleQA prompt 1 \(overlapping"
    ):
        merge_runs([a, c], tmp_path / "out")
    with pytest.raises(FsnnError, match=r"both are shard 0/2"):
        merge_runs([a, _fake_shard(tmp_path / "a2", 0, 2, [5])], tmp_path / "out")
    with pytest.raises(
        FsnnError, match=r"missing prompts: shard 1/2 \(positions 2-3 of 4\); run that shard"
    ):
        merge_runs([a], tmp_path / "out")
    d = _fake_shard(tmp_path / "d", 1, 2, [2, 3], model="other")
    with pytest.raises(FsnnError, match=r"differ in: model$"):
        merge_runs([a, d], tmp_path / "out")
    e = _fake_shard(tmp_path / "e", 1, 2, [2, 3])
    (e / "results.nc").unlink()
    with pytest.raises(FsnnError, match=r"shard 1/2 in .*e is not finished \(no results.nc\)"):
        merge_runs([a, e], tmp_path / "out")
    with pytest.raises(FsnnError, match=r"is one of the shard folders"):
        merge_runs([a, _fake_shard(tmp_path / "f", 1, 2, [2, 3])], a)
    with pytest.raises(FsnnError, match=r"not a shard folder"):
        merge_runs([tmp_path], tmp_path / "out")


def test_merge_names_missing_ids_from_the_csv(tiny_folder, single_run, tmp_path, capsys):
    csv, _ = single_run
    code = main(
        [
            "run",
            "--model",
            tiny_folder,
            "--limit",
            "6",
            "--trials",
            "2",
            "--batch-trials",
            "2",
            "--max-new-tokens",
            "4",
            "--mode",
            "cached",
            "--sampler",
            "random",
            "--methods",
            "full",
            "--shard",
            "2/3",
            "--simpleqa-csv",
            str(csv),
            "--out",
            str(tmp_path / "s2"),
            "--no-progress",
        ]
    )
    assert code == 0
    assert json.loads((tmp_path / "s2" / "shard.json").read_text())["simpleqa_ids"] == [4, 5]
    capsys.readouterr()
    code = main(
        ["merge", str(tmp_path / "s2"), "--out", str(tmp_path / "m"), "--simpleqa-csv", str(csv)]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert (
        "missing prompts: shard 0/3 (positions 0-1 of 6); shard 1/3 (positions 2-3 of 6): SimpleQA 0, 1, 2, 3"
        in err
    )
    assert main(["run", "--shard", "3/3", "--out", str(tmp_path / "x")]) == 2
    assert "shard must be I/N" in capsys.readouterr().err
    assert main(["run", "--ray-address", "127.0.0.1:1", "--out", str(tmp_path / "x")]) == 2
    assert "--ray-address needs --workers" in capsys.readouterr().err
    assert np.isfinite(read_dataset(tmp_path / "s2" / "results.nc").token_overlap.values).all()
