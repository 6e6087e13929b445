"""The SimpleQA experiment end to end (METHOD.md §2), as resumable stages over a run folder.

    baseline -> grade -> select failures -> enrichment + reference capture
             -> search per method -> final evaluation -> summary

A run folder is the unit of work. ``config.json`` is written first; rerunning the same
command continues from the last finished batch/stage (greedy decoding and per-trial
seeded sampling make the final numbers equal to an uninterrupted run's); a folder made
with another config refuses to mix (``force_new`` starts it over). Files (schema in
:mod:`fsnn.store`): ``baseline.nc``, ``references.nc``, ``optuna.db``, ``trials.nc``,
``results.nc``, ``summary.md``/``summary.json``. All writes are atomic.

This is the paper's *oracle* setting: the ground truth builds the reference and scores
the search, so the numbers bound what per-prompt activation control can do; they are
not a deployable QA accuracy.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import string
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from .data import Question, load_simpleqa, select, simpleqa_path
from .degeneration import readable
from .errors import FsnnError
from .generation import generate
from .metrics import ObjectiveConfig, Perplexity, objective, token_overlap
from .prompts import Templates, apply_chat, split_explanation
from .references import ReferenceItem, capture_references
from .search import SearchConfig, SearchItem, open_storage, run_search
from .spec import SegmentLayout
from .store import provenance, read_dataset, str_array, write_dataset

__all__ = ["RunConfig", "run_pipeline", "proxy_grade", "summary_table"]

GRADES = ("CORRECT", "INCORRECT", "NOT_ATTEMPTED")


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything that decides a run's numbers (saved as ``config.json`` and in attrs).

    Attributes:
        model: model spec (alias, path, hub id).
        load_in_8bit, dtype, device: loading options (paper: 8-bit, fp16).
        limit: the first N SimpleQA rows (paper 500); ``ids``/``stratified`` instead.
        ids: explicit SimpleQA row ids.
        stratified: N rows sampled per topic (seeded by ``seed``).
        seed: subset sampling and search seed.
        methods: layouts to search: ``full``, ``segmented``, ``NAME=0-3,8-11``.
        n_trials, batch_trials, batch_rows, sampler, parametrization, start_trials,
            unreadable_penalty: the search (:class:`fsnn.search.SearchConfig`).
        mode: ``faithful`` (parity) or ``cached``.
        max_new_tokens: baseline, enrichment and steered generation (paper 100).
        baseline_prompt: ``qa`` (``Question: {q}\\nAnswer:``) or ``bare`` (the question).
        chat_template: wrap prompts in the tokenizer's chat template (paper: off).
        select: which baseline grades are steered: ``incorrect`` (paper) or
            ``not-correct`` (INCORRECT and NOT_ATTEMPTED).
        score_on: TO/PPL on the ``full`` decoded text (parity) or the ``completion``.
        judge: judge spec (``local:MODEL``, ``http:MODEL@URL``) or None (offline proxy
            for the baseline grade; judge variables left missing).
        judge_missing: composite with a missing judge score: ``zero`` (release) or
            ``exclude``.
        ppl_model: perplexity scorer spec; None = the unsteered base model (offline);
            ``gpt2`` for paper parity when the hub is reachable.
        on_bad_rows: ``error`` or ``skip`` bad SimpleQA rows.
        remote: run every trace on NDIF (model built on the meta device; needs
            ``NDIF_API_KEY`` and a local ``ppl_model``), or ``"local"``: every trace
            serialised as for NDIF and run here (the test of the remote path). See
            docs/ndif.md.
    """

    model: str = "smollm2-135m"
    load_in_8bit: bool = False
    dtype: str = "float32"
    device: str = "cpu"
    limit: int | None = 500
    ids: tuple[int, ...] | None = None
    stratified: int | None = None
    seed: int = 0
    methods: tuple[str, ...] = ("full", "segmented")
    n_trials: int = 5
    batch_trials: int = 5
    batch_rows: int = 16
    sampler: str = "tpe"
    parametrization: str = "alpha_gamma"
    start_trials: int = 0
    unreadable_penalty: float = 1.0
    mode: str = "faithful"
    max_new_tokens: int = 100
    baseline_prompt: str = "qa"
    chat_template: bool = False
    select: str = "not-correct"
    score_on: str = "full"
    judge: str | None = None
    judge_missing: str = "zero"
    ppl_model: str | None = None
    on_bad_rows: str = "error"
    remote: bool | str = False
    batch_size: int = 8
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)

    def __post_init__(self) -> None:
        if self.mode not in ("faithful", "cached"):
            raise FsnnError(f"mode must be faithful or cached, got {self.mode!r}")
        if self.select not in ("incorrect", "not-correct"):
            raise FsnnError(f"select must be incorrect or not-correct, got {self.select!r}")
        if self.baseline_prompt not in ("qa", "bare"):
            raise FsnnError(f"baseline_prompt must be qa or bare, got {self.baseline_prompt!r}")
        if not self.methods:
            raise FsnnError("no method to search")
        if self.max_new_tokens < 1:
            raise FsnnError("max_new_tokens must be >= 1")
        if self.judge_missing not in ("zero", "exclude"):
            raise FsnnError("judge_missing must be zero or exclude")
        if self.remote not in (False, True, "local"):
            raise FsnnError(f"remote must be False, True or 'local', got {self.remote!r}")
        if self.remote is True and self.ppl_model is None:
            raise FsnnError("a remote run needs a local perplexity scorer: set ppl_model (e.g. gpt2 or smollm2-135m)")
        if self.remote and self.load_in_8bit:
            raise FsnnError("8-bit loading is a local option; NDIF serves its own precision")
        self.search_config()  # validates n_trials, ranges, sampler

    def search_config(self) -> SearchConfig:
        return SearchConfig(
            n_trials=self.n_trials, batch_trials=self.batch_trials, batch_rows=self.batch_rows,
            sampler=self.sampler, parametrization=self.parametrization, seed=self.seed,
            start_trials=self.start_trials, unreadable_penalty=self.unreadable_penalty,
            score_on=self.score_on, objective=self.objective,
        )

    def identity(self) -> dict[str, Any]:
        """The fields that must match for a run folder to be continued."""
        data = asdict(self)
        data.pop("batch_rows")  # batching changes speed, not numbers
        data.pop("batch_size")
        data.pop("device")
        data.pop("remote")  # where it runs, not what it computes
        return json.loads(json.dumps(data, default=list))


# ----------------------------------------------------------------------------- grading


def _normalise(text: str) -> str:
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def proxy_grade(answer: str, completion: str) -> str:
    """Offline stand-in for the SimpleQA rubric: normalised answer containment.

    CORRECT when the normalised answer occurs in the normalised completion,
    NOT_ATTEMPTED for an empty completion, else INCORRECT. Stored as grade source
    ``proxy:containment`` — never mixed up with a judge's grade.
    """
    comp = _normalise(completion)
    if not comp:
        return "NOT_ATTEMPTED"
    ans = _normalise(answer)
    return "CORRECT" if ans and f" {ans} " in f" {comp} " else "INCORRECT"


# ----------------------------------------------------------------------------- run


class _Run:
    def __init__(self, config: RunConfig, out: Path, model: Any, judge: Any, questions: list[Question],
                 simpleqa_sha: str, progress: bool):
        self.config, self.out, self.model, self.judge = config, out, model, judge
        self.questions = questions
        self.simpleqa_sha = simpleqa_sha
        self.progress = progress
        self.templates = Templates(use_chat_template=config.chat_template)
        self._ppl: Perplexity | None = None

    # -- helpers -------------------------------------------------------------
    def attrs(self, kind: str, **extra: Any) -> dict[str, Any]:
        return provenance(
            kind, {**self.config.identity(), "simpleqa_sha256": self.simpleqa_sha},
            **self.model.describe(), mode=self.config.mode,
            judge=self.judge.id if self.judge is not None else "none", **extra,
        )

    def call(self, fn: Any, what: str) -> Any:
        """Run ``fn()``; on NDIF with retries and one-line errors."""
        if self.config.remote is not True:
            return fn()
        from .remote import call_remote

        return call_remote(fn, what=what)

    def prompt(self, text: str) -> str:
        return apply_chat(self.model.tokenizer, text) if self.config.chat_template else text

    @property
    def ppl(self) -> Perplexity:
        if self._ppl is None:
            if self.config.ppl_model is None:
                self._ppl = Perplexity(self.model.hf_model, self.model.tokenizer)
            else:
                from .models import load_model

                scorer = load_model(self.config.ppl_model)
                self._ppl = Perplexity(scorer.hf_model, scorer.tokenizer)
        return self._ppl

    def scored(self, text: str, completion: str) -> str:
        return text if self.config.score_on == "full" else completion

    # -- stage 1-2: baseline and its grade ----------------------------------
    def baseline(self) -> xr.Dataset:
        path = self.out / "baseline.nc"
        done = read_dataset(path) if path.exists() else None
        have = set(done.simpleqa_id.values.tolist()) if done is not None else set()
        todo = [q for q in self.questions if q.id not in have]
        rows: list[dict[str, Any]] = _rows(done) if done is not None else []
        bar = tqdm(total=len(self.questions), initial=len(have), desc="baseline", disable=not self.progress,
                   unit="q")
        c = self.config
        for start in range(0, len(todo), c.batch_size):
            batch = todo[start : start + c.batch_size]
            prompts = [self.prompt(self.templates.baseline_prompt(q.question) if c.baseline_prompt == "qa"
                                   else q.question) for q in batch]
            outs = self.call(lambda p=prompts: generate(self.model, p, max_new_tokens=c.max_new_tokens,
                                                        batch_size=c.batch_size, remote=c.remote), "baseline batch")
            grades = self.grade(batch, outs)
            for q, o, (grade, source) in zip(batch, outs, grades, strict=True):
                rows.append({"simpleqa_id": q.id, "question": q.question, "answer": q.answer, "topic": q.topic,
                             "completion": o.completion, "text": o.text, "grade": grade, "grade_source": source,
                             "token_overlap": token_overlap(q.answer, self.scored(o.text, o.completion))})
            write_dataset(self._baseline_ds(rows), path)  # checkpoint every batch
            bar.update(len(batch))
        bar.close()
        order = {q.id: i for i, q in enumerate(self.questions)}
        rows.sort(key=lambda r: order[r["simpleqa_id"]])
        ds = self._baseline_ds(rows)
        write_dataset(ds, path)
        return ds

    def grade(self, batch: Sequence[Question], outs: Sequence[Any]) -> list[tuple[str, str]]:
        if self.judge is None:
            return [(proxy_grade(q.answer, o.completion), "proxy:containment") for q, o in zip(batch, outs, strict=True)]
        grades = self.judge.grade_simpleqa([(q.question, q.answer, o.completion) for q, o in zip(batch, outs, strict=True)])
        return [(g.value or "", g.judge_id if not g.missing else f"{g.judge_id} (missing: {g.error})") for g in grades]

    def _baseline_ds(self, rows: list[dict[str, Any]]) -> xr.Dataset:
        def col(k):
            return [r[k] for r in rows]

        return xr.Dataset(
            {
                "completion": ("prompt", str_array(col("completion"))),
                "text": ("prompt", str_array(col("text"))),
                "grade": ("prompt", str_array(col("grade"))),
                "grade_source": ("prompt", str_array(col("grade_source"))),
                "token_overlap": ("prompt", np.asarray(col("token_overlap"), dtype=float)),
            },
            coords={
                "prompt": np.arange(len(rows)),
                "simpleqa_id": ("prompt", np.asarray(col("simpleqa_id"), dtype=np.int64)),
                "question": ("prompt", str_array(col("question"))),
                "answer": ("prompt", str_array(col("answer"))),
                "topic": ("prompt", str_array(col("topic"))),
            },
            attrs=self.attrs("baseline"),
        )

    # -- stage 3-4: enrichment and reference capture -------------------------
    def references(self, failures: list[Question]) -> xr.Dataset:
        path = self.out / "references.nc"
        done = read_dataset(path) if path.exists() else None
        have = set(done.simpleqa_id.values.tolist()) if done is not None else set()
        parts = [done] if done is not None else []
        todo = [q for q in failures if q.id not in have]
        bar = tqdm(total=len(failures), initial=len(failures) - len(todo), desc="enrich+capture",
                   disable=not self.progress, unit="q")
        c = self.config
        for start in range(0, len(todo), c.batch_size):
            batch = todo[start : start + c.batch_size]
            prompts = [self.prompt(self.templates.enrichment_prompt(q.question, q.answer)) for q in batch]
            outs = self.call(lambda p=prompts: generate(self.model, p, max_new_tokens=c.max_new_tokens,
                                                        batch_size=c.batch_size, remote=c.remote),
                             "enrichment batch")
            explanations = [split_explanation(o.completion) for o in outs]
            items = [ReferenceItem(question=q.question, answer=q.answer, explanation=e)
                     for q, e in zip(batch, explanations, strict=True)]
            h = self.call(lambda i=items: capture_references(self.model, i, templates=self.templates,
                                                             batch_size=c.batch_size, remote=c.remote),
                          "reference capture")
            part = h.to_dataset(name="h")
            part = part.assign(
                explanation=("prompt", str_array(explanations)),
                enrichment_raw=("prompt", str_array([o.completion for o in outs])),
            )
            part = part.assign_coords(
                simpleqa_id=("prompt", np.asarray([q.id for q in batch], dtype=np.int64)),
                question=("prompt", str_array([q.question for q in batch])),
                answer=("prompt", str_array([q.answer for q in batch])),
            ).drop_vars("prompt")
            parts.append(part.drop_vars("prompt", errors="ignore"))
            write_dataset(self._concat_refs(parts), path)
            bar.update(len(batch))
        bar.close()
        ds = self._concat_refs(parts)
        order = {q.id: i for i, q in enumerate(failures)}
        ds = ds.isel(prompt=np.argsort([order[int(i)] for i in ds.simpleqa_id.values]))
        ds = ds.assign_coords(prompt=np.arange(ds.sizes["prompt"]))
        return ds

    def _concat_refs(self, parts: list[xr.Dataset]) -> xr.Dataset:
        parts = [p.drop_vars("prompt", errors="ignore") for p in parts]
        ds = xr.concat(parts, dim="prompt") if len(parts) > 1 else parts[0]
        ds = ds.assign_coords(prompt=np.arange(ds.sizes["prompt"]))
        ds.attrs = self.attrs("references")
        return ds

    # -- stage 5: search -----------------------------------------------------
    def search(self, refs: xr.Dataset) -> xr.Dataset:
        c = self.config
        storage = open_storage(f"sqlite:///{self.out / 'optuna.db'}")
        items = [
            SearchItem(key=str(int(sid)), prompt=self.prompt(self.templates.steering_prompt(str(q))),
                       answer=str(a), h=torch.from_numpy(np.asarray(refs.h.values[i], dtype=np.float32)))
            for i, (sid, q, a) in enumerate(zip(refs.simpleqa_id.values, refs.question.values, refs.answer.values,
                                                strict=True))
        ]
        per_method = []
        for method in c.methods:
            layout = SegmentLayout.named(method, self.model.n_layers)
            ds = run_search(self.model, items, layout, c.search_config(), storage=storage, ppl=self.ppl,
                            mode=c.mode, max_new_tokens=c.max_new_tokens, study_prefix=f"{layout.name}/",
                            progress=self.progress, remote=c.remote)
            per_method.append(ds.expand_dims(method=[layout.name]))
        # methods differ in segments/params: outer join, NaN where a method has none
        trials = xr.concat(per_method, dim="method", join="outer") if len(per_method) > 1 else per_method[0]
        trials = trials.assign_coords(simpleqa_id=("prompt", refs.simpleqa_id.values),
                                      question=("prompt", refs.question.values),
                                      answer=("prompt", refs.answer.values))
        trials.attrs = self.attrs("trials")
        for k in ("completion", "text"):
            trials[k] = trials[k].fillna("")
        write_dataset(trials, self.out / "trials.nc")
        return trials

    # -- stage 6: final evaluation -------------------------------------------
    def results(self, baseline: xr.Dataset, refs: xr.Dataset, trials: xr.Dataset) -> xr.Dataset:
        c = self.config
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
        missing = np.zeros((len(methods), n), dtype=bool)  # steered prompt without a finished trial
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
        readable_ = np.array([[int(readable(str(s))) for s in row] for row in comp], dtype=np.int8)
        scored = np.where(c.score_on == "full", text, comp)
        to = np.array([[token_overlap(a, s) for a, s in zip(answers, row, strict=True)] for row in scored])
        ppl = np.array([self.ppl(list(row)) for row in scored])
        to[missing], ppl[missing] = np.nan, np.nan
        obj[0] = [objective(t_, p_, c.objective) for t_, p_ in zip(to[0], ppl[0], strict=True)]
        judge_score = np.full((len(methods), n), np.nan)
        grade = np.full((len(methods), n), "", dtype=object)
        composite = np.full((len(methods), n), np.nan)
        if self.judge is not None:
            from .judges import composite as composite_fn

            for m in range(len(methods)):
                items = list(zip(questions, answers, [str(s) for s in scored[m]], strict=True))
                q_grades = self.judge.grade_quality(items)
                judge_score[m] = [np.nan if g.missing else float(g.value) for g in q_grades]
                s_grades = self.judge.grade_simpleqa(items)
                grade[m] = [g.value or "" for g in s_grades]
                composite[m] = composite_fn(to[m], judge_score[m], missing=c.judge_missing)
        ds = xr.Dataset(
            {
                "completion": (("method", "prompt"), str_array(comp)),
                "text": (("method", "prompt"), str_array(text)),
                "readable": (("method", "prompt"), readable_),
                "token_overlap": (("method", "prompt"), to),
                "perplexity": (("method", "prompt"), ppl),
                "objective": (("method", "prompt"), obj),
                "judge_score": (("method", "prompt"), judge_score),
                "simpleqa_grade": (("method", "prompt"), str_array(grade)),
                "composite": (("method", "prompt"), composite),
                "alpha": (("method", "prompt", "segment"), alpha),
                "gamma": (("method", "prompt", "segment"), gamma),
                "baseline_grade": ("prompt", str_array(baseline.grade.values[rows])),
            },
            coords={
                "method": np.asarray(methods, dtype=object),
                "prompt": np.arange(n),
                "segment": trials.segment.values,
                "question": ("prompt", str_array(questions)),
                "answer": ("prompt", str_array(answers)),
                "topic": ("prompt", str_array(baseline.topic.values[rows])),
                "simpleqa_id": ("prompt", refs.simpleqa_id.values.astype(np.int64)),
            },
            attrs=self.attrs(
                "results", judged=int(self.judge is not None), score_on=c.score_on,
                judge_missing=c.judge_missing,
                prompts_without_finished_trial=int(missing.sum()),
                baseline_grade_source=str(baseline.grade_source.values[0]) if baseline.sizes["prompt"] else "",
            ),
        )
        write_dataset(ds, self.out / "results.nc")
        return ds


def _rows(ds: xr.Dataset) -> list[dict[str, Any]]:
    keys = ["completion", "text", "grade", "grade_source", "token_overlap", "simpleqa_id", "question", "answer",
            "topic"]
    return [{k: (ds[k].values[i].item() if hasattr(ds[k].values[i], "item") else ds[k].values[i]) for k in keys}
            for i in range(ds.sizes["prompt"])]


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _prepare_folder(out: Path, identity: dict[str, Any], force_new: bool) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".fsnn-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise FsnnError(f"cannot write to run folder {out}: {exc.strerror or exc}") from None
    cfg_path = out / "config.json"
    if cfg_path.exists():
        try:
            saved = json.loads(cfg_path.read_text())
        except json.JSONDecodeError:
            raise FsnnError(f"{cfg_path} is not valid JSON; remove the folder or use --force-new") from None
        if saved != identity:
            if not force_new:
                diff = sorted(k for k in set(saved) | set(identity) if saved.get(k) != identity.get(k))
                raise FsnnError(
                    f"run folder {out} was made with another config (differs in: {', '.join(diff)}); "
                    "use another --out or --force-new to start it over"
                )
            for child in out.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    tmp = cfg_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(identity, indent=2, sort_keys=True))
    os.replace(tmp, cfg_path)


def run_pipeline(
    config: RunConfig,
    out: str | os.PathLike,
    *,
    simpleqa_csv: str | os.PathLike | None = None,
    model: Any = None,
    judge: Any = None,
    force_new: bool = False,
    progress: bool = True,
) -> xr.Dataset:
    """Run (or resume) the SimpleQA Fusion Steering experiment into run folder ``out``.

    Args:
        config: the run's settings.
        out: the run folder.
        simpleqa_csv: SimpleQA CSV path (else ``$FSNN_SIMPLEQA_CSV``, else download).
        model: an already loaded model to use instead of loading ``config.model``.
        judge: an already built judge to use instead of ``config.judge``.
        force_new: wipe a folder made with another config instead of refusing.
        progress: tqdm bars.

    Returns:
        ``results.nc`` as a Dataset (dims method, prompt).
    """
    out = Path(out)
    csv_path = simpleqa_path(simpleqa_csv)
    sha = _file_sha256(csv_path)
    questions = load_simpleqa(csv_path, on_bad=config.on_bad_rows)  # type: ignore[arg-type]
    subset = select(questions, first=config.limit if config.ids is None and config.stratified is None else None,
                    ids=config.ids, stratified=config.stratified, seed=config.seed)
    identity = {**config.identity(), "simpleqa_sha256": sha}
    _prepare_folder(out, identity, force_new)
    if model is None:
        from .models import load_model

        if config.remote is True:
            from .remote import preflight

            preflight(config.model)
        model = load_model(config.model, dtype=config.dtype, device=config.device, load_in_8bit=config.load_in_8bit,
                           remote=config.remote is True)
    if judge is None and config.judge is not None:
        from .judges import make_judge

        judge = make_judge(config.judge)
    run = _Run(config, out, model, judge, subset, sha, progress)
    started = time.perf_counter()
    baseline = run.baseline()
    wanted = {"incorrect": ("INCORRECT",), "not-correct": ("INCORRECT", "NOT_ATTEMPTED")}[config.select]
    failures = [q for q, g in zip(subset, baseline.grade.values, strict=True) if str(g) in wanted]
    if not failures:
        raise FsnnError(f"no baseline failure to steer among {len(subset)} question(s) (select={config.select})")
    refs = run.references(failures)
    trials = run.search(refs)
    results = run.results(baseline, refs, trials)
    table = summary_table(results)
    (out / "summary.md").write_text(table + f"\n\nwall time this invocation: {time.perf_counter() - started:.1f} s\n")
    (out / "summary.json").write_text(json.dumps(summary_rows(results), indent=2))
    return results


def summary_rows(results: xr.Dataset) -> list[dict[str, Any]]:
    """Per method: prompts, mean TO, TO >= 0.5, composite >= 0.6 and % CORRECT when judged."""
    rows = []
    for method in results.method.values:
        r = results.sel({"method": method})
        to = r.token_overlap.values
        comp = r.composite.values
        grades = [str(g) for g in r.simpleqa_grade.values]
        graded = [g for g in grades if g]
        rows.append({
            "method": str(method),
            "prompts": int(to.size),
            "mean_token_overlap": float(np.nanmean(to)) if to.size else float("nan"),
            "token_overlap_ge_0.5": float(np.mean(to >= 0.5)) if to.size else float("nan"),
            "composite_ge_0.6": float(np.mean(comp >= 0.6)) if np.isfinite(comp).any() else None,
            "simpleqa_correct": float(np.mean([g == "CORRECT" for g in graded])) if graded else None,
        })
    return rows


def summary_table(results: xr.Dataset) -> str:
    """The summary as a markdown table (``n/a`` where there is no judge)."""
    def pct(v):
        return "n/a" if v is None else f"{100 * v:.1f}%"

    lines = ["| method | prompts | mean TO | TO >= 0.5 | composite >= 0.6 | SimpleQA CORRECT |",
             "|---|---|---|---|---|---|"]
    for r in summary_rows(results):
        lines.append(f"| {r['method']} | {r['prompts']} | {r['mean_token_overlap']:.3f} | "
                     f"{pct(r['token_overlap_ge_0.5'])} | {pct(r['composite_ge_0.6'])} | {pct(r['simpleqa_correct'])} |")
    judge = results.attrs.get("judge", "none")
    lines.append("")
    lines.append(f"model {results.attrs.get('model', '?')}, mode {results.attrs.get('mode', '?')}, judge {judge}"
                 + (" (no judge: composite and CORRECT not computed)" if judge == "none" else ""))
    return "\n".join(lines)


def config_from_args(**kwargs: Any) -> RunConfig:
    """A RunConfig from CLI keyword arguments (None means: keep the default)."""
    base = RunConfig()
    return replace(base, **{k: v for k, v in kwargs.items() if v is not None})
