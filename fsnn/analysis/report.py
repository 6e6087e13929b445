"""``fsnn report RUN --out report.html``: one self-contained static HTML page of a run.

The page opens offline: figures are embedded as base64 PNG (``data:`` URIs), the style
sheet is inline, and nothing is fetched (no script, no external link). Sections, in order:

1. **Summary**: the table of :mod:`fsnn.analysis.summary` (rates with 95% bootstrap intervals and
   sample sizes), the paired differences of each steered method vs baseline (interval and
   exact McNemar p), and its notes (judge failures, missing grades).
2. **Figures**: every figure of :mod:`fsnn.analysis.figures` the run folder allows, error bars
   included, each with its one-line description.
3. **Examples**: a sample of prompts (the largest steering gains and a seeded random
   draw): question, gold answer, and every method's completion with its scores; the gold
   answer is highlighted where it occurs (whole answer in yellow, single answer words in
   a lighter shade). All text is HTML-escaped.
4. **Configuration and provenance**: the run's config (JSON) and every attribute of
   ``results.nc`` (model, revision, quantization, mode, judge, package versions, git
   sha, creation time).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from fsnn.errors import FsnnError
from fsnn.store.files import Run, open_run

from .inspect import prompt_table
from .summary import paired_grid, summarize, summary_grid, summary_notes

__all__ = ["build_report", "highlight_answer", "write_report"]

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1100px;
color:#1a202c;line-height:1.45;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{border-bottom:1px solid #cbd5e0;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #cbd5e0;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#edf2f7}td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.meta{color:#4a5568;font-size:.9em}.note{color:#4a5568;font-size:.85em;margin:.2em 0}
figure{margin:1.2em 0}figure img{max-width:100%;border:1px solid #e2e8f0}
figcaption{color:#4a5568;font-size:.85em}
.example{border:1px solid #e2e8f0;border-radius:4px;padding:.6em 1em;margin:1em 0}
.completion{white-space:pre-wrap;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85em}
mark{background:#fefcbf;padding:0 .1em}mark.word{background:#fffff0;border-bottom:2px solid #ecc94b}
pre{background:#f7fafc;border:1px solid #e2e8f0;padding:.6em;overflow-x:auto;font-size:.85em}
"""

_FIGURE_TEXT = {
    "fig1_topics": "SimpleQA topic proportions: the whole set, the first 500 rows and the steered failures.",
    "fig2_accuracy": "Accuracy per method by composite, token overlap and judge thresholds, with 95% "
    "bootstrap intervals; judge grade distribution.",
    "fig3_scores": "Distributions of the composite S_eval and token overlap per method.",
    "fig4_simpleqa_correct": "% CORRECT under the SimpleQA rubric per method, where grades exist.",
    "fig5_alpha_gamma": "Best-trial steering strength alpha*gamma per layer segment.",
    "fig6_to_vs_perplexity": "Token overlap against perplexity of the trials.",
}


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(rows: list[list[str]], table_id: str) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in rows[0])
    body = "".join(
        "<tr><th>"
        + _e(r[0])
        + "</th>"
        + "".join(f'<td class="num">{_e(c)}</td>' for c in r[1:])
        + "</tr>"
        for r in rows[1:]
    )
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _answer_words(answer: str) -> list[str]:
    """Words of the answer worth marking alone: digits, or 3+ letters (not 'the')."""
    words = re.findall(r"\w+", answer)
    return [w for w in words if (w.isdigit() or len(w) >= 3) and w.lower() not in ("the", "and")]


def highlight_answer(text: str, answer: str) -> str:
    """HTML of ``text`` (escaped) with the gold ``answer`` marked.

    The whole answer (case-insensitive, not inside a longer word) becomes ``<mark>``;
    where it does not occur, its words occurring alone become ``<mark class="word">``.
    """
    spans: list[tuple[int, int, str]] = []
    answer = answer.strip()
    if answer:
        # not inside a longer word or number: "1" is not marked in "10" or "2021"
        whole = rf"(?<!\w){re.escape(answer)}(?!\w)"
        spans = [(m.start(), m.end(), "") for m in re.finditer(whole, text, flags=re.IGNORECASE)]
        if not spans:
            for w in _answer_words(answer):
                spans += [(m.start(), m.end(), "word")
                          for m in re.finditer(rf"\b{re.escape(w)}\b", text, flags=re.IGNORECASE)]  # fmt: skip
    spans.sort()
    out, pos = [], 0
    for start, end, cls in spans:
        if start < pos:  # overlapping word matches: keep the first
            continue
        out.append(_e(text[pos:start]))
        attr = f' class="{cls}"' if cls else ""
        out.append(f"<mark{attr}>{_e(text[start:end])}</mark>")
        pos = end
    out.append(_e(text[pos:]))
    return "".join(out)


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _figures_html(run: Run) -> str:
    from .figures import figure_png, run_figures

    parts = []
    for stem, fig in run_figures(
        run.require("results"),
        subsets=run.subsets,
        trials=run.trials,
        trial_grades=run.trial_grades,
    ):
        text = _FIGURE_TEXT.get(stem, stem)
        parts.append(f'<figure id="{stem}"><img src="{_png_uri(figure_png(fig))}" alt="{_e(text)}">'
                     f"<figcaption>{_e(stem)}: {_e(text)}</figcaption></figure>")  # fmt: skip
    return "\n".join(parts)


def _sample(run: Run, n_examples: int, seed: int) -> list[tuple[int, str]]:
    """Positions to show: the largest gains first, then a seeded random draw; with why."""
    rows = prompt_table(run) if any(m != "baseline" for m in run.methods) else []
    n = run.require("results").sizes["prompt"]
    top = [r["position"] for r in rows if np.isfinite(r["gain"]) and r["gain"] > 0][
        : (n_examples + 1) // 2
    ]
    rest = [i for i in range(n) if i not in set(top)]
    rng = np.random.default_rng(seed)
    k = min(max(n_examples - len(top), 0), len(rest))
    drawn = sorted(rng.choice(rest, size=k, replace=False).tolist()) if k else []
    return [(i, "largest steering gain") for i in top] + [
        (int(i), f"random draw (seed {seed})") for i in drawn
    ]


def _score_text(res: Any, m: str, i: int) -> str:
    parts = []
    for name, label, fmt in (("token_overlap", "TO", ".2f"), ("perplexity", "PPL", ".1f"),
                             ("judge_score", "judge", ".0f"), ("composite", "S_eval", ".2f")):  # fmt: skip
        if name in res:
            v = float(res[name].sel({"method": m}).values[i])
            if np.isfinite(v):
                parts.append(f"{label} {v:{fmt}}")
    if "simpleqa_grade" in res:
        g = str(res["simpleqa_grade"].sel({"method": m}).values[i])
        if g:
            parts.append(g)
    if "judge_error" in res:
        err = str(res["judge_error"].sel({"method": m}).values[i])
        if err:
            parts.append(f"judge failed: {err}")
    return ", ".join(parts)


def _examples_html(run: Run, n_examples: int, seed: int) -> str:
    res = run.require("results")
    ids = (
        res["simpleqa_id"].values
        if "simpleqa_id" in res.coords
        else np.full(res.sizes["prompt"], -1)
    )
    parts = []
    for i, why in _sample(run, n_examples, seed):
        answer = str(res["answer"].values[i])
        rows = []
        for m in run.methods:
            text = str(res["completion"].sel({"method": m}).values[i]).strip()
            rows.append(f"<tr><th>{_e(m)}</th><td class=\"completion\">{highlight_answer(text, answer)}</td>"
                        f"<td class=\"num\">{_e(_score_text(res, m, i))}</td></tr>")  # fmt: skip
        parts.append(
            f'<div class="example" id="prompt-{i}"><p><b>Question</b> (SimpleQA id {int(ids[i])}, {_e(why)}): '
            f"{_e(res['question'].values[i])}<br><b>Gold answer</b>: <mark>{_e(answer)}</mark></p>"
            '<table class="examples"><thead><tr><th>method</th><th>completion</th><th>scores</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>"
        )
    return "\n".join(parts)


def _provenance_html(run: Run) -> str:
    attrs = dict(run.require("results").attrs)
    try:
        config = json.dumps(json.loads(attrs.pop("config", "{}") or "{}"), indent=2, sort_keys=True)
    except json.JSONDecodeError:
        config = str(run.require("results").attrs.get("config"))
    rows = [["attribute", "value"], *[[k, str(v)] for k, v in sorted(attrs.items())]]
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows[1:])
    return (f"<h3>Run configuration</h3><pre id=\"config\">{_e(config)}</pre>"
            f'<h3>Provenance (attributes of results.nc)</h3><table id="provenance"><thead><tr><th>attribute</th>'
            f"<th>value</th></tr></thead><tbody>{body}</tbody></table>")  # fmt: skip


def build_report(run: Run | str | Path, *, examples: int = 12, seed: int = 0) -> str:
    """The report of a run folder as one HTML string (see the module docstring).

    Args:
        run: a run folder: its path, or the :class:`fsnn.store.files.Run` that
            :func:`fsnn.store.files.open_run` returned (it must hold ``results.nc``).
        examples: prompts shown in the examples section.
        seed: seed of the random part of the example sample.
    """
    if examples < 0:
        raise FsnnError(f"--examples must be >= 0, got {examples}")
    run = run if isinstance(run, Run) else open_run(run, require=("results",))
    results = run.require("results")
    s = summarize(results)
    a = results.attrs
    paired = paired_grid(s)
    notes = "".join(f'<p class="note">{_e(n)}</p>' for n in summary_notes(s))
    created = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    from fsnn.store.files import package_versions

    __version__ = package_versions()["fsnn"]

    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fsnn report: {_e(run.path.name)}</title><style>{_CSS}</style></head>
<body>
<h1>fsnn report: {_e(run.path.name)}</h1>
<p class="meta">model {_e(a.get("model", "?"))} · mode {_e(a.get("mode", "?"))} · judge {_e(a.get("judge", "none"))}
· {results.sizes["prompt"]} prompts · methods {_e(", ".join(run.methods))} · run created {_e(a.get("created", "?"))}
· report made {_e(created)} by fsnn {_e(__version__)}</p>
<p class="note">Oracle setting: the ground truth builds the reference and scores the search, so these numbers
bound what per-prompt activation control can do; they are not a deployable QA accuracy.</p>
<h2 id="summary-section">Summary</h2>
{_table(summary_grid(s), "summary")}
{_table(paired, "paired") if paired is not None else ""}
{notes}
<h2 id="figures-section">Figures</h2>
{_figures_html(run)}
<h2 id="examples-section">Examples</h2>
<p class="note">The gold answer is <mark>highlighted</mark> where a completion contains it; single answer words
are <mark class="word">underlined</mark> where the whole answer does not occur.</p>
{_examples_html(run, examples, seed)}
<h2 id="config-section">Configuration and provenance</h2>
{_provenance_html(run)}
</body></html>
"""


def write_report(
    run: str | Path, out: str | Path | None = None, *, examples: int = 12, seed: int = 0
) -> Path:
    """Write the report of run folder ``run`` to ``out`` (default ``RUN/report.html``), atomically."""
    from fsnn.store.files import atomic_write_text

    folder = open_run(run, require=("results",))
    path = Path(out) if out is not None else folder.path / "report.html"
    try:
        return atomic_write_text(path, build_report(folder, examples=examples, seed=seed))
    except OSError as exc:
        raise FsnnError(f"cannot write {path}: {exc.strerror or exc}") from None
