"""The one summary of a results dataset: rates with 95% intervals, paired tests vs baseline.

Used by ``fsnn run`` (``summary.md``/``summary.json``), the release import, ``fsnn
compare`` and ``fsnn report``, so every place shows the same numbers.

Per method: prompts, and first the headline rate **states the answer**
(:func:`fsnn.judges.states_answer.states_answer`: readable, and every content token of the
gold answer that the question lacks appears in the completion; validated against hand
labels, docs/answer_check.md), computed from the stored completions, so every run and
the release import have it; then mean TO and the paper's rates TO >= 0.5 (with "TO >= 0.5
& readable" when ``results.nc`` holds ``readable``), composite >= 0.6, judge >= 4 and SimpleQA
CORRECT, each with a seeded percentile-bootstrap 95% interval over prompts
(:mod:`fsnn.analysis.stats`). Each steered method is compared with ``baseline`` on the same
prompts: the paired bootstrap interval of the difference and the exact McNemar p-value.
Thresholds come from :mod:`fsnn.judges.scoring`.

Denominators (who counts), decided in :func:`outcomes` and nowhere else:

- TO: prompts with a text (NaN TO = no text, left out).
- composite and judge: a prompt without a judge score counts as a failure when the
  run's ``judge_missing`` attribute is ``zero`` (the release), and leaves the
  denominator when it is ``exclude``. A method without any judge score shows ``n/a``.
- SimpleQA CORRECT: prompts with a grade (``""`` = not graded, left out and counted).

Failed judge calls (``judge_error`` (method, prompt) str, "" = fine) are counted and
shown ("k judge failures"), so a question never leaves a denominator silently.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from fsnn.errors import FsnnError
from fsnn.judges.scoring import (
    COMPOSITE_THRESHOLD,
    JUDGE_THRESHOLD,
    TOKEN_OVERLAP_THRESHOLD,
    accurate,
)
from fsnn.judges.states_answer import states_answer_many
from fsnn.store.files import atomic_write_text

from .stats import (
    DEFAULT_N_BOOT,
    DEFAULT_SEED,
    bootstrap_mean,
    mcnemar_exact,
    paired_bootstrap_diff,
    wilson_interval,
)

__all__ = [
    "METRICS",
    "format_summary",
    "metric_labels",
    "outcomes",
    "summarize",
    "summary_rows",
    "summary_table",
    "write_summary",
]

STATES_ANSWER = "states_answer"
READABLE_TO = f"readable_token_overlap_ge_{TOKEN_OVERLAP_THRESHOLD:g}"
TO_RATE = f"token_overlap_ge_{TOKEN_OVERLAP_THRESHOLD:g}"
COMPOSITE_RATE = f"composite_ge_{COMPOSITE_THRESHOLD:g}"
JUDGE_RATE = f"judge_ge_{JUDGE_THRESHOLD:g}"
CORRECT_RATE = "simpleqa_correct"

# Rate keys and their labels, in the order the table shows them.
METRICS: tuple[tuple[str, str], ...] = (
    (STATES_ANSWER, "states the answer"),
    (READABLE_TO, f"TO >= {TOKEN_OVERLAP_THRESHOLD:g} & readable"),
    (TO_RATE, f"TO >= {TOKEN_OVERLAP_THRESHOLD:g}"),
    (COMPOSITE_RATE, f"composite >= {COMPOSITE_THRESHOLD:g}"),
    (JUDGE_RATE, f"judge >= {JUDGE_THRESHOLD:g}"),
    (CORRECT_RATE, "SimpleQA CORRECT"),
)
MEAN_TO = "mean_token_overlap"
LEADING = (STATES_ANSWER, READABLE_TO)  # shown before the mean TO (summary, compare, report)


def metric_labels() -> dict[str, str]:
    """Rate key -> table label, plus the mean TO."""
    return {MEAN_TO: "mean TO", **dict(METRICS)}


def _floats(ds: xr.Dataset, name: str, method: str) -> np.ndarray | None:
    if name not in ds:
        return None
    return np.asarray(ds[name].sel({"method": method}).values, dtype=float).reshape(-1)


def _required_floats(ds: xr.Dataset, name: str, method: str) -> np.ndarray:
    """:func:`_floats` of a variable the ``results.nc`` schema requires (a clear error if absent)."""
    values = _floats(ds, name, method)
    if values is None:
        raise FsnnError(f"results dataset has no {name!r} variable (results.nc requires it)")
    return values


def _strings(ds: xr.Dataset, name: str, method: str) -> np.ndarray | None:
    if name not in ds:
        return None
    return np.array(
        [str(v) for v in np.ravel(ds[name].sel({"method": method}).values)], dtype=object
    )


def judge_missing_rule(results: xr.Dataset) -> str:
    """``zero`` (release parity, default) or ``exclude``, from the dataset's attributes."""
    return str(results.attrs.get("judge_missing") or "zero")


def outcomes(results: xr.Dataset, method: str) -> dict[str, np.ndarray | None]:
    """Per-prompt outcome of every metric of one method: the only place denominators are set.

    Args:
        results: dims (method, prompt) in the :mod:`fsnn.store.files` schema.
        method: one of ``results.method``.

    Returns:
        key -> float array (prompt,): 1.0/0.0 for a rate (the TO value for the mean TO),
        NaN where the prompt is out of that metric's denominator; None when the metric
        does not exist for this dataset (no judge scores, no grades, no ``readable``).
    """
    out: dict[str, np.ndarray | None] = {}
    out[STATES_ANSWER] = _states_answer(results, method)
    to = _required_floats(results, "token_overlap", method)
    has_to = np.isfinite(to)
    with np.errstate(invalid="ignore"):
        to_ok = np.where(has_to, (to >= TOKEN_OVERLAP_THRESHOLD).astype(float), np.nan)
    out[MEAN_TO] = np.where(has_to, to, np.nan)
    readable = _floats(results, "readable", method)
    if readable is None:
        out[READABLE_TO] = None
    else:
        known = has_to & np.isin(readable, (0.0, 1.0))
        out[READABLE_TO] = np.where(known, to_ok * (readable == 1.0), np.nan)
    out[TO_RATE] = to_ok

    judge = _floats(results, "judge_score", method)
    if judge is None or not np.isfinite(judge).any():
        out[COMPOSITE_RATE] = out[JUDGE_RATE] = None
    else:
        comp = _required_floats(results, "composite", method)
        missing = ~np.isfinite(judge)
        excluded = missing if judge_missing_rule(results) == "exclude" else np.zeros_like(missing)
        # a composite that is NaN with a judge score (no text) is out of the denominator
        comp_in = ~excluded & (missing | np.isfinite(comp))
        out[COMPOSITE_RATE] = np.where(
            comp_in, accurate(comp, COMPOSITE_THRESHOLD).astype(float), np.nan
        )
        with np.errstate(invalid="ignore"):
            good = np.where(missing, 0.0, (judge >= JUDGE_THRESHOLD).astype(float))
        out[JUDGE_RATE] = np.where(excluded, np.nan, good)

    grades = _strings(results, "simpleqa_grade", method)
    if grades is None or not np.any(grades != ""):
        out[CORRECT_RATE] = None
    else:
        out[CORRECT_RATE] = np.where(grades != "", (grades == "CORRECT").astype(float), np.nan)
    return out


def _states_answer(results: xr.Dataset, method: str) -> np.ndarray | None:
    """1/0 per prompt: the completion states the gold answer (NaN: no completion)."""
    if (
        "completion" not in results
        or "answer" not in results.coords
        or "question" not in results.coords
    ):
        return None
    completions = _strings(results, "completion", method)
    assert completions is not None  # "completion" in results: checked above
    questions = [str(q) for q in np.ravel(results.coords["question"].values)]
    answers = [str(a) for a in np.ravel(results.coords["answer"].values)]
    stated = states_answer_many(questions, answers, list(completions)).astype(float)
    return np.where(completions != "", stated, np.nan)


def _rate(values: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    kept = values[np.isfinite(values)]
    iv = bootstrap_mean(kept, n_boot=n_boot, seed=seed)
    k = int(kept.sum())
    # cross-check: the percentile bootstrap collapses to a point at k = 0 or k = n, Wilson does not
    wilson = [None if math.isnan(b) else b for b in wilson_interval(k, int(kept.size))]
    return {"k": k, **iv.as_dict(), "wilson": wilson}


def _paired(a: np.ndarray, b: np.ndarray, binary: bool, n_boot: int, seed: int) -> dict[str, Any]:
    both = np.isfinite(a) & np.isfinite(b)
    iv = paired_bootstrap_diff(a[both], b[both], n_boot=n_boot, seed=seed)
    row: dict[str, Any] = iv.as_dict()
    if binary and both.any():
        t = mcnemar_exact(a[both], b[both])
        row.update(mcnemar_p=t.p, better=t.b, worse=t.c)
    return row


def summarize(
    results: xr.Dataset,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
    reference: str = "baseline",
) -> dict[str, Any]:
    """The summary of a results dataset as a JSON-ready dict (what ``summary.json`` holds).

    Args:
        results: dims (method, prompt).
        n_boot, seed: bootstrap resamples and seed (the same seed for every interval).
        reference: the method the others are compared with on the same prompts.

    Returns:
        ``{"methods": [...], "metrics": [...], "n_boot", "seed", "level",
        "judge_missing", "model", "mode", "judge"}``; each method entry holds ``method``,
        ``prompts``, ``judge_failures`` (None without ``judge_error``),
        ``judge_missing`` (prompts without a judge score, None when unjudged),
        ``grades_missing``, ``rates`` (key -> ``{k, estimate, low, high, n, level}`` or
        None), ``mean_token_overlap`` and ``vs_<reference>`` (key -> paired difference
        ``{estimate, low, high, n, mcnemar_p, better, worse}``; None for the reference).
    """
    methods = [str(m) for m in results["method"].values]
    per = {m: outcomes(results, m) for m in methods}
    has_readable = "readable" in results
    keys = [k for k, _ in METRICS if k != READABLE_TO or has_readable]
    entries = []
    for m in methods:
        o = per[m]
        mean_to = o[MEAN_TO]
        assert mean_to is not None  # outcomes() always sets the mean TO
        judge = _floats(results, "judge_score", m)
        # None when unjudged: outcomes() set no judge rate (no judge score at all)
        judge_missing = (
            None if judge is None or o[JUDGE_RATE] is None else int(np.sum(~np.isfinite(judge)))
        )
        errors = _strings(results, "judge_error", m)
        grades = _strings(results, "simpleqa_grade", m)
        entry: dict[str, Any] = {
            "method": m,
            "prompts": int(results.sizes["prompt"]),
            "judge_failures": None if errors is None else int(np.sum(errors != "")),
            "judge_missing": judge_missing,
            "grades_missing": (int(np.sum(grades == "")) if o[CORRECT_RATE] is not None else None),
            "mean_token_overlap": bootstrap_mean(
                mean_to[np.isfinite(mean_to)], n_boot=n_boot, seed=seed).as_dict(),
            "rates": {k: (None if (v := o[k]) is None else _rate(v, n_boot, seed)) for k in keys},
        }  # fmt: skip
        if m != reference and reference in per:
            ref = per[reference]
            ref_mean_to = ref[MEAN_TO]
            assert ref_mean_to is not None  # outcomes() always sets the mean TO
            vs: dict[str, dict[str, Any] | None] = {
                MEAN_TO: _paired(mean_to, ref_mean_to, False, n_boot, seed)
            }
            for k in keys:
                mine, theirs = o[k], ref[k]
                vs[k] = (
                    None
                    if mine is None or theirs is None
                    else _paired(mine, theirs, True, n_boot, seed)
                )
            entry[f"vs_{reference}"] = vs
        else:
            entry[f"vs_{reference}"] = None
        entries.append(entry)
    a = results.attrs
    return {
        "methods": entries,
        # "states the answer" leads, then "TO & readable": plain TO rewards echoes and loops
        "metrics": [{"key": k, "label": dict(METRICS)[k]} for k in keys if k in LEADING]
        + [{"key": MEAN_TO, "label": "mean TO"}]
        + [{"key": k, "label": dict(METRICS)[k]} for k in keys if k not in LEADING],
        "reference": reference,
        "n_boot": n_boot,
        "seed": seed,
        "level": 0.95,
        "interval": "percentile bootstrap over prompts; paired: same prompts resampled; p: exact McNemar",
        "judge_missing": judge_missing_rule(results),
        "model": str(a.get("model", "")),
        "mode": str(a.get("mode", "")),
        "judge": str(a.get("judge", "none") or "none"),
        # the release typed its steered % CORRECT into its plotting code: no items, no interval
        "simpleqa_correct_reported": _json_attr(a.get("simpleqa_correct_reported")),
    }


def _json_attr(raw: Any) -> Any:
    if not isinstance(raw, str) or not raw:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return None


# ----------------------------------------------------------------------------- text


def fmt_rate(r: dict[str, Any] | None, prompts: int | None = None) -> str:
    """``k (pct%) [low, high]``; ``k/n`` when the denominator is not every prompt."""
    if r is None:
        return "n/a"
    if r["n"] == 0:
        return "0/0"
    k = f"{r['k']}/{r['n']}" if prompts is not None and r["n"] != prompts else f"{r['k']}"
    return f"{k} ({100 * r['estimate']:.1f}%) [{100 * r['low']:.1f}, {100 * r['high']:.1f}]"


def fmt_mean(r: dict[str, Any]) -> str:
    if r["n"] == 0:
        return "n/a"
    return f"{r['estimate']:.3f} [{r['low']:.3f}, {r['high']:.3f}]"


def fmt_p(p: float | None) -> str:
    if p is None:
        return ""
    return f"p = {p:.2g}" if p >= 1e-4 else "p < 1e-4"


def fmt_diff(d: dict[str, Any] | None, *, rate: bool = True) -> str:
    """``+12.3 pp [8.1, 16.5], p = 0.001 (+35/-2)`` for a rate; raw units for a mean."""
    if d is None:
        return "n/a"
    if d["n"] == 0:
        return "no shared prompts"
    if rate:
        text = f"{100 * d['estimate']:+.1f} pp [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
    else:
        text = f"{d['estimate']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
    if "mcnemar_p" in d:
        text += f", {fmt_p(d['mcnemar_p'])} (+{d['better']}/-{d['worse']})"
    return text


def _grid(rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
        return "\n".join(out)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    line = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            for r in rows]  # fmt: skip
    return "\n".join([line[0], "-" * len(line[0]), *line[1:]])


def summary_grid(summary: dict[str, Any]) -> list[list[str]]:
    """The main table as rows of cells: header, prompts, mean TO, the rates, judge failures."""
    entries = summary["methods"]
    rows = [["metric", *[e["method"] for e in entries]]]
    rows.append(["prompts", *[str(e["prompts"]) for e in entries]])
    for metric in summary["metrics"]:
        k = metric["key"]
        if k == MEAN_TO:
            rows.append([metric["label"], *[fmt_mean(e[MEAN_TO]) for e in entries]])
        else:
            rows.append(
                [metric["label"], *[fmt_rate(e["rates"][k], e["prompts"]) for e in entries]]
            )
    if any(e["judge_failures"] is not None for e in entries):
        rows.append(["judge failures", *["n/a" if e["judge_failures"] is None else str(e["judge_failures"])
                                         for e in entries]])  # fmt: skip
    return rows


def paired_grid(summary: dict[str, Any]) -> list[list[str]] | None:
    """The paired differences vs the reference as rows of cells (None when nothing to compare)."""
    ref = summary["reference"]
    entries = [e for e in summary["methods"] if e.get(f"vs_{ref}")]
    if not entries:
        return None
    rows = [[f"minus {ref} (same prompts)", *[e["method"] for e in entries]]]
    for metric in summary["metrics"]:
        k = metric["key"]
        rows.append(
            [metric["label"], *[fmt_diff(e[f"vs_{ref}"][k], rate=k != MEAN_TO) for e in entries]]
        )
    return rows


def summary_notes(summary: dict[str, Any]) -> list[str]:
    """Lines under the tables: judge failures, missing grades, how intervals were made."""
    notes = []
    rule = summary["judge_missing"]
    for e in summary["methods"]:
        if e["judge_failures"]:
            fate = "left out of" if rule == "exclude" else "counted as failures in"
            notes.append(f"{e['method']}: {e['judge_failures']} judge failures ({fate} the composite and "
                         f"judge denominators, judge_missing={rule})")  # fmt: skip
        elif e["judge_missing"]:
            notes.append(f"{e['method']}: {e['judge_missing']} prompts without a judge score "
                         f"(judge_missing={rule})")  # fmt: skip
        if e["grades_missing"]:
            notes.append(f"{e['method']}: {e['grades_missing']} prompts without a SimpleQA grade "
                         "(left out of SimpleQA CORRECT)")  # fmt: skip
    reported = summary.get("simpleqa_correct_reported") or {}
    unreported = [
        e["method"]
        for e in summary["methods"]
        if e["rates"][CORRECT_RATE] is None and e["method"] in reported
    ]
    if unreported:
        notes.append(
            "SimpleQA CORRECT reported without per-item grades (no interval possible): "
            + ", ".join(f"{m} {float(reported[m]):.1f}%" for m in unreported)
        )
    judge = summary["judge"]
    notes.append(
        f"model {summary['model'] or '?'}, mode {summary['mode'] or '?'}, judge {judge}"
        + (" (no judge: composite and judge rates not computed)" if judge == "none" else "")
    )
    notes.append(f"[low, high]: 95% {summary['interval']} ({summary['n_boot']} resamples, seed "
                 f"{summary['seed']}); +b/-c: prompts better/worse than {summary['reference']}")  # fmt: skip
    rates = [r for e in summary["methods"] for r in e["rates"].values() if r is not None and r["n"]]
    if any(r["k"] in (0, r["n"]) for r in rates):
        notes.append(
            "a rate of 0 or 100% has a point bootstrap interval; its Wilson interval is in summary.json"
        )
    return notes


def format_summary(
    results_or_summary: xr.Dataset | dict[str, Any], *, markdown: bool = False
) -> str:
    """The summary as a text (fixed-width) or markdown table, paired differences and notes."""
    s = (
        results_or_summary
        if isinstance(results_or_summary, dict)
        else summarize(results_or_summary)
    )
    parts = [_grid(summary_grid(s), markdown)]
    paired = paired_grid(s)
    if paired is not None:
        parts.append(_grid(paired, markdown))
    parts.append("\n".join(summary_notes(s)))
    return "\n\n".join(parts)


def summary_table(results: xr.Dataset) -> str:
    """The summary as markdown (what ``fsnn run`` prints and writes to ``summary.md``)."""
    return format_summary(results, markdown=True)


def summary_rows(results: xr.Dataset) -> dict[str, Any]:
    """What ``summary.json`` holds: :func:`summarize` (name kept for the pipeline)."""
    return summarize(results)


def write_summary(
    results: xr.Dataset, out: str | Path, footer: Sequence[str] = ()
) -> dict[str, Any]:
    """Write ``summary.md`` and ``summary.json`` (the same numbers) into run folder ``out``."""
    out = Path(out)
    s = summarize(results)
    atomic_write_text(
        out / "summary.md",
        format_summary(s, markdown=True) + "".join(f"\n\n{f}" for f in footer) + "\n",
    )
    atomic_write_text(out / "summary.json", json.dumps(s, indent=2, allow_nan=False) + "\n")
    return s
