"""The authors' released grades (Fusion_Steering, commit c6aad05) as judge test data.

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

from ..environment import env_path
from ..errors import FsnnError

__all__ = ["METHODS", "graded_rows", "release_dir", "selected_rows"]

METHODS = ("baseline", "full", "segmented")


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


def _read(folder: Path, name: str) -> pd.DataFrame:
    try:
        return pd.read_csv(folder / name, keep_default_na=False, na_values=[""])
    except (OSError, ValueError) as exc:
        raise FsnnError(f"cannot read {folder / name}: {exc}") from None


def graded_rows(path: str | Path | None = None) -> pd.DataFrame:
    """All released Mistral-graded answers (1045 rows), in file order.

    Returns:
        Columns ``method``, ``prompt_id``, ``trial`` (0.. within method and prompt, in
        file order), ``question``, ``target``, ``predicted`` (full decoded text),
        ``mistral_score`` (1-5), ``mistral_notes``.
    """
    folder = release_dir(path)
    frames = []
    for method in METHODS:
        df = _read(folder, f"mistral_grader_results_{method}.csv")
        df = df.rename(columns={"score": "mistral_score", "notes": "mistral_notes"})
        df.insert(0, "method", method)
        df["trial"] = df.groupby("prompt_id").cumcount()
        frames.append(df)
    rows = pd.concat(frames, ignore_index=True)
    for col in ("question", "target", "predicted", "mistral_notes"):
        rows[col] = rows[col].fillna("").astype(str)
    rows["mistral_score"] = rows["mistral_score"].astype(int)
    cols = ["method", "prompt_id", "trial", "question", "target", "predicted"]
    return rows[[*cols, "mistral_score", "mistral_notes"]]


def selected_rows(method: str, path: str | Path | None = None) -> pd.DataFrame:
    """The evaluated answer per prompt of one method (260 rows), TO recomputed.

    Returns:
        Columns ``prompt_id``, ``question``, ``target``, ``text`` (full decoded text),
        ``judge_score`` (Mistral 1-5, float, NaN = missing), ``token_overlap``
        (:func:`fsnn.metrics.token_overlap` of target vs text), ``matched`` (the judge
        score comes from a graded row with identical text).
    """
    from ..metrics import token_overlap

    if method not in METHODS:
        raise FsnnError(f"unknown release method {method!r}; choose one of {METHODS}")
    folder = release_dir(path)
    graded = graded_rows(folder)
    graded = graded[graded.method == method]
    if method == "baseline":
        out = graded.assign(text=graded.predicted, matched=True)
    else:
        summary = _read(folder, f"per_prompt_optuna_summary_{method}.csv")
        summary["generated_text"] = summary["generated_text"].fillna("").astype(str)
        merged = summary.merge(
            graded[["prompt_id", "predicted", "mistral_score"]],
            left_on=["prompt_idx", "generated_text"],
            right_on=["prompt_id", "predicted"],
            how="left",
        ).drop_duplicates("prompt_idx")
        matched = merged["mistral_score"].notna()
        score = np.where(matched, merged["mistral_score"], merged["score"]).astype(float)
        out = pd.DataFrame(
            {
                "prompt_id": merged["prompt_idx"].to_numpy(),
                "question": merged["prompt"].astype(str).to_numpy(),
                "target": merged["ground_truth"].astype(str).to_numpy(),
                "text": merged["generated_text"].to_numpy(),
                "mistral_score": score,
                "matched": matched.to_numpy(),
            }
        )
    out = out.sort_values("prompt_id", kind="stable").reset_index(drop=True)
    result = pd.DataFrame(
        {
            "prompt_id": out["prompt_id"].astype(int),
            "question": out["question"],
            "target": out["target"],
            "text": out["text"],
            "judge_score": out["mistral_score"].astype(float),
            "matched": out["matched"].astype(bool),
        }
    )
    result["token_overlap"] = [
        token_overlap(t, p) for t, p in zip(result.target, result.text, strict=True)
    ]
    return result
