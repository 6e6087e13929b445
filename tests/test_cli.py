"""The command line: steer --json, run --help, python -m fsnn."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _fsnn(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fsnn", *args], capture_output=True, text=True, timeout=timeout
    )


def test_help_lists_subcommands():
    proc = _fsnn("--help")
    assert proc.returncode == 0
    for name in ("ask", "steer", "run", "import-release", "figures", "judge-agreement"):
        assert name in proc.stdout


@pytest.mark.real
def test_steer_json_prints_text_and_ids():
    proc = _fsnn(
        "steer",
        "--question",
        "Who received the IEEE Frank Rosenblatt Award in 2010?",
        "--answer",
        "Michio Sugeno",
        "--strengths",
        "seg:0.8,0.1,0.7,0.3,0.4,0.2",
        "--mode",
        "cached",
        "--max-new-tokens",
        "8",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert isinstance(out["text"], str) and isinstance(out["ids"], list)
    assert all(isinstance(i, int) for i in out["ids"])
    assert out["strengths"]["alpha_early"] == 0.8


def test_steer_bad_spec_is_one_line():
    proc = _fsnn("steer", "--question", "q", "--answer", "a", "--strengths", "seg:1,2")
    assert proc.returncode == 2
    assert "needs 6 numbers" in proc.stderr and "Traceback" not in proc.stderr
