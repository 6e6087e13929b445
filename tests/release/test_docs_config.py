"""The docs site's generated pages cover the public API and the CLI (no Sphinx needed).

The full build (``sphinx-build -W``) is a CI step in ``.ci/run``; this checks the pieces
of ``docs/conf.py`` that decide what gets documented, so a name missing from the API page
or a CLI moved away from the console script fails here, fast.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def conf():
    spec = importlib.util.spec_from_file_location("fsnn_docs_conf", DOCS / "conf.py")
    module = importlib.util.module_from_spec(spec)
    saved = list(sys.path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    return module


def test_every_public_name_is_documented_as_fsnn_name(conf):
    import fsnn

    rst = conf.api_rst()
    for name in fsnn.__all__:
        assert f":py:obj:`{name}`" in rst, name  # the summary table
        assert re.search(
            rf"^\.\. (auto(function|class)|py:data):: {re.escape(name)}$", rst, re.M
        ), name
    assert ".. currentmodule:: fsnn" in rst


def test_the_cli_page_documents_the_console_scripts_parser(conf):
    text = conf.cli_markdown()
    module = re.search(r"^:module: (\S+)$", text, re.M).group(1)
    assert module == conf.PYPROJECT["project"]["scripts"]["fsnn"].split(":")[0]
    parser = importlib.import_module(module).build_parser()
    assert parser.prog == "fsnn"


def test_generated_pages_keep_their_markers(conf):
    for docname, (marker, _) in conf.GENERATED.items():
        assert marker in (DOCS / f"{docname}.md").read_text(encoding="utf-8"), docname


def test_bars_in_docstrings_are_escaped_outside_literals(conf):
    lines = [
        "TO = |G ∩ P| / |G| here",
        "``r'(A|B|C)'`` and A|B|C",
        "| a | b |",
        "x::",
        "",
        "    |G|",
    ]
    conf._escape_bars(None, None, None, None, None, lines)
    assert lines == [
        r"TO = \|G ∩ P\| / \|G\| here",
        "``r'(A|B|C)'`` and A|B|C",
        "| a | b |",
        "x::",
        "",
        "    |G|",
    ]


def test_every_note_is_reachable_from_the_index():
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    assert ":glob:" in index and re.search(r"^\*$", index, re.M)  # every docs/*.md, new ones too
    assert "{include} ../README.md" in (DOCS / "readme.md").read_text(encoding="utf-8")
