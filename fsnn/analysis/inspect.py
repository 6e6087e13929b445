"""Look at a run: ``fsnn show`` (per prompt) and ``fsnn compare`` (several runs).

``fsnn show RUN`` lists the prompts sorted by the steering gain (steered minus baseline
on the composite when the run was judged, else on token overlap); ``fsnn show RUN
--prompt ID`` prints one prompt: question, gold answer, the baseline and steered
completions side by side (wrapped to the terminal; ``--diff`` prints a unified diff
instead), the best trial's strengths and every trial's scores from ``trials.nc`` (or
the release's graded trials from ``trial_grades.nc``).

``fsnn compare RUN_A RUN_B ...`` prints one table of the summary statistics of every
run (95% intervals, :mod:`fsnn.analysis.summary`) and, where two runs share prompts (same
SimpleQA id and question), the paired difference of each later run against the first
on those prompts. Runs of different models or datasets are refused unless
``--allow-different``.

A run folder is any folder holding an fsnn ``results.nc`` (our runs and an imported
release alike); anything else is a one-line :class:`~fsnn.errors.FsnnError`. Runs are
opened by the one reader, :func:`fsnn.store.files.open_run` (``require=("results",)``):
this module only looks at the :class:`~fsnn.store.files.Run` it returns.
"""

from __future__ import annotations

import difflib
import json
import shutil
import textwrap
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from fsnn.errors import FsnnError
from fsnn.store import files as _files
from fsnn.store.files import Run

from .stats import DEFAULT_N_BOOT, DEFAULT_SEED, mcnemar_exact, paired_bootstrap_diff
from .summary import LEADING, MEAN_TO, METRICS, fmt_diff, fmt_mean, fmt_rate, outcomes, summarize

__all__ = [
    "compare_runs",
    "format_compare",
    "format_prompt",
    "format_prompt_table",
    "prompt_table",
    "resolve_prompt",
    "run_dataset",
    "run_model",
    "side_by_side",
]


def _results_config(run: Run) -> dict[str, Any]:
    """The config recorded in ``results.nc``: an imported release has no ``config.json``."""
    try:
        value = json.loads(run.require("results").attrs.get("config") or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def run_model(run: Run) -> str:
    """The model a run's results come from (``results.nc``'s provenance), "?" when unknown."""
    model = run.require("results").attrs.get("model") or _results_config(run).get("model")
    return str(model or "?")


def run_dataset(run: Run) -> str:
    """What the prompts were drawn from: the SimpleQA file's sha256, or the release."""
    cfg = _results_config(run)
    if cfg.get("simpleqa_sha256"):
        return f"SimpleQA sha256 {str(cfg['simpleqa_sha256'])[:12]}"
    if cfg.get("source") == "release":
        return "the authors' release"
    return "unknown"


def _open_results_run(path: str | Path) -> Run:
    """0.2's ``open_run`` of this module: :func:`fsnn.store.files.open_run` needing results."""
    return _files.open_run(path, require=("results",))


# 0.2 names of this module -> the one reader (issue 23); they go away with ``fsnn.inspect``
_DEPRECATED = {"RunFolder": ("fsnn.store.files.Run", Run),
               "open_run": ('fsnn.store.files.open_run(path, require=("results",))', _open_results_run)}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name not in _DEPRECATED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    new, value = _DEPRECATED[name]
    warnings.warn(
        f"{__name__}.{name} is now {new}; the old name goes away after 0.3",
        FutureWarning,
        stacklevel=2,
    )
    return value


# ------------------------------------------------------------------------- show


def _steered(run: Run, method: str | None) -> list[str]:
    steered = [m for m in run.methods if m != "baseline"]
    if method is None:
        return steered
    if method not in run.methods:
        raise FsnnError(
            f"method {method!r} is not in {run.path} (methods: {', '.join(run.methods)})"
        )
    if method == "baseline":
        raise FsnnError("--method names a steered method; baseline is always shown")
    return [method]


def _gain_metric(results: xr.Dataset) -> str:
    """composite when any judge score exists, else token overlap."""
    judge = np.asarray(results["judge_score"].values, dtype=float)
    return "composite" if np.isfinite(judge).any() else "token_overlap"


def _ids(results: xr.Dataset) -> np.ndarray:
    if "simpleqa_id" in results.coords:
        return np.asarray(results["simpleqa_id"].values, dtype=np.int64)
    return np.full(results.sizes["prompt"], -1, dtype=np.int64)


def resolve_prompt(run: Run, prompt_id: int) -> int:
    """Position in ``results`` of a SimpleQA id (or of a position when a run has no ids).

    Raises:
        FsnnError: the id is not a prompt of this run.
    """
    res = run.require("results")
    ids = _ids(res)
    n = res.sizes["prompt"]
    if (ids >= 0).any():
        hit = np.flatnonzero(ids == prompt_id)
        if hit.size:
            return int(hit[0])
        shown = ", ".join(str(i) for i in sorted(ids.tolist())[:8]) + (", ..." if n > 8 else "")
        raise FsnnError(
            f"prompt {prompt_id} is not in {run.path} ({n} prompts; SimpleQA ids {shown})"
        )
    if 0 <= prompt_id < n:
        return prompt_id
    raise FsnnError(
        f"prompt {prompt_id} is not in {run.path} (no SimpleQA ids; positions 0..{n - 1})"
    )


def prompt_table(run: Run, method: str | None = None) -> list[dict[str, Any]]:
    """One row per prompt, sorted by the steering gain (largest first).

    Returns:
        dicts with ``position``, ``simpleqa_id``, ``question``, ``answer``, ``metric``
        (what the gain is measured on), ``baseline`` (its value), ``<method>`` (each
        steered method's value), ``gain`` (the largest steered minus baseline).
    """
    res = run.require("results")
    metric = _gain_metric(res)
    steered = _steered(run, method)
    ids = _ids(res)
    values = {m: np.asarray(res[metric].sel({"method": m}).values, dtype=float) for m in ["baseline", *steered]
              if m in run.methods}  # fmt: skip
    base = values.get("baseline", np.zeros(res.sizes["prompt"]))
    rows: list[dict[str, Any]] = []
    for i in range(res.sizes["prompt"]):
        gains = [values[m][i] - base[i] for m in steered if np.isfinite(values[m][i] - base[i])]
        rows.append({
            "position": i, "simpleqa_id": int(ids[i]), "question": str(res["question"].values[i]),
            "answer": str(res["answer"].values[i]), "metric": metric,
            **{m: float(v[i]) for m, v in values.items()},
            "gain": max(gains) if gains else float("nan"),
        })  # fmt: skip
    rows.sort(key=lambda r: (-r["gain"] if np.isfinite(r["gain"]) else np.inf, r["position"]))
    return rows


def _width(width: int | None) -> int:
    return max(40, width if width else shutil.get_terminal_size((100, 24)).columns)


def format_prompt_table(run: Run, method: str | None = None, *, width: int | None = None,
                        limit: int | None = None) -> str:  # fmt: skip
    """The prompts sorted by steering gain, as a fixed-width table."""
    rows = prompt_table(run, method)
    steered = _steered(run, method)
    cols = ["id", "gain", "baseline", *steered]
    short = {"composite": "S_eval", "token_overlap": "TO"}[rows[0]["metric"]] if rows else ""
    head = f"{'id':>6} {'gain':>6} " + " ".join(f"{c[:9]:>9}" for c in cols[2:]) + "  question"
    lines = [f"{len(rows)} prompts of {run.path}, sorted by the steering gain on {short} "
             f"(best steered minus baseline); `fsnn show {run.path} --prompt ID` for one", head]  # fmt: skip
    room = _width(width) - len(head) + len("question")
    for r in rows[: limit or None]:
        ident = r["simpleqa_id"] if r["simpleqa_id"] >= 0 else r["position"]
        vals = " ".join(f"{r[c]:>9.2f}" for c in cols[2:])
        gain = f"{r['gain']:+6.2f}" if np.isfinite(r["gain"]) else f"{'n/a':>6}"
        lines.append(
            f"{ident:>6} {gain} {vals}  {textwrap.shorten(r['question'], max(room, 20), placeholder='…')}"
        )
    if limit and len(rows) > limit:
        lines.append(f"... {len(rows) - limit} more (--limit 0 for all)")
    return "\n".join(lines)


def _wrap(text: str, width: int) -> list[str]:
    out: list[str] = []
    for para in text.split("\n"):
        out += textwrap.wrap(para, width, replace_whitespace=False, drop_whitespace=True) or [""]
    return out


def side_by_side(left: str, right: str, width: int, titles: tuple[str, str] = ("", "")) -> str:
    """Two texts in columns wrapped to ``width`` in all; ``|`` joins equal lines, ``*`` differing ones.

    Plain text, no colour: the output can be saved and diffed.
    """
    col = max(10, (width - 3) // 2)
    a, b = _wrap(left, col), _wrap(right, col)
    a += [""] * (len(b) - len(a))
    b += [""] * (len(a) - len(b))
    lines = [f"{titles[0][:col]:<{col}} | {titles[1][:col]}", f"{'-' * col}-+-{'-' * col}"]
    for x, y in zip(a, b, strict=True):
        lines.append(f"{x:<{col}} {'|' if x == y else '*'} {y}".rstrip())
    return "\n".join(lines)


def unified_diff(left: str, right: str, width: int, names: tuple[str, str]) -> str:
    """A unified diff of the two texts wrapped to ``width`` (one wrapped line per diff line)."""
    return "\n".join(
        difflib.unified_diff(
            _wrap(left, width), _wrap(right, width), names[0], names[1], lineterm=""
        )
    )


def _scores(res: xr.Dataset, m: str, i: int) -> str:
    def get(name: str) -> float:
        return float(res[name].sel({"method": m}).values[i]) if name in res else float("nan")

    parts = [f"TO {get('token_overlap'):.2f}"]
    for name, label, fmt in (("perplexity", "PPL", ".1f"), ("objective", "S_opt", ".3f"),
                             ("judge_score", "judge", ".0f"), ("composite", "S_eval", ".2f")):  # fmt: skip
        v = get(name)
        if np.isfinite(v):
            parts.append(f"{label} {v:{fmt}}")
    if "simpleqa_grade" in res and str(res["simpleqa_grade"].sel({"method": m}).values[i]):
        parts.append(str(res["simpleqa_grade"].sel({"method": m}).values[i]))
    if "judge_error" in res and str(res["judge_error"].sel({"method": m}).values[i]):
        parts.append(f"judge failed: {res['judge_error'].sel({'method': m}).values[i]}")
    return ", ".join(parts)


def _trial_lines(run: Run, m: str, sid: int, i: int) -> list[str]:
    t = run.trials
    if t is not None and m in [str(x) for x in t["method"].values]:
        tm = t.sel({"method": m})
        j = i
        if "simpleqa_id" in t.coords and sid >= 0:
            hit = np.flatnonzero(np.asarray(t["simpleqa_id"].values) == sid)
            if not hit.size:
                return [f"  trials ({m}): none for this prompt in trials.nc"]
            j = int(hit[0])
        tp = tm.isel(prompt=j)
        ag_all = np.asarray(tp["alpha"].values, dtype=float) * np.asarray(
            tp["gamma"].values, dtype=float
        )
        ag_all = ag_all.reshape(t.sizes["trial"], -1)  # (trial, segment)
        own = np.isfinite(ag_all).any(axis=0)  # this method's segments (others are NaN)
        segs = (
            [str(s) for s, keep in zip(t["segment"].values, own, strict=True) if keep]
            if "segment" in t.dims
            else []
        )
        lines = [
            f"  trials ({m}): "
            + "  ".join(["trial", *[f"α·γ {s}" for s in segs], "TO", "PPL", "S_opt", "best"])
        ]
        for k in range(t.sizes["trial"]):
            obj = float(tp["objective"].values[k])
            if not np.isfinite(obj):
                continue
            ag = ag_all[k][own]
            best = "*" if "is_best" in tp and int(tp["is_best"].values[k]) == 1 else ""
            lines.append(f"    {k:>3}  " + "  ".join(f"{v:.3f}" for v in ag)
                         + f"  {float(tp['token_overlap'].values[k]):.2f}  {float(tp['perplexity'].values[k]):.1f}"
                         + f"  {obj:+.3f}  {best}")  # fmt: skip
        return lines
    g = run.trial_grades
    if g is not None and m in [str(x) for x in g["method"].values]:
        gp = g.sel({"method": m}).isel(prompt=i)
        rows = [(k, float(gp["judge_score"].values[k]), float(gp["token_overlap"].values[k]),
                 int(gp["is_best"].values[k])) for k in range(g.sizes["trial"])
                if str(gp["text"].values[k])]  # fmt: skip
        if not rows:
            return [f"  graded trials ({m}): none released for this prompt"]
        lines = [
            f"  graded trials ({m}, release; trial = order in the grader file): trial  judge  TO  best"
        ]
        lines += [f"    {k:>3}  {s:.0f}  {to:.2f}  {'*' if b else ''}" for k, s, to, b in rows]
        return lines
    return [f"  trials ({m}): no trials.nc in this run folder"]


def format_prompt(run: Run, prompt_id: int, method: str | None = None, *, width: int | None = None,
                  diff: bool = False) -> str:  # fmt: skip
    """Everything about one prompt (see the module docstring)."""
    i = resolve_prompt(run, prompt_id)
    res = run.require("results")
    w = _width(width)
    sid = int(_ids(res)[i])
    lines = [f"prompt {prompt_id} of {run.path} (position {i}, SimpleQA id {sid})"]
    if "topic" in res.coords and str(res["topic"].values[i]):
        lines[0] += f", topic {res['topic'].values[i]}"
    lines += textwrap.wrap(f"Question: {res['question'].values[i]}", w)
    lines.append(f"Gold answer: {res['answer'].values[i]}")
    if "answer_simpleqa" in res.coords and str(res["answer_simpleqa"].values[i]) not in (
        "",
        str(res["answer"].values[i]),
    ):
        lines.append(
            f"SimpleQA's answer: {res['answer_simpleqa'].values[i]} (the release used the one above)"
        )
    if "baseline_grade" in res:
        lines.append(f"baseline grade that selected it: {res['baseline_grade'].values[i]}")
    base = (
        str(res["completion"].sel({"method": "baseline"}).values[i])
        if "baseline" in run.methods
        else ""
    )
    for m in _steered(run, method):
        text = str(res["completion"].sel({"method": m}).values[i])
        lines += ["", f"== baseline vs {m} ==",
                  f"  baseline: {_scores(res, 'baseline', i)}" if "baseline" in run.methods else "",
                  f"  {m}: {_scores(res, m, i)}"]  # fmt: skip
        if "alpha" in res and "gamma" in res:
            a = np.asarray(res["alpha"].sel({"method": m}).values[i], dtype=float).reshape(-1)
            g = np.asarray(res["gamma"].sel({"method": m}).values[i], dtype=float).reshape(-1)
            segs = (
                [str(s) for s in res["segment"].values]
                if "segment" in res.dims
                else ["all"] * a.size
            )
            # methods joined on the union of segments: a method's other segments are NaN
            lines.append("  best trial: " + (", ".join(f"{s} α={x:.3f} γ={y:.3f} (α·γ={x * y:.3f})"
                                                       for s, x, y in zip(segs, a, g, strict=True)
                                                       if np.isfinite(x * y)) or "no strengths"))  # fmt: skip
        lines += _trial_lines(run, m, sid, i)
        lines.append("")
        lines.append(unified_diff(base, text, w, ("baseline", m)) if diff
                     else side_by_side(base, text, w, ("baseline", m)))  # fmt: skip
    return "\n".join(line for line in lines if line is not None)


# ---------------------------------------------------------------------- compare

_ORDER = [*LEADING, MEAN_TO, *[k for k, _ in METRICS if k not in LEADING]]


def _shared(a: xr.Dataset, b: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Positions in ``a`` and ``b`` of the prompts they share (same SimpleQA id and question)."""
    key_a = {(int(s), str(q)): i for i, (s, q) in enumerate(zip(_ids(a), a["question"].values, strict=True))
             if int(s) >= 0}  # fmt: skip
    pa, pb = [], []
    for j, (s, q) in enumerate(zip(_ids(b), b["question"].values, strict=True)):
        i = key_a.get((int(s), str(q)))
        if i is not None:
            pa.append(i)
            pb.append(j)
    return np.asarray(pa, dtype=np.int64), np.asarray(pb, dtype=np.int64)


def compare_runs(runs: Sequence[Run], *, allow_different: bool = False, n_boot: int = DEFAULT_N_BOOT,
                 seed: int = DEFAULT_SEED) -> dict[str, Any]:  # fmt: skip
    """The summaries of several runs and the paired differences of each later run vs the first.

    Returns:
        ``{"runs": [{"label", "path", "model", "dataset", "summary"}], "metrics": [...], "paired": [{"run",
        "method", "vs", "n", "metrics": {key: diff}}]}``; diffs as :func:`fsnn.analysis.summary.summarize`'s.

    Raises:
        FsnnError: fewer than two runs, or runs of another model or dataset than the
            first without ``allow_different``.
    """
    if len(runs) < 2:
        raise FsnnError("compare needs at least two run folders")
    first = runs[0]
    if not allow_different:
        for r in runs[1:]:
            for what, x, y in (
                ("model", run_model(first), run_model(r)),
                ("dataset", run_dataset(first), run_dataset(r)),
            ):
                if x != y:
                    raise FsnnError(f"runs differ in {what}: {first.path} has {x}, {r.path} has {y} "
                                    "(pass --allow-different to compare them anyway)")  # fmt: skip
    labels = [chr(ord("A") + k) if k < 26 else f"R{k}" for k in range(len(runs))]
    out: dict[str, Any] = {"runs": [], "paired": []}
    for label, r in zip(labels, runs, strict=True):
        out["runs"].append({"label": label, "path": str(r.path), "model": run_model(r), "dataset": run_dataset(r),
                            "summary": summarize(r.require("results"), n_boot=n_boot, seed=seed)})  # fmt: skip
    out["metrics"] = _union_metrics([r["summary"] for r in out["runs"]])
    keys = [m["key"] for m in out["metrics"]]
    for label, r in zip(labels[1:], runs[1:], strict=True):
        pa, pb = _shared(first.require("results"), r.require("results"))
        for m in [m for m in r.methods if m in first.methods]:
            oa = outcomes(first.require("results"), m)
            ob = outcomes(r.require("results"), m)
            metrics: dict[str, Any] = {}
            for k in keys:
                va, vb = oa.get(k), ob.get(k)
                if va is None or vb is None or pa.size == 0:
                    metrics[k] = None
                    continue
                x, y = vb[pb], va[pa]
                both = np.isfinite(x) & np.isfinite(y)
                d = paired_bootstrap_diff(x[both], y[both], n_boot=n_boot, seed=seed).as_dict()
                if k != MEAN_TO and both.any():
                    t = mcnemar_exact(x[both], y[both])
                    d.update(mcnemar_p=t.p, better=t.b, worse=t.c)
                metrics[k] = d
            out["paired"].append(
                {"run": label, "method": m, "vs": labels[0], "n": int(pa.size), "metrics": metrics}
            )
    return out


def _union_metrics(summaries: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Every metric any run has, in the summary's order (a run without one shows n/a)."""
    seen: dict[str, dict[str, str]] = {}
    for s in summaries:
        for m in s["metrics"]:
            seen.setdefault(m["key"], m)
    # summarize() orders readable first, then the rest; keep that order across runs
    return sorted(seen.values(), key=lambda m: _ORDER.index(m["key"]) if m["key"] in _ORDER else 99)


def format_compare(comparison: dict[str, Any]) -> str:
    """The comparison as fixed-width tables: one row per run and method, then the paired diffs."""
    runs = comparison["runs"]
    metrics = comparison["metrics"]
    lines = [f"{r['label']} = {r['path']}: {r['model']}, {r['dataset']}, mode {r['summary']['mode'] or '?'}, "
             f"judge {r['summary']['judge']}" for r in runs]  # fmt: skip
    grid = [["run", "method", "prompts", *[m["label"] for m in metrics]]]
    for r in runs:
        for e in r["summary"]["methods"]:
            cells = [fmt_mean(e[MEAN_TO]) if m["key"] == MEAN_TO else fmt_rate(e["rates"].get(m["key"]), e["prompts"])
                     for m in metrics]  # fmt: skip
            grid.append([r["label"], e["method"], str(e["prompts"]), *cells])
    parts = ["\n".join(lines), _table(grid)]
    if comparison["paired"]:
        pgrid = [["paired (same prompts)", "shared", *[m["label"] for m in metrics]]]
        for p in comparison["paired"]:
            name = f"{p['run']}:{p['method']} - {p['vs']}:{p['method']}"
            if p["n"] == 0:
                pgrid.append([name, "0", *["no shared prompts"] * len(metrics)])
                continue
            pgrid.append([name, str(p["n"]), *[fmt_diff(p["metrics"].get(m["key"]), rate=m["key"] != MEAN_TO)
                                               for m in metrics]])  # fmt: skip
        parts.append(_table(pgrid))
    s = runs[0]["summary"]
    parts.append(f"[low, high]: 95% {s['interval']} ({s['n_boot']} resamples, seed {s['seed']}); "
                 "prompts shared = same SimpleQA id and question")  # fmt: skip
    return "\n\n".join(parts)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    text = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join([text[0], "-" * len(text[0]), *text[1:]])
