"""Fitting the offline judge on the authors' released Mistral grades (train prompts only):
the ordinal model by penalised maximum likelihood, the ridge penalty and the decode rule
by cross-validation over train prompts (``experiments/fit_offline_judge.py`` runs it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fsnn.judges.scoring import JUDGE_THRESHOLD

from .features import FEATURES, feature_matrix
from .model import DECODES, Calibration, decode_grades, ordinal_probs

__all__ = [
    "CV_FOLDS",
    "L2_GRID",
    "N_PROMPTS",
    "SPLIT_SEED",
    "TRAIN_FRACTION",
    "cross_validate",
    "fit_calibration",
    "fit_ordinal",
    "split_prompts",
]

N_PROMPTS = 260  # the release's prompts, ids 0..259
SPLIT_SEED = 0
TRAIN_FRACTION = 0.5
L2_GRID = (1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
CV_FOLDS = 5


def fit_ordinal(
    x: np.ndarray,
    y: np.ndarray,
    *,
    l2: float,
    n_classes: int = 5,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit a proportional-odds model by penalised maximum likelihood (L-BFGS).

    Args:
        x: standardised features, shape (item, feature).
        y: grades 1..n_classes, shape (item,).
        l2: ridge penalty on the coefficients (not the cut points), per item.
        weights: item weights, shape (item,) (default 1).

    Returns:
        (coef shape (feature,), cuts shape (n_classes - 1,)). Deterministic: the start
        point is fixed (zero coefficients, cut points at the empirical logits).
    """
    from scipy.optimize import minimize

    n, f = x.shape
    y0 = np.asarray(y, dtype=int) - 1
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    w = w / w.mean()
    cum = np.clip(np.array([np.mean(y0 <= k) for k in range(n_classes - 1)]), 0.01, 0.99)
    start_cuts = np.log(cum / (1 - cum))
    # Cut points as first cut + softplus gaps keeps them ordered without constraints.
    gaps0 = np.log(np.expm1(np.maximum(np.diff(start_cuts), 0.05)))
    theta0 = np.concatenate([np.zeros(f), start_cuts[:1], gaps0])

    def unpack(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        coef = theta[:f]
        cuts = np.cumsum(np.concatenate([theta[f : f + 1], np.logaddexp(0, theta[f + 1 :])]))
        return coef, cuts

    def loss(theta: np.ndarray) -> float:
        coef, cuts = unpack(theta)
        p = ordinal_probs(x @ coef, cuts)
        return float(-(w * np.log(p[np.arange(n), y0])).mean() + l2 * coef @ coef)

    res = minimize(loss, theta0, method="L-BFGS-B", options={"maxiter": 2000})
    return unpack(res.x)


def split_prompts(
    n_prompts: int = N_PROMPTS, *, seed: int = SPLIT_SEED, train_fraction: float = TRAIN_FRACTION
) -> tuple[list[int], list[int]]:
    """(train prompt ids, held-out prompt ids), sorted: the first ``round(train_fraction * n)``
    of ``numpy.random.default_rng(seed).permutation(n)`` are train. All methods and trials
    of a prompt fall on the same side.
    """
    perm = np.random.default_rng(seed).permutation(n_prompts)
    k = int(round(train_fraction * n_prompts))
    return sorted(int(i) for i in perm[:k]), sorted(int(i) for i in perm[k:])


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    return mean, np.where(scale > 1e-9, scale, 1.0)


def _folds(prompts: Sequence[int], k: int, seed: int) -> list[set[int]]:
    perm = np.random.default_rng(seed).permutation(np.asarray(sorted(prompts)))
    return [set(int(p) for p in perm[i::k]) for i in range(k)]


def _fit_fold(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, ...]:
    mean, scale = _standardise(x)
    coef, cuts = fit_ordinal((x - mean) / scale, y, l2=l2)
    return mean, scale, coef, cuts


def _predict(model: tuple[np.ndarray, ...], x: np.ndarray) -> np.ndarray:
    mean, scale, coef, cuts = model
    return ordinal_probs(((x - mean) / scale) @ coef, cuts)


def cross_validate(
    x: np.ndarray,
    y: np.ndarray,
    prompt: np.ndarray,
    *,
    l2: float,
    folds: list[set[int]],
    extra: Sequence[tuple[np.ndarray, np.ndarray]] = (),
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Out-of-fold grade distributions (folds are sets of prompt ids).

    Args:
        x, y, prompt: train features (item, feature), grades and prompt ids (item,).
        extra: more (features, prompt ids) to predict out of fold (the selected texts).

    Returns:
        (distributions of ``x`` shape (item, 5), one array (n, 5) per ``extra``).
    """
    out = np.zeros((len(y), 5))
    extra_out = [np.zeros((len(p), 5)) for _, p in extra]
    for fold in folds:
        test = np.isin(prompt, list(fold))
        model = _fit_fold(x[~test], y[~test], l2)
        out[test] = _predict(model, x[test])
        for (xe, pe), oe in zip(extra, extra_out, strict=True):
            te = np.isin(pe, list(fold))
            if te.any():
                oe[te] = _predict(model, xe[te])
    return out, extra_out


def fit_calibration(
    rows: Any,
    *,
    train_prompts: Sequence[int],
    selected: dict[str, Any] | None = None,
    l2: float | None = None,
    decode: str | None = None,
    version: str = "v1",
    split: dict[str, Any] | None = None,
    x: np.ndarray | None = None,
    seed: int = SPLIT_SEED,
) -> Calibration:
    """Fit the offline judge on the rows of ``train_prompts`` only.

    Args:
        rows: :func:`fsnn.analysis.release_grades.graded_rows` (columns ``prompt_id``,
            ``question``, ``target``, ``predicted``, ``mistral_score``).
        train_prompts: prompt ids to fit on; no row of another prompt is read.
        selected: per method, :func:`fsnn.analysis.release_grades.selected_rows` (to choose the
            decode rule by cross-validated composite accuracy); only train prompts read.
        l2: the ridge penalty; None chooses it from :data:`L2_GRID` by the lowest
            cross-validated log loss over train prompts (:data:`CV_FOLDS` folds by prompt).
        decode: the decode rule; None chooses it (needs ``selected``) by the smallest
            summed |composite accuracy error| over methods, out of fold, among rules whose
            out-of-fold exact agreement is at least that of always answering 2.
        x: precomputed :func:`feature_matrix` of ``rows`` (same order), to save time.

    Returns:
        the :class:`Calibration`; ``info`` holds the cross-validation results.
    """
    from fsnn.judges.scoring import composite_accuracy

    train_set = {int(p) for p in train_prompts}
    mask = rows["prompt_id"].astype(int).isin(train_set).to_numpy()
    train = rows[mask]
    if x is None:
        xt = feature_matrix(list(zip(train.question, train.target, train.predicted, strict=True)))
    else:
        xt = np.asarray(x)[mask]
    y = train["mistral_score"].to_numpy(int)
    prompt = train["prompt_id"].to_numpy(int)
    folds = _folds(sorted(train_set), CV_FOLDS, seed)
    cv: dict[str, Any] = {"folds": CV_FOLDS, "fold_seed": seed}
    if l2 is None:
        losses = {}
        for lam in L2_GRID:
            p, _ = cross_validate(xt, y, prompt, l2=lam, folds=folds)
            losses[lam] = float(-np.log(p[np.arange(len(y)), y - 1]).mean())
        l2 = min(losses, key=lambda k: (losses[k], -k))
        cv["log_loss_by_l2"] = {f"{k:g}": v for k, v in losses.items()}
    sel = {
        m: df[df["prompt_id"].astype(int).isin(train_set)].reset_index(drop=True)
        for m, df in (selected or {}).items()
    }
    extra = [
        (
            feature_matrix(list(zip(df.question, df.target, df.text, strict=True))),
            df["prompt_id"].to_numpy(int),
        )
        for df in sel.values()
    ]
    oof, oof_sel = cross_validate(xt, y, prompt, l2=l2, folds=folds, extra=extra)
    always2 = float(np.mean(y == 2))
    by_rule: dict[str, Any] = {}
    for rule in DECODES:
        g = decode_grades(oof, rule)
        entry: dict[str, Any] = {"exact": float(np.mean(g == y))}
        err = 0.0
        for (m, df), ps in zip(sel.items(), oof_sel, strict=True):
            ref = composite_accuracy(df["token_overlap"], df["judge_score"])
            got = composite_accuracy(df["token_overlap"], decode_grades(ps, rule).astype(float))
            entry[f"composite_{m}"] = {"offline": got, "reference": ref}
            err += abs(got - ref)
        entry["composite_abs_error_sum"] = err
        by_rule[rule] = entry
    cv["always2_exact"] = always2
    cv["decode"] = by_rule
    if decode is None:
        ok = [r for r in DECODES if by_rule[r]["exact"] >= always2] or ["median"]
        decode = (
            min(ok, key=lambda r: (by_rule[r]["composite_abs_error_sum"], DECODES.index(r)))
            if sel
            else "median"
        )
    # SimpleQA CORRECT threshold: best out-of-fold accuracy of "grade >= JUDGE_THRESHOLD".
    p_good = oof[:, JUDGE_THRESHOLD - 1 :].sum(axis=1)
    good = y >= JUDGE_THRESHOLD
    grid = np.round(np.arange(0.05, 0.96, 0.05), 2)
    acc = [float(np.mean((p_good >= t) == good)) for t in grid]
    t_best = float(grid[int(np.argmax(acc))])
    cv.update({"l2": l2, "simpleqa_threshold_accuracy": max(acc)})
    mean, scale, coef, cuts = _fit_fold(xt, y, l2)
    return Calibration(
        version=version,
        features=FEATURES,
        mean=tuple(float(v) for v in mean),
        scale=tuple(float(v) for v in scale),
        coef=tuple(float(v) for v in coef),
        cuts=tuple(float(v) for v in cuts),
        l2=float(l2),
        simpleqa_correct=t_best,
        train_prompts=tuple(sorted(train_set)),
        decode=decode,
        split=split or {},
        info={"n_train_rows": int(mask.sum()), "n_train_prompts": len(train_set), "cv": cv},
    )
