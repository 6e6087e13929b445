"""What every file of a run folder holds, and the functions that build those datasets.

Dimension vocabulary (shared by tensors, datasets and files): ``prompt``, ``layer``,
``hidden``, ``segment``, ``trial``, ``method``, ``param``, ``token``.

Files of a run folder (all netCDF4, written atomically: temp file + rename):

``references.nc``
    ``h`` (prompt, layer, hidden) float32 — eq. (1) reference vectors;
    ``span_length`` (prompt) int — tokens averaged; ``explanation``,
    ``reference_text``, ``enrichment_raw`` (prompt) str; coords ``question``,
    ``answer``, ``simpleqa_id`` on ``prompt``.

``trials.nc``
    dims (method, prompt, trial): ``alpha``/``gamma`` (method, prompt, trial, segment),
    ``token_overlap``, ``perplexity``, ``objective`` (S_opt), ``completion``,
    ``text`` (decoded prompt + completion), ``is_best`` (int 0/1).

``results.nc``
    dims (method, prompt), ``method`` values ``baseline``, ``full``, ``segmented`` (+
    custom spec names). Variables: ``completion`` (str, generated text only), ``text``
    (str, prompt + completion as the release scored it), ``token_overlap``,
    ``perplexity``, ``objective`` (the run's search objective, readability guard included,
    of the row's completion: the same rule on the baseline and the steered rows),
    ``judge_score`` (1-5, NaN = not graded),
    ``simpleqa_grade`` (``CORRECT``/``INCORRECT``/``NOT_ATTEMPTED``, "" = not graded),
    ``composite`` (S_eval, NaN when no judge score), ``judge_error`` (str, why a judge
    call failed; "" when it answered), ``alpha``/``gamma`` (method, prompt, segment; NaN
    for baseline). Coords on ``prompt``: ``question``, ``answer``, ``topic``,
    ``simpleqa_id``. Optional: ``baseline_grade`` and ``baseline_grade_source`` (our runs:
    the grade that selected the prompt and who gave it, per prompt); ``token_overlap_completion``, ``token_overlap_released``, ``judge_notes``,
    ``explanation``, ``answer_simpleqa`` (the imported release, :mod:`fsnn.analysis.release`).

``baseline.nc`` (our runs)
    dim ``prompt`` over every question answered: ``completion``, ``text``, ``grade``,
    ``grade_source`` (judge id or ``proxy:containment``), ``token_overlap``. A judge that
    gives no grade stops the stage (nothing is dropped silently; a rerun asks again).

Attributes on every file: ``fsnn_schema`` (file kind and version), ``config`` (the run
config as JSON), ``model``, ``model_revision``, ``quantization``, ``mode``, package
versions, ``git_sha`` when available, ``created``. Secrets never enter a file: configs
hold the *name* of an environment variable, never its value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

__all__ = ["REQUIRED", "baseline_dataset", "str_array"]

# Variables each file kind must hold with exactly these dims (checked on read).
REQUIRED: dict[str, dict[str, tuple[str, ...]]] = {
    "results": {
        "token_overlap": ("method", "prompt"),
        "completion": ("method", "prompt"),
        "judge_score": ("method", "prompt"),
        "simpleqa_grade": ("method", "prompt"),
        "composite": ("method", "prompt"),
    },
    "trials": {"objective": ("method", "prompt", "trial")},
    "references": {"h": ("prompt", "layer", "hidden")},
}


def str_array(values: Any) -> np.ndarray:
    """An object array of Python str (netCDF variable-length strings); None -> ""."""
    arr = np.asarray(values, dtype=object)
    flat = arr.reshape(-1)
    for i, v in enumerate(flat):
        flat[i] = "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
    return arr


def baseline_dataset(rows: Sequence[Mapping[str, Any]], attrs: Mapping[str, Any]) -> xr.Dataset:
    """``baseline.nc`` from one dict per answered question (keys: the variables and coords)."""

    def col(key: str) -> list[Any]:
        return [r.get(key, "") for r in rows]

    return xr.Dataset(
        {
            **{
                k: ("prompt", str_array(col(k)))
                for k in ("completion", "text", "grade", "grade_source")
            },
            "token_overlap": ("prompt", np.asarray(col("token_overlap"), dtype=float)),
        },
        coords={
            "prompt": np.arange(len(rows)),
            "simpleqa_id": ("prompt", np.asarray(col("simpleqa_id"), dtype=np.int64)),
            **{k: ("prompt", str_array(col(k))) for k in ("question", "answer", "topic")},
        },
        attrs=dict(attrs),
    )
