"""The paper's figures (docs/method.md §10) and two more, drawn only from saved datasets.

Every function takes xarray datasets in the :mod:`fsnn.store.files` schema and returns a
:class:`matplotlib.figure.Figure` built without pyplot (so no global figure state, no
GUI backend, nothing shown); :func:`save_figure` writes it as PNG/PDF. Each figure
carries a small caption line with the run's model, judge and steering mode from the
dataset attributes, uses the same colour per method (:data:`METHOD_COLORS`) and works
on a dataset that lacks a method, judge grades or SimpleQA grades (it says so on the
figure instead of drawing a misleading zero). Every rate bar carries its 95% bootstrap
interval over prompts as an error bar, with the same denominators and numbers as the
summary table (:func:`fsnn.analysis.summary.outcomes`).

| file stem | content |
|---|---|
| ``fig1_topics`` | topic proportions: all SimpleQA, the first 500, the failures |
| ``fig2_accuracy`` | accuracy by S_eval >= 0.6, TO >= 0.5, judge >= 4; judge grades 1-5 |
| ``fig3_scores`` | box plots of S_eval and TO per method |
| ``fig4_simpleqa_correct`` | % CORRECT under the SimpleQA rubric per method |
| ``fig5_alpha_gamma`` | best-trial alpha*gamma per segment (the product is what acts, eq. 5) |
| ``fig6_to_vs_perplexity`` | TO against perplexity of the trials (best trials only for the release) |
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib as mpl
import numpy as np
import xarray as xr
from matplotlib import ticker as mticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from fsnn.errors import FsnnError
from fsnn.judges.scoring import COMPOSITE_FORMULA, COMPOSITE_THRESHOLD, JUDGE_THRESHOLD
from fsnn.judges.scoring import TOKEN_OVERLAP_THRESHOLD as TO_THRESHOLD
from fsnn.store.files import open_run

from .stats import bootstrap_mean
from .summary import COMPOSITE_RATE, CORRECT_RATE, JUDGE_RATE, STATES_ANSWER, TO_RATE, outcomes

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

__all__ = [
    "DPI",
    "FIGURES",
    "METHOD_COLORS",
    "METHOD_LABELS",
    "fig1_topics",
    "fig2_accuracy",
    "fig3_scores",
    "fig4_simpleqa_correct",
    "fig5_alpha_gamma",
    "fig6_to_vs_perplexity",
    "figure_png",
    "render_all",
    "run_figures",
    "save_figure",
]

METHOD_COLORS = {"baseline": "#8c8c8c", "full": "#2b6cb0", "segmented": "#dd6b20"}
METHOD_LABELS = {"baseline": "Baseline", "full": "Full-layer", "segmented": "Segmented"}
# Methods outside the paper's three (custom specs) get these, in order of appearance.
_EXTRA_COLORS = ("#2f855a", "#805ad5", "#c53030", "#319795", "#b7791f", "#d53f8c")
SUBSET_COLORS = ("#a0aec0", "#4a5568", "#c05621")
DPI = 200
FIGURES = (
    "fig0_states_answer",
    "fig1_topics",
    "fig2_accuracy",
    "fig3_scores",
    "fig4_simpleqa_correct",
    "fig5_alpha_gamma",
    "fig6_to_vs_perplexity",
)

# Sized for a 7-inch two-column page width: 8 pt body text, 6.5 pt caption.
_STYLE: dict[RcKeyType, Any] = {
    "font.size": 8,
    "axes.titlesize": 8.5,
    "axes.labelsize": 8,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlelocation": "left",
    "pdf.fonttype": 42,  # embed TrueType so the PDF text stays editable/searchable
}
_NOTE: dict[str, Any] = {"fontsize": 7, "color": "0.35", "style": "italic"}


# -------------------------------------------------------------------------- helpers


def _methods(ds: xr.Dataset) -> list[str]:
    return [str(m) for m in ds["method"].values]


def _color(method: str, order: Sequence[str] = ()) -> str:
    if method in METHOD_COLORS:
        return METHOD_COLORS[method]
    extra = [m for m in order if m not in METHOD_COLORS]
    k = extra.index(method) if method in extra else len(extra)
    return _EXTRA_COLORS[k % len(_EXTRA_COLORS)]


def _label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def _values(ds: xr.Dataset, name: str, method: str) -> np.ndarray:
    """A float variable of one method, flattened; all-NaN when the variable is absent."""
    if name not in ds:
        return np.full(ds.sizes.get("prompt", 0), np.nan)
    # sel({...}) and not sel(method=...): ``method`` is a keyword of sel itself
    return np.asarray(ds[name].sel({"method": method}).values, dtype=float).reshape(-1)


def _json_attr(ds: xr.Dataset, name: str, default: Any) -> Any:
    """A JSON-encoded attribute (netCDF holds no dicts), or ``default``."""
    raw = ds.attrs.get(name)
    if not isinstance(raw, str) or not raw:
        return default
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return default


def _caption(fig: Figure, ds: xr.Dataset, extra: str = "") -> None:
    """One small grey line under the panels: how the data were made."""
    a = ds.attrs
    parts = []
    if a.get("model"):
        quant = f" ({a['quantization']})" if a.get("quantization") not in (None, "", "none") else ""
        parts.append(f"model: {a['model']}{quant}")
    if a.get("judge"):
        parts.append(f"judge: {a['judge']}")
    if a.get("mode"):
        parts.append(f"mode: {a['mode']}")
    if a.get("source"):
        parts.append(f"source: {a['source']}")
    if extra:
        parts.append(extra)
    text = " · ".join(parts) or "no run attributes recorded"
    width = int(fig.get_figwidth() * 21)  # ~characters per inch at 6.5 pt
    # supxlabel, unlike fig.text, is given room by the constrained layout
    fig.supxlabel(
        "\n".join(textwrap.wrap(text, width)), x=0.01, ha="left", fontsize=6.5, color="0.4"
    )


def _new_figure(size: tuple[float, float]) -> Figure:
    return Figure(figsize=size, layout="constrained")


def _pct_label(k: int, n: int) -> str:
    return f"{100 * k / n:.1f}%\n({k}/{n})" if n else "n/a"


_ERRORBAR: dict[str, Any] = {
    "fmt": "none",
    "ecolor": "0.15",
    "elinewidth": 0.9,
    "capsize": 2.5,
    "capthick": 0.9,
}
INTERVAL_NOTE = "error bars: 95% bootstrap interval over prompts"


def _rate_bar(ax: Axes, x: float, values: np.ndarray, color: str, width: float) -> float:
    """One bar of a rate (% of prompts) with its 95% bootstrap error bar; returns its top in %.

    Args:
        values: 1.0/0.0 per prompt, NaN = out of the denominator (shape (prompt,)).
    """
    kept = values[np.isfinite(values)]
    iv = bootstrap_mean(kept)
    k, n = int(kept.sum()), int(kept.size)
    pct, low, high = 100 * iv.estimate, 100 * iv.low, 100 * iv.high
    ax.bar(x, pct, color=color, width=width)
    ax.errorbar([x], [pct], yerr=[[pct - low], [high - pct]], **_ERRORBAR)
    ax.annotate(_pct_label(k, n), (x, high), xytext=(0, 2), textcoords="offset points",
                ha="center", va="bottom", fontsize=7)  # fmt: skip
    return high


def _missing_note(ax: Axes, x: float, text: str) -> None:
    """Say in a method's empty bar slot why it has no bar (never a silent zero)."""
    ax.text(x, 0.02, text, ha="center", va="bottom", transform=ax.get_xaxis_transform(), **_NOTE)


def _headroom(ax: Axes, top: float, factor: float = 1.3) -> None:
    ax.set_ylim(0, max(top * factor, 1.0))


# ------------------------------------------------------------------------- figure 0


def fig0_states_answer(results: xr.Dataset) -> Figure:
    """The headline: per method, the share of prompts whose completion states the answer
    (:func:`fsnn.judges.states_answer.states_answer`, docs/answer_check.md), beside the
    paper's TO >= 0.5, each with its 95% bootstrap interval over prompts."""
    methods = _methods(results)
    x = np.arange(len(methods))
    per = {m: outcomes(results, m) for m in methods}
    with mpl.rc_context(_STYLE):
        fig = _new_figure((4.6, 3.0))
        ax = fig.subplots()
        top, width = 0.0, 0.38
        for i, m in enumerate(methods):
            for shift, key, alpha in ((-width / 2, STATES_ANSWER, 1.0), (width / 2, TO_RATE, 0.35)):
                v = per[m][key]
                if v is None or not np.isfinite(v).any():
                    _missing_note(ax, x[i] + shift, "no text")
                    continue
                top = max(top, _rate_bar(ax, x[i] + shift, v, _color(m, methods), width))
                ax.patches[-1].set_alpha(alpha)
        _headroom(ax, top, 1.35)
        ax.set_xticks(x, [_label(m) for m in methods])
        ax.set_ylabel("% of prompts")
        ax.set_title(f"States the answer (solid) and TO ≥ {TO_THRESHOLD:g} (pale, the paper's)")
        _caption(fig, results, INTERVAL_NOTE)
    return fig


# ------------------------------------------------------------------------- figure 1


def fig1_topics(subsets: xr.Dataset) -> Figure:
    """Fig. 1: SimpleQA topic proportions in the whole set, the first 500 and the failures.

    Args:
        subsets: dim ``simpleqa_id`` with ``topic`` (str), ``in_first_500`` and
            ``in_failures`` (0/1), as written by :mod:`fsnn.analysis.release`.
    """
    topic = np.array([str(t) or "(none)" for t in subsets["topic"].values])
    groups = [("All SimpleQA", np.ones(topic.shape, bool))]
    for name, label in (
        ("in_first_500", "First 500 (baseline run)"),
        ("in_failures", "Failures (steered)"),
    ):
        if name in subsets:
            groups.append((label, np.asarray(subsets[name].values).astype(bool)))
    topics = sorted(set(topic), key=lambda t: (-np.sum(topic == t), t))
    with mpl.rc_context(_STYLE):
        fig = _new_figure((7.0, 4.6))
        ax = fig.add_subplot()
        height = 0.8 / len(groups)
        y = np.arange(len(topics))
        top = 0.0
        for g, (label, mask) in enumerate(groups):
            n = int(mask.sum())
            share = np.array([100 * np.sum(mask & (topic == t)) / n if n else 0.0 for t in topics])
            pos = y - 0.4 + height * (g + 0.5)
            bars = ax.barh(
                pos, share, height=height, color=SUBSET_COLORS[g % 3], label=f"{label}, n = {n}"
            )
            ax.bar_label(bars, fmt="%.1f", padding=2, fontsize=6.5)
            top = max(top, float(share.max(initial=0)))
        ax.set_yticks(y, topics)
        ax.invert_yaxis()  # largest topic on top
        ax.set_xlim(0, top * 1.12 + 1)
        ax.set_xlabel("share of questions in the subset (%)")
        ax.set_title("SimpleQA topics across subsets")
        ax.legend(loc="lower right")
        _caption(fig, subsets, "topics from SimpleQA metadata; subsets matched by question text")
    return fig


# ------------------------------------------------------------------------- figure 2


def fig2_accuracy(
    results: xr.Dataset, trial_grades: xr.Dataset | None = None, *, best_of_k: bool = False
) -> Figure:
    """Fig. 2: accuracy per method by three criteria, and the judge grade distribution.

    Args:
        results: dims (method, prompt) with ``composite``, ``token_overlap``,
            ``judge_score`` (NaN = not graded).
        trial_grades: per-trial grades (method, prompt, trial) with ``judge_score``;
            only used when ``best_of_k``.
        best_of_k: grade histogram (panel d) with the best grade over the graded trials
            of each prompt for the methods in ``trial_grades``: the release's histogram
            quirk (docs/method.md §8). Panels a-c always use the selected trial.
    """
    methods = _methods(results)
    colors = [_color(m, methods) for m in methods]
    x = np.arange(len(methods))
    with mpl.rc_context(_STYLE):
        fig = _new_figure((7.0, 5.6))
        axes = fig.subplots(2, 2)
        panels = (
            (
                "composite",
                COMPOSITE_THRESHOLD,
                f"(a) Composite $S_{{eval}}$ ≥ {COMPOSITE_THRESHOLD:g}",
                "no composite",
            ),
            ("token_overlap", TO_THRESHOLD, f"(b) Token overlap ≥ {TO_THRESHOLD:g}", "no TO"),
            (
                "judge_score",
                JUDGE_THRESHOLD,
                f"(c) Judge grade ≥ {JUDGE_THRESHOLD:g} (of 5)",
                "no judge\ngrades",
            ),
        )
        keys = {"composite": COMPOSITE_RATE, "token_overlap": TO_RATE, "judge_score": JUDGE_RATE}
        per = {m: outcomes(results, m) for m in methods}
        for ax, (name, _thr, title, missing) in zip(axes.flat, panels, strict=False):
            top = 0.0
            for i, m in enumerate(methods):
                v = per[m][keys[name]]
                unjudged = name == "composite" and v is None
                if v is None or not np.isfinite(v).any():  # S_eval without any grade is not S_eval
                    _missing_note(ax, x[i], "no judge\ngrades" if unjudged else missing)
                    continue
                top = max(top, _rate_bar(ax, x[i], v, colors[i], 0.65))
            _headroom(ax, top, 1.35)
            ax.set_xticks(x, [_label(m) for m in methods])
            ax.set_xlim(-0.6, len(methods) - 0.4)  # keep the slot of a method without a bar
            ax.set_ylabel("% of prompts")
            ax.set_title(title)
        _grade_histogram(axes[1, 1], results, trial_grades if best_of_k else None, methods)
        extra = "; (d) best of k graded trials where several were graded" if best_of_k else ""
        _caption(fig, results, INTERVAL_NOTE + " (a-c)" + extra)
    return fig


def _grade_histogram(
    ax: Axes, results: xr.Dataset, trial_grades: xr.Dataset | None, methods: list[str]
) -> None:
    grades = np.arange(1, 6)
    graded = []
    for m in methods:
        v = _values(results, "judge_score", m)
        label = _label(m)
        if trial_grades is not None and m in _methods(trial_grades):
            per_trial = np.asarray(trial_grades["judge_score"].sel({"method": m}).values, float)
            best = np.where(
                np.all(np.isnan(per_trial), axis=-1),
                np.nan,
                np.nanmax(np.where(np.isnan(per_trial), -np.inf, per_trial), axis=-1),
            )
            v = np.where(np.isnan(best), v, best)  # prompts never trial-graded keep their grade
            label += " (best of k)"
        if not np.all(np.isnan(v)):
            graded.append((m, label, v))
    width = 0.9 / max(len(graded), 1)  # wide bars: room for 3-digit counts side by side
    top = 0
    for g, (m, label, v) in enumerate(graded):
        counts = np.array([int(np.sum(v == s)) for s in grades])
        bars = ax.bar(
            grades - 0.45 + width * (g + 0.5),
            counts,
            width=width,
            color=_color(m, methods),
            label=label,
        )
        ax.bar_label(bars, padding=1, fontsize=5.5)
        top = max(top, int(counts.max()))
    _headroom(ax, top, 1.15)
    ax.set_xticks(grades)
    ax.set_xlim(0.45, 5.55)
    ax.set_xlabel("judge grade (1 = wrong … 5 = fully correct)")
    ax.set_ylabel("prompts")
    ax.set_title("(d) Judge grade distribution")
    handles, _ = ax.get_legend_handles_labels()
    for m in methods:  # ungraded methods are named in the legend, not drawn as zeros
        if m not in {g[0] for g in graded}:
            handles.append(
                Patch(
                    facecolor="none", edgecolor=_color(m, methods), label=f"{_label(m)}: no grades"
                )
            )
    if handles:
        ax.legend(handles=handles, loc="upper right")


# ------------------------------------------------------------------------- figure 3


def fig3_scores(results: xr.Dataset) -> Figure:
    """Fig. 3: box plots of the composite S_eval and of TO per method (points overlaid).

    Args:
        results: dims (method, prompt) with ``composite`` and ``token_overlap``.
    """
    methods = _methods(results)
    rng = np.random.default_rng(0)  # fixed jitter: the figure is identical on every rebuild
    with mpl.rc_context(_STYLE):
        fig = _new_figure((7.0, 3.3))
        axes = fig.subplots(1, 2)
        panels = (
            (
                "composite",
                COMPOSITE_THRESHOLD,
                "(a) Composite $S_{eval}$",
                "$S_{eval}$ = " + COMPOSITE_FORMULA.replace("*", "·"),
            ),
            (
                "token_overlap",
                TO_THRESHOLD,
                "(b) Token overlap with the answer",
                "TO (recall of answer words)",
            ),
        )
        for ax, (name, thr, title, ylabel) in zip(axes, panels, strict=True):
            for i, m in enumerate(methods):
                v = _values(results, name, m)
                v = v[~np.isnan(v)]
                if name == "composite" and np.all(np.isnan(_values(results, "judge_score", m))):
                    _missing_note(ax, i, "no judge\ngrades")
                    continue
                if v.size == 0:
                    _missing_note(ax, i, "no values")
                    continue
                box = ax.boxplot(
                    v, positions=[i], widths=0.5, patch_artist=True, showfliers=False,
                    medianprops={"color": "black"}, whiskerprops={"color": "0.3"},
                    capprops={"color": "0.3"},
                )  # fmt: skip
                box["boxes"][0].set(facecolor=_color(m, methods), alpha=0.35, edgecolor="0.3")
                ax.scatter(i + rng.uniform(-0.18, 0.18, v.size), v, s=4, color=_color(m, methods),
                           alpha=0.45, linewidths=0, zorder=3)  # fmt: skip
                mean = float(v.mean())
                ax.scatter(
                    [i], [mean], marker="D", s=18, color="white", edgecolor="black", zorder=4
                )
                ax.text(i + 0.3, mean, f"mean\n{mean:.2f}", va="center", fontsize=6.5)
            ax.axhline(thr, color="0.2", lw=0.8, ls="--")
            ax.text(
                len(methods) - 0.5,
                thr,
                f"{thr:g}",
                va="bottom",
                ha="right",
                fontsize=6.5,
                color="0.2",
            )
            ax.set_xticks(range(len(methods)), [_label(m) for m in methods])
            ax.set_xlim(-0.6, len(methods) - 0.4)
            ax.set_ylim(-0.04, 1.06)
            ax.set_ylabel(ylabel)
            ax.set_title(title)
        _caption(
            fig, results, "box: quartiles, whiskers 1.5 IQR; dots: prompts (x-jittered); ◇ mean"
        )
    return fig


# ------------------------------------------------------------------------- figure 4


def fig4_simpleqa_correct(results: xr.Dataset) -> Figure:
    """Fig. 4: % CORRECT under the SimpleQA rubric per method, where grades exist.

    A method whose ``simpleqa_grade`` is all "" gets no bar but a note; when the
    dataset's ``simpleqa_correct_reported`` attribute (JSON {method: %}) holds a value
    for it (the release: typed into the paper's plotting code), that value is drawn as
    a hatched outline, labelled as a reported number without per-item grades.

    Args:
        results: dims (method, prompt) with ``simpleqa_grade`` (str).
    """
    methods = _methods(results)
    reported = _json_attr(results, "simpleqa_correct_reported", {})
    with mpl.rc_context(_STYLE):
        fig = _new_figure((4.6, 3.4))
        ax = fig.add_subplot()
        top, hatched = 1.0, False
        for i, m in enumerate(methods):
            correct = outcomes(results, m)[CORRECT_RATE]
            if correct is not None:
                top = max(top, _rate_bar(ax, i, correct, _color(m, methods), 0.6))
            elif m in reported:
                pct = float(reported[m])
                bar = ax.bar(i, pct, width=0.6, facecolor="none", edgecolor=_color(m, methods),
                             hatch="///", linewidth=1.0)  # fmt: skip
                ax.bar_label(bar, labels=[f"{pct:.1f}%\n(reported)"], padding=2, fontsize=7)
                top, hatched = max(top, pct), True
            else:
                _missing_note(ax, i, "no SimpleQA\ngrades")
        ax.set_xticks(range(len(methods)), [_label(m) for m in methods])
        ax.set_xlim(-0.6, len(methods) - 0.4)
        _headroom(ax, top, 1.45)
        ax.set_ylabel("% CORRECT (SimpleQA rubric)")
        ax.set_title("SimpleQA rubric: % CORRECT per method")
        if hatched:
            ax.legend(
                handles=[Patch(facecolor="none", edgecolor="0.3", hatch="///",
                               label="no per-item grades released;\nvalue typed in the paper's plot code")],
                loc="upper left",
            )  # fmt: skip
        _caption(fig, results, INTERVAL_NOTE)
    return fig


# ------------------------------------------------------------------------- figure 5


def fig5_alpha_gamma(results: xr.Dataset) -> Figure:
    """Beyond the paper: the best trial's alpha*gamma per segment, per steered method.

    Eq. (5) collapses to ``a + alpha*gamma*(h - mu)``, so the product is the strength
    that acts. Methods whose alpha/gamma are all NaN (baseline) are left out.

    Args:
        results: ``alpha``, ``gamma`` with dims (method, prompt, segment).
    """
    with mpl.rc_context(_STYLE):
        fig = _new_figure((7.0, 3.2))
        ax = fig.add_subplot()
        methods = _methods(results)
        if "alpha" not in results or "gamma" not in results:
            steered, segments = [], []
        else:
            k = results["alpha"] * results["gamma"]
            segments = (
                [str(s) for s in results["segment"].values]
                if "segment" in results.dims
                else ["all"]
            )
            steered = [m for m in methods if np.any(np.isfinite(k.sel({"method": m}).values))]
        width = 0.8 / max(len(steered), 1)
        for g, m in enumerate(steered):
            km = k.sel({"method": m})
            for s, seg in enumerate(segments):
                v = np.asarray(
                    km.sel({"segment": seg}).values if "segment" in km.dims else km.values, float
                )
                v = v[np.isfinite(v)]
                if v.size == 0:  # this method has no such segment (e.g. full-layer's "all")
                    continue
                pos = s - 0.4 + width * (g + 0.5)
                box = ax.boxplot(
                    v, positions=[pos], widths=width * 0.8, patch_artist=True, showfliers=True,
                    flierprops={"markersize": 2, "alpha": 0.5}, medianprops={"color": "black"},
                )  # fmt: skip
                box["boxes"][0].set(facecolor=_color(m, methods), alpha=0.55)
                med = float(np.median(v))
                ax.text(pos, 1.02, f"{med:.2f}", ha="center", va="bottom", fontsize=6.5)
        if not steered:
            ax.text(
                0.5,
                0.5,
                "no steered method with alpha/gamma",
                transform=ax.transAxes,
                ha="center",
                **_NOTE,
            )
        ax.set_xticks(range(len(segments)), [f"{s} layers" for s in segments])
        ax.set_xlim(-0.6, max(len(segments), 1) - 0.4)
        ax.set_ylim(0, 1.1)
        ax.set_ylabel("α·γ of the best trial")
        ax.set_title("Effective steering strength α·γ per segment (medians above)")
        labels = [
            _label(m) + (" (one pair for all layers)" if m == "full" else "") for m in steered
        ]
        if steered:  # above the axes: the boxes and median labels fill the plot area
            fig.legend(handles=[Patch(facecolor=_color(m, methods), alpha=0.55, label=lab)
                                for m, lab in zip(steered, labels, strict=True)],
                       loc="outside upper right", ncols=len(steered))  # fmt: skip
        _caption(fig, results, "eq. (5) depends on α and γ only through α·γ")
    return fig


# ------------------------------------------------------------------------- figure 6


def fig6_to_vs_perplexity(results: xr.Dataset, trials: xr.Dataset | None = None) -> Figure:
    """Beyond the paper: token overlap against perplexity, per steered method.

    Args:
        results: dims (method, prompt) with ``token_overlap`` and ``perplexity``.
        trials: optional (method, prompt, trial) with ``token_overlap``,
            ``perplexity`` (and ``is_best``): all trials are drawn, best ones dark.
            Without it only the best trial per prompt is drawn, and the figure says so.
    """
    source = trials if trials is not None and "perplexity" in trials else results
    methods = [m for m in _methods(source) if np.any(np.isfinite(_values(source, "perplexity", m)))]
    rng = np.random.default_rng(0)
    with mpl.rc_context(_STYLE):
        fig = _new_figure((7.0, 3.3))
        axes = fig.subplots(1, max(len(methods), 1), sharey=True, squeeze=False)[0]
        for ax, m in zip(axes, methods, strict=False):
            to = _values(source, "token_overlap", m)
            ppl = _values(source, "perplexity", m)
            ok = np.isfinite(to) & np.isfinite(ppl) & (ppl > 0)
            if source is trials and "is_best" in trials:
                best = _values(trials, "is_best", m) == 1
            else:
                best = np.ones(to.shape, bool)
            jitter = rng.uniform(-0.015, 0.015, to.size)  # TO takes few values: spread the stacks
            color = _color(m, _methods(source))
            if source is trials:
                rest = ok & ~best
                ax.scatter(ppl[rest], to[rest] + jitter[rest], s=5, color=color, alpha=0.2,
                           linewidths=0, label="other trials")  # fmt: skip
            sel = ok & best
            ax.scatter(ppl[sel], to[sel] + jitter[sel], s=7, color=color, alpha=0.6, linewidths=0,
                       label="best trial" + ("" if source is trials else " per prompt"))  # fmt: skip
            ax.axvline(100, color="0.3", lw=0.8, ls=":")
            ax.text(100, 1.07, " PPL cap of eq. (6)", fontsize=6.5, color="0.3", va="top")
            ax.set_xscale("log")
            # plain numbers (3, 10, 30, 100) read better than 10^1 at this size
            ax.xaxis.set_major_locator(mticker.LogLocator(subs=(1.0, 3.0)))
            ax.xaxis.set_major_formatter(mticker.FormatStrFormatter("%g"))
            ax.xaxis.set_minor_formatter(mticker.NullFormatter())
            ax.set_xlabel(
                "perplexity (log scale)"
                if len(methods) > 2
                else "perplexity of the decoded text (log scale)"
            )
            what = "all trials" if source is trials else "best trial per prompt"
            ax.set_title(f"{_label(m)}: {what} (n = {int(ok.sum())})")
        if source is trials and methods:  # outside: the points fill the axes
            marks = [Line2D([], [], ls="", marker="o", ms=4, color="0.3", alpha=a, label=lab)
                     for a, lab in ((0.3, "other trials"), (0.9, "best trial"))]  # fmt: skip
            fig.legend(handles=marks, loc="outside upper right", ncols=2)
        if not methods:
            axes[0].text(
                0.5, 0.5, "no perplexity values", transform=axes[0].transAxes, ha="center", **_NOTE
            )
        axes[0].set_ylabel("token overlap (y-jittered ±0.015)")
        axes[0].set_ylim(-0.05, 1.1)
        note = (
            "" if source is trials else "only the best trial per prompt is available (no trials.nc)"
        )
        _caption(fig, results, note)
    return fig


# ---------------------------------------------------------------------- saving/CLI


def save_figure(
    fig: Figure, stem: str | Path, formats: Sequence[str] = ("png", "pdf")
) -> list[Path]:
    """Write ``fig`` to ``stem.<fmt>`` for each format; PNG at :data:`DPI`.

    PDFs get no creation date, so rebuilding unchanged data gives identical files.
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    with mpl.rc_context(_STYLE):
        for fmt in formats:
            path = stem.with_suffix(f".{fmt}")
            meta = {"CreationDate": None} if fmt == "pdf" else None
            fig.savefig(path, format=fmt, dpi=DPI, metadata=meta)
            paths.append(path)
    return paths


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """``fig`` as PNG bytes (for embedding, e.g. the HTML report), drawn in the house style."""
    import io

    buf = io.BytesIO()
    with mpl.rc_context(_STYLE):
        fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def run_figures(
    results: xr.Dataset,
    *,
    subsets: xr.Dataset | None = None,
    trials: xr.Dataset | None = None,
    trial_grades: xr.Dataset | None = None,
    best_of_k: bool = False,
) -> list[tuple[str, Figure]]:
    """Every figure the given datasets allow, as (file stem, figure), in :data:`FIGURES` order."""
    figures: list[tuple[str, Figure]] = [("fig0_states_answer", fig0_states_answer(results))]
    if subsets is not None:
        figures.append(("fig1_topics", fig1_topics(subsets)))
    figures.append(("fig2_accuracy", fig2_accuracy(results)))
    if best_of_k and trial_grades is not None:
        figures.append(
            ("fig2_accuracy_best_of_k", fig2_accuracy(results, trial_grades, best_of_k=True))
        )
    figures += [
        ("fig3_scores", fig3_scores(results)),
        ("fig4_simpleqa_correct", fig4_simpleqa_correct(results)),
        ("fig5_alpha_gamma", fig5_alpha_gamma(results)),
        ("fig6_to_vs_perplexity", fig6_to_vs_perplexity(results, trials)),
    ]
    return figures


def render_all(
    run: str | Path,
    out: str | Path | None = None,
    formats: Sequence[str] = ("png", "pdf"),
    *,
    best_of_k: bool = False,
) -> list[Path]:
    """Draw every figure a run folder allows and save it.

    Opens the folder with :func:`fsnn.store.files.open_run` (the one reader) and uses
    ``results.nc`` (required), ``subsets.nc`` (fig. 1), ``trial_grades.nc`` (best-of-k
    variant of fig. 2) and ``trials.nc`` (fig. 6), each when present.

    Args:
        run: the run folder.
        out: output folder (default ``run/figures``).
        formats: file formats, e.g. ``("png", "pdf")``.
        best_of_k: also write ``fig2_accuracy_best_of_k`` (needs ``trial_grades.nc``).

    Returns:
        the written paths.

    Raises:
        FsnnError: no run folder, no or malformed ``results.nc``, or an unknown format.
    """
    bad = [f for f in formats if f not in ("png", "pdf", "svg")]
    if bad or not formats:
        raise FsnnError(
            f"unknown figure format(s) {', '.join(bad) or '(none)'}; use png, pdf or svg"
        )
    folder = open_run(run, require=("results",))
    out = Path(out) if out is not None else folder.path / "figures"
    figures = run_figures(folder.require("results"), subsets=folder.subsets, trials=folder.trials,
                          trial_grades=folder.trial_grades, best_of_k=best_of_k)  # fmt: skip
    paths = []
    for stem, fig in figures:
        paths += save_figure(fig, out / stem, formats)
    return paths
