"""Tiny run folders for the inspection tests: results.nc and trials.nc in the store schema.

Values are drawn from a seeded RNG, so every test sees the same folder; callers pass
arrays to pin what they check.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from fsnn.judges.scoring import composite
from fsnn.store.files import provenance, write_dataset
from fsnn.store.schema import str_array

QUESTIONS = [
    "Who won the 2010 IEEE Frank Rosenblatt Award?",
    "In which year was the Eiffel Tower completed?",
    "What is the capital of Australia?",
    "Who wrote the novel 'Solaris'?",
    "Which element has the atomic number 26?",
    "What river flows through Baghdad?",
    "Who painted 'The Garden of Earthly Delights'?",
    "In which city was Ada Lovelace born?",
]
ANSWERS = ["Michio Sugeno", "1889", "Canberra", "Stanisław Lem", "Iron", "Tigris",
           "Hieronymus Bosch", "London"]  # fmt: skip


def make_results(
    *,
    n: int = 6,
    methods: tuple[str, ...] = ("baseline", "full", "segmented"),
    to: np.ndarray | None = None,
    judge: np.ndarray | None = None,
    judged: bool = True,
    judge_missing: str = "zero",
    judge_error: np.ndarray | None = None,
    readable: np.ndarray | None = None,
    grades: np.ndarray | None = None,
    simpleqa_ids: list[int] | None = None,
    model: str = "tiny-model",
    sha: str = "abc123",
    seed: int = 0,
) -> xr.Dataset:
    """A results dataset (method, prompt[, segment]) like the pipeline writes."""
    rng = np.random.default_rng(seed)
    m = len(methods)
    if to is None:
        to = rng.choice([0.0, 0.25, 0.5, 1.0], size=(m, n))
    if judge is None:
        judge = rng.integers(1, 6, size=(m, n)).astype(float) if judged else np.full((m, n), np.nan)
    comp = composite(to, judge, missing=judge_missing) if judged else np.full((m, n), np.nan)
    if grades is None:
        grades = np.array(
            [["CORRECT" if t >= 0.5 else "INCORRECT" for t in row] for row in to], dtype=object
        )
        if not judged:
            grades[1:] = ""
    questions = [
        QUESTIONS[i % len(QUESTIONS)] + ("" if i < len(QUESTIONS) else f" ({i})") for i in range(n)
    ]
    answers = [ANSWERS[i % len(ANSWERS)] for i in range(n)]
    comp_text = np.array([[f"{methods[k]} says {answers[i] if to[k, i] >= 0.5 else 'something else'} "
                           f"because of reason {k}{i}." for i in range(n)] for k in range(m)], dtype=object)  # fmt: skip
    text = np.array([[f"Question: {questions[i]}\nAnswer:{comp_text[k, i]}" for i in range(n)] for k in range(m)],
                    dtype=object)  # fmt: skip
    seg = ("early", "middle", "late")
    alpha = rng.uniform(0.01, 1, size=(m, n, 3))
    gamma = rng.uniform(0.01, 1, size=(m, n, 3))
    alpha[0] = gamma[0] = np.nan
    data: dict[str, Any] = {
        "completion": (("method", "prompt"), str_array(comp_text)),
        "text": (("method", "prompt"), str_array(text)),
        "token_overlap": (("method", "prompt"), np.asarray(to, float)),
        "perplexity": (("method", "prompt"), rng.uniform(2, 80, size=(m, n))),
        "objective": (("method", "prompt"), rng.uniform(-0.3, 0.7, size=(m, n))),
        "judge_score": (("method", "prompt"), np.asarray(judge, float)),
        "simpleqa_grade": (("method", "prompt"), str_array(grades)),
        "composite": (("method", "prompt"), comp),
        "alpha": (("method", "prompt", "segment"), alpha),
        "gamma": (("method", "prompt", "segment"), gamma),
        "baseline_grade": ("prompt", str_array(["INCORRECT"] * n)),
    }
    if judge_error is not None:
        data["judge_error"] = (("method", "prompt"), str_array(judge_error))
    if readable is not None:
        data["readable"] = (("method", "prompt"), np.asarray(readable, dtype=np.int64))
    ids = simpleqa_ids if simpleqa_ids is not None else [10 * i + 3 for i in range(n)]
    config = {
        "model": model,
        "simpleqa_sha256": sha,
        "n_trials": 3,
        "seed": 0,
        "judge_missing": judge_missing,
    }
    return xr.Dataset(
        data,
        coords={
            "method": str_array(list(methods)),
            "prompt": np.arange(n),
            "segment": str_array(list(seg)),
            "question": ("prompt", str_array(questions)),
            "answer": ("prompt", str_array(answers)),
            "topic": ("prompt", str_array(["Science"] * n)),
            "simpleqa_id": ("prompt", np.asarray(ids, dtype=np.int64)),
        },
        attrs=provenance(
            "results",
            config,
            model=model,
            mode="cached",
            judge="local:tiny" if judged else "none",
            judge_missing=judge_missing,
            judged=int(judged),
        ),  # fmt: skip
    )


def make_trials(results: xr.Dataset, *, n_trials: int = 3, seed: int = 1) -> xr.Dataset:
    """A trials dataset (method, prompt, trial[, segment]) for the steered methods of ``results``."""
    rng = np.random.default_rng(seed)
    steered = [str(m) for m in results.method.values if str(m) != "baseline"]
    m, n = len(steered), results.sizes["prompt"]
    obj = rng.uniform(-0.3, 0.7, size=(m, n, n_trials))
    is_best = np.zeros((m, n, n_trials), dtype=np.int8)
    for k in range(m):
        for i in range(n):
            is_best[k, i, int(np.argmax(obj[k, i]))] = 1
    texts = np.array([[[f"trial {t} of {s} on prompt {i}" for t in range(n_trials)] for i in range(n)]
                      for s in steered], dtype=object)  # fmt: skip
    return xr.Dataset(
        {
            "alpha": (
                ("method", "prompt", "trial", "segment"),
                rng.uniform(0.01, 1, size=(m, n, n_trials, 3)),
            ),
            "gamma": (
                ("method", "prompt", "trial", "segment"),
                rng.uniform(0.01, 1, size=(m, n, n_trials, 3)),
            ),
            "token_overlap": (
                ("method", "prompt", "trial"),
                rng.choice([0.0, 0.5, 1.0], size=(m, n, n_trials)),
            ),
            "perplexity": (
                ("method", "prompt", "trial"),
                rng.uniform(2, 80, size=(m, n, n_trials)),
            ),
            "objective": (("method", "prompt", "trial"), obj),
            "completion": (("method", "prompt", "trial"), str_array(texts)),
            "text": (("method", "prompt", "trial"), str_array(texts)),
            "is_best": (("method", "prompt", "trial"), is_best),
        },
        coords={
            "method": str_array(steered),
            "prompt": np.arange(n),
            "trial": np.arange(n_trials),
            "segment": str_array(["early", "middle", "late"]),
            "simpleqa_id": ("prompt", results.simpleqa_id.values),
        },
        attrs=provenance(
            "trials", json.loads(results.attrs["config"]), model=results.attrs["model"]
        ),
    )


def make_run(
    folder: Path, results: xr.Dataset | None = None, *, trials: bool = True, **kw: Any
) -> Path:
    """Write a run folder (results.nc, trials.nc, config.json) and return it."""
    results = results if results is not None else make_results(**kw)
    folder.mkdir(parents=True, exist_ok=True)
    write_dataset(results, folder / "results.nc")
    if trials:
        write_dataset(make_trials(results), folder / "trials.nc")
    (folder / "config.json").write_text(results.attrs["config"])
    return folder
