"""Judge agreement: grade the 1045 released answers with another judge, compare to Mistral.

``fsnn judge-agreement --judge local:MODEL [--release-dir DIR] [--limit N]`` grades the
released answers (:func:`fsnn.judges.release.graded_rows`) on the 1-5 quality rubric
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

import argparse
import json
import math
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import FsnnError
from ..store import atomic_write_text
from .base import Judge, JudgeConfig
from .factory import make_judge
from .release import graded_rows

__all__ = [
    "GRADES",
    "add_commands",
    "agreement",
    "agreement_main",
    "format_report",
    "judge_slug",
    "run_agreement",
    "stratified_subset",
    "summary_table",
]

GRADES = (1, 2, 3, 4, 5)


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

    from ..store import provenance, str_array

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

    Returns:
        The report (also written as JSON), with ``files`` naming what was written.
    """
    from ..store import write_dataset

    judge_obj = make_judge(judge, cache=cache, model=model)
    rows = graded_rows(release_dir)
    total = len(rows)
    subset = rows if limit is None else stratified_subset(rows, limit, seed=seed)
    report, frame = run_agreement(judge_obj, subset, progress=progress)
    head = {
        "judge_id": judge_obj.id,
        "reference": "mistral-small-latest, temperature 0 (authors' release)",
        "task": "quality (1-5)",
        "n_rows_release": total,
        "n_rows_graded": len(subset),
        "subset": "all"
        if len(subset) == total
        else (f"stratified by (method, Mistral grade), proportional, seed {seed}"),
        "rows_by_method": {str(k): int(v) for k, v in subset.groupby("method").size().items()},
    }
    if hasattr(judge_obj, "model") and getattr(judge_obj, "_model", None) is not None:
        head["model"] = judge_obj.model.describe()
    report = {**head, **report, "judge_config": judge_obj.config.to_dict()}
    base = Path(out) if out else Path("runs") / "judge_agreement" / judge_slug(judge_obj.id)
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


# --------------------------------------------------------------------------- CLI


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "judge-agreement",
        help="grade the 1045 released answers with a judge and compare with Mistral's grades",
    )
    p.add_argument("--judge", required=True, help="local:MODEL, http:MODEL@BASE_URL or mistral")
    p.add_argument("--release-dir", help="the authors' release folder (default $FSNN_RELEASE_DIR)")
    p.add_argument("--limit", type=int, help="grade a stratified subset of N rows")
    p.add_argument("--seed", type=int, default=0, help="seed of the --limit subset (default 0)")
    p.add_argument(
        "--out", help="output path without suffix (default runs/judge_agreement/<judge>)"
    )
    p.add_argument(
        "--cache", help="judge cache file (default $FSNN_CACHE_DIR/judges/answers.sqlite)"
    )
    p.add_argument("--no-cache", action="store_true", help="do not read or write the judge cache")
    p.add_argument("--api-key-env", help="http judges: NAME of the env variable with the API key")
    p.add_argument("--concurrency", type=int, help="http judges: requests in flight")
    p.add_argument("--batch-size", type=int, help="local judges: prompts per forward pass")
    p.add_argument("--device", help="local judges: torch device")
    p.add_argument("--dtype", help="local judges: float32, bfloat16, float16")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    overrides = {
        "api_key_env": args.api_key_env,
        "concurrency": args.concurrency,
        "batch_size": args.batch_size,
        "device": args.device,
        "dtype": args.dtype,
    }
    config = JudgeConfig.from_spec(args.judge, **overrides)
    cache: str | None = None if args.no_cache else (args.cache or "default")
    report = agreement_main(
        config,
        release_dir=args.release_dir,
        limit=args.limit,
        seed=args.seed,
        out=args.out,
        cache=cache,
        progress=not args.no_progress,
    )
    print(format_report(report))
    return 0
