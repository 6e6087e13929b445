"""Check the built wheel and sdist of fsnn: what a release must hold, and must not.

Usage (the CI step, after ``python -m build --outdir DIST`` and ``twine check``)::

    python tests/release/check_dist.py DIST [--source ROOT]

DIST must hold exactly one ``.whl`` and one ``.tar.gz``. The wheel must carry the
license under ``*.dist-info/licenses/`` with a PEP 639 ``License-Expression`` (and no
``License ::`` classifier), the ``fsnn/py.typed`` marker, and exactly the files of the
source tree's ``fsnn/`` (no module or data file forgotten, none extra); nothing outside
``fsnn/`` and its dist-info (no ``tests/``, run folders, ``figures/``), and no run
output or image anywhere (``.nc``, ``.db``, ``.png``). The sdist must hold LICENSE,
README, CHANGELOG, CITATION.cff, pyproject.toml and ``fsnn/py.typed``, and no run
folder, ``figures/`` or run output outside the test fixtures (``tests/data/``: the golden
run's recorded datasets, which the sdist's tests read).

Prints one line per problem and exits 1 if there is any, else prints what it checked.
Reads the archives only (zipfile, tarfile): nothing is installed or imported.
"""

from __future__ import annotations

import argparse
import re
import sys
import tarfile
import zipfile
from email.parser import HeaderParser
from pathlib import Path, PurePosixPath

PACKAGE = "fsnn"
ROOT = Path(__file__).resolve().parents[2]

# run output (never in a distribution) and images (never in the wheel; the sdist's docs may hold some)
RUN_DATA_SUFFIXES = {".nc", ".db", ".sqlite", ".sqlite3", ".lock", ".pyc"}
IMAGE_SUFFIXES = {".png", ".pdf", ".jpg", ".jpeg", ".svg"}
# folder names that are the repository's, not the package's
FORBIDDEN_DIRS = {"tests", "runs", "figures", "experiments", "benchmarks", "__pycache__"}
# test fixtures (the golden run's recorded datasets) ship in the sdist so its tests can run
SDIST_FIXTURES = PurePosixPath("tests/data")
SDIST_FILES = ("LICENSE", "README.md", "CHANGELOG.md", "CITATION.cff", "pyproject.toml", "PKG-INFO",
               f"{PACKAGE}/py.typed")  # fmt: skip


def _run_output(path: PurePosixPath, *, images: bool) -> bool:
    suffix = path.suffix.lower()
    return suffix in RUN_DATA_SUFFIXES or (images and suffix in IMAGE_SUFFIXES)


def source_files(root: Path) -> set[str]:
    """The files under ``root/fsnn`` a wheel must hold (posix paths from ``root``)."""
    out = set()
    for path in (root / PACKAGE).rglob("*"):
        rel = path.relative_to(root)
        if path.is_file() and "__pycache__" not in rel.parts and path.suffix != ".pyc":
            out.add(rel.as_posix())
    return out


def check_wheel(wheel: Path, source: set[str] | None = None) -> list[str]:
    """Problems of one wheel; ``source`` is :func:`source_files` of the tree it was built from."""
    problems: list[str] = []
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        dist_info = sorted(
            {n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info")}
        )
        if len(dist_info) != 1:
            return [f"{wheel.name}: expected one .dist-info folder, found {dist_info}"]
        info = dist_info[0]
        metadata = HeaderParser().parsestr(zf.read(f"{info}/METADATA").decode("utf-8"))
    licenses = [n for n in names if n.startswith(f"{info}/licenses/")]
    if f"{info}/licenses/LICENSE" not in licenses:
        problems.append(
            f"{wheel.name}: no {info}/licenses/LICENSE (license-files in pyproject.toml)"
        )
    version = tuple(int(x) for x in re.findall(r"\d+", metadata.get("Metadata-Version", "0"))[:2])
    if version < (2, 4):
        problems.append(
            f"{wheel.name}: Metadata-Version {metadata.get('Metadata-Version')} < 2.4 (PEP 639)"
        )
    if not metadata.get("License-Expression"):
        problems.append(f'{wheel.name}: no License-Expression in METADATA (license = "MIT")')
    if any(c.startswith("License ::") for c in metadata.get_all("Classifier") or []):
        problems.append(
            f"{wheel.name}: a 'License ::' classifier next to a license expression (PEP 639)"
        )
    if f"{PACKAGE}/py.typed" not in names:
        problems.append(f"{wheel.name}: no {PACKAGE}/py.typed (PEP 561 marker, package-data)")
    for name in names:
        path = PurePosixPath(name)
        if path.parts[0] not in (PACKAGE, info):
            problems.append(f"{wheel.name}: {name} is outside the package")
        elif FORBIDDEN_DIRS & set(path.parts[:-1]):
            problems.append(
                f"{wheel.name}: {name} is in a repository folder ({sorted(FORBIDDEN_DIRS & set(path.parts))})"
            )
        elif _run_output(path, images=True):
            problems.append(f"{wheel.name}: {name} is run output or a figure")
    if source is not None:
        shipped = {n for n in names if n.startswith(f"{PACKAGE}/")}
        problems += [
            f"{wheel.name}: {n} is in the source tree but not in the wheel"
            for n in sorted(source - shipped)
        ]
        problems += [
            f"{wheel.name}: {n} is in the wheel but not in the source tree"
            for n in sorted(shipped - source)
        ]
    return problems


def check_sdist(sdist: Path) -> list[str]:
    """Problems of one sdist (``NAME-VERSION/`` prefix)."""
    problems: list[str] = []
    with tarfile.open(sdist) as tf:
        members = [m.name for m in tf.getmembers() if m.isfile()]
    prefixes = {m.split("/", 1)[0] for m in members}
    if len(prefixes) != 1:
        return [f"{sdist.name}: expected one top folder, found {sorted(prefixes)}"]
    top = prefixes.pop()
    inside = {m.split("/", 1)[1] for m in members if "/" in m}
    problems += [f"{sdist.name}: no {top}/{f}" for f in SDIST_FILES if f not in inside]
    for name in sorted(inside):
        path = PurePosixPath(name)
        fixture = path.is_relative_to(SDIST_FIXTURES)
        if path.parts[0] in ("runs", "figures") or (
            _run_output(path, images=False) and not fixture
        ):
            problems.append(f"{sdist.name}: {name} is run output or a figure")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dist", type=Path, help="folder holding one .whl and one .tar.gz")
    parser.add_argument(
        "--source", type=Path, default=ROOT, help="the tree the wheel was built from"
    )
    args = parser.parse_args(argv)
    wheels, sdists = sorted(args.dist.glob("*.whl")), sorted(args.dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        print(f"check_dist: expected one wheel and one sdist in {args.dist}, found "
              f"{[p.name for p in wheels + sdists]}", file=sys.stderr)  # fmt: skip
        return 1
    source = source_files(args.source)
    problems = check_wheel(wheels[0], source) + check_sdist(sdists[0])
    for line in problems:
        print(f"check_dist: {line}", file=sys.stderr)
    if problems:
        return 1
    print(f"check_dist: {wheels[0].name} ({len(source)} package files, LICENSE, py.typed) and "
          f"{sdists[0].name} OK")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
