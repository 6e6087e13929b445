"""Release metadata and the distribution checker, without building anything.

The real build (``python -m build`` + ``twine check`` + ``check_dist.py``) is a CI step in
``.ci/run``; here the checker runs on small hand-made archives, so that each rule is shown
to catch what it claims, and the metadata files are read as data.
"""

from __future__ import annotations

import io
import re
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
from check_dist import check_sdist, check_wheel, main, source_files

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
INFO = "fsnn-0.2.0.dist-info"


def _metadata(
    version: str = "2.4", license: bool = True, classifiers: tuple[str, ...] = ("Typing :: Typed",)
) -> str:
    lines = [f"Metadata-Version: {version}", "Name: fsnn", "Version: 0.2.0"]
    lines += ["License-Expression: MIT"] if license else []
    lines += [f"Classifier: {c}" for c in classifiers]
    return "\n".join(lines) + "\n\nthe README\n"


def _wheel(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


def _sdist(path: Path, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _good_wheel_files() -> dict[str, str]:
    return {"fsnn/__init__.py": "", "fsnn/py.typed": "", f"{INFO}/METADATA": _metadata(),
            f"{INFO}/licenses/LICENSE": "MIT", f"{INFO}/RECORD": ""}  # fmt: skip


def _good_sdist_files() -> dict[str, str]:
    top = "fsnn-0.2.0/"
    names = ["LICENSE", "README.md", "CHANGELOG.md", "CITATION.cff", "pyproject.toml", "PKG-INFO",
             "fsnn/__init__.py", "fsnn/py.typed", "tests/test_x.py", "docs/logo.png"]  # fmt: skip
    return {top + n: "" for n in names}


# ------------------------------------------------------------------ the checker's rules


def test_a_good_wheel_and_sdist_pass(tmp_path):
    wheel = _wheel(tmp_path / "fsnn-0.2.0-py3-none-any.whl", _good_wheel_files())
    assert check_wheel(wheel, {"fsnn/__init__.py", "fsnn/py.typed"}) == []
    assert check_sdist(_sdist(tmp_path / "fsnn-0.2.0.tar.gz", _good_sdist_files())) == []
    assert main([str(tmp_path), "--source", str(_tree(tmp_path / "src"))]) == 0


def _tree(root: Path) -> Path:
    (root / "fsnn" / "__pycache__").mkdir(parents=True)
    (root / "fsnn" / "__init__.py").write_text("")
    (root / "fsnn" / "py.typed").write_text("")
    (root / "fsnn" / "__pycache__" / "x.cpython-311.pyc").write_text("")
    return root


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({f"{INFO}/licenses/LICENSE": None}, "licenses/LICENSE"),
        ({"fsnn/py.typed": None}, "py.typed"),
        ({"tests/test_api.py": ""}, "outside the package"),
        ({"runs/readme/results.nc": ""}, "outside the package"),
        ({"figures/fig2_accuracy.png": ""}, "outside the package"),
        ({"fsnn/tests/test_x.py": ""}, "repository folder"),
        ({"fsnn/judges/calibration/cache.sqlite": ""}, "run output"),
        ({"fsnn/fig.png": ""}, "run output"),
        ({f"{INFO}/METADATA": _metadata(version="2.1")}, "Metadata-Version"),
        ({f"{INFO}/METADATA": _metadata(license=False)}, "License-Expression"),
        (
            {
                f"{INFO}/METADATA": _metadata(
                    classifiers=("License :: OSI Approved :: MIT License",)
                )
            },
            "'License ::' classifier",
        ),
    ],
)
def test_each_wheel_rule_catches_its_problem(tmp_path, change, expected):
    files = _good_wheel_files()
    for name, text in change.items():
        if text is None:
            del files[name]
        else:
            files[name] = text
    problems = check_wheel(_wheel(tmp_path / "w.whl", files))
    assert any(expected in p for p in problems), problems


def test_the_wheel_must_hold_exactly_the_source_tree(tmp_path):
    wheel = _wheel(tmp_path / "w.whl", _good_wheel_files() | {"fsnn/stale.py": ""})
    problems = check_wheel(wheel, {"fsnn/__init__.py", "fsnn/py.typed", "fsnn/stages/run.py"})
    assert any(
        "fsnn/stages/run.py is in the source tree but not in the wheel" in p for p in problems
    )
    assert any("fsnn/stale.py is in the wheel but not in the source tree" in p for p in problems)
    assert source_files(_tree(tmp_path / "src")) == {
        "fsnn/__init__.py",
        "fsnn/py.typed",
    }  # no bytecode


@pytest.mark.parametrize(
    ("drop", "add", "expected"),
    [
        ("LICENSE", None, "no fsnn-0.2.0/LICENSE"),
        ("fsnn/py.typed", None, "py.typed"),
        ("CITATION.cff", None, "CITATION.cff"),
        (None, "runs/a/results.nc", "run output"),
        (None, "figures/fig1.png", "run output"),
        (None, "tests/optuna.db", "run output"),
        (None, "tests/golden/results.nc", "run output"),
    ],
)
def test_each_sdist_rule_catches_its_problem(tmp_path, drop, add, expected):
    files = _good_sdist_files()
    if drop:
        del files[f"fsnn-0.2.0/{drop}"]
    if add:
        files[f"fsnn-0.2.0/{add}"] = ""
    problems = check_sdist(_sdist(tmp_path / "s.tar.gz", files))
    assert any(expected in p for p in problems), problems


def test_the_sdist_may_ship_test_fixtures(tmp_path):
    files = _good_sdist_files()
    files["fsnn-0.2.0/tests/data/golden/cached/results.nc"] = ""
    assert check_sdist(_sdist(tmp_path / "s.tar.gz", files)) == []


def test_main_wants_one_wheel_and_one_sdist(tmp_path, capsys):
    assert main([str(tmp_path)]) == 1
    assert "expected one wheel and one sdist" in capsys.readouterr().err


# ------------------------------------------------------------------ the metadata files


def test_pyproject_has_pep639_license_and_release_metadata():
    assert PROJECT["license"] == "MIT" and PROJECT["license-files"] == ["LICENSE"]
    assert (
        (ROOT / "LICENSE")
        .read_text()
        .startswith("MIT License\n\nCopyright (c) 2026 the fsnn authors\n")
    )
    requires = PYPROJECT["build-system"]["requires"]
    assert any(
        re.fullmatch(r"setuptools>=(\d+)", r) and int(r.split(">=")[1]) >= 77 for r in requires
    ), requires
    classifiers = PROJECT["classifiers"]
    assert not [c for c in classifiers if c.startswith("License ::")]  # PEP 639
    for c in ("Programming Language :: Python :: 3.11", "Programming Language :: Python :: 3.12",
              "Operating System :: OS Independent", "Intended Audience :: Science/Research",
              "Topic :: Scientific/Engineering :: Artificial Intelligence", "Typing :: Typed"):  # fmt: skip
        assert c in classifiers, c
    assert "Paper" in PROJECT["urls"]
    # every address is real: no placeholder host or owner ships in the metadata
    assert not [u for u in PROJECT["urls"].values() if "placeholder" in u.lower()]
    assert PROJECT["urls"]["Paper"] == "https://arxiv.org/abs/2505.22572"


def test_py_typed_is_shipped():
    assert (ROOT / "fsnn" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["fsnn"]


def test_release_tools_are_pinned_exactly():
    extras = PROJECT["optional-dependencies"]
    for extra in ("dev", "docs"):
        for req in extras[extra]:
            assert re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*", req), (extra, req)
    names = {r.split("==")[0] for r in extras["dev"]}
    assert {"ruff", "mypy", "build", "twine"} <= names
    assert {"sphinx", "myst-parser", "furo"} <= {r.split("==")[0] for r in extras["docs"]}


def test_changelog_has_unreleased_and_the_current_version_first():
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    versions = re.findall(r"^## \[([^\]]+)\]", text, re.M)
    assert versions[:3] == ["Unreleased", PROJECT["version"], "0.1.0"], versions
    for date in re.findall(r"^## \[[0-9.]+\] - (.+)$", text, re.M):
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", date), date


def test_citation_cff_cites_the_package_and_the_paper():
    yaml = pytest.importorskip("yaml")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    for key in ("cff-version", "message", "title", "authors"):  # required by the 1.2.0 schema
        assert cff.get(key), key
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert str(cff["version"]) == PROJECT["version"] and cff["license"] == PROJECT["license"]
    papers = [r for r in cff.get("references", []) + [cff.get("preferred-citation") or {}] if r]
    paper = next(r for r in papers if "2505.22572" in r.get("url", ""))
    assert paper["title"] == "Fusion Steering: Prompt-Specific Activation Control"
    assert [(a["given-names"], a["family-names"]) for a in paper["authors"]] == [
        ("Waldemar", "Chang"), ("Alhassan", "Yasin")]  # fmt: skip
    assert paper["year"] == 2025


def test_the_version_is_the_same_everywhere_it_is_written():
    init = (ROOT / "fsnn" / "__init__.py").read_text(encoding="utf-8")
    literal = re.search(r'^__version__ = "([^"]+)"', init, re.M)
    if literal is None:
        pytest.skip("fsnn.__version__ is not a literal (read from the installed metadata)")
    assert literal.group(1) == PROJECT["version"]
