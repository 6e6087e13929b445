"""Strength study (issue 13): which parametrization x sampler x budget steers to the answer in readable text.

For each model: a fixed, seeded sample of baseline failures drawn across SimpleQA topics
(stratified pool, not the first rows), reference vectors as the pipeline captures them
(docs/method.md §2.3-2.4), then one search per cell (parametrization x sampler x budget), scored
on the completion only. A prompt counts as steered to the answer when the best trial's
TO >= ``fsnn.judges.scoring.TOKEN_OVERLAP_THRESHOLD`` AND the completion passes
:func:`fsnn.judges.degeneration.readable`; both rates are stored, the readable one first.

Resumable: the prepared prompts (``prep.nc``), one netCDF per finished cell
(``cells/NAME.nc``) and the Optuna studies (``optuna.db``) live in the output folder; a
re-run skips finished cells and resumes the searches of an interrupted one.

Usage:
    python experiments/strength_study.py --out OUT [--models smollm2-135m] [--mode cached]
        [--cells screen] [--budgets 5,10] [--n-prompts 50]
    python experiments/strength_study.py --out OUT --quick          # 3 prompts, 1 model, 2 trials
    python experiments/strength_study.py --out OUT --label-sample   # 100 completions to read
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from fsnn.errors import FsnnError
from fsnn.experiment.simpleqa import load_simpleqa, select_questions
from fsnn.judges.degeneration import readable
from fsnn.judges.metrics import Perplexity, token_overlap
from fsnn.judges.scoring import TOKEN_OVERLAP_THRESHOLD, proxy_grade
from fsnn.search.run import SearchConfig, SearchItem, open_storage, run_search
from fsnn.search.strength import norm_scales
from fsnn.steering.generation import generate
from fsnn.steering.layout import SegmentLayout
from fsnn.steering.prompts import PAPER_TEMPLATES, split_explanation
from fsnn.steering.references import ReferenceItem, capture_references
from fsnn.store.files import read_dataset, write_dataset
from fsnn.store.schema import str_array

MAX_NEW_TOKENS = 48
ENRICH_TOKENS = 100  # the pipeline's enrichment length at the paper's 100 new tokens


@dataclass(frozen=True, kw_only=True)
class Cell:
    """One searched configuration of the grid."""

    parametrization: str
    sampler: str
    start_trials: int
    budget: int
    layout: str = "full"
    unreadable_penalty: float = 1.0
    batch_trials: int = (
        1  # rounds of one trial per prompt: model-based samplers see earlier results
    )

    @property
    def name(self) -> str:
        start = f"+start{self.start_trials}" if self.start_trials else ""
        pen = "" if self.unreadable_penalty else "+paperobj"
        return f"{self.layout}-{self.parametrization}-{self.sampler}{start}{pen}-b{self.budget}"

    def search_config(self, seed: int) -> SearchConfig:
        return SearchConfig(
            n_trials=self.budget,
            batch_trials=self.batch_trials,
            batch_rows=64,
            parametrization=self.parametrization,
            sampler=self.sampler,
            start_trials=self.start_trials,
            # the paper's TPE keeps Optuna's random startup trials (SearchConfig.paper())
            n_startup_trials=(
                SearchConfig.paper() if self.unreadable_penalty == 0 else SearchConfig()
            ).n_startup_trials,
            unreadable_penalty=self.unreadable_penalty,
            seed=seed,
            score_on="completion",
        )


def paper_cell(budget: int, layout: str = "full") -> Cell:
    """The paper's recipe (:meth:`SearchConfig.paper`, its one definition) at ``budget`` trials."""
    paper = SearchConfig.paper(n_trials=budget, batch_trials=budget)
    return Cell(
        parametrization=paper.parametrization,
        sampler=paper.sampler,
        start_trials=paper.start_trials,
        budget=budget,
        layout=layout,
        unreadable_penalty=paper.unreadable_penalty,
        batch_trials=paper.batch_trials,
    )


def grid(kind: str, budgets: list[int], candidate_budget: int | None = None) -> list[Cell]:
    """The searched configurations of a named grid, each at the largest budget.

    A smaller budget's result is the first trials of the larger search (:func:`prefix_best`):
    every trial is asked with a seed of its own trial number after the same history, so
    the first b trials of a 20-trial search are exactly a b-trial search.
    """
    cells = []
    for b in [max(budgets)]:
        cells.append(paper_cell(b))
        b = candidate_budget or b  # a screen may search the candidates at a smaller budget only
        if kind == "quick":
            cells.append(
                Cell(parametrization="norm_relative", sampler="tpe", start_trials=1, budget=b)
            )
            continue
        for par in (
            "norm_relative",
            "log_product",
        ):  # the candidates first: a cut-short screen still has them
            cells.append(Cell(parametrization=par, sampler="tpe", start_trials=3, budget=b))
        for par in ("norm_relative", "log_product", "alpha_gamma"):
            cells.append(Cell(parametrization=par, sampler="random", start_trials=0, budget=b))
        if kind == "full":
            for par in ("log_product", "norm_relative"):
                cells.append(Cell(parametrization=par, sampler="gp", start_trials=3, budget=b))
                cells.append(Cell(parametrization=par, sampler="tpe", start_trials=0, budget=b))
            cells.append(
                Cell(
                    parametrization="norm_relative",
                    sampler="tpe",
                    start_trials=3,
                    budget=b,
                    layout="segmented",
                )
            )
    return cells


# ----------------------------------------------------------------------------- prompts


def stratified_failures(
    model: Any, n: int, seed: int, pool_per_topic: int, out: Path
) -> list[dict[str, Any]]:
    """Baseline failures (proxy grade not CORRECT, completion only), ``n`` drawn round-robin over topics."""
    questions = load_simpleqa()
    pool = select_questions(questions, stratified=pool_per_topic * 10, seed=seed)
    prompts = [PAPER_TEMPLATES.baseline_prompt(q.question) for q in pool]
    outs = generate(model, prompts, max_new_tokens=MAX_NEW_TOKENS, batch_size=16)
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for q, o in zip(pool, outs, strict=True):
        if proxy_grade(q.answer, o.completion) == "CORRECT":
            continue
        by_topic.setdefault(q.topic, []).append(
            {
                "simpleqa_id": q.id,
                "question": q.question,
                "answer": q.answer,
                "topic": q.topic,
                "baseline_completion": o.completion,
                "baseline_to": token_overlap(q.answer, o.completion),
            }
        )
    rng = random.Random(seed)
    for rows in by_topic.values():
        rng.shuffle(rows)
    picked: list[dict[str, Any]] = []
    topics = sorted(by_topic)
    while len(picked) < n and any(by_topic[t] for t in topics):
        for t in topics:
            if by_topic[t] and len(picked) < n:
                picked.append(by_topic[t].pop())
    if len(picked) < n:
        raise FsnnError(f"only {len(picked)} baseline failures in the pool; raise --pool-per-topic")
    return picked


def prepare(model: Any, out: Path, n: int, seed: int, pool_per_topic: int) -> xr.Dataset:
    """The study's prompts with references and norm scales, cached as ``prep.nc``."""
    path = out / "prep.nc"
    if path.exists():
        return read_dataset(path)
    rows = stratified_failures(model, n, seed, pool_per_topic, out)
    enrich = generate(
        model,
        [PAPER_TEMPLATES.enrichment_prompt(r["question"], r["answer"]) for r in rows],
        max_new_tokens=ENRICH_TOKENS,
        batch_size=16,
    )
    items = [
        ReferenceItem(
            question=r["question"], answer=r["answer"], explanation=split_explanation(o.completion)
        )
        for r, o in zip(rows, enrich, strict=True)
    ]
    h = capture_references(model, items, batch_size=8)
    steering = [PAPER_TEMPLATES.steering_prompt(r["question"]) for r in rows]
    scales = norm_scales(model, steering, torch.from_numpy(h.values))
    ds = xr.Dataset(
        {
            "h": (("prompt", "layer", "hidden"), h.values),
            "norm_scale": (("prompt", "layer"), scales.numpy()),
            "baseline_completion": ("prompt", str_array([r["baseline_completion"] for r in rows])),
            "baseline_to": ("prompt", np.asarray([r["baseline_to"] for r in rows], dtype=float)),
        },
        coords={
            "prompt": np.arange(len(rows)),
            "simpleqa_id": ("prompt", np.asarray([r["simpleqa_id"] for r in rows], dtype=np.int64)),
            "question": ("prompt", str_array([r["question"] for r in rows])),
            "answer": ("prompt", str_array([r["answer"] for r in rows])),
            "topic": ("prompt", str_array([r["topic"] for r in rows])),
            "steering_prompt": ("prompt", str_array(steering)),
        },
        attrs={"model": model.name, "seed": seed, "max_new_tokens": MAX_NEW_TOKENS},
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


def bootstrap_ci(hits: np.ndarray, seed: int = 0, n_boot: int = 2000) -> tuple[float, float]:
    """95% percentile bootstrap interval of a rate over prompts."""
    hits = np.asarray(hits, dtype=float)
    if hits.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = rng.choice(hits, size=(n_boot, hits.size), replace=True).mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def run_cell(
    model: Any, prep: xr.Dataset, cell: Cell, out: Path, mode: str, seed: int, ppl: Any
) -> xr.Dataset:
    """Search one cell (resumable) and store its trials as ``cells/MODE-NAME.nc``."""
    path = out / "cells" / f"{mode}-{cell.name}-n{prep.sizes['prompt']}.nc"
    if path.exists():
        return read_dataset(path)
    storage = open_storage(f"sqlite:///{out / 'optuna.db'}")
    layout = SegmentLayout.named(cell.layout, model.n_layers)
    started = time.perf_counter()
    trials = run_search(
        model,
        items_of(prep),
        layout,
        cell.search_config(seed),
        storage=storage,
        ppl=ppl,
        mode=mode,
        max_new_tokens=MAX_NEW_TOKENS,
        study_prefix=f"{mode}/{cell.name}/",
        progress=True,
    )
    wall = time.perf_counter() - started
    keep = [
        "token_overlap",
        "readable",
        "distinct_2",
        "longest_repeat",
        "perplexity",
        "objective",
        "completion",
        "strength",
        "trial_number",
        "failed_trials",
    ]
    ds = trials[keep].assign_coords(simpleqa_id=("prompt", prep.simpleqa_id.values))
    ds["completion"] = ds.completion.fillna("")
    ds.attrs = {
        "cell": cell.name,
        "mode": mode,
        "wall_s": wall,
        "model": model.name,
        "failed_trials": int(trials.attrs.get("failed_trials", 0)),
        "search": json.dumps(cell.search_config(seed).to_dict(), default=str),
    }
    write_dataset(ds, path)
    return ds


def prefix_best(trials: xr.Dataset, budget: int) -> dict[str, np.ndarray]:
    """Per prompt, the best of the first ``budget`` finished trials (by objective, first on ties).

    Returns arrays over prompts: ``token_overlap``, ``readable``, ``answer_hit``,
    ``readable_answer_hit`` (a prompt without a finished trial counts as a miss),
    ``strength``, and ``completion``.
    """
    obj = trials.objective.values[:, :budget]
    n = obj.shape[0]
    found = np.isfinite(obj).any(axis=1)
    best = np.where(found, np.nanargmax(np.where(np.isfinite(obj), obj, -np.inf), axis=1), 0)
    rows = np.arange(n)
    to = np.where(found, trials.token_overlap.values[rows, best], np.nan)
    completion = np.where(found, trials.completion.values[rows, best], "")
    # judged again with today's guard: a cell searched before a guard change stays comparable
    read = np.array([bool(f) and readable(str(c)) for f, c in zip(found, completion, strict=True)])
    hit = np.nan_to_num(to, nan=0.0) >= TOKEN_OVERLAP_THRESHOLD
    return {
        "token_overlap": to,
        "readable": read.astype(np.int8),
        "answer_hit": hit.astype(np.int8),
        "readable_answer_hit": (hit & read).astype(np.int8),
        "strength": np.where(found, trials.strength.values[rows, best, 0], np.nan),
        "completion": completion,
    }


def collect(
    out: Path, models: list[str], mode: str, cells: list[Cell], budgets: list[int], n_prompts: int
) -> xr.Dataset:
    """Every finished cell at every budget as one labeled dataset (model, cell, budget)."""
    stats = (
        "readable_answer_rate",
        "readable_answer_lo",
        "readable_answer_hi",
        "answer_rate",
        "answer_lo",
        "answer_hi",
        "readable_rate",
        "n",
        "wall_s",
    )
    names = [c.name.rsplit("-b", 1)[0] for c in cells]
    data = {k: np.full((len(models), len(names), len(budgets)), np.nan) for k in stats}
    for m, model in enumerate(models):
        for c, cell in enumerate(cells):
            path = cell_file(out, model, mode, cell, n_prompts)
            if path is None:
                continue
            trials = read_dataset(path)
            for b, budget in enumerate(budgets):
                if budget > cell.budget:
                    continue
                best = prefix_best(trials, budget)
                ra, a = best["readable_answer_hit"], best["answer_hit"]
                data["readable_answer_rate"][m, c, b] = ra.mean()
                data["readable_answer_lo"][m, c, b], data["readable_answer_hi"][m, c, b] = (
                    bootstrap_ci(ra)
                )
                data["answer_rate"][m, c, b] = a.mean()
                data["answer_lo"][m, c, b], data["answer_hi"][m, c, b] = bootstrap_ci(a)
                data["readable_rate"][m, c, b] = best["readable"].mean()
                data["n"][m, c, b] = ra.size
                data["wall_s"][m, c, b] = trials.attrs["wall_s"] * budget / cell.budget
    return xr.Dataset(
        {k: (("model", "cell", "budget"), v) for k, v in data.items()},
        coords={
            "model": np.asarray(models, dtype=object),
            "cell": np.asarray(names, dtype=object),
            "budget": np.asarray(budgets, dtype=np.int64),
            "parametrization": ("cell", str_array([c.parametrization for c in cells])),
            "sampler": (
                "cell",
                str_array(
                    [
                        c.sampler
                        + (f"+start{c.start_trials}" if c.start_trials else "")
                        + ("" if c.unreadable_penalty else " (paper objective)")
                        for c in cells
                    ]
                ),
            ),
            "layout": ("cell", str_array([c.layout for c in cells])),
        },
        attrs={
            "mode": mode,
            "max_new_tokens": MAX_NEW_TOKENS,
            "scored_on": "completion",
            "interval": "95% percentile bootstrap over prompts, 2000 resamples",
            "budget_means": "steered generations per prompt (same for every cell of a budget)",
            "wall_s_means": "the cell's search wall time scaled by budget / searched budget",
        },
    )


def figure(summary: xr.Dataset, path: Path) -> None:
    """Per model, each configuration's rates with 95% intervals, one panel per model.

    With several budgets: readable-and-answer rate vs trial budget, a line per
    configuration. With one budget: a row per configuration, the readable-and-answer rate
    (filled) beside the plain TO >= 0.5 rate (hollow), so the gap shows what degenerate
    text would have counted.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [str(m) for m in summary.model.values]
    one_budget = summary.sizes["budget"] == 1
    fig, axes = plt.subplots(
        1, len(models), figsize=(5 * len(models), 4), squeeze=False, sharey=one_budget
    )
    labels = [
        f"{summary.layout.values[c]} {summary.parametrization.values[c]} / {summary.sampler.values[c]}"
        for c in range(summary.sizes["cell"])
    ]
    for ax, model in zip(axes[0], models, strict=True):
        s = summary.sel(model=model)
        if one_budget:
            for c in range(s.sizes["cell"]):
                for key, offset, face in (
                    ("readable_answer", -0.12, None),
                    ("answer", 0.12, "none"),
                ):
                    y = s[f"{key}_rate"].values[c, 0]
                    if not np.isfinite(y):
                        continue
                    lo, hi = s[f"{key}_lo"].values[c, 0], s[f"{key}_hi"].values[c, 0]
                    ax.errorbar(
                        100 * y,
                        c + offset,
                        xerr=[[100 * (y - lo)], [100 * (hi - y)]],
                        fmt="o",
                        capsize=3,
                        color="C0" if face is None else "C3",
                        mfc=face,
                        label=("TO >= 0.5 and readable" if face is None else "TO >= 0.5 (any text)")
                        if c == 0
                        else None,
                    )
            ax.set_yticks(range(len(labels)), labels, fontsize=7)
            ax.invert_yaxis()
            ax.set_xlim(-2, 60)
            n = int(np.nanmax(s.n.values)) if np.isfinite(s.n.values).any() else 0
            ax.set_xlabel(f"% of prompts (n = {n}), {int(s.budget.values[0])} trials per prompt")
        else:
            b = s.budget.values
            for c in range(s.sizes["cell"]):
                y = s.readable_answer_rate.values[c]
                keep = np.isfinite(y)
                if not keep.any():
                    continue
                lo, hi = s.readable_answer_lo.values[c][keep], s.readable_answer_hi.values[c][keep]
                yk = y[keep]
                ax.errorbar(
                    b[keep],
                    100 * yk,
                    yerr=[100 * (yk - lo), 100 * (hi - yk)],
                    marker="o",
                    capsize=3,
                    label=labels[c],
                )
            ax.set_xlabel("trials per prompt (steered generations)")
            ax.set_ylabel("TO >= 0.5 and readable, % of prompts")
        ax.set_title(f"{model} ({summary.attrs['mode']})")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)
    plt.close(fig)


def cell_file(out: Path, model: str, mode: str, cell: Cell, n_prompts: int) -> Path | None:
    """The cell's trials file, or the same configuration searched at a larger budget.

    A b-trial result is the first b trials of a larger search (:func:`grid`), so a 10-trial
    file answers a 5-trial question exactly.
    """
    stem = cell.name.rsplit("-b", 1)[0]
    found = []
    for path in (out / model / "cells").glob(f"{mode}-{stem}-b*-n{n_prompts}.nc"):
        budget = path.name[len(f"{mode}-{stem}-b") :].split("-n", 1)[0]
        if budget.isdigit() and int(budget) >= cell.budget:
            found.append((int(budget), path))
    return min(found)[1] if found else None


def paired_vs_paper(
    out: Path,
    models: list[str],
    mode: str,
    cells: list[Cell],
    budget: int,
    n_prompts: int,
    seed: int = 0,
    n_boot: int = 2000,
) -> list[dict[str, Any]]:
    """Each cell against the paper's cell on the same prompts, pooled over the models.

    Readable-and-answer hits at ``budget`` trials; the difference (cell - paper) is paired by
    prompt and its 95% interval comes from a bootstrap that resamples prompts within each
    model (so every resample keeps each model's share). Only models where both cells finished
    enter a row; the row names them.
    """
    paper = paper_cell(budget).name
    rows = []
    for cell in cells:
        if cell.name.startswith(paper.rsplit("-b", 1)[0]) or budget > cell.budget:
            continue
        diffs, used = [], []
        for model in models:
            a = cell_file(out, model, mode, cell, n_prompts)
            b = cell_file(out, model, mode, paper_cell(budget), n_prompts)
            if a is not None and b is not None:
                hit_a = prefix_best(read_dataset(a), budget)["readable_answer_hit"].astype(float)
                hit_b = prefix_best(read_dataset(b), budget)["readable_answer_hit"].astype(float)
                diffs.append(hit_a - hit_b)
                used.append(model)
        if not diffs:
            continue
        rng = np.random.default_rng(seed)
        boots = np.zeros(n_boot)
        for d in diffs:  # stratified: resample within each model, weight by its prompts
            boots += rng.choice(d, size=(n_boot, d.size), replace=True).sum(axis=1)
        n = sum(d.size for d in diffs)
        boots /= n
        pooled = np.concatenate(diffs)
        rows.append(
            {
                "cell": cell.name,
                "models": used,
                "n": n,
                "diff": float(pooled.mean()),
                "lo": float(np.quantile(boots, 0.025)),
                "hi": float(np.quantile(boots, 0.975)),
                "wins": int((pooled > 0).sum()),
                "losses": int((pooled < 0).sum()),
            }
        )
    return rows


def markdown_table(summary: xr.Dataset) -> str:
    """The summary as a markdown table: readable-and-answer first, then answer only, with intervals and n."""
    lines = [
        "| model | layout | parametrization | sampler | trials/prompt | TO>=0.5 & readable [95% CI] | "
        "TO>=0.5 [95% CI] | readable best | n | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model in summary.model.values:
        for c in range(summary.sizes["cell"]):
            for b, budget in enumerate(summary.budget.values):
                s = summary.sel(model=model)
                if not np.isfinite(s.readable_answer_rate.values[c, b]):
                    continue

                def pct(name, s=s, c=c, b=b):
                    return f"{100 * s[name].values[c, b]:.0f}%"

                lines.append(
                    f"| {model} | {s.layout.values[c]} | {s.parametrization.values[c]} | {s.sampler.values[c]} | "
                    f"{budget} | {pct('readable_answer_rate')} [{pct('readable_answer_lo')}, "
                    f"{pct('readable_answer_hi')}] | {pct('answer_rate')} [{pct('answer_lo')}, {pct('answer_hi')}] | "
                    f"{pct('readable_rate')} | {int(s.n.values[c, b])} | {s.wall_s.values[c, b]:.0f} |"
                )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- label sample


def label_sample(model: Any, prep: xr.Dataset, out: Path, n_questions: int = 20) -> Path:
    """100 completions to read by hand: baseline plus full-layer steering at 4 strengths (cached mode)."""
    rows = []
    n = min(n_questions, prep.sizes["prompt"])
    items = items_of(prep)[:n]
    for i in range(n):
        rows.append(
            {
                "source": "baseline",
                "strength": 0.0,
                "simpleqa_id": items[i].key,
                "answer": items[i].answer,
                "completion": str(prep.baseline_completion.values[i]),
            }
        )
    h = torch.stack([it.h for it in items])
    for k in (0.03, 0.1, 0.3, 1.0):
        from fsnn.steering.steer import steered_generate

        coef = torch.full((n, model.n_layers), k)
        outs = steered_generate(
            model,
            [it.prompt for it in items],
            h,
            torch.ones(n, model.n_layers),
            coef,
            mode="cached",
            max_new_tokens=MAX_NEW_TOKENS,
        )
        rows.extend(
            {
                "source": "full k",
                "strength": k,
                "simpleqa_id": it.key,
                "answer": it.answer,
                "completion": o.completion,
            }
            for it, o in zip(items, outs, strict=True)
        )
    path = out / "label_sample.json"
    path.write_text(json.dumps(rows, indent=1))
    return path


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--out", type=Path, required=True, help="study folder (outside the repository)")
    p.add_argument("--models", default="smollm2-135m", help="comma-separated model aliases")
    p.add_argument(
        "--mode", default="faithful", choices=("faithful", "cached"), help="steering mode"
    )
    p.add_argument(
        "--cells", default="screen", choices=("screen", "full", "quick"), help="which grid"
    )
    p.add_argument("--budgets", default="5,10,20", help="trials per prompt, comma-separated")
    p.add_argument("--n-prompts", type=int, default=50, help="baseline failures per model")
    p.add_argument(
        "--pool-per-topic", type=int, default=12, help="stratified pool size per topic (x10 topics)"
    )
    p.add_argument("--seed", type=int, default=0, help="sample and search seed")
    p.add_argument(
        "--only", default="", help="comma-separated cell names to run (default: all of the grid)"
    )
    p.add_argument(
        "--limit-prompts",
        type=int,
        default=None,
        help="search only the first N prepared prompts (the round-robin order keeps topics mixed)",
    )
    p.add_argument(
        "--candidate-budget",
        type=int,
        default=None,
        help="budget of the non-paper cells (default: the largest of --budgets)",
    )
    p.add_argument(
        "--quick", action="store_true", help="tiny shape: 3 prompts, first model, 2 trials"
    )
    p.add_argument(
        "--label-sample", action="store_true", help="write 100 completions to read, then stop"
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument(
        "--collect-only",
        action="store_true",
        help="load no model: rebuild the summary, table and figure from the finished cells",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from fsnn.models.load import load_model

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    budgets = [int(b) for b in args.budgets.split(",")]
    kind = args.cells
    if args.quick:  # a shape check, not a measurement: few questions, short generations
        global MAX_NEW_TOKENS, ENRICH_TOKENS
        models, budgets, kind, args.n_prompts, args.pool_per_topic = models[:1], [2], "quick", 3, 1
        MAX_NEW_TOKENS, ENRICH_TOKENS = 8, 8
    cells = grid(kind, budgets, args.candidate_budget)
    if args.only:
        wanted = set(args.only.split(","))
        cells = [c for c in cells if c.name in wanted]
    for name in [] if args.collect_only else models:
        out = args.out / name
        (out / "cells").mkdir(parents=True, exist_ok=True)
        model = load_model(name)
        prep = prepare(model, out, args.n_prompts, args.seed, args.pool_per_topic)
        if args.limit_prompts:
            prep = prep.isel(prompt=slice(0, args.limit_prompts))
        if args.label_sample:
            print(label_sample(model, prep, out))
            return 0
        ppl = Perplexity(model.hf_model, model.tokenizer)
        for cell in tqdm(cells, desc=f"cells {name}", unit="cell"):
            ds = run_cell(model, prep, cell, out, args.mode, args.seed, ppl)
            for b in [b for b in budgets if b <= cell.budget]:
                best = prefix_best(ds, b)
                print(
                    f"{name} {args.mode} {cell.name} @{b}: readable+answer "
                    f"{best['readable_answer_hit'].mean():.2f} answer {best['answer_hit'].mean():.2f} "
                    f"wall {ds.attrs['wall_s']:.0f}s (searched budget)",
                    flush=True,
                )
    summary = collect(
        args.out, models, args.mode, cells, budgets, args.limit_prompts or args.n_prompts
    )
    write_dataset(summary, args.out / f"summary-{args.mode}.nc")
    figure(summary, args.out / f"readable_answer_vs_budget-{args.mode}.png")
    print(markdown_table(summary))
    for budget in budgets:
        for row in paired_vs_paper(
            args.out, models, args.mode, cells, budget, args.limit_prompts or args.n_prompts
        ):
            print(
                f"paired vs paper @{budget} ({', '.join(row['models'])}; n={row['n']}): {row['cell']} "
                f"{100 * row['diff']:+.1f} pts [{100 * row['lo']:+.1f}, {100 * row['hi']:+.1f}] "
                f"(prompts won {row['wins']}, lost {row['losses']})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
