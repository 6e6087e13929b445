"""The SimpleQA experiment's stages as plain functions over datasets (docs/method.md §2).

    baseline_stage -> select_failures -> reference_stage -> search_stage -> results_stage

Each stage takes a :class:`RunContext` (the run's config, folder, model, judge and
backend) and the datasets of the stages before it, and returns its own dataset (schema
in :mod:`fsnn.store.schema`). The batched stages (baseline, references) run through ONE
resumable loop, :func:`resumable_stage`: it skips the items already in the stage's
file, checkpoints after every batch (atomic writes), and returns the rows in the
items' order, so a resumed stage ends with the dataset an uninterrupted one would.
The search resumes through Optuna's storage (:mod:`fsnn.search.run`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from fsnn.backends.base import Backend
from fsnn.errors import FsnnError
from fsnn.judges.degeneration import readable
from fsnn.judges.metrics import Perplexity, token_overlap
from fsnn.judges.scoring import composite, proxy_grade, scored_texts
from fsnn.search.objective import guarded_objective
from fsnn.search.run import SearchItem, open_storage, run_search, storage_error
from fsnn.steering.generation import generate
from fsnn.steering.layout import SegmentLayout
from fsnn.steering.modes import as_mode
from fsnn.steering.prompts import Templates, apply_chat, split_explanation
from fsnn.steering.references import ReferenceItem, capture_references
from fsnn.store.files import provenance, read_dataset, write_dataset
from fsnn.store.schema import (
    baseline_dataset,
    references_dataset,
    str_array,
    trials_dataset,
)

# results_dataset under another name: stages.results_dataset was 0.2's score_results
from fsnn.store.schema import results_dataset as build_results_file

from .config import SELECTED_GRADES
from .simpleqa import Question

__all__ = [
    "RunContext",
    "baseline_batch",
    "baseline_stage",
    "reference_batch",
    "reference_stage",
    "results_stage",
    "resumable_stage",
    "score_results",
    "search_methods",
    "search_stage",
    "select_failures",
]


@dataclass(kw_only=True)
class RunContext:
    """What every stage of one run needs.

    Attributes:
        config: the run's :class:`fsnn.experiment.config.RunConfig`.
        out: the run folder.
        model: the loaded model.
        judge: a judge, or None (offline proxy grade, judge variables missing).
        backend: where traces run.
        simpleqa_sha: sha256 of the SimpleQA CSV (provenance).
        progress: show tqdm bars.
        pool: the workers that run the model work elsewhere (``fsnn run --workers``,
            :class:`fsnn.experiment.workers.RayPool`); None = in this process. With a
            pool, ``model`` is the workers' description (``describe``, ``n_layers``,
            ``tokenizer``) and this process only writes the files.
    """

    config: Any
    out: Path
    model: Any
    judge: Any
    backend: Backend
    simpleqa_sha: str
    progress: bool = True
    pool: Any = None  # issue 24: fsnn.experiment.workers.RayPool
    _ppl: Perplexity | None = field(default=None, repr=False)

    @property
    def templates(self) -> Templates:
        return Templates(use_chat_template=self.config.chat_template)

    def attrs(self, kind: str, **extra: Any) -> dict[str, Any]:
        """Provenance attributes of a file of ``kind``."""
        return provenance(
            kind,
            {**self.config.identity(), "simpleqa_sha256": self.simpleqa_sha},
            **self.model.describe(),
            mode=self.config.mode,
            backend=self.backend.identity,
            judge=self.judge.id if self.judge is not None else "none",
            **extra,
        )

    def prompt(self, text: str) -> str:
        """``text`` in the model's chat template when the run asks for it."""
        return apply_chat(self.model.tokenizer, text) if self.config.chat_template else text

    @property
    def ppl(self) -> Perplexity:
        """The perplexity scorer (the base model unless ``ppl_model`` names another)."""
        if self._ppl is None:
            if self.config.ppl_model is None:
                self._ppl = Perplexity(self.model.hf_model, self.model.tokenizer)
            else:
                from fsnn.models.load import load_model

                scorer = load_model(self.config.ppl_model)
                self._ppl = Perplexity(scorer.hf_model, scorer.tokenizer)
        return self._ppl

    def generate(self, prompts: list[str], what: str) -> list[Any]:
        c = self.config
        return self.backend.call(
            lambda: generate(
                self.model,
                prompts,
                max_new_tokens=c.max_new_tokens,
                batch_size=c.batch_size,
                backend=self.backend,
            ),
            what=what,
        )


# ----------------------------------------------------------------------------- the loop


def _by_id(parts: list[xr.Dataset]) -> xr.Dataset:
    parts = [p.drop_vars("prompt", errors="ignore") for p in parts]
    ds = xr.concat(parts, dim="prompt") if len(parts) > 1 else parts[0]
    return ds.assign_coords(prompt=np.arange(ds.sizes["prompt"]))


def resumable_stage(
    path: Path,
    items: Sequence[Question],
    run_batch: Callable[[list[Question]], xr.Dataset],
    *,
    batch_size: int,
    desc: str,
    progress: bool = True,
    map_batches: Callable[[list[list[Question]]], Iterable[xr.Dataset]] | None = None,
) -> xr.Dataset:
    """Run ``run_batch`` over the items not yet in ``path``, checkpointing each batch.

    Args:
        path: the stage's netCDF file (read when present, rewritten after each batch).
        items: every question the stage must cover, in output order.
        run_batch: questions -> their rows, a Dataset along ``prompt`` with a
            ``simpleqa_id`` coordinate.
        batch_size: questions per call of ``run_batch``.
        desc: progress-bar label.
        map_batches: runs the batches elsewhere (issue 24, the workers of
            ``fsnn run --workers``) and yields their rows in any order; None =
            ``run_batch`` on each batch here, in order.

    Returns:
        One row per item, in the items' order.
    """
    done = read_dataset(path) if path.exists() else None
    have = set(done.simpleqa_id.values.tolist()) if done is not None else set()
    parts = [done] if done is not None else []
    todo = [q for q in items if q.id not in have]
    bar = tqdm(
        total=len(items), initial=len(items) - len(todo), desc=desc, disable=not progress, unit="q"
    )
    batches = [todo[start : start + batch_size] for start in range(0, len(todo), batch_size)]
    done_parts = map_batches(batches) if map_batches is not None else map(run_batch, batches)
    for part in done_parts:
        parts.append(part)
        write_dataset(_by_id(parts), path)  # checkpoint every batch
        bar.update(part.sizes["prompt"])
    bar.close()
    ds = _by_id(parts)
    order = {q.id: i for i, q in enumerate(items)}
    ds = ds.isel(prompt=np.argsort([order[int(i)] for i in ds.simpleqa_id.values], kind="stable"))
    ds = ds.assign_coords(prompt=np.arange(ds.sizes["prompt"]))
    write_dataset(ds, path)
    return ds


# ----------------------------------------------------------------------------- stages 1-2


def _grade(
    ctx: RunContext, batch: Sequence[Question], outs: Sequence[Any]
) -> list[tuple[str, str]]:
    """(grade, source) per answer: the judge's SimpleQA rubric, or the offline proxy.

    Raises:
        FsnnError: the judge gave no grade for some answer (after its retries). A
            missing grade would silently drop the question from the steered set, so
            the batch is not saved and a rerun asks the judge again.
    """
    if ctx.judge is None:
        return [
            (proxy_grade(q.answer, o.completion), "proxy:containment")
            for q, o in zip(batch, outs, strict=True)
        ]
    grades = ctx.judge.grade_simpleqa(
        [(q.question, q.answer, o.completion) for q, o in zip(batch, outs, strict=True)]
    )
    lost = [g.error or "no grade" for g in grades if g.missing]
    if lost:
        raise FsnnError(
            f"judge {ctx.judge.id}: {len(lost)} of {len(grades)} baseline grade(s) missing ({lost[0]}); "
            "finished batches are saved, rerun the same command to resume"
        )
    return [(str(g.value), g.judge_id) for g in grades]


def baseline_batch(ctx: RunContext, batch: list[Question]) -> xr.Dataset:
    """The baseline rows of one batch of questions: answered unsteered and graded."""
    c = ctx.config
    prompts = [
        ctx.prompt(
            ctx.templates.baseline_prompt(q.question) if c.baseline_prompt == "qa" else q.question
        )
        for q in batch
    ]
    outs = ctx.generate(prompts, "baseline batch")
    rows = []
    for q, o, (grade, source) in zip(batch, outs, _grade(ctx, batch, outs), strict=True):
        scored = scored_texts([o.text], [o.completion], c.search.score_on)[0]
        rows.append(
            {
                "simpleqa_id": q.id,
                "question": q.question,
                "answer": q.answer,
                "topic": q.topic,
                "completion": o.completion,
                "text": o.text,
                "grade": grade,
                "grade_source": source,
                "token_overlap": token_overlap(q.answer, scored),
            }
        )
    return baseline_dataset(rows, ctx.attrs("baseline"))


def baseline_stage(ctx: RunContext, questions: Sequence[Question]) -> xr.Dataset:
    """Stages 1-2: answer every question unsteered and grade it (``baseline.nc``)."""
    return resumable_stage(
        ctx.out / "baseline.nc",
        questions,
        partial(baseline_batch, ctx),
        batch_size=ctx.config.batch_size,
        desc="baseline",
        progress=ctx.progress,
        map_batches=ctx.pool.map_batches("baseline") if ctx.pool is not None else None,
    )


def select_failures(
    questions: Sequence[Question], baseline: xr.Dataset, select: str
) -> list[Question]:
    """The questions whose baseline grade ``select`` steers (paper: INCORRECT)."""
    wanted = SELECTED_GRADES[select]
    grade = {
        int(i): str(g)
        for i, g in zip(baseline.simpleqa_id.values, baseline.grade.values, strict=True)
    }
    return [q for q in questions if grade.get(q.id) in wanted]


# ----------------------------------------------------------------------------- stages 3-4


def reference_batch(ctx: RunContext, batch: list[Question]) -> xr.Dataset:
    """The references of one batch of questions: enrichment, then eq. (1) capture."""
    c = ctx.config
    prompts = [ctx.prompt(ctx.templates.enrichment_prompt(q.question, q.answer)) for q in batch]
    outs = ctx.generate(prompts, "enrichment batch")
    explanations = [split_explanation(o.completion) for o in outs]
    items = [
        ReferenceItem(question=q.question, answer=q.answer, explanation=e)
        for q, e in zip(batch, explanations, strict=True)
    ]
    # one unpadded pass per prompt when traces run here: h then does not depend on the
    # batch's other prompts (shards, workers: docs/scaling.md); NDIF keeps batches
    per_pass = c.batch_size if ctx.backend.remote_model else 1
    h = ctx.backend.call(
        lambda: capture_references(
            ctx.model, items, templates=ctx.templates, batch_size=per_pass, backend=ctx.backend
        ),
        what="reference capture",
    )
    return references_dataset(
        h,
        explanations=explanations,
        enrichment_raw=[o.completion for o in outs],
        simpleqa_id=[q.id for q in batch],
        question=[q.question for q in batch],
        answer=[q.answer for q in batch],
        attrs=ctx.attrs("references"),
    )


def reference_stage(ctx: RunContext, failures: Sequence[Question]) -> xr.Dataset:
    """Stages 3-4: enrichment (the model explains the gold answer) and eq. (1) capture."""
    return resumable_stage(
        ctx.out / "references.nc",
        failures,
        partial(reference_batch, ctx),
        batch_size=ctx.config.batch_size,
        desc="enrich+capture",
        progress=ctx.progress,
        map_batches=ctx.pool.map_batches("references") if ctx.pool is not None else None,
    )


# ----------------------------------------------------------------------------- stage 5


# optuna.db holds every trial of the search; trials.nc is rebuilt from it on each run, so
# without it the whole search is recomputed (seeded per trial number: the same trials).
OPTUNA_RECOVER = (
    "delete optuna.db and rerun the same command: baseline.nc and references.nc are kept, every "
    "method's search is recomputed from trial 0 (same seeds, same trials; trials.nc and results.nc "
    "are rewritten), or use --force-new to start the folder over"
)


def search_methods(
    ctx: RunContext,
    items: Sequence[SearchItem],
    layouts: Sequence[SegmentLayout],
    storage: Any,
    *,
    on_round: Callable[[], None] | None = None,
) -> list[xr.Dataset]:
    """Every method's :func:`fsnn.search.run.run_search` of ``items`` in ``storage`` (one dataset each)."""
    c = ctx.config
    return [
        run_search(
            ctx.model,
            items,
            layout,
            c.search,
            storage=storage,
            ppl=ctx.ppl,
            mode=as_mode(c.mode),  # validated by RunConfig already
            max_new_tokens=c.max_new_tokens,
            study_prefix=f"{layout.name}/",
            progress=ctx.progress,
            backend=ctx.backend,
            on_round=on_round,
        )
        for layout in layouts
    ]


def search_stage(ctx: RunContext, refs: xr.Dataset) -> xr.Dataset:
    """Stage 5: the per-prompt Optuna search of every method (``trials.nc``)."""
    import sqlalchemy.exc  # optuna's storage layer

    c = ctx.config
    url = f"sqlite:///{ctx.out / 'optuna.db'}"
    storage = open_storage(url, OPTUNA_RECOVER)
    items = [
        SearchItem(
            key=str(int(sid)),
            prompt=ctx.prompt(ctx.templates.steering_prompt(str(q))),
            answer=str(a),
            h=torch.from_numpy(np.asarray(refs.h.values[i], dtype=np.float32)),
        )
        for i, (sid, q, a) in enumerate(
            zip(refs.simpleqa_id.values, refs.question.values, refs.answer.values, strict=True)
        )
    ]
    layouts = [SegmentLayout.named(method, ctx.model.n_layers) for method in c.methods]
    # issue 24: with --workers the pool searches chunks of prompts and this process writes optuna.db
    searcher = ctx.pool.search if ctx.pool is not None else partial(search_methods, ctx)
    try:
        searched = searcher(items, layouts, storage)
    except sqlalchemy.exc.DatabaseError as exc:  # a page damaged past the header
        raise storage_error(url, exc, OPTUNA_RECOVER) from None
    trials = trials_dataset(
        {layout.name: ds for layout, ds in zip(layouts, searched, strict=True)},
        simpleqa_id=refs.simpleqa_id.values,
        question=refs.question.values,
        answer=refs.answer.values,
        attrs=ctx.attrs("trials"),
    )
    write_dataset(trials, ctx.out / "trials.nc")
    return trials


# ----------------------------------------------------------------------------- stage 6


def results_stage(
    ctx: RunContext, baseline: xr.Dataset, refs: xr.Dataset, trials: xr.Dataset
) -> xr.Dataset:
    """Stage 6: each method's selected text per prompt, scored and judged (``results.nc``)."""
    # issue 24: with --workers the pool scores chunks of prompts (row by row, as here)
    compute = ctx.pool.results if ctx.pool is not None else partial(score_results, ctx)
    ds = compute(baseline, refs, trials)
    write_dataset(ds, ctx.out / "results.nc")
    return ds


def score_results(
    ctx: RunContext, baseline: xr.Dataset, refs: xr.Dataset, trials: xr.Dataset
) -> xr.Dataset:
    """The rows of ``results.nc`` for the prompts of ``refs`` (each row computed on its own)."""
    c = ctx.config
    idx = {int(s): i for i, s in enumerate(baseline.simpleqa_id.values)}
    rows = [idx[int(s)] for s in refs.simpleqa_id.values]
    methods = ["baseline", *[str(m) for m in trials.method.values]]
    n = len(rows)
    seg = trials.sizes["segment"]
    comp = np.full((len(methods), n), "", dtype=object)
    text = np.full((len(methods), n), "", dtype=object)
    alpha = np.full((len(methods), n, seg), np.nan)
    gamma = np.full((len(methods), n, seg), np.nan)
    obj = np.full((len(methods), n), np.nan)
    missing = np.zeros((len(methods), n), dtype=bool)  # a steered prompt without a finished trial
    comp[0] = baseline.completion.values[rows]
    text[0] = baseline.text.values[rows]
    for m, method in enumerate(methods[1:], start=1):
        t = trials.sel({"method": method})
        best = t.best_trial.values  # -1: no finished trial, left NaN/"" (never trial 0)
        for i in range(n):
            if best[i] < 0:
                missing[m, i] = True
                continue
            comp[m, i] = t.completion.values[i, best[i]]
            text[m, i] = t.text.values[i, best[i]]
            alpha[m, i] = t.alpha.values[i, best[i]]
            gamma[m, i] = t.gamma.values[i, best[i]]
            obj[m, i] = t.objective.values[i, best[i]]
    answers = [str(a) for a in refs.answer.values]
    questions = [str(q) for q in refs.question.values]
    scored = np.asarray(
        [scored_texts(text[m], comp[m], c.search.score_on) for m in range(len(methods))],
        dtype=object,
    )
    to = np.array(
        [[token_overlap(a, s) for a, s in zip(answers, row, strict=True)] for row in scored]
    )
    ppl = np.array([ctx.ppl(list(row)) for row in scored])
    to[missing], ppl[missing] = np.nan, np.nan
    # the degeneration guard reads the generated text only (docs/method.md §6)
    readable_ = np.array([[int(readable(str(s))) for s in row] for row in comp], dtype=np.int8)
    # `objective` means one thing on every row: the search's objective (guard included) of
    # the row's completion, so the baseline row is comparable with the steered ones
    obj[0] = [
        guarded_objective(t_, p_, bool(r_), c.search.objective, c.search.unreadable_penalty)
        for t_, p_, r_ in zip(to[0], ppl[0], readable_[0], strict=True)
    ]
    judge_score = np.full((len(methods), n), np.nan)
    grade = np.full((len(methods), n), "", dtype=object)
    judge_error = np.full((len(methods), n), "", dtype=object)
    comp_score = np.full((len(methods), n), np.nan)
    if ctx.judge is not None:
        for m in range(len(methods)):
            items = list(zip(questions, answers, [str(s) for s in scored[m]], strict=True))
            q_grades = ctx.judge.grade_quality(items)
            judge_score[m] = [np.nan if g.missing else float(g.value) for g in q_grades]
            s_grades = ctx.judge.grade_simpleqa(items)
            grade[m] = [g.value or "" for g in s_grades]
            # a failed call is recorded, never a silent drop from the steered set
            judge_error[m] = [
                "; ".join(
                    e for e in (q.error if q.missing else "", s.error if s.missing else "") if e
                )
                for q, s in zip(q_grades, s_grades, strict=True)
            ]
            comp_score[m] = composite(to[m], judge_score[m], missing=c.judge_missing)
    return build_results_file(
        {
            "completion": str_array(comp),
            "text": str_array(text),
            "readable": readable_,
            "token_overlap": to,
            "perplexity": ppl,
            "objective": obj,
            "judge_score": judge_score,
            "simpleqa_grade": str_array(grade),
            "judge_error": str_array(judge_error),
            "composite": comp_score,
            "alpha": alpha,
            "gamma": gamma,
            "baseline_grade": str_array(baseline.grade.values[rows]),
            "baseline_grade_source": str_array(baseline.grade_source.values[rows]),
        },
        methods=methods,
        segments=trials.segment.values,
        question=questions,
        answer=answers,
        topic=baseline.topic.values[rows],
        simpleqa_id=refs.simpleqa_id.values,
        attrs=ctx.attrs(
            "results",
            judged=int(ctx.judge is not None),
            score_on=c.search.score_on,
            judge_missing=c.judge_missing,
            prompts_without_finished_trial=int(missing.sum()),
        ),
    )


def __getattr__(name: str) -> Any:
    # 0.2's name of score_results (the builder of results.nc is fsnn.store.schema's now)
    if name == "results_dataset":
        import warnings

        warnings.warn(
            "fsnn.experiment.stages.results_dataset is now score_results; the old name goes in 0.3",
            FutureWarning,
            stacklevel=2,
        )
        return score_results
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
