"""The README's Python API example runs as written on the offline default model."""

from __future__ import annotations

import contextlib
import io
import re
import runpy
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _first_python_block(section: str) -> str:
    text = README.read_text()
    start = text.index(f"## {section}")
    match = re.search(r"```python\n(.*?)```", text[start:], flags=re.S)
    assert match, f"no python block under '## {section}'"
    return match.group(1)


@pytest.mark.real
def test_python_api_example_runs_as_written(tmp_path):
    # a real file: nnsight reads the source of a trace's with-block from its file
    script = tmp_path / "readme_example.py"
    script.write_text(_first_python_block("Python API"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        namespace = runpy.run_path(str(script))
    printed = out.getvalue()
    assert "plain:" in printed and "steered:" in printed and "next token:" in printed
    assert printed.count("| states the answer:") == 2
    # non-vacuity: the searched steering changed the answer
    assert namespace["steered"] != namespace["plain"].completion


def test_public_api_names_resolve():
    import fsnn

    for name in fsnn.__all__:
        assert getattr(fsnn, name) is not None, name
