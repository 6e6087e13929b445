"""Fluent study (issue 22): do the new steering operators state the answer in readable text more often?

Design (docs/fluent_study.md): a fresh seeded sample of SimpleQA questions, disjoint by id
from every earlier study, every test fixture and the answer-check labelling pool
(:func:`exclusion_ids`, asserted), split by question into ``screen`` and ``heldout``; per
model, the baseline failures among them (the greedy baseline completion does not state the
answer), references as the pipeline captures them, and one search per cell =
(model, configuration, budget, mode). The headline metric is **states the answer**
(:func:`fsnn.judges.states_answer.states_answer`) of the best trial's completion; beside it
TO >= 0.5 on the completion (paper parity), the readable rate, and the any-trial ceiling
(share of prompts where ANY of the trials states the answer).

Configurations (:data:`CONFIGS`): ``paper`` (SearchConfig.paper()), ``default``
(SearchConfig()), and the new operators with the default search otherwise: ``angular``,
``centred``, ``prompt_only`` (fusion), ``decay`` (fusion, decay:0.9), ``kl`` (fusion,
kl:1.0, ``cached`` only), ``windows`` (segmented layout with on/off windows). Every cell is searched at the largest budget; a
smaller budget's result is the first b trials of that search (every trial is asked with a
seed of its own trial number after the same history, so it equals a b-trial search): every
configuration gets exactly b steered generations per prompt at budget b.

Resumable: ``OUT/MODEL/prep.nc`` (the prompts, references, norm scales, mu_generic),
``OUT/MODEL/cells/MODE-CONFIG-bB-SPLIT-nN.nc`` (every trial of one cell, with its wall
time), ``OUT/MODEL/optuna.db``; a rerun skips finished cells and resumes an interrupted
one. The summary (``OUT/summary-MODE-SPLIT.nc``), its markdown table and the figure
(``OUT/states_answer-MODE-SPLIT.png``) are built only from saved cell files
(``--collect-only`` rebuilds them without a model).

Usage:
    python experiments/fluent_study.py --out OUT --models smollm2-135m --split screen --mode cached
    python experiments/fluent_study.py --out OUT --quick            # 1 model, 3 prompts, about a minute
    python experiments/fluent_study.py --out OUT --models M1,M2 --split screen --collect-only
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from fsnn.errors import FsnnError
from fsnn.experiment.simpleqa import Question, load_simpleqa, select_questions
from fsnn.judges.degeneration import readable
from fsnn.judges.metrics import Perplexity, token_overlap
from fsnn.judges.scoring import TOKEN_OVERLAP_THRESHOLD
from fsnn.judges.states_answer import states_answer
from fsnn.search.run import SearchConfig, SearchItem, open_storage, run_search
from fsnn.search.strength import norm_scales
from fsnn.steering.generation import generate
from fsnn.steering.layout import SegmentLayout
from fsnn.steering.prompts import PAPER_TEMPLATES, split_explanation
from fsnn.steering.references import ReferenceItem, capture_generic_mean, capture_references
from fsnn.steering.specs import check_schedule_mode
from fsnn.store.files import read_dataset, write_dataset
from fsnn.store.schema import str_array

REPO = Path(__file__).resolve().parents[1]
MODELS = ("smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
SPLITS = ("screen", "heldout")
MAX_NEW_TOKENS = 48
ENRICH_TOKENS = 100  # the pipeline's enrichment length at the paper's 100 new tokens
N_BOOT = 2000


# ----------------------------------------------------------------------------- configurations


@dataclass(frozen=True, kw_only=True)
class Config:
    """One searched configuration: a SearchConfig recipe and the layout it steers."""

    name: str
    layout: str = "full"
    options: tuple[tuple[str, Any], ...] = ()
    paper: bool = False

    def search_config(self, budget: int, seed: int) -> SearchConfig:
        common = dict(n_trials=budget, batch_rows=64, seed=seed, **dict(self.options))
        if self.paper:  # every trial asked at once, as the paper did
            return SearchConfig.paper(batch_trials=budget, **common)
        return SearchConfig(**common)


CONFIGS: dict[str, Config] = {
    c.name: c
    for c in [
        Config(name="paper", paper=True),
        Config(name="default"),
        Config(name="angular", options=(("operator", "angular"), ("parametrization", "angle"))),
        Config(name="centred", options=(("operator", "centred"),)),
        Config(name="prompt_only", options=(("schedule", "prompt_only"),)),
        Config(name="decay", options=(("schedule", "decay:0.9"),)),
        # the KL-bounded strength per step (cached only); 1 nat fixed before any measurement
        Config(name="kl", options=(("schedule", "kl:1.0"),)),
        # windows switch segments: a one-segment (full) layout would only switch everything off
        Config(name="windows", layout="segmented", options=(("windows", True),)),
    ]
}
QUICK_CONFIGS = ("default", "angular", "kl")


def _runs_in(config: str, mode: str) -> bool:
    """Whether a configuration's schedule runs in ``mode`` (the rule of fsnn.steering.specs)."""
    try:
        check_schedule_mode(dict(CONFIGS[config].options).get("schedule", "constant"), mode)
    except FsnnError:
        return False
    return True


# ----------------------------------------------------------------------------- the sample


def _git_show(spec: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "show", spec], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout


def _csv_ids(text: str) -> set[int]:
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(text)))
    return {
        int(r["simpleqa_id"])
        for r in rows
        if str(r.get("simpleqa_id", "")).strip().lstrip("-").isdigit()
        and int(r["simpleqa_id"]) >= 0
    }


def exclusion_ids(questions: list[Question]) -> dict[str, set[int]]:
    """SimpleQA ids used anywhere before this study, by source (computed, never typed in).

    - ``strength_study``: its stratified pools (``select_questions(stratified=12 * 10,
      seed=0)``, and the ``--quick`` pool of 10), which hold every prompt it searched;
    - ``beyond_oracle``: the first 200 rows of its seed-0 shuffle (it screened 80) and the
      ids its committed datasets (``figures/beyond_oracle/*.nc``) name;
    - ``answer_check_pool``: ``experiments/answer_check/pool.csv`` (in the tree, else branch
      ``labels``); missing from both raises: disjointness could not be checked;
    - ``tests``: the first 500 rows (the paper's subset, which the pipeline, golden and
      fixture tests draw from), the stratified subset the pipeline test selects, every
      ``simpleqa_id`` of a CSV under ``tests/``, and every question whose text appears in
      a file under ``tests/``.
    """
    out: dict[str, set[int]] = {}
    out["strength_study"] = {
        q.id for n in (120, 10) for q in select_questions(questions, stratified=n, seed=0)
    }
    order = np.random.default_rng(0).permutation(len(questions))
    beyond = {questions[i].id for i in order[:200]}
    for path in sorted((REPO / "figures" / "beyond_oracle").glob("*.nc")):
        with xr.open_dataset(path) as ds:
            if "question_id" in ds.coords:
                beyond |= {int(i) for i in np.asarray(ds.question_id.values).ravel() if int(i) >= 0}
            for key in ("train_ids", "test_ids"):
                if key in ds.attrs:
                    beyond |= {int(i) for i in json.loads(str(ds.attrs[key]))}
    out["beyond_oracle"] = beyond
    pool = REPO / "experiments" / "answer_check" / "pool.csv"
    text = (
        pool.read_text()
        if pool.is_file()
        else _git_show("labels:experiments/answer_check/pool.csv")
    )
    if text is None:
        raise FsnnError(
            "experiments/answer_check/pool.csv is neither in the tree nor on branch 'labels': "
            "cannot check that the sample is disjoint from the labelling pool"
        )
    out["answer_check_pool"] = _csv_ids(text)
    tests = {q.id for q in questions[:500]}
    tests |= {q.id for q in select_questions(questions, stratified=40, seed=1)}
    blob = []
    for path in sorted((REPO / "tests").rglob("*")):
        if path.suffix in (".py", ".csv", ".json", ".md", ".txt") and path.is_file():
            body = path.read_text(errors="replace")
            blob.append(body)
            if path.suffix == ".csv" and "simpleqa_id" in body.splitlines()[0]:
                tests |= _csv_ids(body)
    text_blob = "\n".join(blob)
    tests |= {q.id for q in questions if len(q.question) >= 20 and q.question in text_blob}
    golden = REPO / "tests" / "test_golden.py"
    if golden.is_file():
        for node in ast.walk(ast.parse(golden.read_text())):
            if isinstance(node, ast.Assign) and any(
                getattr(t, "id", "") == "IDS" for t in node.targets
            ):
                tests |= set(ast.literal_eval(node.value))
    out["tests"] = tests
    return out


def sample_pool(
    questions: list[Question], size: int, seed: int
) -> tuple[list[Question], dict[int, str]]:
    """A seeded, topic-stratified pool of ``size`` questions outside :func:`exclusion_ids`, split by question.

    Returns:
        (pool in a seeded order, {id: "screen" | "heldout"}): the first half of the
        seeded order is ``screen``, the rest ``heldout``; a question is in one split for
        every model.
    """
    excluded = exclusion_ids(questions)
    used = set().union(*excluded.values())
    fresh = [q for q in questions if q.id not in used]
    pool = select_questions(fresh, stratified=size, seed=seed)
    order = np.random.default_rng(seed + 1).permutation(len(pool))
    pool = [pool[i] for i in order]
    ids = {q.id for q in pool}
    for source, got in excluded.items():
        assert not ids & got, (
            f"the sample shares SimpleQA ids with {source}: {sorted(ids & got)[:5]}"
        )
    assert len(ids) == len(pool), "a question was drawn twice"
    half = (len(pool) + 1) // 2
    split = {q.id: ("screen" if i < half else "heldout") for i, q in enumerate(pool)}
    assert not {i for i, s in split.items() if s == "screen"} & {
        i for i, s in split.items() if s == "heldout"
    }
    return pool, split


def _generate_in_steps(model: Any, prompts: list[str], desc: str, max_new_tokens: int) -> list:
    """:func:`generate` in batches of 16 with a progress bar (the preparation takes minutes)."""
    from tqdm.auto import tqdm

    out: list = []
    with tqdm(total=len(prompts), desc=desc, unit="prompt") as bar:
        for i in range(0, len(prompts), 16):
            out += generate(
                model, prompts[i : i + 16], max_new_tokens=max_new_tokens, batch_size=16
            )
            bar.update(len(prompts[i : i + 16]))
    return out


def prepare(
    model: Any, out: Path, args: argparse.Namespace, questions: list[Question] | None = None
) -> xr.Dataset:
    """Per model: the baseline failures of both splits, with references, norm scales and
    mu_generic (``prep.nc``); ``questions``: SimpleQA as read (default: read it now)."""
    path = out / "prep.nc"
    if path.exists():
        return read_dataset(path)
    if questions is None:
        questions = load_simpleqa()
    pool, split = sample_pool(questions, args.pool_size, args.seed)
    base = _generate_in_steps(
        model,
        [PAPER_TEMPLATES.baseline_prompt(q.question) for q in pool],
        "baseline",
        MAX_NEW_TOKENS,
    )
    rows: dict[str, list[tuple[Question, str]]] = {s: [] for s in SPLITS}
    for q, o in zip(pool, base, strict=True):
        if (
            not states_answer(q.question, q.answer, o.completion)
            and len(rows[split[q.id]]) < args.n_prompts
        ):
            rows[split[q.id]].append((q, o.completion))
    for s in SPLITS:
        if len(rows[s]) < args.n_prompts:
            raise FsnnError(
                f"only {len(rows[s])} baseline failures in the {s} half of the pool; raise --pool-size"
            )
    picked = rows["screen"] + rows["heldout"]
    enrich = _generate_in_steps(
        model,
        [PAPER_TEMPLATES.enrichment_prompt(q.question, q.answer) for q, _ in picked],
        "enrichment",
        ENRICH_TOKENS,
    )
    items = [
        ReferenceItem(
            question=q.question, answer=q.answer, explanation=split_explanation(o.completion)
        )
        for (q, _), o in zip(picked, enrich, strict=True)
    ]
    h = capture_references(model, items, batch_size=8)
    steering = [PAPER_TEMPLATES.steering_prompt(q.question) for q, _ in picked]
    scales = norm_scales(model, steering, torch.from_numpy(h.values))
    mu = capture_generic_mean(model)
    ds = xr.Dataset(
        {
            "h": (("prompt", "layer", "hidden"), h.values),
            "norm_scale": (("prompt", "layer"), scales.numpy()),
            "mu_generic": (("layer", "hidden"), mu.values),
            "baseline_completion": ("prompt", str_array([c for _, c in picked])),
        },
        coords={
            "prompt": np.arange(len(picked)),
            "simpleqa_id": ("prompt", np.asarray([q.id for q, _ in picked], dtype=np.int64)),
            "split": ("prompt", str_array([split[q.id] for q, _ in picked])),
            "question": ("prompt", str_array([q.question for q, _ in picked])),
            "answer": ("prompt", str_array([q.answer for q, _ in picked])),
            "topic": ("prompt", str_array([q.topic for q, _ in picked])),
            "steering_prompt": ("prompt", str_array(steering)),
        },
        attrs={
            "model": model.name,
            "seed": args.seed,
            "pool_size": args.pool_size,
            "pool_ids": json.dumps(sorted(q.id for q in pool)),
            "max_new_tokens": MAX_NEW_TOKENS,
            "failure": "baseline completion does not state the answer (fsnn.judges.states_answer)",
            "mu_generic_prompts_sha256": mu.attrs["prompts_sha256"],
        },
    )
    write_dataset(ds, path)
    return ds


def items_of(prep: xr.Dataset) -> list[SearchItem]:
    return [
        SearchItem(
            key=str(int(prep.simpleqa_id.values[i])),
            prompt=str(prep.steering_prompt.values[i]),
            answer=str(prep.answer.values[i]),
            h=torch.from_numpy(np.asarray(prep.h.values[i], np.float32)),
            norm_scale=torch.from_numpy(np.asarray(prep.norm_scale.values[i], np.float32)),
        )
        for i in range(prep.sizes["prompt"])
    ]


# ----------------------------------------------------------------------------- cells


def cell_path(
    out: Path, model: str, mode: str, config: str, budget: int, split: str, n: int
) -> Path:
    return out / model / "cells" / f"{mode}-{config}-b{budget}-{split}-n{n}.nc"


def run_cell(
    model: Any,
    prep: xr.Dataset,
    config: Config,
    budget: int,
    out: Path,
    mode: str,
    split: str,
    seed: int,
    ppl: Any,
) -> xr.Dataset:
    """Search one cell (resumable) and store every trial as ``cells/MODE-CONFIG-bB-SPLIT-nN.nc``."""
    path = cell_path(out.parent, out.name, mode, config.name, budget, split, prep.sizes["prompt"])
    if path.exists():
        return read_dataset(path)
    storage = open_storage(f"sqlite:///{out / 'optuna.db'}")
    layout = SegmentLayout.named(config.layout, model.n_layers)
    search = config.search_config(budget, seed)
    started = time.perf_counter()
    trials = run_search(
        model,
        items_of(prep),
        layout,
        search,
        storage=storage,
        ppl=ppl,
        mode=mode,
        max_new_tokens=MAX_NEW_TOKENS,
        study_prefix=f"{mode}/{config.name}/{split}/",
        progress=True,
        mu_generic=torch.from_numpy(np.asarray(prep.mu_generic.values, np.float32)),
    )
    wall = time.perf_counter() - started
    keep = ["objective", "readable", "completion", "strength", "trial_number", "failed_trials"]
    ds = trials[keep].assign_coords(
        simpleqa_id=("prompt", prep.simpleqa_id.values),
        question=("prompt", prep.question.values),
        answer=("prompt", prep.answer.values),
    )
    ds["completion"] = ds.completion.fillna("")
    ds.attrs = {
        "config": config.name,
        "layout": config.layout,
        "mode": mode,
        "split": split,
        "budget": budget,
        "wall_s": wall,
        "model": model.name,
        "max_new_tokens": MAX_NEW_TOKENS,
        "failed_trials": int(trials.attrs.get("failed_trials", 0)),
        "search": json.dumps(search.to_dict(), default=str),
    }
    write_dataset(ds, path)
    return ds


def find_cell(
    out: Path, model: str, mode: str, config: str, budget: int, split: str, n: int
) -> Path | None:
    """The cell's file, or the same configuration searched at a larger budget (its first trials answer)."""
    found = []
    for path in (out / model / "cells").glob(f"{mode}-{config}-b*-{split}-n{n}.nc"):
        b = path.name[len(f"{mode}-{config}-b") :].split("-", 1)[0]
        if b.isdigit() and int(b) >= budget:
            found.append((int(b), path))
    return min(found)[1] if found else None


def judged(trials: xr.Dataset, budget: int) -> dict[str, np.ndarray]:
    """Per prompt, of the first ``budget`` trials: the best trial's verdicts and the any-trial ceiling.

    The best trial is the search's own choice (highest objective, first on ties); every
    verdict is recomputed from the stored completion (a prompt without a finished trial
    is a miss): ``states`` (states the answer), ``to_hit`` (TO >= 0.5 on the completion),
    ``readable``, ``any_states`` (some trial states the answer).
    """
    obj = trials.objective.values[:, :budget]
    comp = trials.completion.values[:, :budget]
    questions, answers = trials.question.values, trials.answer.values
    n = obj.shape[0]
    found = np.isfinite(obj).any(axis=1)
    best = np.where(found, np.nanargmax(np.where(np.isfinite(obj), obj, -np.inf), axis=1), 0)
    every = np.array(
        [
            [
                bool(np.isfinite(obj[i, j]))
                and states_answer(str(questions[i]), str(answers[i]), str(comp[i, j]))
                for j in range(obj.shape[1])
            ]
            for i in range(n)
        ],
        dtype=bool,
    ).reshape(n, obj.shape[1])
    best_text = [str(comp[i, best[i]]) if found[i] else "" for i in range(n)]
    return {
        "states": np.array([found[i] and every[i, best[i]] for i in range(n)], dtype=float),
        "to_hit": np.array(
            [
                found[i] and token_overlap(str(answers[i]), best_text[i]) >= TOKEN_OVERLAP_THRESHOLD
                for i in range(n)
            ],
            dtype=float,
        ),
        "readable": np.array([found[i] and readable(best_text[i]) for i in range(n)], dtype=float),
        "any_states": every.any(axis=1).astype(float),
    }


def bootstrap_ci(values: np.ndarray, seed: int = 0, n_boot: int = N_BOOT) -> tuple[float, float]:
    """95% percentile bootstrap interval of a mean over prompts (paired differences included)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(n_boot, values.size), replace=True).mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


STATS = (
    "states_rate",
    "states_lo",
    "states_hi",
    "to_rate",
    "to_lo",
    "to_hi",
    "readable_rate",
    "any_rate",
    "any_lo",
    "any_hi",
    "vs_default",
    "vs_default_lo",
    "vs_default_hi",
    "vs_paper",
    "vs_paper_lo",
    "vs_paper_hi",
    "n",
    "wall_s",
    "failed_trials",
)


def collect(
    out: Path,
    models: list[str],
    mode: str,
    split: str,
    configs: list[str],
    budgets: list[int],
    n_prompts: int,
) -> xr.Dataset:
    """Every finished cell at every budget as one dataset (model, config, budget), from the saved cell files."""
    data = {k: np.full((len(models), len(configs), len(budgets)), np.nan) for k in STATS}
    for m, model in enumerate(models):
        for b, budget in enumerate(budgets):
            hits: dict[str, dict[str, np.ndarray]] = {}
            walls: dict[str, tuple[float, int]] = {}
            for name in configs:
                path = find_cell(out, model, mode, name, budget, split, n_prompts)
                if path is not None:
                    trials = read_dataset(path)
                    hits[name] = judged(trials, budget)
                    walls[name] = (
                        trials.attrs["wall_s"] * budget / trials.attrs["budget"],
                        int(trials.attrs.get("failed_trials", 0)),
                    )
            for c, name in enumerate(configs):
                if name not in hits:
                    continue
                h = hits[name]
                cell = {
                    "states_rate": h["states"].mean(),
                    "to_rate": h["to_hit"].mean(),
                    "readable_rate": h["readable"].mean(),
                    "any_rate": h["any_states"].mean(),
                    "n": h["states"].size,
                    "wall_s": walls[name][0],
                    "failed_trials": walls[name][1],
                }
                cell["states_lo"], cell["states_hi"] = bootstrap_ci(h["states"])
                cell["to_lo"], cell["to_hi"] = bootstrap_ci(h["to_hit"])
                cell["any_lo"], cell["any_hi"] = bootstrap_ci(h["any_states"])
                for ref in ("default", "paper"):
                    if ref in hits and ref != name:
                        d = (
                            h["states"] - hits[ref]["states"]
                        )  # paired by prompt (same prompts, same order)
                        cell[f"vs_{ref}"] = d.mean()
                        cell[f"vs_{ref}_lo"], cell[f"vs_{ref}_hi"] = bootstrap_ci(d)
                for k, v in cell.items():
                    data[k][m, c, b] = v
    return xr.Dataset(
        {k: (("model", "config", "budget"), v) for k, v in data.items()},
        coords={
            "model": np.asarray(models, dtype=object),
            "config": np.asarray(configs, dtype=object),
            "budget": np.asarray(budgets, dtype=np.int64),
            "layout": ("config", str_array([CONFIGS[c].layout for c in configs])),
        },
        attrs={
            "mode": mode,
            "split": split,
            "max_new_tokens": MAX_NEW_TOKENS,
            "scored_on": "completion",
            "headline": "states the answer (fsnn.judges.states_answer) of the best trial's completion",
            "interval": f"95% percentile bootstrap over prompts, {N_BOOT} resamples",
            "paired": "vs_X = mean over prompts of (states, this config) - (states, X), same prompts",
            "budget_means": "steered generations per prompt (the same for every config of a budget)",
            "wall_s_means": "the cell's search wall time scaled by budget / searched budget",
        },
    )


def _save(fig: Any, path: Path) -> None:
    """Write a figure atomically (temp file + rename) and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)
    plt.close(fig)


def figure(summary_path: Path, path: Path) -> None:
    """One panel per model: each config's states-answer rate (filled) with its 95% interval, TO >= 0.5
    (hollow) and the any-trial ceiling (x), one row per (config, budget); read from the saved summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = read_dataset(summary_path)
    models = [str(m) for m in summary.model.values]
    rows = [(c, b) for c in range(summary.sizes["config"]) for b in range(summary.sizes["budget"])]
    fig, axes = plt.subplots(
        1,
        len(models),
        figsize=(5 * len(models), 1.2 + 0.35 * len(rows)),
        squeeze=False,
        sharey=True,
    )
    labels = [f"{summary.config.values[c]} @{int(summary.budget.values[b])}" for c, b in rows]
    for ax, model in zip(axes[0], models, strict=True):
        s = summary.sel(model=model)
        for r, (c, b) in enumerate(rows):
            for key, offset, style in (
                ("states", -0.15, dict(color="C0")),
                ("to", 0.15, dict(color="C3", mfc="none")),
            ):
                y = s[f"{key}_rate"].values[c, b]
                if not np.isfinite(y):
                    continue
                lo, hi = s[f"{key}_lo"].values[c, b], s[f"{key}_hi"].values[c, b]
                ax.errorbar(
                    100 * y,
                    r + offset,
                    xerr=[[100 * (y - lo)], [100 * (hi - y)]],
                    fmt="o",
                    capsize=3,
                    label=("states the answer" if key == "states" else "TO >= 0.5")
                    if r == 0
                    else None,
                    **style,
                )
            y = s.any_rate.values[c, b]
            if np.isfinite(y):
                ax.plot(100 * y, r, "x", color="k", label="any trial states it" if r == 0 else None)
        ax.set_yticks(range(len(rows)), labels, fontsize=7)
        ax.invert_yaxis()
        top = np.nanmax(np.concatenate([s.any_rate.values.ravel(), s.to_hi.values.ravel(), [0.0]]))
        ax.set_xlim(-2, min(102, max(30, 100 * top + 5)))
        n = int(np.nanmax(s.n.values)) if np.isfinite(s.n.values).any() else 0
        ax.set_xlabel(f"% of prompts (n = {n}), 95% bootstrap intervals")
        ax.set_title(f"{model} ({summary.attrs['mode']}, {summary.attrs['split']})")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    _save(fig, path)


# parameters of each offline model (docs/fluent_study.md, ASSETS): the size figure's x axis
MODEL_PARAMS = {
    "smollm2-135m": 135e6,
    "gemma3-270m": 270e6,
    "qwen2.5-coder-0.5b": 494e6,
    "qwen2.5-coder-1.5b": 1.54e9,
}


def size_figure(summary_path: Path, path: Path) -> None:
    """States-the-answer rate (95% interval) against model size, one line per config, at the largest budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = read_dataset(summary_path)
    b = summary.sizes["budget"] - 1
    models = [str(m) for m in summary.model.values if str(m) in MODEL_PARAMS]
    fig, ax = plt.subplots(figsize=(6, 4))
    for c, config in enumerate(str(v) for v in summary.config.values):
        pts = [
            (
                MODEL_PARAMS[m],
                *(
                    summary.sel(model=m)[k].values[c, b]
                    for k in ("states_rate", "states_lo", "states_hi")
                ),
            )
            for m in models
        ]
        pts = [p for p in pts if np.isfinite(p[1])]
        if not pts:
            continue
        x, y, lo, hi = (np.asarray(v, dtype=float) for v in zip(*pts, strict=True))
        shift = 1 + 0.04 * (c - summary.sizes["config"] / 2)  # side by side on a log axis
        ax.errorbar(
            x * shift,
            100 * y,
            yerr=[100 * (y - lo), 100 * (hi - y)],
            fmt="o-",
            capsize=3,
            label=config,
        )
    ax.set_xscale("log")
    ax.set_xticks([MODEL_PARAMS[m] for m in models], models, fontsize=8)
    ax.minorticks_off()
    n = int(np.nanmax(summary.n.values)) if np.isfinite(summary.n.values).any() else 0
    ax.set_ylabel(f"states the answer, % (n = {n}, 95% bootstrap)")
    ax.set_title(
        f"{summary.attrs['mode']}, {summary.attrs['split']}, "
        f"{int(summary.budget.values[b])} trials per prompt"
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def markdown_table(summary: xr.Dataset) -> str:
    lines = [
        "| model | config | trials/prompt | states answer [95% CI] | TO>=0.5 [95% CI] | readable | "
        "any trial states [95% CI] | vs default [95% CI] | vs paper [95% CI] | n | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def pct(v: float) -> str:
        return "" if not np.isfinite(v) else f"{100 * v:.0f}%"

    def pts(v: float, lo: float, hi: float) -> str:
        return "" if not np.isfinite(v) else f"{100 * v:+.0f} [{100 * lo:+.0f}, {100 * hi:+.0f}]"

    for model in summary.model.values:
        s = summary.sel(model=model)
        for c, config in enumerate(summary.config.values):
            for b, budget in enumerate(summary.budget.values):
                v = {k: float(s[k].values[c, b]) for k in STATS}
                if not np.isfinite(v["states_rate"]):
                    continue
                lines.append(
                    f"| {model} | {config} | {budget} | {pct(v['states_rate'])} [{pct(v['states_lo'])}, "
                    f"{pct(v['states_hi'])}] | {pct(v['to_rate'])} [{pct(v['to_lo'])}, {pct(v['to_hi'])}] | "
                    f"{pct(v['readable_rate'])} | {pct(v['any_rate'])} [{pct(v['any_lo'])}, {pct(v['any_hi'])}] | "
                    f"{pts(v['vs_default'], v['vs_default_lo'], v['vs_default_hi'])} | "
                    f"{pts(v['vs_paper'], v['vs_paper_lo'], v['vs_paper_hi'])} | {int(v['n'])} | {v['wall_s']:.0f} |"
                )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def _load(name: str) -> Any | None:
    """The model, or None with a visible line when its packages are not installed."""
    from fsnn.models.load import load_model

    try:
        return load_model(name)
    except FsnnError as exc:
        if "missing package" not in str(exc):
            raise
        print(f"fluent study: SKIP {name}: {exc}", flush=True)
        return None


def main(argv: list[str] | None = None) -> int:
    global MAX_NEW_TOKENS, ENRICH_TOKENS
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--out", type=Path, required=True, help="study folder (outside the repository)")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated model aliases")
    p.add_argument("--mode", default="cached", choices=("faithful", "cached"), help="steering mode")
    p.add_argument(
        "--split", default="screen", choices=SPLITS, help="which half of the questions to search"
    )
    p.add_argument(
        "--configs",
        default=None,
        help=f"comma-separated configurations of {','.join(CONFIGS)} "
        "(default: every one that runs in the mode)",
    )
    p.add_argument(
        "--budgets", default="5,10", help="trials per prompt; each cell is searched at the largest"
    )
    p.add_argument(
        "--n-prompts", type=int, default=40, help="baseline failures per split and model"
    )
    p.add_argument(
        "--pool-size", type=int, default=160, help="questions screened per model (both splits)"
    )
    p.add_argument("--seed", type=int, default=2212, help="sample and split seed")
    p.add_argument(
        "--search-seed", type=int, default=0, help="the searches' seed (SearchConfig.seed)"
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny shape: first model, 3 prompts, budget 2, 8 tokens, configs default, angular, kl",
    )
    p.add_argument(
        "--collect-only",
        action="store_true",
        help="load no model: rebuild the summary, table and figure from the finished cells",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.configs is None:
        configs = [c for c in CONFIGS if _runs_in(c, args.mode)]
    else:
        configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    budgets = sorted({int(b) for b in args.budgets.split(",")})
    if args.quick:  # a shape check, not a measurement
        models, configs, budgets, args.n_prompts, args.pool_size = (
            models[:1],
            list(QUICK_CONFIGS),
            [2],
            3,
            16,
        )
        MAX_NEW_TOKENS, ENRICH_TOKENS = 8, 8
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        p.error(f"unknown configuration(s) {unknown}; choose from {list(CONFIGS)}")
    for c in configs:
        if not _runs_in(c, args.mode):
            p.error(f"configuration {c!r} does not run in {args.mode} mode (kl: cached only)")
    started = time.perf_counter()
    ran = []
    todo = [] if args.collect_only else models
    # SimpleQA is read before any model loads: a missing file is one line, not minutes later
    questions = (
        load_simpleqa() if any(not (args.out / m / "prep.nc").exists() for m in todo) else None
    )
    for name in todo:
        out = args.out / name
        (out / "cells").mkdir(parents=True, exist_ok=True)
        model = _load(name)
        if model is None:
            continue
        prep = prepare(model, out, args, questions)
        prep = prep.isel(prompt=np.flatnonzero(prep.split.values == args.split))
        if prep.sizes["prompt"] < args.n_prompts:
            raise FsnnError(
                f"{name}: prep.nc holds {prep.sizes['prompt']} {args.split} prompts, fewer than "
                f"--n-prompts {args.n_prompts}; prepare a new study folder"
            )
        # A smaller --n-prompts than prep.nc was made with searches the split's first N
        # failures in pool order: a subset of the larger cells, paired with them.
        prep = prep.isel(prompt=slice(0, args.n_prompts))
        ppl = Perplexity(model.hf_model, model.tokenizer)
        for config in configs:
            t0 = time.perf_counter()
            ds = run_cell(
                model,
                prep,
                CONFIGS[config],
                max(budgets),
                out,
                args.mode,
                args.split,
                args.search_seed,
                ppl,
            )
            for b in budgets:
                h = judged(ds, b)
                print(
                    f"{name} {args.mode} {args.split} {config} @{b}: states {h['states'].mean():.2f} "
                    f"TO>=0.5 {h['to_hit'].mean():.2f} readable {h['readable'].mean():.2f} "
                    f"any {h['any_states'].mean():.2f} (cell wall {ds.attrs['wall_s']:.0f} s, "
                    f"this call {time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
        ran.append(name)
    summary = collect(args.out, models, args.mode, args.split, configs, budgets, args.n_prompts)
    summary_path = args.out / f"summary-{args.mode}-{args.split}.nc"
    write_dataset(summary, summary_path)
    figure(summary_path, args.out / f"states_answer-{args.mode}-{args.split}.png")
    size_figure(summary_path, args.out / f"states_answer-by-size-{args.mode}-{args.split}.png")
    print(markdown_table(read_dataset(summary_path)))
    print(
        f"fluent study: {time.perf_counter() - started:.0f} s wall ({', '.join(ran) or 'collect only'})"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except FsnnError as exc:  # bad input or a missing file: one line, no traceback
        print(f"fluent study: {exc}", file=sys.stderr)
        sys.exit(2)
