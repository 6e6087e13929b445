"""The authors' released grades (Fusion_Steering, commit c6aad05) as judge test data.

A view on :func:`fsnn.analysis.release.read_release`, the one parser of the release's CSVs (the
importer ``fsnn import-release`` uses it too, so both see the same texts and grades).

``mistral_grader_results_{baseline,full,segmented}.csv`` hold 260 + 260 + 525 = 1045
answers graded 1-5 by ``mistral-small-latest`` (segmented: several graded trials for
prompts 0-66). :func:`graded_rows` returns them all (the judge-agreement set);
:func:`selected_rows` returns, per method, the one answer per prompt the paper
evaluated, with TO recomputed on the full decoded text (echoed prompt included), so
that the composite accuracy can be recomputed: 9, 42 and 66 of 260.

Which answer is "selected":

- baseline: ``mistral_grader_results_baseline`` (its ``predicted`` equals
  ``incorrect.csv``'s ``response``);
- full: ``mistral_grader_results_full`` (identical to the Optuna summary's best trial);
- segmented: the graded trial whose ``predicted`` equals the Optuna summary's
  ``generated_text``. One prompt (66) has no identical graded trial; there the
  summary's own ``score`` column (the grade of its best trial) is used. The summary's
  ``score`` equals the matched trial's grade for the other 259.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fsnn.errors import FsnnError
from fsnn.store.environment import env_path

from .release import METHODS, _Table, read_release

__all__ = ["METHODS", "graded_rows", "release_dir", "release_table", "selected_rows"]


def release_dir(path: str | Path | None = None) -> Path:
    """The release folder: ``path``, else ``$FSNN_RELEASE_DIR``.

    Raises:
        FsnnError: neither is given, or the folder lacks the graded CSVs.
    """
    folder = Path(path).expanduser() if path else env_path("FSNN_RELEASE_DIR")
    if folder is None:
        raise FsnnError("no release folder: pass --release-dir or set FSNN_RELEASE_DIR")
    for method in METHODS:
        if not (folder / f"mistral_grader_results_{method}.csv").is_file():
            raise FsnnError(f"{folder} holds no mistral_grader_results_{method}.csv")
    return folder


def graded_rows(path: str | Path | None = None) -> pd.DataFrame:
    """All released Mistral-graded answers (1045 rows), in file order.

    Returns:
        Columns ``method``, ``prompt_id``, ``trial`` (0.. within method and prompt, in
        file order), ``question``, ``target``, ``predicted`` (full decoded text),
        ``mistral_score`` (1-5; int, float when a grade is blank), ``mistral_notes``.
    """
    tables = read_release(release_dir(path))
    rows = pd.DataFrame(
        {
            "method": [g.method for g in tables.graded],
            "prompt_id": np.array([g.prompt for g in tables.graded], dtype=np.int64),
            "trial": np.array([g.trial for g in tables.graded], dtype=np.int64),
            "question": [g.question for g in tables.graded],
            "target": [g.target for g in tables.graded],
            "predicted": [g.predicted for g in tables.graded],
            "mistral_score": np.array([g.score for g in tables.graded], dtype=float),
            "mistral_notes": [g.notes for g in tables.graded],
        }
    )
    if rows["mistral_score"].notna().all():
        rows["mistral_score"] = rows["mistral_score"].astype(np.int64)
    return rows


def selected_rows(method: str, path: str | Path | None = None) -> pd.DataFrame:
    """The evaluated answer per prompt of one method (260 rows), TO recomputed.

    Returns:
        Columns ``prompt_id``, ``question``, ``target``, ``text`` (full decoded text),
        ``judge_score`` (Mistral 1-5, float, NaN = missing), ``matched`` (the judge
        score comes from a graded row with identical text), ``token_overlap``
        (:func:`fsnn.judges.metrics.token_overlap` of target vs text).
    """
    from fsnn.judges.metrics import token_overlap

    if method not in METHODS:
        raise FsnnError(f"unknown release method {method!r}; choose one of {METHODS}")
    tables = read_release(release_dir(path))
    picks = tables.selected[method]
    result = pd.DataFrame(
        {
            "prompt_id": np.arange(tables.n, dtype=np.int64),
            "question": list(tables.questions),
            "target": list(tables.answers),
            "text": [p.text for p in picks],
            "judge_score": np.array([p.judge_score for p in picks], dtype=float),
            "matched": np.array([p.matched for p in picks], dtype=bool),
        }
    )
    result["token_overlap"] = [
        token_overlap(t, p) for t, p in zip(result.target, result.text, strict=True)
    ]
    return result


def release_table(name: str, path: str | Path | None = None) -> pd.DataFrame:
    """One release CSV as a table of strings, read by the one release parser.

    Args:
        name: the file, e.g. ``incorrect.csv`` or ``simpleqa_initial_outputs.csv``.
        path: the release folder (default ``$FSNN_RELEASE_DIR``).
    """
    return pd.DataFrame(_Table(release_dir(path) / name, ()).rows)
