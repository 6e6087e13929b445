"""The CI script runs the README's test command as written, and the release gates."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CI = (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def _readme_test_command() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Tests") :]
    return re.search(r"```bash\n(.*?)\n```", section, re.S).group(1).strip()


def test_ci_runs_the_readme_test_command_verbatim():
    command = _readme_test_command()
    assert "python -m pytest" in command
    assert command in CI


def test_ci_has_the_release_gates_and_keeps_pytest_exit_5_a_failure():
    for gate in (
        "python -m build",
        "twine check --strict",
        "tests/release/check_dist.py",
        "sphinx -W --keep-going",
    ):
        assert gate in CI, gate
    assert '"$rc" -eq 5' in CI and 'exit "$rc"' in CI
    # lint and type gates, enabled (mypy's settings and files are in pyproject.toml)
    for gate in (
        "python -m ruff check .",
        "python -m ruff format --check .",
        "python -m mypy",
    ):
        assert re.search(rf"^step .*{re.escape(gate)}$", CI, re.M), gate
    assert not re.search(r"^# step \"", CI, re.M)  # no gate left commented out


def test_ci_script_parses():
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    subprocess.run([bash, "-n", str(ROOT / ".ci" / "run")], check=True, timeout=30)
