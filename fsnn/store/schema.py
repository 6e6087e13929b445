"""What every file of a run folder holds, and the functions that build those datasets.

The one module that builds run files: the stages compute the values, the builders here
give them their variables, dims, coords and attributes (:func:`baseline_dataset`,
:func:`references_dataset`, :func:`search_trials_dataset` and :func:`trials_dataset`,
:func:`results_dataset`); :func:`fsnn.store.files.open_run` reads them back.

Dimension vocabulary (shared by tensors, datasets and files): :data:`DIMENSIONS`, each
name with what it counts. Every file fsnn writes with an ``fsnn_schema`` attribute uses
these names only (:func:`fsnn.store.files.write_dataset` refuses another).

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

__all__ = [
    "DIMENSIONS",
    "REQUIRED",
    "RESULTS_DIMS",
    "SEARCH_TRIAL_DIMS",
    "baseline_dataset",
    "references_dataset",
    "results_dataset",
    "search_trials_dataset",
    "str_array",
    "trials_dataset",
]

# The one dimension vocabulary of fsnn's datasets: name -> what one index along it is.
DIMENSIONS: dict[str, str] = {
    "prompt": "one steered question (a SimpleQA row) of a run",
    "method": "baseline, full, segmented or a custom layout (results, trials)",
    "trial": "one steered generation of a prompt's strength search",
    "segment": "one layer range of a layout, steered with one (alpha, gamma)",
    "layer": "one decoder block",
    "hidden": "one coordinate of the residual stream",
    "param": "one searched parameter of a trial (alpha_all, theta_early, on_late...)",
    "token": "one generated token",
    "row": "one graded text of the authors' release (judge agreement, trial grades)",
    "grade": "one point of the 1-5 quality scale (a judge's probabilities)",
    "simpleqa_id": "one SimpleQA question by its row number (the release's metadata)",
    "mistral_grade": "a confusion matrix's row: the release's Mistral grade (judge agreement)",
    "judge_grade": "a confusion matrix's column: the judge's grade (judge agreement)",
    "metric": "one rate of a summary table (a study's per-metric intervals)",
    "subset": "one subset of prompts a rate is computed on (all, a topic, ...)",
    "stat": "one number of an interval: estimate, low, high",
    "searched": "one search whose strengths a study compares (oracle, label-free...)",
}

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


def references_dataset(
    h: xr.DataArray,
    *,
    explanations: Sequence[str],
    enrichment_raw: Sequence[str],
    simpleqa_id: Sequence[int],
    question: Sequence[str],
    answer: Sequence[str],
    attrs: Mapping[str, Any],
) -> xr.Dataset:
    """``references.nc`` (or one batch of it) from the eq. (1) capture ``h`` (prompt, layer, hidden)."""
    part = h.to_dataset(name="h").assign(
        explanation=("prompt", str_array(explanations)),
        enrichment_raw=("prompt", str_array(enrichment_raw)),
    )
    part = part.assign_coords(
        simpleqa_id=("prompt", np.asarray(simpleqa_id, dtype=np.int64)),
        question=("prompt", str_array(question)),
        answer=("prompt", str_array(answer)),
    )
    part.attrs = dict(attrs)
    return part


# One search's trials (one method): variable -> dims, in the order of the file.
SEARCH_TRIAL_DIMS: dict[str, tuple[str, ...]] = {
    "alpha": ("prompt", "trial", "segment"),
    "gamma": ("prompt", "trial", "segment"),
    "strength": ("prompt", "trial", "segment"),
    "layer_alpha": ("prompt", "trial", "layer"),
    "layer_gamma": ("prompt", "trial", "layer"),
    "params": ("prompt", "trial", "param"),
    "trial_number": ("prompt", "trial"),
    "token_overlap": ("prompt", "trial"),
    "perplexity": ("prompt", "trial"),
    "objective": ("prompt", "trial"),
    "distinct_2": ("prompt", "trial"),
    "longest_repeat": ("prompt", "trial"),
    "readable": ("prompt", "trial"),
    "completion": ("prompt", "trial"),
    "text": ("prompt", "trial"),
    "is_best": ("prompt", "trial"),
    "best_trial": ("prompt",),
    "failed_trials": ("prompt",),
}


def _columns(
    columns: Mapping[str, Any], dims: Mapping[str, tuple[str, ...]], what: str
) -> dict[str, Any]:
    if set(columns) != set(dims):
        raise ValueError(  # a programming error: the builder and its caller disagree
            f"{what}: missing {sorted(set(dims) - set(columns))}, "
            f"unexpected {sorted(set(columns) - set(dims))}"
        )
    return {k: (d, columns[k]) for k, d in dims.items()}


def search_trials_dataset(
    columns: Mapping[str, np.ndarray],
    *,
    prompt_keys: Sequence[str],
    n_trials: int,
    segments: Sequence[str],
    params: Sequence[str],
    n_layers: int,
    attrs: Mapping[str, Any],
) -> xr.Dataset:
    """One search's trials (one method), the part of ``trials.nc`` a search returns.

    ``columns`` holds exactly the variables of :data:`SEARCH_TRIAL_DIMS`.
    """
    return xr.Dataset(
        _columns(columns, SEARCH_TRIAL_DIMS, "search trials"),
        coords={
            "prompt_key": ("prompt", np.asarray(list(prompt_keys), dtype=object)),
            "trial": np.arange(n_trials),
            "segment": np.asarray(list(segments), dtype=object),
            "param": np.asarray(list(params), dtype=object),
            "layer": np.arange(n_layers),
        },
        attrs=dict(attrs),
    )


def trials_dataset(
    per_method: Mapping[str, xr.Dataset],
    *,
    simpleqa_id: Any,
    question: Any,
    answer: Any,
    attrs: Mapping[str, Any],
) -> xr.Dataset:
    """``trials.nc``: every method's :func:`search_trials_dataset` along ``method``.

    Methods differ in segments and params: outer join, NaN where a method has none.
    """
    stacked = [ds.expand_dims(method=[name]) for name, ds in per_method.items()]
    trials = xr.concat(stacked, dim="method", join="outer") if len(stacked) > 1 else stacked[0]
    trials = trials.assign_coords(
        simpleqa_id=("prompt", simpleqa_id),
        question=("prompt", question),
        answer=("prompt", answer),
    )
    trials.attrs = dict(attrs)
    for k in ("completion", "text"):
        trials[k] = trials[k].fillna("")
    return trials


# results.nc: variable -> dims, in the order of the file.
RESULTS_DIMS: dict[str, tuple[str, ...]] = {
    "completion": ("method", "prompt"),
    "text": ("method", "prompt"),
    "readable": ("method", "prompt"),
    "token_overlap": ("method", "prompt"),
    "perplexity": ("method", "prompt"),
    "objective": ("method", "prompt"),
    "judge_score": ("method", "prompt"),
    "simpleqa_grade": ("method", "prompt"),
    "judge_error": ("method", "prompt"),
    "composite": ("method", "prompt"),
    "alpha": ("method", "prompt", "segment"),
    "gamma": ("method", "prompt", "segment"),
    "baseline_grade": ("prompt",),
    "baseline_grade_source": ("prompt",),
}


def results_dataset(
    columns: Mapping[str, np.ndarray],
    *,
    methods: Sequence[str],
    segments: Any,
    question: Sequence[str],
    answer: Sequence[str],
    topic: Any,
    simpleqa_id: Any,
    attrs: Mapping[str, Any],
) -> xr.Dataset:
    """``results.nc`` (or the rows of some prompts): ``columns`` holds exactly :data:`RESULTS_DIMS`."""
    n = len(question)
    return xr.Dataset(
        _columns(columns, RESULTS_DIMS, "results"),
        coords={
            "method": np.asarray(list(methods), dtype=object),
            "prompt": np.arange(n),
            "segment": segments,
            "question": ("prompt", str_array(list(question))),
            "answer": ("prompt", str_array(list(answer))),
            "topic": ("prompt", str_array(topic)),
            "simpleqa_id": ("prompt", np.asarray(simpleqa_id).astype(np.int64)),
        },
        attrs=dict(attrs),
    )
