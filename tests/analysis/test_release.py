"""The release importer: parity with the published numbers, schema, round trip, errors."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from fsnn import cli
from fsnn.analysis.release import (
    METHODS,
    import_release,
    summarize,
    write_release,
)
from fsnn.errors import FsnnError
from fsnn.store.files import read_dataset

REPO_ROOT = Path(__file__).resolve().parents[2]


def _env_dir(name: str) -> Path:
    value = os.environ.get(name)
    if not value:
        pytest.skip(f"{name} is not set (CI sets it to a path under ../shared/data)")
    path = Path(value)
    if not path.is_absolute():
        path = REPO_ROOT / path
    if not path.exists():
        pytest.skip(f"{name}={value} does not exist here")
    return path


@pytest.fixture(scope="module")
def release_dir() -> Path:
    return _env_dir("FSNN_RELEASE_DIR")


@pytest.fixture(scope="module")
def simpleqa_csv() -> Path:
    return _env_dir("FSNN_SIMPLEQA_CSV")


@pytest.fixture(scope="module")
def imported(release_dir: Path, simpleqa_csv: Path):
    return import_release(release_dir, simpleqa_csv)


def _sel(ds: xr.Dataset, method: str | list[str]) -> xr.Dataset:
    return ds.sel({"method": method})  # not sel(method=...): a keyword of sel itself


# ------------------------------------------------------------- the real release


def test_260_prompts_per_method(imported):
    res = imported.results
    assert list(res["method"].values) == list(METHODS)
    assert res.sizes["prompt"] == 260
    for m in METHODS:
        assert np.all(_sel(res, m)["text"].values != "")


def test_composite_accuracy_matches_paper(imported):
    rows = {
        r["method"]: r["rates"]["composite_ge_0.6"] for r in summarize(imported.results)["methods"]
    }
    assert [rows[m]["k"] for m in METHODS] == [9, 42, 66]
    assert [round(100 * rows[m]["estimate"], 1) for m in METHODS] == [3.5, 16.2, 25.4]


def test_token_overlap_equals_released_on_every_steered_row(imported):
    steered = _sel(imported.results, ["full", "segmented"])
    ours, released = steered["token_overlap"].values, steered["token_overlap_released"].values
    assert np.all(np.isfinite(released))
    np.testing.assert_array_equal(ours, released)


def test_no_nan_where_the_release_has_a_value(imported):
    res = imported.results
    for m in ("full", "segmented"):
        s = _sel(res, m)
        for name in (
            "perplexity",
            "objective",
            "token_overlap",
            "token_overlap_completion",
            "alpha",
            "gamma",
        ):
            assert np.all(np.isfinite(s[name].values)), (m, name)
    for m in METHODS:
        assert np.all(np.isfinite(_sel(res, m)["judge_score"].values)), m
    # no released value -> NaN, not a made-up number
    base = _sel(res, "baseline")
    assert np.all(np.isnan(base["token_overlap_released"].values))
    assert np.all(np.isnan(base["alpha"].values))


def test_texts_completions_and_grades(imported):
    res = imported.results
    q = res["question"].values
    for i in (0, 48, 259):
        assert (
            _sel(res, "baseline")["text"].values[i]
            == q[i] + _sel(res, "baseline")["completion"].values[i]
        )
        header = f"Question: {q[i]}\nAnswer and explanation:"
        for m in ("full", "segmented"):
            assert _sel(res, m)["text"].values[i] == header + _sel(res, m)["completion"].values[i]
    assert set(_sel(res, "baseline")["simpleqa_grade"].values) == {"INCORRECT"}
    assert set(_sel(res, ["full", "segmented"])["simpleqa_grade"].values.ravel()) == {""}
    assert res.attrs["judge"] == "mistral-small-latest (released)"
    # prompt 48 is listed last in the segmented summary: aligned by prompt_idx
    assert "Sagar-Runi" in _sel(res, "segmented")["text"].values[48]
    # the only Optuna-selected text never graded: segmented prompt 66
    assert res.attrs["judge_from_summary_score"] == '{"segmented": [66]}'
    assert res.attrs["judge_summary_disagrees"] == "{}"


def test_topics_subsets_and_mangled_answers(imported):
    res, sub = imported.results, imported.subsets
    assert np.all(res["simpleqa_id"].values >= 0)
    assert np.all(res["topic"].values != "")
    assert sub.sizes["simpleqa_id"] == 4326
    assert int(sub["in_first_500"].sum()) == 500 and int(sub["in_failures"].sum()) == 260
    assert np.all(sub["in_first_500"].values[:500] == 1)
    assert np.all(sub["in_failures"].values[res["simpleqa_id"].values] == 1)
    differ = res["answer"].values != res["answer_simpleqa"].values
    assert differ.sum() == 33
    assert "23-Oct-18" in set(res["answer"].values[differ])


def test_trial_grades(imported):
    tg = imported.trial_grades
    assert tg.sizes == {"method": 1, "prompt": 260, "trial": 5}
    assert int(np.isfinite(tg["judge_score"].values).sum()) == 525
    assert int(tg["is_best"].sum()) == 259
    # best-of-k histogram of the release's segmented plot (docs/method.md §8)
    best = np.nanmax(tg["judge_score"].values[0], axis=-1)
    assert [int(np.sum(best == g)) for g in range(1, 6)] == [39, 167, 25, 13, 16]
    selected = _sel(imported.results, "segmented")["judge_score"].values
    assert [int(np.sum(selected == g)) for g in range(1, 6)] == [52, 165, 22, 8, 13]


def test_round_trip_identical(imported, tmp_path):
    paths = write_release(imported, tmp_path)
    assert set(paths) == {"results", "trial_grades", "subsets"}
    xr.testing.assert_identical(read_dataset(paths["results"], "results"), imported.results)
    xr.testing.assert_identical(read_dataset(paths["trial_grades"]), imported.trial_grades)
    xr.testing.assert_identical(read_dataset(paths["subsets"]), imported.subsets)


def test_cli_prints_summary(release_dir, simpleqa_csv, tmp_path, capsys):
    rc = cli.main(["import-release", str(release_dir), "--out", str(tmp_path / "run"),
                   "--simpleqa-csv", str(simpleqa_csv)])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0
    assert "66 (25.4%)" in out and "42 (16.2%)" in out and "9 (3.5%)" in out
    assert (tmp_path / "run" / "results.nc").is_file()


# ------------------------------------------------- a tiny synthetic release (no env)

Q = ["Who won A?", "When was B built?", "Where is C?"]
GT = ["Ann Lee", "1954", "Paris"]


def _write(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def _steer(q: str, body: str) -> str:
    return f"Question: {q}\nAnswer and explanation:{body}"


def make_release(root: Path) -> Path:
    """Three prompts, all eight files, in the release's column layout."""
    root.mkdir(parents=True, exist_ok=True)
    base = [f"{q}\n\nI think it is Bob." for q in Q]
    full = [_steer(Q[0], " Ann Lee won."), _steer(Q[1], " In 1954."), _steer(Q[2], " Lyon.")]
    seg = [_steer(Q[0], " Ann."), _steer(Q[1], " 1954."), _steer(Q[2], " Paris, France.")]
    _write(root / "simpleqa_initial_outputs.csv", ["prompt", "response", "ground_truth"],
           [[q, b, g] for q, b, g in zip(Q, base, GT, strict=True)] + [["Extra?", "x", "y"]])  # fmt: skip
    _write(root / "incorrect.csv", ["prompt", "response", "ground_truth", "grade_string"],
           [[q, b, g, "INCORRECT"] for q, b, g in zip(Q, base, GT, strict=True)])  # fmt: skip
    _write(root / "corrected_responses.csv", ["prompt", "ground_truth", "corrected_response", "explanation"],
           [[q, g, f"Question: {q}\nAnswer: {g}", ""] for q, g in zip(Q, GT, strict=True)])  # fmt: skip
    tail = ["generated_text", "prompt", "ground_truth", "explanation", "score"]
    _write(root / "per_prompt_optuna_summary_full.csv",
           ["prompt_idx", "alpha", "gamma", "token_overlap", "perplexity", "combined_score", *tail],
           [[0, 0.5, 0.4, 1.0, 10.0, 0.67, full[0], Q[0], GT[0], "", 5],
            [1, 0.2, 0.9, 1.0, 20.0, 0.64, full[1], Q[1], GT[1], "", 4],
            [2, 0.3, 0.3, 0.0, 30.0, -0.09, full[2], Q[2], GT[2], "", 1]])  # fmt: skip
    seg_cols = [f"{p}_{s}" for p in ("alpha", "gamma") for s in ("early", "middle", "late")]
    _write(root / "per_prompt_optuna_summary_segmented.csv",
           ["prompt_idx", *seg_cols, "token_overlap", "perplexity", "combined_score", *tail],
           [[2, .1, .2, .3, .4, .5, .6, 1.0, 9.0, 0.673, seg[2], Q[2], GT[2], "", 3],  # out of order
            [0, .1, .2, .3, .4, .5, .6, 0.5, 8.0, 0.326, seg[0], Q[0], GT[0], "", 2],
            [1, .1, .2, .3, .4, .5, .6, 1.0, 7.0, 0.679, seg[1], Q[1], GT[1], "", 4]])  # fmt: skip
    gcols = ["prompt_id", "question", "target", "predicted", "score", "notes"]
    _write(root / "mistral_grader_results_baseline.csv", gcols,
           [[i, Q[i], GT[i], base[i], 1, "n"] for i in range(3)])  # fmt: skip
    _write(root / "mistral_grader_results_full.csv", gcols,
           [[i, Q[i], GT[i], full[i], s, "n"] for i, s in enumerate((5, 4, 1))])  # fmt: skip
    _write(root / "mistral_grader_results_segmented.csv", gcols,
           [[0, Q[0], GT[0], _steer(Q[0], " Bob."), 4, "other trial"],
            [0, Q[0], GT[0], seg[0], 2, "selected"],
            [1, Q[1], GT[1], seg[1], 4, "n"],
            [2, Q[2], GT[2], seg[2], 3, "n"]])  # fmt: skip
    return root


@pytest.fixture(autouse=True)
def _no_simpleqa_env_for_synthetic(request, monkeypatch):
    # the synthetic release is not in SimpleQA: CI's FSNN_SIMPLEQA_CSV must not apply
    if "imported" not in request.fixturenames and "simpleqa_csv" not in request.fixturenames:
        monkeypatch.delenv("FSNN_SIMPLEQA_CSV", raising=False)


def test_synthetic_release_without_simpleqa(tmp_path):
    imp = import_release(make_release(tmp_path / "rel"))
    res = imp.results
    assert imp.subsets is None
    assert list(res["topic"].values) == ["", "", ""] and list(res["simpleqa_id"].values) == [-1] * 3
    np.testing.assert_array_equal(_sel(res, "segmented")["judge_score"].values, [2, 4, 3])
    np.testing.assert_array_equal(_sel(res, "segmented")["alpha"].values[0], [0.1, 0.2, 0.3])
    np.testing.assert_array_equal(_sel(res, "full")["gamma"].values[1], [0.9, 0.9, 0.9])
    comp = _sel(res, "full")["composite"].values
    assert math.isclose(comp[0], 0.5 * 1.0 + 0.5 * 5 / 5)
    tg = imp.trial_grades
    assert list(tg["is_best"].values[0, 0]) == [0, 1]
    assert list(tg["judge_score"].values[0, 0]) == [4.0, 2.0]
    assert np.isnan(tg["judge_score"].values[0, 1, 1])  # padding of a prompt with one graded row
    write_release(imp, tmp_path / "run")
    assert not (tmp_path / "run" / "subsets.nc").exists()


def test_missing_judge_counts_as_zero(tmp_path):
    root = make_release(tmp_path / "rel")
    path = root / "mistral_grader_results_baseline.csv"
    rows = list(csv.reader(path.open(encoding="utf-8")))
    rows[1][4] = ""  # the grader failed on prompt 0
    _write(path, rows[0], rows[1:])
    res = import_release(root).results
    base = _sel(res, "baseline")
    assert np.isnan(base["judge_score"].values[0])
    assert base["composite"].values[0] == 0.5 * base["token_overlap"].values[0]


# ------------------------------------------------------------------- bad input


def _edit(path: Path, row: int, column: str, value: str) -> None:
    rows = list(csv.reader(path.open(encoding="utf-8")))
    rows[row][rows[0].index(column)] = value
    _write(path, rows[0], rows[1:])


def test_non_numeric_score_names_file_and_row(tmp_path):
    root = make_release(tmp_path / "rel")
    _edit(root / "mistral_grader_results_full.csv", 2, "score", "four")
    with pytest.raises(
        FsnnError, match=r"mistral_grader_results_full\.csv, row 2: column 'score'.*'four'"
    ):
        import_release(root)


def test_grade_out_of_range(tmp_path):
    root = make_release(tmp_path / "rel")
    _edit(root / "mistral_grader_results_segmented.csv", 3, "score", "7")
    with pytest.raises(FsnnError, match=r"mistral_grader_results_segmented\.csv, row 3: .*1-5"):
        import_release(root)


def test_bad_prompt_index_and_question(tmp_path):
    root = make_release(tmp_path / "rel")
    _edit(root / "per_prompt_optuna_summary_segmented.csv", 1, "prompt_idx", "9")
    with pytest.raises(
        FsnnError, match=r"per_prompt_optuna_summary_segmented\.csv, row 1: .*0\.\.2"
    ):
        import_release(root)
    root = make_release(tmp_path / "rel2")
    _edit(root / "per_prompt_optuna_summary_full.csv", 3, "prompt", "Something else?")
    with pytest.raises(
        FsnnError, match=r"per_prompt_optuna_summary_full\.csv, row 3: prompt_idx 2"
    ):
        import_release(root)


def test_ragged_row_names_file_and_row(tmp_path):
    root = make_release(tmp_path / "rel")
    with (root / "incorrect.csv").open("a", encoding="utf-8") as fh:
        fh.write("only,two\n")
    with pytest.raises(FsnnError, match=r"incorrect\.csv, row 4: expected 4 fields, got 2"):
        import_release(root)


def test_missing_file_and_column(tmp_path):
    root = make_release(tmp_path / "rel")
    (root / "mistral_grader_results_baseline.csv").unlink()
    with pytest.raises(
        FsnnError, match=r"release file missing: .*mistral_grader_results_baseline\.csv"
    ):
        import_release(root)
    root = make_release(tmp_path / "rel2")
    _write(root / "corrected_responses.csv", ["prompt", "ground_truth"], [[Q[0], GT[0]]])
    with pytest.raises(
        FsnnError, match=r"corrected_responses\.csv: missing column\(s\) explanation"
    ):
        import_release(root)
    with pytest.raises(FsnnError, match="release folder not found"):
        import_release(tmp_path / "nowhere")


def test_bad_simpleqa_metadata(tmp_path):
    root = make_release(tmp_path / "rel")
    sq = tmp_path / "sq.csv"
    _write(sq, ["metadata", "problem", "answer"],
           [["{'topic': 'Art'}", Q[0], GT[0]], ["__import__('os')", Q[1], GT[1]]])  # fmt: skip
    with pytest.raises(FsnnError, match=r"sq\.csv: row 2: field 'metadata'"):
        import_release(root, sq)
    _write(sq, ["metadata", "problem", "answer"], [["{'topic': 'Art'}", "Unrelated?", "x"]])
    with pytest.raises(FsnnError, match="none of the questions"):
        import_release(root, sq)
    _write(sq, ["metadata", "problem", "answer"], [["{'topic': 'Art'}", Q[1], "1954"]])
    imp = import_release(root, sq)
    assert list(imp.results["topic"].values) == ["", "Art", ""]
    assert imp.results.attrs["simpleqa_unmatched_prompts"] == "[0, 2]"
    assert imp.subsets.attrs["unmatched_first_500"] == 3


def test_cli_error_exits_2(tmp_path, capsys):
    rc = cli.main(["import-release", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")])
    assert rc == 2
    assert "release folder not found" in capsys.readouterr().err


# ------------------------------------------------- one reader for importer and judges


def _judge_views(root: Path):
    from fsnn.analysis.release_grades import graded_rows, selected_rows

    return graded_rows(root), {m: selected_rows(m, root) for m in METHODS}


def _assert_views_match_import(root: Path) -> None:
    graded, selected = _judge_views(root)
    imported = import_release(root)
    res = imported.results
    for m in METHODS:
        sel = _sel(res, m)
        np.testing.assert_array_equal(
            selected[m]["judge_score"].to_numpy(), sel["judge_score"].values
        )
        assert selected[m]["text"].tolist() == list(sel["text"].values)
        np.testing.assert_array_equal(
            selected[m]["token_overlap"].to_numpy(), sel["token_overlap"].values
        )
    seg = graded[graded.method == "segmented"]
    tg = imported.trial_grades
    for p, t, score in zip(seg.prompt_id, seg.trial, seg.mistral_score, strict=True):
        assert tg["judge_score"].values[0, p, t] == score or (
            np.isnan(score) and np.isnan(tg["judge_score"].values[0, p, t])
        )


def test_judge_views_and_importer_agree_on_synthetic_release(tmp_path):
    root = make_release(tmp_path / "rel")
    _assert_views_match_import(root)
    graded, selected = _judge_views(root)
    assert graded.trial.tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 0, 0]
    assert selected["segmented"]["judge_score"].tolist() == [2.0, 4.0, 3.0]


def test_judge_views_and_importer_agree_on_real_release(release_dir):
    _assert_views_match_import(release_dir)


def test_blank_grade_is_missing_in_both_views(tmp_path):
    root = make_release(tmp_path / "rel")
    _edit(root / "mistral_grader_results_baseline.csv", 1, "score", "")
    graded, selected = _judge_views(root)  # used to crash casting NaN to int
    assert np.isnan(graded.loc[0, "mistral_score"])
    assert np.isnan(selected["baseline"]["judge_score"][0])
    _assert_views_match_import(root)


@pytest.mark.parametrize(
    "file, row, column, value, message",
    [
        (
            "mistral_grader_results_full.csv",
            2,
            "score",
            "four",
            r"mistral_grader_results_full\.csv, row 2",
        ),
        (
            "mistral_grader_results_segmented.csv",
            1,
            "prompt_id",
            "abc",
            r"segmented\.csv, row 1: column 'prompt_id'",
        ),
        (
            "per_prompt_optuna_summary_full.csv",
            3,
            "prompt",
            "Other?",
            r"summary_full\.csv, row 3: prompt_idx 2",
        ),
    ],
)
def test_judge_views_reject_what_the_importer_rejects(tmp_path, file, row, column, value, message):
    from fsnn.analysis.release_grades import graded_rows, selected_rows

    root = make_release(tmp_path / "rel")
    _edit(root / file, row, column, value)
    for read in (import_release, graded_rows, lambda r: selected_rows("full", r)):
        with pytest.raises(FsnnError, match=message):
            read(root)
