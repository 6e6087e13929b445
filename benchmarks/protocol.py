"""The paper protocol per prompt, two ways, built from fsnn's primitives.

docs/method.md §2 minus the judges: baseline generate, enrichment generate, reference
capture, then 5 Optuna trials for each of two methods (full-layer, segmented), each
trial a steered generate scored by token overlap and perplexity (eq. 6).

- :func:`package_plan` is this package's way, through the very stage functions
  ``fsnn run`` calls (:mod:`fsnn.experiment.stages`): prompts batched in every generate, one
  capture pass for all layers, the trials of all prompts asked together and evaluated
  as the rows of one steered generate, one perplexity scorer (loaded once, with its
  cache of scored texts).
- :func:`naive_plan` reproduces the execution plan of the authors' release: one prompt
  at a time, trials one by one, faithful steering (no KV cache), one capture pass per
  layer, and the perplexity model loaded again for every call.

Both stop a row at EOS, as the search does; the tokens each plan generated are counted
and reported next to its time.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fsnn.backends.base import LocalBackend
from fsnn.experiment.pipeline import RunConfig
from fsnn.experiment.simpleqa import Question
from fsnn.experiment.stages import RunContext, baseline_stage, reference_stage, search_stage
from fsnn.judges.metrics import Perplexity, token_overlap
from fsnn.search.objective import objective
from fsnn.steering.generation import generate
from fsnn.steering.layout import SegmentLayout, Strengths
from fsnn.steering.prompts import PAPER_TEMPLATES, split_explanation
from fsnn.steering.references import ReferenceItem, capture_references
from fsnn.steering.steer import steered_generate

__all__ = ["QA", "naive_plan", "package_plan"]


@dataclass(frozen=True, kw_only=True)
class QA:
    """One SimpleQA row."""

    key: str
    question: str
    answer: str


def _layouts(n_layers: int) -> list[SegmentLayout]:
    return [SegmentLayout.full(n_layers), SegmentLayout.segmented(n_layers)]


def _count(outputs: list[Any]) -> int:
    return sum(len(o.ids) for o in outputs)


def package_plan(
    model: Any,
    rows: list[QA],
    *,
    mode: str,
    max_new_tokens: int,
    n_trials: int = 5,
    batch_size: int = 8,
    batch_rows: int = 40,
    seed: int = 0,
) -> dict[str, Any]:
    """All ``rows`` through the package's own stages (:mod:`fsnn.experiment.stages`); returns facts.

    The same functions ``fsnn run`` calls, in a temporary run folder: baseline (with
    the offline proxy grade), enrichment + capture, then the search of both methods.
    """
    import fsnn.experiment.stages as stages_module

    questions = [
        Question(id=i, question=r.question, answer=r.answer, topic="", answer_type="")
        for i, r in enumerate(rows)
    ]
    config = RunConfig(
        model=model.name,
        mode=mode,
        max_new_tokens=max_new_tokens,
        n_trials=n_trials,
        batch_trials=n_trials,
        batch_rows=batch_rows,
        batch_size=batch_size,
        seed=seed,
        limit=None,
        ids=tuple(range(len(rows))),
    )
    clock = _Stages()
    counter = {"tokens": 0, "calls": 0}
    scorer = Perplexity(model.hf_model, model.tokenizer)

    class TimedScorer:
        calls = property(lambda self: scorer.calls)

        def __call__(self, texts: Any) -> list[float]:
            with clock("search: perplexity"):
                return scorer(texts)

    original_generate = stages_module.generate

    def counting_generate(*args: Any, **kwargs: Any) -> Any:
        outputs = original_generate(*args, **kwargs)
        counter["tokens"] += _count(outputs)
        return outputs

    stages_module.generate = counting_generate
    try:
        with tempfile.TemporaryDirectory() as tmp, _counting_steer(counter, clock):
            ctx = RunContext(
                config=config,
                out=Path(tmp),
                model=model,
                judge=None,
                backend=LocalBackend(),
                simpleqa_sha="benchmark",
                progress=False,
                _ppl=TimedScorer(),
            )  # type: ignore[arg-type]
            with clock("baseline generate"):
                baseline_stage(ctx, questions)
            with clock("enrichment + capture"):
                refs = reference_stage(ctx, questions)
            with clock("search (all)"):
                trials = search_stage(ctx, refs)
    finally:
        stages_module.generate = original_generate
    best = {
        str(m): [
            round(v, 4) for v in trials["objective"].sel({"method": m}).max("trial").values.tolist()
        ]
        for m in trials.method.values
    }
    return {
        "prompts": len(rows),
        "generated_tokens": counter["tokens"],
        "steered_generate_calls": counter["calls"],
        "ppl_texts_scored": scorer.calls,
        "best_objective": best,
        "stages_cpu_s": clock.summary(),
    }


class _Stages:
    """Process CPU seconds per named stage (``with clock("name"):``); nested stages count in both."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.process_time()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.process_time() - start

    def summary(self) -> dict[str, float]:
        out = dict(self.seconds)
        if "search (all)" in out:  # what run_search spends besides generating and scoring
            out["search: other (Optuna, storage, token overlap)"] = (
                out["search (all)"]
                - out.get("search: steered generate", 0.0)
                - out.get("search: perplexity", 0.0)
            )
        return {k: round(v, 2) for k, v in out.items()}


@contextlib.contextmanager
def _counting_steer(counter: dict[str, int], clock: _Stages) -> Iterator[None]:
    """Count and time run_search's steered generates (a wrapper; nothing else changes)."""
    import fsnn.search.run as search_module

    original = search_module.steer_each

    def counting(*args: Any, **kwargs: Any) -> Any:
        with clock("search: steered generate"):
            outputs = original(*args, **kwargs)
        counter["tokens"] += _count(outputs)
        counter["calls"] += 1
        return outputs

    search_module.steer_each = counting
    try:
        yield
    finally:
        search_module.steer_each = original


def _reload_scorer(source: str) -> Perplexity:
    """The perplexity model as the release used it: loaded afresh for one call."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = AutoTokenizer.from_pretrained(source)
        lm = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    return Perplexity(lm, tok)


def naive_plan(
    model: Any, row: QA, *, max_new_tokens: int, n_trials: int = 5, seed: int = 0
) -> dict[str, Any]:
    """One prompt through the protocol as the release executed it; returns facts."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t = PAPER_TEMPLATES
    clock = _Stages()
    with clock("baseline generate"):
        baseline = generate(
            model, [t.baseline_prompt(row.question)], max_new_tokens=max_new_tokens, batch_size=1
        )
    with clock("enrichment generate"):
        enrichment = generate(
            model,
            [t.enrichment_prompt(row.question, row.answer)],
            max_new_tokens=max_new_tokens,
            batch_size=1,
        )
    item = ReferenceItem(
        question=row.question,
        answer=row.answer,
        explanation=split_explanation(enrichment[0].completion),
    )
    with clock("capture"):
        h = torch.from_numpy(capture_references(model, [item], per_layer_passes=True).values)
    prompt = t.steering_prompt(row.question)
    generated = _count(baseline) + _count(enrichment)
    calls = 0
    best = {}
    for layout in _layouts(model.n_layers):
        study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed)
        )
        for _ in range(n_trials):
            trial = study.ask()
            alpha = tuple(
                trial.suggest_float(f"alpha_{s}", 0.01, 1.0) for s in layout.segment_names
            )
            gamma = tuple(
                trial.suggest_float(f"gamma_{s}", 0.01, 1.0) for s in layout.segment_names
            )
            a, g = Strengths(layout=layout, alpha=alpha, gamma=gamma).per_layer(model.n_layers)
            with clock("search: steered generate"):
                out = steered_generate(
                    model,
                    [prompt],
                    h,
                    a[None],
                    g[None],
                    mode="faithful",
                    max_new_tokens=max_new_tokens,
                )[0]
            generated += len(out.ids)
            calls += 1
            with clock("search: perplexity (model reloaded)"):
                ppl = _reload_scorer(model.source)([out.text])[0]
            study.tell(trial, objective(token_overlap(row.answer, out.text), ppl))
        best[layout.name] = [round(study.best_value, 4)]
    return {
        "prompts": 1,
        "generated_tokens": generated,
        "steered_generate_calls": calls,
        "ppl_model_loads": calls,
        "best_objective": best,
        "stages_cpu_s": clock.summary(),
    }
