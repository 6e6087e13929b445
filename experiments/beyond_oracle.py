"""Beyond the oracle (issue 14): label-free Fusion Steering on held-out questions.

Greedy baseline failures of SimpleQA are split BY QUESTION into train and test
(seeded). Train questions' answers build oracle references and oracle strength
searches; test questions are answered by methods that never see their answers:

==================  ===================================================================
greedy              plain greedy, baseline prompt (the failures were chosen with it)
greedy_steer_prompt plain greedy, the steering prompt (what every steered row continues)
step_by_step        prompting: "let's think step by step"
few_shot            prompting: 3 TRAIN question-answer pairs before the question
dola                DoLa decoding (early layer = n_layers // 4), greedy, nnsight traces
self_consistency    reference from the majority of N temperature samples + the model's
                    own explanation of it; strengths fixed from train
self_consistency_searched
                    the same reference, strength searched per test question with a
                    label-free objective (perplexity + readability guard, no answer)
learned             reference = question activation + ridge-predicted oracle shift
                    (lambda by 5-fold CV on train); strengths fixed from train
learned_searched    the same reference, strength searched label-free
retrieval           reference = question activation + the nearest train question's shift
oracle_fixed        oracle reference, strengths fixed from train (uses the answer)
oracle              oracle reference + strengths searched with the answer (the ceiling)
==================  ===================================================================

The oracle search is configurable (``--parametrization``, ``--sampler``,
``--start-trials``; default the scale-aware ``log_product`` with TPE and 3 log-spaced
start trials), asked in rounds of one trial per question (``batch_trials=1``, 2 random
startup trials) so TPE learns from earlier rounds, scored on the completion with the
readability guard (unreadable_penalty 1.0). Fixed strengths are the train median of the
best trial's k = alpha * gamma per segment (:func:`fsnn.search.label_free.fixed_strengths`). The
label-free searches use the same settings and trial budget with the objective
``ObjectiveConfig(w_to=0, w_ppl=1)`` and items whose answer is "".

Every row generates at most ``--max-new-tokens`` tokens for its final answer
(self-consistency spends N more samples and an explanation on top: stated in the docs).
Metrics on the completion only (cut at a following "\\nQuestion:"), counted only when the
completion is readable (fsnn.judges.degeneration.readable): token overlap with the answer
(fsnn.token_overlap) and answer containment (fsnn.judges.scoring.proxy_grade). 95% bootstrap
intervals over test prompts; paired differences vs greedy; share of the oracle gain
recovered = (method - greedy) / (oracle - greedy) with a paired bootstrap interval.

Resumable: every stage writes its checkpoint into ``--out`` and a rerun continues.

    python experiments/beyond_oracle.py --out RUN_DIR                # hours, 2 CPU cores
    python experiments/beyond_oracle.py --out RUN_DIR --quick        # a couple of minutes
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from tqdm import tqdm

import fsnn
from fsnn import beyond
from fsnn.judges.degeneration import readable
from fsnn.judges.scoring import TOKEN_OVERLAP_THRESHOLD, proxy_grade
from fsnn.search.config import SAMPLERS
from fsnn.search.objective import ObjectiveConfig
from fsnn.search.run import open_storage
from fsnn.store.files import atomic_write_text, provenance, write_dataset

BASELINE = "Question: {q}\nAnswer:"
STEERING = "Question: {q}\nAnswer and explanation:"
ENRICH = "Question: {q}\nAnswer: {a}\nExplanation:"
METHODS = (
    "greedy",
    "greedy_steer_prompt",
    "step_by_step",
    "few_shot",
    "dola",
    "self_consistency",
    "self_consistency_searched",
    "learned",
    "learned_searched",
    "retrieval",
    "oracle_fixed",
    "oracle",
)
LABEL_FREE = (
    "greedy_steer_prompt",
    "step_by_step",
    "few_shot",
    "dola",
    "self_consistency",
    "self_consistency_searched",
    "learned",
    "learned_searched",
    "retrieval",
)
SEARCHED = ("learned", "self_consistency")  # label-free references whose strength is also searched
# parametrizations with one (alpha, gamma) per segment, so a fixed strength is a product
# k per segment; norm_relative's gamma depends on each prompt's norms (not fixable)
PARAMETRIZATIONS = ("log_product", "alpha_gamma", "product")
# the label-free search objective: perplexity only, never token overlap (no answer)
LABEL_FREE_OBJECTIVE = ObjectiveConfig(w_to=0.0, w_ppl=1.0)
LAMBDAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


# --------------------------------------------------------------------------- helpers


def cut(completion: str) -> str:
    """The completion up to a following question (few-shot rows go on to invent one)."""
    return completion.split("\nQuestion:")[0]


def scores(answer: str, completion: str) -> tuple[float, float, bool]:
    """(token overlap, containment, readable), both metrics 0 on an unreadable completion."""
    text = cut(completion)
    ok = readable(text)
    to = fsnn.token_overlap(answer, text) if ok else 0.0
    hit = float(ok and proxy_grade(answer, text) == "CORRECT")
    return to, hit, ok


def correct(answer: str, completion: str) -> bool:
    """Reaches the answer: containment or TO >= TOKEN_OVERLAP_THRESHOLD (failure screen)."""
    text = cut(completion)
    return (
        proxy_grade(answer, text) == "CORRECT"
        or fsnn.token_overlap(answer, text) >= TOKEN_OVERLAP_THRESHOLD
    )


class Stages:
    """Checkpoint files in the run folder: a stage whose file exists is not run again."""

    def __init__(self, out: Path):
        self.out = out
        out.mkdir(parents=True, exist_ok=True)

    def json(self, name: str, make: Callable[[], Any]) -> Any:
        path = self.out / f"{name}.json"
        if path.exists():
            return json.loads(path.read_text())
        value = make()
        atomic_write_text(path, json.dumps(value, indent=1))
        return value

    def array(self, name: str, make: Callable[[], np.ndarray]) -> np.ndarray:
        path = self.out / f"{name}.npy"
        if path.exists():
            return np.load(path)
        value = np.asarray(make(), dtype=np.float32)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, value)
        tmp.replace(path)
        return value


def explanations(model: Any, pairs: Sequence[tuple[str, str]], tokens: int) -> list[str]:
    """The model's own explanation of each (question, answer): a greedy continuation."""
    outs = fsnn.generate(model, [ENRICH.format(q=q, a=a) for q, a in pairs], max_new_tokens=tokens)
    return [cut(o.completion).strip() for o in outs]


# --------------------------------------------------------------------------- label-free stage


def label_free_inputs(
    model: Any,
    train: Sequence[Any],
    test: Sequence[Any],
    *,
    train_refs: np.ndarray,
    train_best: tuple,
    n_samples: int,
    temperature: float,
    tokens: int,
    seed: int,
    seen: beyond.Seen,
    samples: list[list[str]] | None = None,
) -> dict[str, Any]:
    """Everything the label-free rows need, from train answers and test QUESTIONS only.

    Args:
        train, test: fsnn Questions (test answers must not be read here: the leak test
            plants unique test answers and checks the outputs do not depend on them).
        train_refs: oracle references of train, (n_train, layer, hidden).
        train_best: (alpha (n_train, segment), gamma (n_train, segment)) best trials.
        samples: test self-consistency samples already drawn (resume), else drawn here.

    Returns:
        dict with fixed ``alpha``/``gamma``, ``lambda``, ``cv``, references
        ``self_consistency``, ``learned``, ``retrieval`` (n_test, layer, hidden),
        ``neighbour`` (train index per test row), ``majority``, ``samples``, ``few_shot``.
    """
    seen.record("strengths", ids=[q.id for q in train])
    alpha, gamma = beyond.fixed_strengths(*train_best)
    train_prompts = [STEERING.format(q=q.question) for q in train]
    test_prompts = [STEERING.format(q=q.question) for q in test]
    seen.record("activations", train_prompts + test_prompts, ids=[q.id for q in [*train, *test]])
    x_train = beyond.question_activations(model, train_prompts)
    x_test = beyond.question_activations(model, test_prompts)
    shift = train_refs - x_train  # oracle steering shift per layer
    n, layers, hidden = shift.shape
    seen.record("predictor", ids=[q.id for q in train])
    lam, cv = beyond.choose_lambda(x_train.reshape(n, -1), shift.reshape(n, -1), LAMBDAS, seed=seed)
    ridge = beyond.fit_ridge(x_train.reshape(n, -1), shift.reshape(n, -1), lam)
    learned = x_test + ridge.predict(x_test.reshape(len(test), -1)).reshape(
        len(test), layers, hidden
    )
    # retrieval key: the question activation, all layers
    near = beyond.nearest(x_train.reshape(n, -1), x_test.reshape(len(test), -1))
    retrieval = x_test + shift[near]
    if samples is None:
        samples = beyond.sample_answers(
            model,
            [BASELINE.format(q=q.question) for q in test],
            n_samples=n_samples,
            temperature=temperature,
            max_new_tokens=tokens,
            seed=seed,
        )
    majority = [
        beyond.majority_answer([beyond.answer_line(cut(s)) for s in row]) or "unknown"
        for row in samples
    ]
    exps = explanations(
        model, [(q.question, a) for q, a in zip(test, majority, strict=True)], tokens
    )
    items = [
        fsnn.ReferenceItem(question=q.question, answer=a, explanation=e)
        for q, a, e in zip(test, majority, exps, strict=True)
    ]
    seen.record(
        "reference", [f"{i.answer}\n{i.explanation}" for i in items], ids=[q.id for q in test]
    )
    sc_refs = np.asarray(fsnn.capture_references(model, items).values, dtype=np.float32)
    few = [(q.question, q.answer) for q in train[:3]]
    seen.record("few_shot", [f"{q} {a}" for q, a in few], ids=[q.id for q in train[:3]])
    return {
        "alpha": alpha,
        "gamma": gamma,
        "lambda": lam,
        "cv": cv,
        "self_consistency": sc_refs,
        "learned": learned.astype(np.float32),
        "retrieval": retrieval.astype(np.float32),
        "neighbour": near.tolist(),
        "majority": majority,
        "samples": samples,
        "few_shot": few,
    }


# --------------------------------------------------------------------------- strength searches


def oracle_search_config(args: argparse.Namespace) -> fsnn.SearchConfig:
    """The oracle search: the chosen parametrization/sampler, rounds of one trial per
    question so a model-based sampler sees earlier results (like the strength study's
    candidate cells), scored on the completion, readability guard on."""
    return fsnn.SearchConfig(
        n_trials=args.trials,
        batch_trials=1,
        n_startup_trials=2,
        parametrization=args.parametrization,
        sampler=args.sampler,
        start_trials=args.start_trials,
        score_on=args.score_on,
        unreadable_penalty=1.0,
        seed=args.seed,
    )


def label_free_search_config(oracle: fsnn.SearchConfig) -> fsnn.SearchConfig:
    """The oracle's settings and trial budget with an objective that reads no answer."""
    return replace(oracle, objective=LABEL_FREE_OBJECTIVE)


def label_free_search(
    model: Any,
    test: Sequence[Any],
    refs: np.ndarray,
    layout: Any,
    config: fsnn.SearchConfig,
    *,
    name: str,
    seen: beyond.Seen,
    storage: Any = None,
    mode: str = "cached",
    tokens: int = 24,
    progress: bool = True,
) -> xr.Dataset:
    """Search each test question's strength for a label-free reference, without its answer.

    The items carry answer "" (token overlap is then 0 whatever the text) and the
    objective weighs token overlap 0: the search ranks trials by the model's own
    perplexity of the completion and the readability guard only.

    Args:
        test: fsnn Questions; only ``id`` and ``question`` are read.
        refs: (n_test, layer, hidden) label-free references.
        config: :func:`label_free_search_config` (w_to must be 0).
        name: reference name (study prefix, audit stage).

    Returns:
        The trials dataset of :func:`fsnn.run_search`.
    """
    if config.objective.w_to != 0:
        raise fsnn.FsnnError(
            f"label-free search {name!r} must not weigh token overlap, got w_to={config.objective.w_to}"
        )
    items = [
        fsnn.SearchItem(
            key=str(q.id), prompt=STEERING.format(q=q.question), answer="", h=torch.as_tensor(r)
        )
        for q, r in zip(test, refs, strict=True)
    ]
    seen.record(
        f"search_{name}", [f"{it.prompt}\n{it.answer}" for it in items], ids=[q.id for q in test]
    )
    return fsnn.run_search(
        model,
        items,
        layout,
        config,
        storage=storage,
        mode=mode,
        max_new_tokens=tokens,
        study_prefix=f"{name}-searched-",
        progress=progress,
    )


def best_of(ds: xr.Dataset, var: str) -> np.ndarray:
    """``var`` of each prompt's best trial, NaN (or "") where no trial finished."""
    b = ds["best_trial"].values
    vals = ds[var].values
    fill = "" if vals.dtype == object else np.nan
    return np.stack(
        [
            vals[i, b[i]] if b[i] >= 0 else np.full(vals.shape[2:], fill, dtype=vals.dtype)
            for i in range(len(b))
        ]
    )


# --------------------------------------------------------------------------- statistics


def boot_index(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def interval(values: np.ndarray, idx: np.ndarray) -> tuple[float, float, float]:
    """(mean, 2.5%, 97.5%) of the mean over prompts, percentile bootstrap."""
    if values.size == 0:
        return (np.nan, np.nan, np.nan)
    means = values[idx].mean(-1)
    return float(values.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def gain_share(
    method: np.ndarray, greedy: np.ndarray, oracle: np.ndarray, idx: np.ndarray
) -> tuple[float, ...]:
    """(share, lo, hi) of (method - greedy) / (oracle - greedy), paired resamples;
    resamples where the oracle gains nothing are dropped (NaN)."""
    if method.size == 0:
        return (np.nan, np.nan, np.nan)

    def share(m, g, o):
        gap = o.mean(-1) - g.mean(-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(gap > 0, (m.mean(-1) - g.mean(-1)) / gap, np.nan)

    point = float(share(method, greedy, oracle))
    boots = share(method[idx], greedy[idx], oracle[idx])
    if not np.isfinite(boots).any():
        return (point, np.nan, np.nan)
    return point, float(np.nanquantile(boots, 0.025)), float(np.nanquantile(boots, 0.975))


def summarise(per_prompt: xr.Dataset, *, n_boot: int, seed: int) -> xr.Dataset:
    """Means, intervals, paired differences and gain shares per (method, metric, subset)."""
    metrics = ("token_overlap", "containment")
    subsets = ("all", "latent")
    stats = ("mean", "lo", "hi")
    shape = (len(METHODS), len(metrics), len(subsets), len(stats))
    level, diff, share = (np.full(shape, np.nan) for _ in range(3))
    n = np.zeros(len(subsets), dtype=np.int64)
    latent = per_prompt["latent"].values.astype(bool)
    for si, subset in enumerate(subsets):
        rows = np.arange(per_prompt.sizes["prompt"]) if subset == "all" else np.flatnonzero(latent)
        n[si] = len(rows)
        if not len(rows):
            continue
        idx = boot_index(len(rows), n_boot, seed + si)
        for mi, metric in enumerate(metrics):
            vals = per_prompt[metric].values[:, rows]  # (method, prompt)
            g, o = vals[METHODS.index("greedy")], vals[METHODS.index("oracle")]
            for ki, _ in enumerate(METHODS):
                level[ki, mi, si] = interval(vals[ki], idx)
                diff[ki, mi, si] = interval(vals[ki] - g, idx)
                share[ki, mi, si] = gain_share(vals[ki], g, o, idx)
    coords = {
        "method": list(METHODS),
        "metric": list(metrics),
        "subset": list(subsets),
        "stat": list(stats),
    }
    dims = ("method", "metric", "subset", "stat")
    return xr.Dataset(
        {
            "level": (dims, level),
            "diff_vs_greedy": (dims, diff),
            "gain_share": (dims, share),
            "n": (("subset",), n),
        },
        coords=coords,
    )


# --------------------------------------------------------------------------- the run


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--out", required=True, type=Path, help="run folder (checkpoints, results, figure)"
    )
    p.add_argument("--model", default="smollm2-135m", help="fsnn model alias")
    p.add_argument("--csv", default=None, help="SimpleQA CSV (default: $FSNN_SIMPLEQA_CSV)")
    p.add_argument("--n-train", type=int, default=60, help="train failures")
    p.add_argument("--n-test", type=int, default=40, help="test failures")
    p.add_argument("--max-new-tokens", type=int, default=32, help="token budget of every answer")
    p.add_argument("--trials", type=int, default=5, help="oracle search trials per question")
    p.add_argument("--samples", type=int, default=5, help="self-consistency samples per question")
    p.add_argument(
        "--temperature", type=float, default=0.7, help="self-consistency sampling temperature"
    )
    p.add_argument("--mode", default="cached", choices=("cached", "faithful"), help="steering mode")
    p.add_argument(
        "--parametrization",
        default="log_product",
        choices=PARAMETRIZATIONS,
        help="what the oracle and label-free searches sample (fsnn.search.strength); log_product: "
        "k = alpha*gamma per segment on a log scale; alpha_gamma: the paper's U[0.01, 1]",
    )
    p.add_argument(
        "--sampler", default="tpe", choices=SAMPLERS, help="Optuna sampler of the searches"
    )
    p.add_argument(
        "--start-trials",
        type=int,
        default=3,
        help="log-spaced strengths enqueued as each question's first trials (capped at --trials)",
    )
    p.add_argument(
        "--score-on",
        default="completion",
        choices=("completion", "full"),
        help="text the search objective scores: the completion, or prompt + completion",
    )
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (shared machine: 1)")
    p.add_argument("--seed", type=int, default=0, help="split, sampling and search seed")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples")
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny smoke shape: 6 train / 4 test, 12 tokens, 2 trials",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.n_train, args.n_test, args.max_new_tokens, args.trials, args.samples = 6, 4, 12, 2, 3
    if args.n_train < 3 or args.n_test < 1:
        p.error("--n-train must be >= 3 and --n-test >= 1")
    if args.trials < 1 or args.start_trials < 0 or args.threads < 1:
        p.error("--trials and --threads must be >= 1, --start-trials >= 0")
    return args


def split_by_question(failures: Sequence[int], n_train: int, seed: int) -> dict[str, list[int]]:
    """Seeded disjoint split of failing question ids: ``n_train`` train, the rest test."""
    ids = list(dict.fromkeys(int(i) for i in failures))  # one row per question
    shuffled = [ids[i] for i in np.random.default_rng(seed + 1).permutation(len(ids))]
    return {"train": sorted(shuffled[:n_train]), "test": sorted(shuffled[n_train:])}


def screen_failures(
    model: Any, questions: list[Any], need: int, tokens: int, stages: Stages
) -> list[dict]:
    """Greedy baseline over a seeded shuffle until ``need`` failures; checkpointed per chunk."""
    path = stages.out / "baseline.json"
    done: list[dict] = json.loads(path.read_text()) if path.exists() else []
    bar = tqdm(total=need, desc="baseline failures", initial=sum(not r["correct"] for r in done))
    pos = len(done)
    while sum(not r["correct"] for r in done) < need and pos < len(questions):
        chunk = questions[pos : pos + 16]
        outs = fsnn.generate(
            model, [BASELINE.format(q=q.question) for q in chunk], max_new_tokens=tokens
        )
        for q, o in zip(chunk, outs, strict=True):
            ok = correct(q.answer, o.completion)
            done.append({"id": q.id, "completion": o.completion, "correct": bool(ok)})
            bar.update(int(not ok))
        pos += len(chunk)
        atomic_write_text(path, json.dumps(done))
    bar.close()
    return done


def run(args: argparse.Namespace) -> xr.Dataset:
    torch.set_num_threads(args.threads)
    t0 = time.time()
    stages = Stages(args.out)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    search = oracle_search_config(args)
    free_search_config = label_free_search_config(search)
    searches = {"oracle": search.to_dict(), "label_free": free_search_config.to_dict()}
    # a resumed run must not mix trials of two search settings
    recorded = stages.json("search", lambda: searches)
    if recorded != json.loads(json.dumps(searches)):
        raise fsnn.FsnnError(
            f"{args.out / 'search.json'} holds other search settings than this run's "
            f"(--parametrization/--sampler/--start-trials/--score-on/--trials/--seed): "
            f"use a new --out"
        )
    all_q = fsnn.load_simpleqa(args.csv)
    order = np.random.default_rng(args.seed).permutation(len(all_q))
    questions = [all_q[i] for i in order]
    by_id = {q.id: q for q in all_q}
    model = fsnn.load_model(args.model)
    tokens = args.max_new_tokens

    baseline = screen_failures(model, questions, args.n_train + args.n_test, tokens, stages)
    failures = [r["id"] for r in baseline if not r["correct"]][: args.n_train + args.n_test]
    if len(failures) < args.n_train + args.n_test:
        raise fsnn.FsnnError(
            f"only {len(failures)} baseline failures for {args.n_train}+{args.n_test}"
        )
    split = stages.json("split", lambda: split_by_question(failures, args.n_train, args.seed))
    assert not set(split["train"]) & set(split["test"]), "train/test share a question"
    train = [by_id[i] for i in split["train"]]
    test = [by_id[i] for i in split["test"]]
    greedy_text = {r["id"]: r["completion"] for r in baseline}

    # oracle side (uses answers: train for training, test only for the ceiling rows)
    def oracle_refs(qs, name):
        exps = stages.json(
            f"explain_{name}",
            lambda: explanations(model, [(q.question, q.answer) for q in qs], tokens),
        )
        return stages.array(
            f"refs_oracle_{name}",
            lambda: (
                fsnn.capture_references(
                    model,
                    [
                        fsnn.ReferenceItem(question=q.question, answer=q.answer, explanation=e)
                        for q, e in zip(qs, exps, strict=True)
                    ],
                ).values
            ),
        )

    refs_train, refs_test = oracle_refs(train, "train"), oracle_refs(test, "test")
    layout = fsnn.SegmentLayout.full(model.n_layers)
    # wall time of each stage and method, kept across resumes (NaN: made by a process
    # that did not record it)
    walls_path = args.out / "walls.json"
    walls: dict[str, float] = json.loads(walls_path.read_text()) if walls_path.exists() else {}

    def searched(name: str, run_it: Callable[[Any], xr.Dataset]) -> xr.Dataset:
        path = args.out / f"trials_{name}.nc"
        if path.exists():
            return xr.open_dataset(path).load()
        start = time.time()
        ds = run_it(open_storage(f"sqlite:///{args.out / f'optuna_{name}.db'}"))
        write_dataset(ds, path)
        walls[f"search_{name}"] = time.time() - start
        atomic_write_text(walls_path, json.dumps(walls))
        return ds

    def oracle_search(qs, refs, name):
        items = [
            fsnn.SearchItem(
                key=str(q.id),
                prompt=STEERING.format(q=q.question),
                answer=q.answer,
                h=torch.as_tensor(r),
            )
            for q, r in zip(qs, refs, strict=True)
        ]
        return searched(
            name,
            lambda storage: fsnn.run_search(
                model,
                items,
                layout,
                search,
                storage=storage,
                mode=args.mode,
                max_new_tokens=tokens,
                study_prefix=f"{name}-",
            ),
        )

    trials_train = oracle_search(train, refs_train, "train")
    trials_test = oracle_search(test, refs_test, "test")

    seen = beyond.Seen()
    samples_path = args.out / "samples_test.json"
    samples = json.loads(samples_path.read_text()) if samples_path.exists() else None
    free_path = args.out / "label_free.npz"
    if free_path.exists():
        z = np.load(free_path, allow_pickle=False)
        free = {k: z[k] for k in ("self_consistency", "learned", "retrieval")}
        meta = json.loads((args.out / "label_free.json").read_text())
    else:
        free = label_free_inputs(
            model,
            train,
            test,
            train_refs=refs_train,
            train_best=(best_of(trials_train, "alpha"), best_of(trials_train, "gamma")),
            n_samples=args.samples,
            temperature=args.temperature,
            tokens=tokens,
            seed=args.seed,
            seen=seen,
            samples=samples,
        )
        atomic_write_text(samples_path, json.dumps(free["samples"]))
        meta = {
            k: free[k]
            for k in ("alpha", "gamma", "lambda", "cv", "neighbour", "majority", "few_shot")
        }
        meta["cv"] = {str(k): v for k, v in meta["cv"].items()}
        tmp = args.out / "label_free.tmp.npz"
        np.savez(tmp, **{k: free[k] for k in ("self_consistency", "learned", "retrieval")})
        tmp.replace(free_path)
        atomic_write_text(args.out / "label_free.json", json.dumps(meta, indent=1))
        save_seen(args.out, seen)
    samples = json.loads(samples_path.read_text())
    fixed = fsnn.Strengths(layout=layout, alpha=tuple(meta["alpha"]), gamma=tuple(meta["gamma"]))

    # label-free strength searches: test questions, label-free references, no answer
    trials_free = {}
    for name in SEARCHED:
        seen_search = beyond.Seen()
        trials_free[name] = searched(
            f"{name}_searched",
            lambda storage, name=name, seen_search=seen_search: label_free_search(
                model,
                test,
                free[name],
                layout,
                free_search_config,
                name=name,
                seen=seen_search,
                storage=storage,
                mode=args.mode,
                tokens=tokens,
            ),
        )
        save_seen(args.out, seen_search)

    steer_prompts = [STEERING.format(q=q.question) for q in test]
    few = [tuple(p) for p in meta["few_shot"]]
    makers: dict[str, Callable[[], list[str]]] = {
        "greedy": lambda: [greedy_text[q.id] for q in test],
        "greedy_steer_prompt": lambda: [
            o.completion for o in fsnn.generate(model, steer_prompts, max_new_tokens=tokens)
        ],
        "step_by_step": lambda: [
            o.completion
            for o in fsnn.generate(
                model,
                [beyond.STEP_BY_STEP.format(q=q.question) for q in test],
                max_new_tokens=tokens,
            )
        ],
        "few_shot": lambda: [
            o.completion
            for o in fsnn.generate(
                model,
                [beyond.few_shot_prompt(few, q.question) for q in test],
                max_new_tokens=tokens,
            )
        ],
        "dola": lambda: [
            o.completion
            for o in beyond.dola_generate(
                model,
                [BASELINE.format(q=q.question) for q in test],
                early_layer=model.n_layers // 4,
                max_new_tokens=tokens,
            )
        ],
        "oracle": lambda: [str(c) for c in best_of(trials_test, "completion")],
        **{
            f"{name}_searched": (
                lambda name=name: [str(c) for c in best_of(trials_free[name], "completion")]
            )
            for name in SEARCHED
        },
        "oracle_fixed": lambda: steered(refs_test),
        **{
            name: (lambda name=name: steered(free[name]))
            for name in ("self_consistency", "learned", "retrieval")
        },
    }

    def steered(refs):
        steering = fsnn.Steering(references=refs, strengths=fixed, mode=args.mode)
        return [
            o.completion
            for o in steering.generate(model, steer_prompts, max_new_tokens=tokens, batch_size=16)
        ]

    completions: dict[str, list[str]] = {}
    for name in tqdm(METHODS, desc="methods"):
        fresh = not (args.out / f"gen_{name}.json").exists()
        start = time.time()
        completions[name] = stages.json(f"gen_{name}", makers[name])
        if fresh:
            walls[name] = time.time() - start
            atomic_write_text(walls_path, json.dumps(walls))

    answers = [q.answer for q in test]
    to = np.zeros((len(METHODS), len(test)))
    hit = np.zeros_like(to)
    ok = np.zeros_like(to)
    for k, name in enumerate(METHODS):
        for j, (a, c) in enumerate(zip(answers, completions[name], strict=True)):
            to[k, j], hit[k, j], ok[k, j] = scores(a, c)
    latent = np.array(
        [any(correct(a, s) for s in row) for a, row in zip(answers, samples, strict=True)]
    )
    per_prompt = xr.Dataset(
        {
            "token_overlap": (("method", "prompt"), to),
            "containment": (("method", "prompt"), hit),
            "readable": (("method", "prompt"), ok.astype(np.int8)),
            "latent": (("prompt",), latent.astype(np.int8)),
            "completion": (
                ("method", "prompt"),
                np.array([[str(c) for c in completions[m]] for m in METHODS], dtype=object),
            ),
        },
        coords={
            "method": list(METHODS),
            "prompt": np.arange(len(test)),
            "question_id": ("prompt", np.array([q.id for q in test])),
            "answer": ("prompt", np.array([str(a) for a in answers], dtype=object)),
        },
    )
    summary = summarise(per_prompt, n_boot=args.n_boot, seed=args.seed)
    ds = xr.merge([per_prompt, summary])
    # a searched row's wall time is its search (its answer is the best trial's completion)
    search_wall = {
        "oracle": "search_test",
        **{f"{n}_searched": f"search_{n}_searched" for n in SEARCHED},
    }
    ds["wall_s"] = (
        ("method",),
        np.array([walls.get(search_wall.get(m, m), np.nan) for m in METHODS]),
    )
    best_k = {
        name: best_of(trials, "alpha") * best_of(trials, "gamma")
        for name, trials in (("oracle", trials_test), *trials_free.items())
    }
    ds["searched_k"] = (("searched", "prompt"), np.stack([best_k[n][:, 0] for n in best_k]))
    ds = ds.assign_coords(searched=list(best_k))
    ds.attrs = provenance(
        "beyond_oracle",
        config,
        model=args.model,
        n_train=len(train),
        n_test=len(test),
        n_screened=len(baseline),
        fixed_alpha=list(meta["alpha"]),
        fixed_gamma=list(meta["gamma"]),
        ridge_lambda=float(meta["lambda"]),
        machine="2-core shared CPU",
        train_ids=split["train"],
        test_ids=split["test"],
        wall_s_this_process=round(time.time() - t0, 1),
        label_free=list(LABEL_FREE),
        oracle_search=searches["oracle"],
        label_free_search=searches["label_free"],
        stage_walls_s={k: round(v, 1) for k, v in walls.items()},
        threads=args.threads,
    )
    write_dataset(ds, args.out / "beyond_oracle.nc")
    atomic_write_text(args.out / "table.md", table(ds))
    figure(ds, args.out / "beyond_oracle.png")
    return ds


def save_seen(out: Path, seen: beyond.Seen) -> None:
    """Merge a stage's audit into ``seen.json`` (the leak audit the tests read)."""
    path = out / "seen.json"
    old = json.loads(path.read_text()) if path.exists() else {"texts": {}, "ids": {}}
    for stage, texts in seen.texts.items():
        old["texts"][stage] = texts
    for stage, ids in seen.ids.items():
        old["ids"][stage] = sorted(ids)
    atomic_write_text(path, json.dumps(old))


def table(ds: xr.Dataset) -> str:
    """Markdown table: per method, both metrics with intervals, diff vs greedy, gain share."""
    lines = []
    for subset in ("all", "latent"):
        n = int(ds["n"].sel(subset=subset))
        lines += [
            f"\n**{subset}** test prompts (n = {n})\n",
            "| method | token overlap [95% CI] | containment [95% CI] | diff TO vs greedy [95% CI] "
            "| diff containment vs greedy [95% CI] | share of oracle gain, TO [95% CI] "
            "| share, containment [95% CI] | readable | wall s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]

        def f(var, m, metric, subset=subset):
            v = ds[var].sel({"method": m, "metric": metric, "subset": subset}).values
            return "n/a" if not np.isfinite(v[0]) else f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"

        for m in METHODS:
            lines.append(
                f"| {m} | {f('level', m, 'token_overlap')} | {f('level', m, 'containment')} | "
                f"{f('diff_vs_greedy', m, 'token_overlap')} | {f('diff_vs_greedy', m, 'containment')} | "
                f"{f('gain_share', m, 'token_overlap')} | "
                f"{f('gain_share', m, 'containment')} | {readable_share(ds, m, subset):.2f} | "
                f"{float(ds['wall_s'].sel({'method': m})):.0f} |"
            )
    return "\n".join(lines) + "\n"


def readable_share(ds: xr.Dataset, method: str, subset: str) -> float:
    """Share of the subset's completions of ``method`` that pass the readability guard."""
    rows = ds["readable"].sel({"method": method}).values
    if subset == "latent":
        rows = rows[ds["latent"].values.astype(bool)]
    return float(rows.mean()) if rows.size else float("nan")


def figure(ds: xr.Dataset, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(len(METHODS))
    for ax, metric in zip(axes, ("token_overlap", "containment"), strict=True):
        v = ds["level"].sel(metric=metric, subset="all").values
        ax.bar(
            x,
            v[:, 0],
            yerr=np.abs(np.stack([v[:, 0] - v[:, 1], v[:, 2] - v[:, 0]])),
            capsize=3,
            color=[
                "0.6"
                if m in ("oracle", "oracle_fixed")
                else "C1"
                if m.endswith("_searched")
                else "C0"
                for m in METHODS
            ],
        )
        ax.set_xticks(x, METHODS, rotation=45, ha="right")
        ax.set_title(
            f"{metric} on readable completions, n = {int(ds['n'].sel(subset='all'))} test prompts"
        )
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        ds = run(args)
    except fsnn.FsnnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(table(ds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
