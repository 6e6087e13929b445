"""fsnn show / fsnn compare on tiny run folders (and on the imported release when available)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from run_fixtures import make_results, make_run, make_trials

from fsnn import cli
from fsnn.analysis.inspect import (
    compare_runs,
    format_compare,
    format_prompt,
    prompt_table,
    side_by_side,
)
from fsnn.errors import FsnnError
from fsnn.store.files import open_run, write_dataset

TO = np.array([
    [0.0, 0.5, 0.0, 0.0, 0.0, 0.25],   # baseline
    [1.0, 0.5, 0.0, 0.5, 0.0, 0.25],   # full
    [0.0, 0.5, 0.5, 1.0, 0.0, 0.00],   # segmented
])  # fmt: skip


def _cli(argv, capsys):
    rc = cli.main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture
def run(tmp_path):
    return make_run(tmp_path / "run", judged=False, to=TO)


def test_prompt_table_sorted_by_steering_gain(run, capsys):
    rows = prompt_table(open_run(run))
    assert rows[0]["metric"] == "token_overlap"  # unjudged: the gain is on TO
    # gains (best steered - baseline): 1.0, 0, 0.5, 1.0, 0, 0 -> ids 3, 33, 23, then 13, 43, 53
    assert [r["simpleqa_id"] for r in rows] == [3, 33, 23, 13, 43, 53]
    assert [r["gain"] for r in rows[:3]] == [1.0, 1.0, 0.5]
    rc, out, _ = _cli(["show", str(run), "--width", "100"], capsys)
    assert rc == 0
    ids = [int(line.split()[0]) for line in out.splitlines()[2:]]
    assert ids == [3, 33, 23, 13, 43, 53]
    assert all(len(line) <= 100 for line in out.splitlines()[1:])


def test_gain_uses_the_composite_when_judged(tmp_path):
    judge = np.full((3, 6), 1.0)
    judge[2, 4] = 5.0  # segmented prompt 4 jumps by 0.4 on S_eval with the same TO
    rows = prompt_table(open_run(make_run(tmp_path / "j", to=TO, judge=judge)), "segmented")
    assert rows[0]["metric"] == "composite"
    # S_eval gains of segmented: 0.5*TO gain + 0.1*judge gain -> 0.5 (id 33), 0.4 (43), 0.25 (23)
    assert [r["simpleqa_id"] for r in rows[:3]] == [33, 43, 23]
    assert [r["gain"] for r in rows[:3]] == pytest.approx([0.5, 0.4, 0.25])


def test_one_prompt_shows_texts_strengths_and_every_trial(run):
    rf = open_run(run)
    text = format_prompt(rf, 33, width=90)
    res, trials = rf.results, rf.trials
    i = 3
    assert res.question.values[i] in text
    assert f"Gold answer: {res.answer.values[i]}" in text
    for m in ("baseline", "full", "segmented"):
        # the completion, wrapped: its first words appear on a line
        assert str(res.completion.sel({"method": m}).values[i]).split()[0] in text
    a = float(res.alpha.sel({"method": "full"}).values[i, 0])
    assert f"early α={a:.3f}" in text
    for m in ("full", "segmented"):
        obj = trials.objective.sel({"method": m}).values[i]
        block = text.split(f"trials ({m})")[1].split("\n\n")[0].splitlines()[1:]
        assert len(block) == trials.sizes["trial"]
        best = [k for k, line in enumerate(block) if line.rstrip().endswith("*")]
        assert best == [int(np.argmax(obj))]
        assert f"{obj[0]:+.3f}" in block[0]
    assert all(
        len(line) <= 90
        for line in text.split("== baseline vs full ==")[1].splitlines()
        if "|" in line
    )


def test_show_method_filter_and_diff(run, capsys):
    rc, out, _ = _cli(["show", str(run), "--prompt", "33", "--method", "full", "--diff"], capsys)
    assert rc == 0
    assert "== baseline vs full ==" in out and "segmented" not in out.split("==")[-1]
    assert "--- baseline" in out and "+++ full" in out


def test_side_by_side_wraps_and_marks_differences():
    out = side_by_side(
        "same start. " * 3 + "left end", "same start. " * 3 + "right end", 40, ("a", "b")
    )
    lines = out.splitlines()
    assert all(len(line) <= 40 for line in lines)
    assert any(" | " in line for line in lines[2:]) and any(" * " in line for line in lines[2:])


def test_bad_input_is_one_line(tmp_path, run, capsys):
    (tmp_path / "empty").mkdir()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    write_dataset(
        make_trials(make_results()), foreign / "results.nc"
    )  # a trials file by the wrong name
    cases = [
        (["show", str(tmp_path / "missing")], "run folder not found"),
        (["show", str(tmp_path / "empty")], "has no results.nc"),
        (["show", str(foreign)], "is not an fsnn results file (fsnn_schema 'trials/1')"),
        (["show", str(run), "--prompt", "999"], "prompt 999 is not in"),
        (["show", str(run), "--method", "nope"], "method 'nope' is not in"),
        (["compare", str(run)], "at least two run folders"),
        (["compare", str(run), str(tmp_path / "empty")], "has no results.nc"),
    ]
    for argv, message in cases:
        rc, out, err = _cli(argv, capsys)
        assert rc == 2, argv
        assert message in err and err.count("\n") == 1, (argv, err)


def test_compare_pairs_shared_prompts(tmp_path, capsys):
    a = make_run(tmp_path / "a", judged=False, to=TO)
    to_b = TO.copy()
    to_b[1] = [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]  # full: prompts 1, 2, 3 newly reach TO >= 0.5
    ids_b = [3, 13, 23, 33, 999, 998]  # 4 prompts shared with A (ids 3..33, same questions)
    b = make_run(tmp_path / "b", judged=False, to=to_b, simpleqa_ids=ids_b)
    comp = compare_runs([open_run(a), open_run(b)])
    full = next(p for p in comp["paired"] if p["method"] == "full")
    assert full["n"] == 4
    d = full["metrics"]["token_overlap_ge_0.5"]
    # shared prompts 0-3: A full [1, 1, 0, 1] (TO 1, .5, 0, .5) vs B full [1, 1, 1, 1]
    assert d["estimate"] == pytest.approx(0.25) and (d["better"], d["worse"]) == (1, 0)
    assert d["mcnemar_p"] == 1.0
    base = next(p for p in comp["paired"] if p["method"] == "baseline")
    assert base["metrics"]["token_overlap_ge_0.5"]["estimate"] == 0.0
    rc, out, _ = _cli(["compare", str(a), str(b)], capsys)
    assert rc == 0
    assert "B:full - A:full" in out and "+25.0 pp" in out
    row = next(line for line in out.splitlines() if line.startswith("B ") and " full " in line)
    assert "4 (66.7%)" in row  # B full: 4 of 6 with TO >= 0.5, its own interval after


def test_compare_refuses_other_models_unless_asked(tmp_path, capsys):
    a = make_run(tmp_path / "a", judged=False)
    b = make_run(tmp_path / "b", judged=False, model="other-model")
    c = make_run(tmp_path / "c", judged=False, sha="fff999")
    with pytest.raises(FsnnError, match="differ in model"):
        compare_runs([open_run(a), open_run(b)])
    with pytest.raises(FsnnError, match="differ in dataset"):
        compare_runs([open_run(a), open_run(c)])
    rc, _, err = _cli(["compare", str(a), str(b)], capsys)
    assert rc == 2 and "--allow-different" in err
    rc, out, _ = _cli(["compare", str(a), str(b), "--allow-different"], capsys)
    assert rc == 0 and "other-model" in out


@pytest.fixture(scope="module")
def release_run(tmp_path_factory):
    folder = os.environ.get("FSNN_RELEASE_DIR")
    if not folder:
        pytest.skip("FSNN_RELEASE_DIR is not set")
    from fsnn.analysis.release import import_release, write_release

    out = tmp_path_factory.mktemp("release")
    write_release(import_release(folder), out)
    return out


def test_show_and_compare_on_the_release(release_run, capsys):
    rf = open_run(release_run)
    rows = prompt_table(rf)
    assert len(rows) == 260 and rows[0]["gain"] >= rows[-1]["gain"]
    top = rows[0]
    text = format_prompt(
        rf, top["simpleqa_id"] if top["simpleqa_id"] >= 0 else top["position"], width=100
    )
    assert top["question"] in text and "graded trials (segmented" in text
    comp = compare_runs([rf, rf])
    seg = next(p for p in comp["paired"] if p["method"] == "segmented")
    assert seg["n"] == 260 and seg["metrics"]["composite_ge_0.6"]["estimate"] == 0.0
    print(format_compare(comp))
    assert "66 (25.4%)" in capsys.readouterr().out


def test_compare_shows_a_metric_only_one_run_has(tmp_path):
    a = make_run(tmp_path / "a", judged=False, to=TO)
    b = make_run(tmp_path / "b", judged=False, to=TO, readable=np.ones((3, 6), dtype=int))
    comp = compare_runs([open_run(a), open_run(b)])
    assert [m["key"] for m in comp["metrics"][:2]] == [
        "states_answer",
        "readable_token_overlap_ge_0.5",
    ]
    text = format_compare(comp)
    row_a = next(line for line in text.splitlines() if line.startswith("A ") and " full " in line)
    row_b = next(line for line in text.splitlines() if line.startswith("B ") and " full " in line)
    # columns: run, method, prompts, then "states the answer" (k, pct, [lo, hi]) and the readable rate
    assert row_a.split()[7] == "n/a" and row_b.split()[7] == "3"  # A has no readable; B: 3 of 6


def test_prompt_ids_fall_back_to_positions_without_simpleqa_ids(tmp_path):
    rf = open_run(make_run(tmp_path / "r", judged=False, simpleqa_ids=[-1] * 6))
    assert f"Question: {rf.results.question.values[2]}" in format_prompt(rf, 2, width=200)
    with pytest.raises(FsnnError, match=r"no SimpleQA ids; positions 0\.\.5"):
        format_prompt(rf, 6)
