"""One reader of run folders (issue 23): ``fsnn.store.files.open_run``.

Its one-line errors (the texts ``fsnn show`` has always printed), its lazy reads, and
that ``fsnn show``/``compare``/``report``/``figures`` read run files only through it:
checked on the source (no other module opens a run file) and at run time (every open
of a run file comes from the reader's checked read).
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from run_fixtures import make_results, make_run, make_trials

import fsnn
from fsnn import cli
from fsnn.errors import FsnnError
from fsnn.store import files
from fsnn.store.files import RUN_FILES, Run, open_run, provenance, write_dataset
from fsnn.store.schema import str_array

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run(tmp_path):
    return make_run(tmp_path / "run", judged=False)


def test_the_public_open_run_is_the_one_reader():
    assert fsnn.open_run is open_run and fsnn.Run is Run


@pytest.mark.parametrize(
    "make, require, message",
    [
        (lambda p: p / "missing", (), "run folder not found: {p}/missing"),
        (lambda p: (p / "f").write_text("x") and p / "f", (), "not a run folder (not a directory): {p}/f"),
        (lambda p: p, (), "{p} is not an fsnn run folder (no baseline/references/trials/results"),
        (lambda p: p, ("results",),
         "not a run folder: {p} has no results.nc (run `fsnn run` or `fsnn import-release`)"),
    ],
)  # fmt: skip
def test_one_line_errors(tmp_path, make, require, message):
    with pytest.raises(FsnnError) as err:
        open_run(make(tmp_path), require=require)
    text = str(err.value)
    assert text.startswith(message.format(p=tmp_path)) and "\n" not in text


def test_require_names_the_missing_file(run):
    r = open_run(run, require=("results", "trials"))
    assert r.references is None and r.trial_grades is None
    with pytest.raises(FsnnError, match=r"run has no references\.nc \(written by `fsnn run`\)$"):
        r.require("references")
    with pytest.raises(FsnnError, match=r"has no trial_grades\.nc \(written by `fsnn import-rel"):
        open_run(run, require=("trial_grades",))
    with pytest.raises(ValueError, match="unknown run file 'optuna'"):
        r.require("optuna")


def test_schema_and_dims_are_checked(tmp_path):
    foreign = tmp_path / "foreign"
    write_dataset(make_trials(make_results()), foreign / "results.nc")  # a trials file renamed
    with pytest.raises(FsnnError, match=r"is not an fsnn results file \(fsnn_schema 'trials/1'\)$"):
        open_run(foreign, require=("results",))
    bare = tmp_path / "bare"
    write_dataset(make_results().drop_attrs(), bare / "results.nc")
    with pytest.raises(FsnnError, match=r"results file \(fsnn_schema 'missing'\)$"):
        open_run(bare, require=("results",))
    swapped = tmp_path / "swapped"
    write_dataset(make_results().transpose("prompt", "method", ...), swapped / "results.nc")
    with pytest.raises(FsnnError, match=r"'token_overlap' has dims \('prompt', 'method'\)"):
        open_run(swapped, require=("results",))
    wrong = make_run(tmp_path / "wrong", judged=False)
    write_dataset(make_results(), wrong / "trials.nc")  # a results file as trials.nc
    r = open_run(wrong, require=("results",))
    with pytest.raises(
        FsnnError, match=r"trials\.nc is not an fsnn trials file \(fsnn_schema 'res"
    ):
        r.trials  # noqa: B018 (the read is the check)


def test_files_are_read_when_first_used(run):
    """``fsnn show`` must not load a (large) references.nc; a damaged one errs when used."""
    (run / "references.nc").write_bytes(b"not netcdf")
    r = open_run(run, require=("results",))
    assert r.files == ("references", "trials", "results")
    assert r.methods == ["baseline", "full", "segmented"]
    assert r.config["model"] == "tiny-model"
    assert cli.main(["show", str(run)]) == 0
    with pytest.raises(FsnnError, match="cannot read .*references.nc"):
        r.references  # noqa: B018
    assert r.trials is r.trials  # read once, kept


def test_a_run_of_given_datasets_needs_no_folder(tmp_path):
    from fsnn.analysis.inspect import prompt_table

    results = make_results(judged=False)
    r = Run(path=tmp_path / "in-memory", results=results)
    assert r.files == ("results",) and r.require("results") is results
    assert len(prompt_table(r)) == results.sizes["prompt"]


def test_inspect_s_old_names_are_deprecated_aliases(run):
    import fsnn.analysis.inspect as inspect_module

    with pytest.warns(FutureWarning, match="RunFolder is now fsnn.store.files.Run"):
        assert inspect_module.RunFolder is Run
    with pytest.warns(FutureWarning, match=r"open_run is now fsnn.store.files.open_run"):
        old_open = inspect_module.open_run
    assert isinstance(old_open(run), Run)
    with pytest.raises(FsnnError, match="has no results.nc"):
        old_open(run.parent)


# ------------------------------------------------------------------- one reader, checked

READERS = {"read_dataset", "open_dataset", "load_dataset", "open_mfdataset", "open_run"}
RUN_FILE = re.compile(rf"(^|/)({'|'.join(RUN_FILES)})\.nc$")


def _names_a_run_file(node: ast.AST) -> bool:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            if RUN_FILE.search(sub.value):
                return True
        if isinstance(sub, ast.JoinedStr):  # f"{name}.nc": any run file
            parts = [v.value for v in sub.values if isinstance(v, ast.Constant)]
            if parts == [".nc"]:
                return True
    return False


def _direct_reads(source: str) -> list[int]:
    """Lines calling a dataset reader whose arguments name a run file (``run / "results.nc"``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        if name in READERS and any(_names_a_run_file(a) for a in [*node.args, *node.keywords]):
            found.append(node.lineno)
    return found


def test_no_module_reads_a_run_file_itself():
    """analysis/, the CLI and the experiments open run folders with open_run only.

    (fsnn/experiment's stages and shards read the files they write themselves, under
    the folder lock, to resume and merge: they are the writer, not readers.)
    """
    sources = [*sorted((ROOT / "fsnn" / "analysis").glob("*.py")), ROOT / "fsnn" / "cli.py",
               *sorted((ROOT / "experiments").rglob("*.py"))]  # fmt: skip
    hits = [
        f"{p.relative_to(ROOT)}:{line}" for p in sources for line in _direct_reads(p.read_text())
    ]
    assert not hits, f"read run folders with fsnn.store.files.open_run: {hits}"


def test_the_source_check_finds_direct_reads():
    source = (
        'read_dataset(run / "results.nc", "results")\n'
        'xr.open_dataset(folder / f"{name}.nc")\n'
        'read_dataset(out / f"trials_{name}.nc")\n'  # a study's own file: allowed
        'read_dataset(path=run / "trial_grades.nc")\n'
    )
    assert _direct_reads(source) == [1, 2, 4]


def test_show_compare_report_figures_read_through_the_one_reader(tmp_path, monkeypatch, capsys):
    """Every open of a run file by these commands happens inside the reader's checked read."""
    a = make_run(tmp_path / "a", judged=False)
    b = make_run(tmp_path / "b", judged=False, seed=1)
    ids = np.arange(40)
    subsets = xr.Dataset(
        {"topic": ("simpleqa_id", str_array(["Art", "Sports"] * 20)),
         "in_first_500": ("simpleqa_id", (ids < 20).astype(np.int64)),
         "in_failures": ("simpleqa_id", (ids % 4 == 0).astype(np.int64))},
        coords={"simpleqa_id": ids}, attrs=provenance("subsets", {}),
    )  # fmt: skip
    write_dataset(subsets, a / "subsets.nc")
    opened: list[tuple[str, bool]] = []
    real = xr.open_dataset

    def spy(path, *args, **kwargs):
        via = any(f.function == "_read_run_file" and f.filename == files.__file__
                  for f in inspect.stack())  # fmt: skip
        opened.append((Path(path).name, via))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(xr, "open_dataset", spy)
    for argv in (
        ["show", str(a)],
        ["show", str(a), "--prompt", "33"],
        ["compare", str(a), str(b)],
        ["report", str(a), "--out", str(tmp_path / "r.html"), "--examples", "2"],
        ["figures", str(a), "--out", str(tmp_path / "figs"), "--format", "png"],
    ):
        opened.clear()
        assert cli.main(argv) == 0, argv
        names = {n for n, _ in opened}
        assert "results.nc" in names, argv
        assert all(via for _, via in opened), (argv, opened)
    assert {"results.nc", "trials.nc", "subsets.nc"} <= names  # figures used every file
    capsys.readouterr()
