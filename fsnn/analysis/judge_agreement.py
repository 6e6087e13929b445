"""Judge agreement: grade the 1045 released answers with another judge, compare to Mistral.

``fsnn judge-agreement --judge local:MODEL [--release-dir DIR] [--limit N]`` grades the
released answers (:func:`fsnn.analysis.release_grades.graded_rows`) on the 1-5 quality rubric
and reports, against the release's ``mistral-small-latest`` grades: exact agreement,
agreement within one point, Spearman correlation (of the grade, and of the expected
grade for local judges), quadratic-weighted Cohen's kappa, the 5x5 confusion matrix
(rows Mistral, columns the judge) and the time per grade. For scale, it also reports
the exact agreement of always answering Mistral's most common grade (2: 70% of rows).
``--limit N`` grades a stratified subset (by method and Mistral grade, proportional,
at least one row per non-empty stratum, fixed seed) and says so in the report.

Writes ``<out>.json`` (the report) and ``<out>.nc`` (per-row grades, dims ``row`` and
``grade``), atomically; answers go through the judge cache, so an interrupted run
resumes where it stopped and a rerun costs nothing.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fsnn.errors import FsnnError
from fsnn.judges.base import Judge, JudgeConfig
from fsnn.judges.factory import make_judge
from fsnn.store.files import atomic_write_text

from .release_grades import graded_rows
from .stats import percentile_interval, wilson_interval

__all__ = [
    "GRADES",
    "agreement",
    "agreement_main",
    "format_report",
    "judge_slug",
    "run_agreement",
    "stratified_subset",
    "heldout_table",
    "simpleqa_check",
    "split_rows",
    "summary_table",
]

GRADES = (1, 2, 3, 4, 5)
# The intervals of these reports come from fsnn.analysis.stats with the constants they were
# first computed with, so their numbers do not move in the last digits:
_Z_95 = 1.959963984540054  # z_0.975 correctly rounded, for the Wilson interval of a rate
_QUANTILES_95 = (0.025, 0.975)  # the percentile interval of bootstrap replicates


def agreement(reference: np.ndarray, judged: np.ndarray) -> dict[str, Any]:
    """Agreement of 1-5 grades ``judged`` with ``reference`` (NaN = missing, skipped).

    Args:
        reference: shape (row,), grades 1-5.
        judged: shape (row,), grades 1-5 or NaN.

    Returns:
        ``n`` (pairs compared), ``n_missing``, ``exact``, ``within_1``, ``spearman``,
        ``spearman_p``, ``kappa_quadratic``, ``mean_abs_diff``, ``confusion`` (5x5
        list, rows reference grade 1..5, columns judged grade 1..5),
        ``reference_hist`` and ``judged_hist`` (counts of grades 1..5).
    """
    from scipy.stats import spearmanr

    ref = np.asarray(reference, dtype=float)
    jud = np.asarray(judged, dtype=float)
    ok = ~np.isnan(ref) & ~np.isnan(jud)
    r, j = ref[ok].astype(int), jud[ok].astype(int)
    confusion = np.zeros((5, 5), dtype=int)
    np.add.at(confusion, (r - 1, j - 1), 1)
    n = int(ok.sum())
    out: dict[str, Any] = {"n": n, "n_missing": int((~np.isnan(ref) & np.isnan(jud)).sum())}
    if n == 0:
        return {
            **out,
            "exact": math.nan,
            "within_1": math.nan,
            "spearman": math.nan,
            "spearman_p": math.nan,
            "kappa_quadratic": math.nan,
            "mean_abs_diff": math.nan,
            "confusion": confusion.tolist(),
            "reference_hist": [0] * 5,
            "judged_hist": [0] * 5,
        }
    rho, p = (math.nan, math.nan)
    if np.ptp(r) > 0 and np.ptp(j) > 0:
        res = spearmanr(r, j)
        rho, p = float(res.statistic), float(res.pvalue)
    return {
        **out,
        "exact": float(np.mean(r == j)),
        "within_1": float(np.mean(np.abs(r - j) <= 1)),
        "spearman": rho,
        "spearman_p": p,
        "kappa_quadratic": _quadratic_kappa(confusion),
        "mean_abs_diff": float(np.mean(np.abs(r - j))),
        "confusion": confusion.tolist(),
        "reference_hist": confusion.sum(1).tolist(),
        "judged_hist": confusion.sum(0).tolist(),
    }


def _quadratic_kappa(confusion: np.ndarray) -> float:
    """Cohen's kappa with quadratic weights (1 = perfect, 0 = chance)."""
    k = confusion.shape[0]
    obs = confusion / confusion.sum()
    expected = np.outer(obs.sum(1), obs.sum(0))
    idx = np.arange(k)
    w = (idx[:, None] - idx[None, :]) ** 2 / (k - 1) ** 2
    denom = float((w * expected).sum())
    return math.nan if denom == 0 else float(1 - (w * obs).sum() / denom)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    ok = ~np.isnan(a) & ~np.isnan(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return math.nan
    return float(spearmanr(a[ok], b[ok]).statistic)


def stratified_subset(rows: pd.DataFrame, limit: int, *, seed: int = 0) -> pd.DataFrame:
    """``limit`` rows drawn by (method, Mistral grade) strata, proportionally.

    Each non-empty stratum keeps at least one row (so rare grades stay in the confusion
    matrix); the rest is allotted by largest remainders; rows within a stratum are the
    first of a seeded permutation, so a larger ``limit`` (same seed) extends a smaller
    one. The result keeps the original order and index.
    """
    if limit >= len(rows):
        return rows
    if limit < 1:
        raise FsnnError("--limit must be >= 1")
    groups = rows.groupby(["method", "mistral_score"], sort=True)
    sizes = groups.size()
    if limit < len(sizes):
        raise FsnnError(f"--limit {limit} is below the number of strata ({len(sizes)})")
    quota = sizes * (limit - len(sizes)) / len(rows)
    take = 1 + np.floor(quota).astype(int)
    remainder = (quota - np.floor(quota)).sort_values(ascending=False, kind="stable")
    for key in remainder.index[: limit - int(take.sum())]:
        take[key] += 1
    take = np.minimum(take, sizes)
    rng = np.random.default_rng(seed)
    picked: list[Any] = []
    for key, group in groups:
        # A fixed permutation per stratum whatever the limit: subsets of growing
        # limits are nested, so a larger rerun reuses the cached grades.
        order = rng.permutation(group.index.to_numpy())
        picked.extend(order[: int(take[key])])
    return rows.loc[sorted(picked)]


def run_agreement(
    judge: Judge,
    rows: pd.DataFrame,
    *,
    chunk: int = 32,
    progress: bool = True,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Grade ``rows`` (from :func:`graded_rows`) with ``judge`` and compare to Mistral.

    Returns:
        (report dict, per-row frame with ``judge_score``, ``judge_expected``,
        ``judge_error``, ``judge_raw``, ``judge_cached`` and ``p1``..``p5`` added).
    """
    from tqdm.auto import tqdm

    grades = []
    items = list(zip(rows.question, rows.target, rows.predicted, strict=True))
    start = time.perf_counter()
    with tqdm(total=len(items), desc=judge.id, disable=not progress, unit="grade") as bar:
        for i in range(0, len(items), chunk):
            grades.extend(judge.grade_quality(items[i : i + chunk]))
            bar.update(min(chunk, len(items) - i))
    wall = time.perf_counter() - start
    out = rows.copy()
    out["judge_score"] = [float(g.value) if g.value is not None else np.nan for g in grades]
    out["judge_expected"] = [g.expected if g.expected is not None else np.nan for g in grades]
    out["judge_error"] = [g.error or "" for g in grades]
    out["judge_raw"] = [g.raw for g in grades]
    out["judge_cached"] = [g.cached for g in grades]
    for k in GRADES:
        out[f"p{k}"] = [(g.probs or {}).get(str(k), np.nan) if g.probs else np.nan for g in grades]
    ref = out["mistral_score"].to_numpy(float)
    report: dict[str, Any] = {"overall": agreement(ref, out["judge_score"].to_numpy(float))}
    report["overall"]["spearman_expected"] = _spearman(ref, out["judge_expected"].to_numpy(float))
    mode = int(pd.Series(ref).mode().iloc[0]) if len(ref) else 2
    report["overall"]["majority_baseline"] = {"grade": mode, "exact": float(np.mean(ref == mode))}
    report["by_method"] = {}
    for method, part in out.groupby("method", sort=False):
        r = part["mistral_score"].to_numpy(float)
        entry = agreement(r, part["judge_score"].to_numpy(float))
        entry["spearman_expected"] = _spearman(r, part["judge_expected"].to_numpy(float))
        report["by_method"][str(method)] = entry
    answered = int(judge.stats["answered"])
    report["timing"] = {
        "n_answered": answered,
        "n_failed": int(judge.stats["failed"]),
        "n_cached": int(out["judge_cached"].sum()),
        "judge_seconds": float(judge.stats["seconds"]),
        "seconds_per_grade": float(judge.stats["seconds"] / answered) if answered else math.nan,
        "wall_seconds": wall,
        "load_seconds": float(getattr(judge, "load_seconds", 0.0)),
    }
    errors = out.loc[out.judge_error != "", "judge_error"].value_counts()
    report["errors"] = {str(k): int(v) for k, v in errors.items()}
    return report, out


# --------------------------------------------------------------------------- files


def judge_slug(judge_id: str) -> str:
    """A file-name stem for a judge id (``local:qwen2.5-coder-1.5b`` -> ``local_qwen2.5-coder-1.5b``)."""
    return re.sub(r"[^A-Za-z0-9.]+", "_", judge_id).strip("_")


def _write_json(obj: Any, path: Path) -> None:
    text = json.dumps(_finite(obj), indent=2, default=_json_default, allow_nan=False)
    atomic_write_text(path, text + "\n")


def _finite(obj: Any) -> Any:
    """NaN/inf -> None, so the report is strict JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float | np.floating) and not math.isfinite(obj):
        return None
    return obj


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _dataset(frame: pd.DataFrame, report: dict[str, Any], attrs: dict[str, Any]) -> Any:
    import xarray as xr

    from fsnn.store.files import provenance
    from fsnn.store.schema import str_array

    row = np.arange(len(frame))
    probs = frame[[f"p{k}" for k in GRADES]].to_numpy(float)
    ds = xr.Dataset(
        {
            "mistral_score": ("row", frame["mistral_score"].to_numpy(int)),
            "judge_score": ("row", frame["judge_score"].to_numpy(float)),
            "judge_expected": ("row", frame["judge_expected"].to_numpy(float)),
            "judge_probs": (("row", "grade"), probs),
            "judge_error": ("row", str_array(frame["judge_error"].to_numpy())),
            "judge_raw": ("row", str_array(frame["judge_raw"].to_numpy())),
            "confusion": (
                ("mistral_grade", "judge_grade"),
                np.asarray(report["overall"]["confusion"], dtype=int),
            ),
        },
        coords={
            "row": row,
            "grade": list(GRADES),
            "mistral_grade": list(GRADES),
            "judge_grade": list(GRADES),
            "method": ("row", str_array(frame["method"].to_numpy())),
            "prompt_id": ("row", frame["prompt_id"].to_numpy(int)),
            "trial": ("row", frame["trial"].to_numpy(int)),
        },
    )
    ds.attrs = provenance(
        "judge_agreement",
        attrs.get("judge_config"),
        **{k: v for k, v in attrs.items() if k != "judge_config"},
    )
    ds.attrs["report"] = json.dumps(_finite(report), default=_json_default)
    return ds


def agreement_main(
    judge: str | JudgeConfig,
    *,
    release_dir: str | Path | None = None,
    limit: int | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    cache: str | Path | None = "default",
    model: Any = None,
    progress: bool = True,
    split: str = "all",
    n_boot: int = 2000,
) -> dict[str, Any]:
    """Grade the released rows with ``judge``, write ``<out>.json`` and ``<out>.nc``.

    Args:
        judge: a judge spec (``local:MODEL``, ``http:MODEL@URL``, ``mistral``) or config.
        release_dir: the release folder (default ``$FSNN_RELEASE_DIR``).
        limit: grade a stratified subset of this many rows (None: all 1045).
        seed: seed of the subset draw.
        out: output path without suffix (default ``runs/judge_agreement/<judge>``).
        cache: judge cache (``"default"``, a path, or None).
        model: a loaded model for a local judge (else loaded on demand).
        split: ``all`` rows, or only the offline calibration's ``train`` or ``heldout``
            prompts; with ``train``/``heldout`` the report adds ``table``
            (:func:`heldout_table`: agreement and composite accuracy per method with 95%
            bootstrap intervals and the baselines) and, for the offline judge,
            ``simpleqa`` (:func:`simpleqa_check`).
        n_boot: bootstrap replicates of the table.

    Returns:
        The report (also written as JSON), with ``files`` naming what was written.
    """
    from fsnn.store.files import write_dataset

    judge_obj = make_judge(judge, cache=cache, model=model)
    rows = graded_rows(release_dir)
    total = len(rows)
    train_prompts = getattr(getattr(judge_obj, "calibration", None), "train_prompts", None)
    if split != "all" and train_prompts is None:
        from fsnn.judges.offline import load_calibration

        train_prompts = load_calibration().train_prompts
    pool = split_rows(rows, split, train_prompts)
    subset = pool if limit is None else stratified_subset(pool, limit, seed=seed)
    report, frame = run_agreement(judge_obj, subset, progress=progress)
    if split != "all":
        assert train_prompts is not None  # the judge's, or the calibration's (loaded above)
        report["split"] = split
        report["table"] = heldout_table(
            judge_obj,
            rows,
            frame,
            train_prompts=train_prompts,
            release_dir=release_dir,
            n_boot=n_boot,
        )
        if hasattr(judge_obj, "grade_simpleqa") and judge_obj.id.startswith("offline"):
            held = sorted(set(range(260)) - {int(p) for p in train_prompts})
            report["simpleqa"] = simpleqa_check(judge_obj, held, release_dir, graded=frame)
    head = {
        "judge_id": judge_obj.id,
        "reference": "mistral-small-latest, temperature 0 (authors' release)",
        "task": "quality (1-5)",
        "n_rows_release": total,
        "n_rows_graded": len(subset),
        "split": split,
        "subset": "all"
        if len(subset) == total
        else (f"stratified by (method, Mistral grade), proportional, seed {seed}"),
        "rows_by_method": {str(k): int(v) for k, v in subset.groupby("method").size().items()},
    }
    if hasattr(judge_obj, "model") and getattr(judge_obj, "_model", None) is not None:
        head["model"] = judge_obj.model.describe()
    report = {**head, **report, "judge_config": judge_obj.config.to_dict()}
    stem = judge_slug(judge_obj.id) + ("" if split == "all" else f"_{split}")
    base = Path(out) if out else Path("runs") / "judge_agreement" / stem
    json_path = base.with_name(base.name + ".json")
    nc_path = base.with_name(base.name + ".nc")
    report["files"] = {"json": str(json_path), "netcdf": str(nc_path)}
    attrs = {
        "judge_config": judge_obj.config.to_dict(),
        "judge_id": judge_obj.id,
        "subset": head["subset"],
    }
    write_dataset(_dataset(frame, report, attrs), nc_path)
    _write_json(report, json_path)
    return report


def _f(value: Any, digits: int = 3) -> str:
    """A number for a table; ``n/a`` for None/NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def format_report(report: dict[str, Any]) -> str:
    """A short human-readable summary of an agreement report."""
    o, t = report["overall"], report["timing"]
    lines = [
        f"judge {report['judge_id']} vs Mistral: {o['n']} rows graded "
        f"({report['subset']}), {o['n_missing']} missing",
        f"exact {_f(o['exact'], 3)}  within-1 {_f(o['within_1'], 3)}  spearman {_f(o['spearman'], 3)} "
        f"(expected grade {_f(o['spearman_expected'], 3)})  kappa_q {_f(o['kappa_quadratic'], 3)}  "
        f"[always-{o['majority_baseline']['grade']} exact {_f(o['majority_baseline']['exact'], 3)}]",
        f"time per grade {_f(t['seconds_per_grade'], 3)} s ({t['n_answered']} answered, "
        f"{t['n_cached']} cached, load {_f(t['load_seconds'], 1)} s)",
        "confusion (rows Mistral 1-5, columns judge 1-5):",
        *("  " + " ".join(f"{v:5d}" for v in row) for row in o["confusion"]),
    ]
    for method, m in report["by_method"].items():
        lines.append(
            f"  {method:9s} n={m['n']:4d} exact {_f(m['exact'], 3)} within-1 {_f(m['within_1'], 3)} "
            f"spearman {_f(m['spearman'], 3)}"
        )
    lines.append(f"wrote {report['files']['json']} and {report['files']['netcdf']}")
    return "\n".join(lines)


def summary_table(reports: list[dict[str, Any]]) -> str:
    """A markdown table of several agreement reports (one row per judge)."""
    head = (
        "| judge | rows graded | exact | within 1 | Spearman | Spearman E[grade] "
        "| kappa (quadratic) | always-2 exact | s / grade |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in reports:
        o, t = r["overall"], r["timing"]
        rows = f"{o['n']}" + ("" if r["subset"] == "all" else " (stratified)")
        lines.append(
            f"| `{r['judge_id']}` | {rows} | {_f(o['exact'], 3)} | {_f(o['within_1'], 3)} "
            f"| {_f(o['spearman'], 3)} | {_f(o['spearman_expected'], 3)} | {_f(o['kappa_quadratic'], 3)} "
            f"| {_f(o['majority_baseline']['exact'], 3)} | {_f(t['seconds_per_grade'], 2)} |"
        )
    return "\n".join(lines)


def report_json(report: dict[str, Any]) -> str:
    """The report as one JSON object (NaN written as null)."""
    return json.dumps(_finite(report), default=_json_default, allow_nan=False)


# --------------------------------------------------------------------------- held-out table

SPLITS = ("all", "train", "heldout")


def split_rows(rows: pd.DataFrame, split: str, train_prompts: Any = None) -> pd.DataFrame:
    """The rows of one side of the offline judge's prompt split (all methods of a prompt together).

    Args:
        rows: rows with a ``prompt_id`` column.
        split: ``all``, ``train`` (the prompts the offline calibration was fitted on) or
            ``heldout`` (the others).
        train_prompts: the train prompt ids (default: the shipped calibration's).
    """
    if split not in SPLITS:
        raise FsnnError(f"--split must be one of {SPLITS}, not {split!r}")
    if split == "all":
        return rows
    if train_prompts is None:
        from fsnn.judges.offline import load_calibration

        train_prompts = load_calibration().train_prompts
    in_train = rows["prompt_id"].astype(int).isin({int(p) for p in train_prompts})
    return rows[in_train if split == "train" else ~in_train]


def _stats(ref: np.ndarray, jud: np.ndarray) -> dict[str, float]:
    ok = ~np.isnan(jud)
    r, j = ref[ok], jud[ok]
    if len(r) == 0:
        return {k: math.nan for k in ("exact", "within_1", "spearman", "kappa")}
    confusion = np.zeros((5, 5), dtype=int)
    np.add.at(confusion, (r.astype(int) - 1, j.astype(int) - 1), 1)
    return {
        "exact": float(np.mean(r == j)),
        "within_1": float(np.mean(np.abs(r - j) <= 1)),
        "spearman": _spearman(r, j),
        "kappa": _quadratic_kappa(confusion),
    }


def _interval(point: float, samples: list[float]) -> dict[str, Any]:
    s = np.asarray([v for v in samples if not math.isnan(v)], dtype=float)
    if len(s) == 0 or math.isnan(point):
        return {"value": point, "ci95": [math.nan, math.nan]}
    return {"value": point, "ci95": list(percentile_interval(s, quantiles=_QUANTILES_95))}


def heldout_table(
    judge: Any,
    rows: pd.DataFrame,
    graded: pd.DataFrame,
    *,
    train_prompts: Any,
    release_dir: str | Path | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Agreement and composite accuracy per method on ``graded``'s prompts, with baselines.

    Every number has a 95% percentile-bootstrap interval over prompts (seeded; all rows
    of a drawn prompt go in together). Composite accuracy (:func:`fsnn.judges.scoring.composite_accuracy`)
    per method uses the answer the paper evaluated (:func:`fsnn.analysis.release_grades.selected_rows`)
    and TO of its full text, with the judge's grade (``composite_offline``) or
    Mistral's (``composite_reference``).

    Baselines on the same rows: ``always_2``, and ``containment_only`` (grade = the median
    Mistral grade of the TRAIN rows with the same normalised-containment value).

    Args:
        judge: any judge (``grade_quality``).
        rows: all graded rows (:func:`fsnn.analysis.release_grades.graded_rows`); only
            ``train_prompts`` rows are read for the containment baseline.
        graded: the evaluated rows with ``judge_score`` (from :func:`run_agreement`).
        train_prompts: the calibration's train prompt ids.
    """
    from fsnn.judges.offline import features
    from fsnn.judges.scoring import accurate, composite

    from .release_grades import METHODS, selected_rows

    def contained(frame: pd.DataFrame, text_col: str) -> np.ndarray:
        return np.array(
            [
                features(q, t, p)[0]["contain"]
                for q, t, p in zip(frame.question, frame.target, frame[text_col], strict=True)
            ]
        )

    train = split_rows(rows, "train", train_prompts)
    c_train = contained(train, "predicted")
    y_train = train["mistral_score"].to_numpy(int)
    contain_grade = {
        c: float(np.median(y_train[c_train == c])) if (c_train == c).any() else 2.0
        for c in (0.0, 1.0)
    }
    contain_grade = {c: float(math.floor(v)) for c, v in contain_grade.items()}  # median of ints

    ref = graded["mistral_score"].to_numpy(float)
    judged = {
        "judge": graded["judge_score"].to_numpy(float),
        "always_2": np.full(len(graded), 2.0),
        "containment_only": np.vectorize(contain_grade.get)(contained(graded, "predicted")),
    }
    prompts = np.array(sorted(graded["prompt_id"].astype(int).unique()))
    pid = graded["prompt_id"].to_numpy(int)
    rows_of = {p: np.flatnonzero(pid == p) for p in prompts}

    # Per method: 0/1 accurate per prompt with the reference and each judge.
    comp: dict[str, dict[str, np.ndarray]] = {}
    comp_prompts: dict[str, np.ndarray] = {}
    decides: dict[str, np.ndarray] = {}
    for method in METHODS:
        sel = selected_rows(method, release_dir)
        sel = sel[sel["prompt_id"].isin(set(prompts.tolist()))].reset_index(drop=True)
        items = list(zip(sel.question, sel.target, sel.text, strict=True))
        g = judge.grade_quality(items)
        scores = {
            "reference": sel["judge_score"].to_numpy(float),
            "judge": np.array([np.nan if x.value is None else float(x.value) for x in g]),
            "always_2": np.full(len(sel), 2.0),
            "containment_only": np.vectorize(contain_grade.get)(contained(sel, "text")),
        }
        to = sel["token_overlap"].to_numpy(float)
        comp[method] = {k: accurate(composite(to, v)).astype(float) for k, v in scores.items()}
        comp_prompts[method] = sel["prompt_id"].to_numpy(int)
        # Prompts whose verdict the grade can change (accurate with 5, not with 1).
        decides[method] = accurate(composite(to, np.full(len(to), 5.0))) & ~accurate(
            composite(to, np.ones(len(to)))
        )

    rng = np.random.default_rng(seed)
    boot_stats: dict[str, list[dict[str, float]]] = {k: [] for k in judged}
    boot_comp: dict[str, dict[str, list[float]]] = {m: {k: [] for k in comp[m]} for m in METHODS}
    boot_diff: dict[str, dict[str, list[float]]] = {m: {k: [] for k in comp[m]} for m in METHODS}
    pos = {m: {p: i for i, p in enumerate(comp_prompts[m])} for m in METHODS}
    for _ in range(n_boot):
        draw = rng.choice(prompts, size=len(prompts), replace=True)
        idx = np.concatenate([rows_of[p] for p in draw])
        for k, v in judged.items():
            boot_stats[k].append(_stats(ref[idx], v[idx]))
        for m in METHODS:
            ix = np.array([pos[m][p] for p in draw if p in pos[m]], dtype=int)
            for k, acc in comp[m].items():
                boot_comp[m][k].append(float(acc[ix].mean()))
                boot_diff[m][k].append(float(acc[ix].mean() - comp[m]["reference"][ix].mean()))

    def stats_block(name: str) -> dict[str, Any]:
        point = _stats(ref, judged[name])
        return {s: _interval(point[s], [b[s] for b in boot_stats[name]]) for s in point}

    out: dict[str, Any] = {
        "n_prompts": int(len(prompts)),
        "n_rows": int(len(graded)),
        "n_boot": n_boot,
        "boot_seed": seed,
    }
    out.update(stats_block("judge"))
    for m in METHODS:
        c = comp[m]
        out[m] = {
            "n_prompts": int(len(comp_prompts[m])),
            "composite_offline": _interval(float(c["judge"].mean()), boot_comp[m]["judge"]),
            "composite_reference": _interval(
                float(c["reference"].mean()), boot_comp[m]["reference"]
            ),
            "composite_diff": _interval(
                float(c["judge"].mean() - c["reference"].mean()), boot_diff[m]["judge"]
            ),
            "n_grade_decides": int(decides[m].sum()),
            "verdicts_agree": int((c["judge"] == c["reference"]).sum()),
            "verdicts_agree_where_grade_decides": int(
                (c["judge"] == c["reference"])[decides[m]].sum()
            ),
        }
    out["baselines"] = {}
    for name in ("always_2", "containment_only"):
        block = stats_block(name)
        for m in METHODS:
            c = comp[m]
            block[f"composite_{m}"] = _interval(float(c[name].mean()), boot_comp[m][name])
            block[f"composite_diff_{m}"] = _interval(
                float(c[name].mean() - c["reference"].mean()), boot_diff[m][name]
            )
            block[f"verdicts_agree_where_grade_decides_{m}"] = int(
                (c[name] == c["reference"])[decides[m]].sum()
            )
        out["baselines"][name] = block
    out["baselines"]["containment_only"]["rule"] = {
        "grade_if_contained": contain_grade[1.0],
        "grade_if_not": contain_grade[0.0],
        "fitted_on": "train prompts",
    }
    return out


def simpleqa_check(
    judge: Any,
    heldout_prompts: Any,
    release_dir: str | Path | None = None,
    graded: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """The judge's SimpleQA letters against what the release says about them.

    The release's only SimpleQA rubric grades are in ``incorrect.csv``: the 260 initial
    answers of the study's prompts, all graded INCORRECT. Reported on the held-out
    prompts: the share the judge also grades INCORRECT (95% Wilson interval). Where
    only 1-5 grades exist (``graded``, the held-out graded rows), the letter CORRECT is
    compared with Mistral's grade >= JUDGE_THRESHOLD (accuracy, and the counts). The
    other 240 answers of ``simpleqa_initial_outputs.csv`` carry no released grade; the
    judge's letters on them are counted for information only.
    """
    from fsnn.judges.scoring import JUDGE_THRESHOLD

    from .release_grades import release_table

    inc = release_table("incorrect.csv", release_dir)
    init = release_table("simpleqa_initial_outputs.csv", release_dir)
    held = inc.iloc[sorted(int(p) for p in heldout_prompts)]
    others = init[~init["prompt"].isin(set(inc["prompt"]))]

    def letters(q: Any, t: Any, p: Any) -> list[str]:
        items = list(zip(q.astype(str), t.astype(str), p.fillna("").astype(str), strict=True))
        return [str(g.value) for g in judge.grade_simpleqa(items)]

    a = letters(held["prompt"], held["ground_truth"], held["response"])
    b = letters(others["prompt"], others["ground_truth"], others["response"])
    out: dict[str, Any] = {
        "heldout_incorrect_csv": {
            "n": len(a),
            "judge_incorrect": _rate(sum(v == "INCORRECT" for v in a), len(a)),
            "counts": _counts(a),
        },
        "unlabelled_other_240": {"n": len(b), "counts": _counts(b)},
    }
    if graded is not None and len(graded):
        c = letters(graded["question"], graded["target"], graded["predicted"])
        good = graded["mistral_score"].to_numpy(int) >= JUDGE_THRESHOLD
        said = np.array([v == "CORRECT" for v in c])
        out["heldout_graded_rows"] = {
            "n": len(c),
            "correct_vs_mistral_ge_threshold": _rate(int(np.sum(said == good)), len(c)),
            "mistral_ge_threshold": int(good.sum()),
            "judge_correct": int(said.sum()),
            "both": int((said & good).sum()),
            "counts": _counts(c),
        }
    return out


def _counts(values: list[str]) -> dict[str, int]:
    return {k: values.count(k) for k in ("CORRECT", "INCORRECT", "NOT_ATTEMPTED")}


def _rate(k: int, n: int) -> dict[str, Any]:
    """k/n with a 95% Wilson interval."""
    if n == 0:
        return {"value": math.nan, "ci95": [math.nan, math.nan]}
    return {"value": k / n, "ci95": list(wilson_interval(k, n, z=_Z_95))}


def split_markdown(report: dict[str, Any], *, extra: Sequence[dict[str, Any]] = ()) -> str:
    """Markdown of a ``--split`` report's table: the judge, its baselines, and ``extra``
    judges' reports on the same split (one row each), every value with its 95% interval.
    """

    def cell(x: dict[str, Any] | None, pct: bool = False) -> str:
        if (
            not x
            or x.get("value") is None
            or (isinstance(x["value"], float) and math.isnan(x["value"]))
        ):
            return "n/a"
        k = 100 if pct else 1
        d = 1 if pct else 3
        lo, hi = x["ci95"]
        if lo is None or hi is None:
            return f"{k * x['value']:.{d}f}"
        return f"{k * x['value']:.{d}f} [{k * lo:.{d}f}, {k * hi:.{d}f}]"

    t = report["table"]
    head = (
        "| grades | exact | within 1 | Spearman | kappa (quadratic) | composite baseline (%) "
        "| composite full (%) | composite segmented (%) |\n|---|---|---|---|---|---|---|---|"
    )
    lines = [
        head,
        "| Mistral (reference) | 1 | 1 | 1 | 1 | "
        + " | ".join(
            cell(t[m]["composite_reference"], True) for m in ("baseline", "full", "segmented")
        )
        + " |",
    ]

    def row(name: str, block: dict[str, Any], comp: dict[str, Any]) -> str:
        return (
            f"| {name} | {cell(block['exact'])} | {cell(block['within_1'])} | {cell(block['spearman'])} "
            f"| {cell(block['kappa'])} | "
            + " | ".join(cell(comp[m], True) for m in ("baseline", "full", "segmented"))
            + " |"
        )

    for r in [report, *extra]:
        tt = r["table"]
        lines.append(
            row(
                f"`{r['judge_id']}`",
                tt,
                {
                    m: tt[m]["composite_offline"]
                    for m in tt
                    if m in ("baseline", "full", "segmented")
                },
            )
        )
    for name, b in t["baselines"].items():
        lines.append(
            row(
                name.replace("_", " "),
                b,
                {m: b[f"composite_{m}"] for m in ("baseline", "full", "segmented")},
            )
        )
    return "\n".join(lines)
