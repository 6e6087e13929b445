"""Import the authors' released results into the schema of our own runs.

The release (GitHub MechInterpreter/Fusion_Steering, commit c6aad05) ships per-prompt
CSVs, not datasets. :func:`import_release` reads them and returns three datasets in the
:mod:`fsnn.store.files` schema, which :func:`write_release` saves into a run folder:

``results.nc`` (kind ``results``)
    dims (method, prompt[, segment]); methods ``baseline``, ``full``, ``segmented``; the
    260 prompts of ``incorrect.csv`` in file order (``prompt`` = 0..259 = the release's
    ``prompt_idx``/``prompt_id``). ``text`` is the decoded text as released (echoed
    prompt included), ``completion`` the text after the echoed prompt (steered: after
    ``Question: {q}\\nAnswer and explanation:``; baseline: after the bare question).
    ``token_overlap`` is our metric on ``text`` (what the release scored),
    ``token_overlap_completion`` on ``completion``, ``token_overlap_released`` the CSV's
    value (NaN for baseline: none was released). ``judge_score`` is the Mistral 1-5
    grade of the Optuna-selected text, ``composite`` eq. (7), ``alpha``/``gamma`` the
    best trial's values per segment (full-layer: one pair applied to all layers, so the
    same value in every segment; NaN for baseline).

``trial_grades.nc`` (kind ``trial_grades``)
    dims (method, prompt, trial): every graded row of
    ``mistral_grader_results_segmented.csv`` (several trials for prompts 0-66).
    ``trial`` is the order of the graded row within its prompt in that file, NOT the
    Optuna trial number (which was not released); ``is_best`` marks the row whose
    ``predicted`` text is the Optuna-selected one. Missing slots: NaN / "".

``subsets.nc`` (kind ``subsets``)
    dim ``simpleqa_id`` (row of the 4326-row SimpleQA CSV): ``topic``, ``answer_type``,
    ``in_first_500``, ``in_failures`` (int 0/1), matched by exact question text. Only
    written when the SimpleQA CSV is given (``--simpleqa-csv`` or ``FSNN_SIMPLEQA_CSV``).

Matching rule for the judge score (found from the data, see the tests): the grader
files give ``prompt_id`` and the graded ``predicted`` text. The grade of a method's
prompt is the grade of the row with that ``prompt_id`` whose ``predicted`` equals the
evaluated text exactly (baseline: ``incorrect.csv`` response; steered: the Optuna
summary's ``generated_text``). This matches 260/260 baseline, 260/260 full and 259/260
segmented prompts, and the summaries' own ``score`` column equals the matched grade on
all of them. For segmented prompt 66 the selected text was never graded; its ``score``
column (1) is used, as the release's composite did. Prompts rescued that way are listed
in the attribute ``judge_from_summary_score``.

Parity findings recorded in attributes: 33 of the 260 released ground truths are
spreadsheet-mangled dates (``October 23, 2018`` -> ``23-Oct-18``); the release built
its references and scored TO and the judge against them, so ``answer`` keeps the
released string and ``answer_simpleqa`` holds SimpleQA's. The segmented summary lists
prompt 48 last (a rerun); rows are aligned by ``prompt_idx``.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from fsnn.errors import FsnnError
from fsnn.judges.scoring import (
    COMPOSITE_FORMULA,
    COMPOSITE_THRESHOLD,
    JUDGE_THRESHOLD,
    TOKEN_OVERLAP_THRESHOLD,
)
from fsnn.judges.scoring import composite as _composite
from fsnn.store.environment import env_path
from fsnn.store.files import check_dims, provenance, write_dataset
from fsnn.store.schema import str_array
from fsnn.store.simpleqa_csv import read_simpleqa_csv

from .summary import format_summary, summarize

__all__ = [
    "COMPOSITE_THRESHOLD",
    "JUDGE",
    "JUDGE_THRESHOLD",
    "METHODS",
    "RELEASE_FILES",
    "SEGMENTS",
    "TO_THRESHOLD",
    "ReleaseImport",
    "composite",
    "format_summary",
    "import_release",
    "summarize",
    "write_release",
]

METHODS = ("baseline", "full", "segmented")
SEGMENTS = ("early", "middle", "late")
JUDGE = "mistral-small-latest (released)"
TO_THRESHOLD = TOKEN_OVERLAP_THRESHOLD  # the name fsnn.analysis.figures imports
STEERING_HEADER = "Question: {q}\nAnswer and explanation:"

RELEASE_FILES = (
    "simpleqa_initial_outputs.csv",
    "incorrect.csv",
    "corrected_responses.csv",
    "per_prompt_optuna_summary_full.csv",
    "per_prompt_optuna_summary_segmented.csv",
    "mistral_grader_results_baseline.csv",
    "mistral_grader_results_full.csv",
    "mistral_grader_results_segmented.csv",
)

# docs/method.md §8, §10: the steered "% CORRECT" bars were typed into the release's plotting
# code; no per-item grades exist, so they are kept as reported numbers only.
_REPORTED_CORRECT = {"baseline": 0.0, "full": 9.2, "segmented": 13.1}

_RELEASE_ATTRS = {
    "model": "google/gemma-2-2b-it",
    "model_revision": "",
    "quantization": "8bit",
    "mode": "faithful (use_cache=False)",
    "judge": JUDGE,
    "source": "authors' release, MechInterpreter/Fusion_Steering @ c6aad05",
}


@dataclass(frozen=True, kw_only=True)
class ReleaseImport:
    """The datasets made from one release folder.

    Attributes:
        results: dims (method, prompt[, segment]); see the module docstring.
        trial_grades: dims (method, prompt, trial); the graded trials of segmented.
        subsets: dim ``simpleqa_id``; None when no SimpleQA CSV was given.
    """

    results: xr.Dataset
    trial_grades: xr.Dataset
    subsets: xr.Dataset | None


# ---------------------------------------------------------------- reading CSV files


class _Table:
    """Rows of one CSV as dicts of str, with errors that name the file and row.

    Row numbers count data rows from 1 (the header is not a row), as a spreadsheet
    user would after freezing the header.
    """

    def __init__(self, path: Path, required: Sequence[str]):
        self.name = path.name
        self.rows: list[dict[str, str]] = []
        if not path.is_file():
            raise FsnnError(f"release file missing: {path}")
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                header = reader.fieldnames or []
                missing = [c for c in required if c not in header]
                if missing:
                    raise FsnnError(f"{self.name}: missing column(s) {', '.join(missing)}")
                for row in reader:
                    if None in row or any(v is None for v in row.values()):
                        raise FsnnError(
                            f"{self.name}, row {len(self.rows) + 1}: "
                            f"expected {len(header)} fields, got {_n_fields(row)}"
                        )
                    self.rows.append(row)
        except csv.Error as exc:
            raise FsnnError(f"{self.name}, row {len(self.rows) + 1}: {exc}") from None
        except UnicodeDecodeError as exc:
            raise FsnnError(f"{self.name}: not UTF-8 text ({exc.reason})") from None

    def __iter__(self) -> Iterator[tuple[int, dict[str, str]]]:
        return enumerate(self.rows, start=1)

    def __len__(self) -> int:
        return len(self.rows)

    def error(self, row: int, message: str) -> FsnnError:
        return FsnnError(f"{self.name}, row {row}: {message}")

    def number(
        self, row: int, record: dict[str, str], column: str, *, blank_ok: bool = False
    ) -> float:
        raw = record[column].strip()
        if not raw and blank_ok:
            return math.nan
        try:
            value = float(raw)
        except ValueError:
            raise self.error(row, f"column {column!r} must be a number, got {raw!r}") from None
        if not math.isfinite(value):
            raise self.error(row, f"column {column!r} must be finite, got {raw!r}")
        return value

    def index(self, row: int, record: dict[str, str], column: str, n: int) -> int:
        value = self.number(row, record, column)
        if value != int(value) or not 0 <= value < n:
            raise self.error(
                row,
                f"column {column!r} must be a prompt index in 0..{n - 1}, got {record[column]!r}",
            )
        return int(value)

    def grade(self, row: int, record: dict[str, str], column: str = "score") -> float:
        value = self.number(row, record, column, blank_ok=True)  # blank: grader failed
        if not math.isnan(value) and value not in (1, 2, 3, 4, 5):
            raise self.error(row, f"column {column!r} must be a 1-5 grade, got {record[column]!r}")
        return value


def _n_fields(row: dict[Any, Any]) -> int:
    extra = row.get(None) or []
    return sum(v is not None for k, v in row.items() if k is not None) + len(extra)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class _SimpleQA:
    problems: list[str]
    answers: list[str]
    topics: list[str]
    answer_types: list[str]


def _read_simpleqa(path: Path) -> _SimpleQA:
    """The SimpleQA test set (:func:`fsnn.store.simpleqa_csv.read_simpleqa_csv`), text as written."""
    records = read_simpleqa_csv(path)
    return _SimpleQA(
        problems=[r.problem for r in records],
        answers=[r.answer for r in records],
        topics=[str(r.metadata.get("topic", "")) for r in records],
        answer_types=[str(r.metadata.get("answer_type", "")) for r in records],
    )


# ------------------------------------------------------------- the one release reader


@dataclass(frozen=True, kw_only=True)
class GradedRow:
    """One row of a ``mistral_grader_results_{method}.csv`` file.

    Attributes:
        method: ``baseline``, ``full`` or ``segmented``.
        prompt: the ``prompt_id`` (row of ``incorrect.csv``, 0-based).
        trial: order of the row within its method and prompt, in file order (0..).
        question, target, predicted: the graded item (``predicted`` is the full
            decoded text, echoed prompt included).
        score: the 1-5 grade; NaN when blank (the grader failed).
        notes: the grader's notes.
    """

    method: str
    prompt: int
    trial: int
    question: str
    target: str
    predicted: str
    score: float
    notes: str


@dataclass(frozen=True, kw_only=True)
class SummaryRow:
    """The Optuna-selected trial of one prompt (``per_prompt_optuna_summary_{method}.csv``).

    Attributes:
        text: ``generated_text`` (echoed steering header included).
        token_overlap, perplexity, objective: the released TO, PPL and S_opt.
        score: the summary's own grade column (NaN when blank).
        alpha, gamma: one value per segment of :data:`SEGMENTS` (full: the one pair,
            repeated in each segment).
    """

    text: str
    token_overlap: float
    perplexity: float
    objective: float
    score: float
    alpha: tuple[float, ...]
    gamma: tuple[float, ...]


@dataclass(frozen=True, kw_only=True)
class Selected:
    """The answer of one method and prompt that the paper evaluated, with its grade.

    Attributes:
        text: baseline: ``incorrect.csv``'s response; steered: the summary's text.
        judge_score: the grade of the first graded row of that prompt whose
            ``predicted`` equals ``text``; else the summary's ``score``; else NaN.
        notes: that graded row's notes ("" when none matched).
        matched: the grade came from a graded row with identical text.
    """

    text: str
    judge_score: float
    notes: str
    matched: bool


@dataclass(frozen=True, kw_only=True)
class ReleaseTables:
    """The release's per-prompt CSVs, read and cross-checked once (:func:`read_release`).

    Attributes:
        root: the release folder.
        questions, answers, grade_strings: per prompt (``incorrect.csv`` order):
            question, released ground truth, SimpleQA grade of the baseline.
        summaries: ``full``/``segmented`` -> one :class:`SummaryRow` per prompt
            (ordered by prompt index, whatever the file order; None where missing).
        graded: every graded row of the three grader files, methods in
            :data:`METHODS` order, rows in file order.
        selected: method -> one :class:`Selected` per prompt.
        judge_from_summary: method -> prompts whose grade is the summary's ``score``.
        summary_disagrees: method -> prompts whose summary ``score`` differs from the
            matched graded row's grade.
    """

    root: Path
    questions: tuple[str, ...]
    answers: tuple[str, ...]
    grade_strings: tuple[str, ...]
    summaries: dict[str, tuple[SummaryRow | None, ...]]
    graded: tuple[GradedRow, ...]
    selected: dict[str, tuple[Selected, ...]]
    judge_from_summary: dict[str, list[int]]
    summary_disagrees: dict[str, list[int]]

    @property
    def n(self) -> int:
        """Prompts in the release (260)."""
        return len(self.questions)


def read_release(release_dir: str | Path) -> ReleaseTables:
    """Read ``incorrect.csv``, the two Optuna summaries and the three grader files.

    This is the only parser of those files: :func:`import_release` and
    :mod:`fsnn.analysis.release_grades` (judge agreement, recomputed composite) both build on
    it, so they see the same texts and grades. Every prompt index and question is
    checked against ``incorrect.csv``.

    Raises:
        FsnnError: a missing folder, file or column, or a malformed row (file and row
            named).
    """
    root = Path(release_dir).expanduser()
    if not root.is_dir():
        raise FsnnError(f"release folder not found: {root}")
    inc = _Table(root / "incorrect.csv", ("prompt", "response", "ground_truth", "grade_string"))
    n = len(inc)
    if n == 0:
        raise FsnnError("incorrect.csv: no rows")
    questions = tuple(r["prompt"] for r in inc.rows)
    if len(set(questions)) != n:
        raise FsnnError("incorrect.csv: a question appears twice")

    summaries: dict[str, tuple[SummaryRow | None, ...]] = {}
    for method, cols in (
        ("full", ("alpha", "gamma")),
        ("segmented", tuple(f"{p}_{s}" for p in ("alpha", "gamma") for s in SEGMENTS)),
    ):
        table = _Table(
            root / f"per_prompt_optuna_summary_{method}.csv",
            ("prompt_idx", *cols, "token_overlap", "perplexity", "combined_score",
             "generated_text", "prompt", "score"),
        )  # fmt: skip
        rows: list[SummaryRow | None] = [None] * n
        for row, rec in table:
            i = table.index(row, rec, "prompt_idx", n)
            if rows[i] is not None:  # the segmented file lists prompt 48 last; a repeat is an error
                raise table.error(row, f"prompt_idx {i} appears twice")
            if rec["prompt"] != questions[i]:
                raise table.error(
                    row, f"prompt_idx {i} is not the question of incorrect.csv row {i + 1}"
                )
            if method == "full":  # one pair for every layer: the same in each segment
                alpha = (table.number(row, rec, "alpha"),) * len(SEGMENTS)
                gamma = (table.number(row, rec, "gamma"),) * len(SEGMENTS)
            else:
                alpha = tuple(table.number(row, rec, f"alpha_{s}") for s in SEGMENTS)
                gamma = tuple(table.number(row, rec, f"gamma_{s}") for s in SEGMENTS)
            rows[i] = SummaryRow(
                text=rec["generated_text"],
                token_overlap=table.number(row, rec, "token_overlap"),
                perplexity=table.number(row, rec, "perplexity"),
                objective=table.number(row, rec, "combined_score"),
                score=table.grade(row, rec),
                alpha=alpha,
                gamma=gamma,
            )
        summaries[method] = tuple(rows)

    graded: list[GradedRow] = []
    for method in METHODS:
        table = _Table(
            root / f"mistral_grader_results_{method}.csv",
            ("prompt_id", "question", "target", "predicted", "score", "notes"),
        )
        trials: dict[int, int] = {}
        for row, rec in table:
            i = table.index(row, rec, "prompt_id", n)
            if rec["question"] != questions[i]:
                raise table.error(
                    row, f"prompt_id {i} is not the question of incorrect.csv row {i + 1}"
                )
            trials[i] = trials.get(i, -1) + 1
            graded.append(
                GradedRow(
                    method=method, prompt=i, trial=trials[i], question=rec["question"],
                    target=rec["target"], predicted=rec["predicted"],
                    score=table.grade(row, rec), notes=rec["notes"],
                )
            )  # fmt: skip

    # The grade of a method's prompt: the first graded row whose `predicted` is the
    # evaluated text; else the summary's own `score` (segmented prompt 66).
    texts = {"baseline": [r["response"] for r in inc.rows]}
    for method, rows_ in summaries.items():
        texts[method] = [r.text if r is not None else "" for r in rows_]
    first: dict[tuple[str, int, str], GradedRow] = {}
    for g in graded:  # the first row with a grade wins; a blank grade is passed over
        key = (g.method, g.prompt, g.predicted)
        held = first.get(key)
        if held is None or math.isnan(held.score):
            first[key] = g
    selected: dict[str, tuple[Selected, ...]] = {}
    from_summary: dict[str, list[int]] = {}
    disagrees: dict[str, list[int]] = {}
    for method in METHODS:
        picks = []
        for i in range(n):
            text = texts[method][i]
            match = first.get((method, i, text))
            summary = summaries.get(method, (None,) * n)[i]
            fallback = summary.score if summary is not None else math.nan
            score = match.score if match is not None else math.nan
            if math.isnan(score) and not math.isnan(fallback):
                score = fallback
                from_summary.setdefault(method, []).append(i)
            elif not math.isnan(fallback) and fallback != score:
                disagrees.setdefault(method, []).append(i)
            picks.append(
                Selected(
                    text=text,
                    judge_score=score,
                    notes=match.notes if match is not None else "",
                    matched=match is not None and not math.isnan(match.score),
                )
            )
        selected[method] = tuple(picks)
    return ReleaseTables(
        root=root,
        questions=questions,
        answers=tuple(r["ground_truth"] for r in inc.rows),
        grade_strings=tuple(r["grade_string"].strip() for r in inc.rows),
        summaries=summaries,
        graded=tuple(graded),
        selected=selected,
        judge_from_summary=from_summary,
        summary_disagrees=disagrees,
    )


# ------------------------------------------------------------------------ scoring


def composite(to: Any, judge: Any) -> np.ndarray:
    """S_eval (eq. 7) as the release computed it: :func:`fsnn.judges.scoring.composite` with a
    missing judge counted as 0 (docs/method.md §8); NaN TO stays NaN."""
    return _composite(to, judge, missing="zero")


def _strip_prefix(text: str, prefix: str) -> tuple[str, bool]:
    return (text[len(prefix) :], True) if text.startswith(prefix) else (text, False)


# ----------------------------------------------------------------------- importer


def import_release(
    release_dir: str | Path, simpleqa_csv: str | Path | None = None
) -> ReleaseImport:
    """Read the released CSVs (and optionally SimpleQA) into labeled datasets.

    Args:
        release_dir: folder holding the files of :data:`RELEASE_FILES`.
        simpleqa_csv: ``simple_qa_test_set.csv``; default ``$FSNN_SIMPLEQA_CSV``; when
            neither is set, topics are "" and ``simpleqa_id`` is -1, and no subsets.

    Returns:
        the results (method x prompt), per-trial grades and subsets datasets.

    Raises:
        FsnnError: a missing file or column, or a malformed row (file and row named).
    """
    from fsnn.judges.metrics import token_overlap

    sq_path = Path(simpleqa_csv).expanduser() if simpleqa_csv else env_path("FSNN_SIMPLEQA_CSV")
    tables = read_release(release_dir)
    root = tables.root
    sqa = _read_simpleqa(sq_path) if sq_path is not None else None
    n = tables.n
    questions, answers = list(tables.questions), list(tables.answers)
    grade_string = list(tables.grade_strings)

    # ---- per-method texts, grades and released numbers (steered: the selected trial)
    text = {m: [p.text for p in tables.selected[m]] for m in METHODS}
    judge = {m: [p.judge_score for p in tables.selected[m]] for m in METHODS}
    notes = {m: [p.notes for p in tables.selected[m]] for m in METHODS}
    released_to = {m: [math.nan] * n for m in METHODS}
    ppl = {m: [math.nan] * n for m in METHODS}
    objective = {m: [math.nan] * n for m in METHODS}
    alpha = {m: np.full((n, len(SEGMENTS)), np.nan) for m in METHODS}
    gamma = {m: np.full((n, len(SEGMENTS)), np.nan) for m in METHODS}
    for method, rows in tables.summaries.items():
        for i, r in enumerate(rows):
            if r is None:
                continue
            released_to[method][i], ppl[method][i] = r.token_overlap, r.perplexity
            objective[method][i] = r.objective
            alpha[method][i, :], gamma[method][i, :] = r.alpha, r.gamma
    from_summary, summary_disagrees = tables.judge_from_summary, tables.summary_disagrees
    graded: dict[int, list[tuple[float, str, str]]] = {}  # segmented: (score, predicted, notes)
    for g in tables.graded:
        if g.method == "segmented":
            graded.setdefault(g.prompt, []).append((g.score, g.predicted, g.notes))

    # ---- SimpleQA join (exact question text)
    sq_index = {q: k for k, q in enumerate(sqa.problems)} if sqa else {}
    simpleqa_id = np.array([sq_index.get(q, -1) for q in questions], dtype=np.int64)
    topic = [sqa.topics[k] if sqa and k >= 0 else "" for k in simpleqa_id]
    answer_sq = [sqa.answers[k] if sqa and k >= 0 else "" for k in simpleqa_id]
    mangled = [i for i in range(n) if sqa and simpleqa_id[i] >= 0 and answer_sq[i] != answers[i]]
    unmatched = [i for i in range(n) if sqa and simpleqa_id[i] < 0]
    if sqa and len(unmatched) == n:  # a few misses are recorded; none matching is the wrong file
        raise FsnnError(
            f"{sq_path}: none of the questions of incorrect.csv is in this SimpleQA file"
        )

    # ---- the enrichment explanations (empty in 134 of 260 in the release)
    enrich = _Table(root / "corrected_responses.csv", ("prompt", "explanation"))
    explanation = [""] * n
    qpos = {q: i for i, q in enumerate(questions)}
    for row, rec in enrich:
        if rec["prompt"] not in qpos:
            raise enrich.error(row, "question is not one of incorrect.csv")
        explanation[qpos[rec["prompt"]]] = rec["explanation"]

    # ---- completions and token overlap
    completion = {m: [""] * n for m in METHODS}
    no_echo: dict[str, list[int]] = {}
    for method in METHODS:
        for i in range(n):
            prefix = (
                questions[i] if method == "baseline" else STEERING_HEADER.format(q=questions[i])
            )
            completion[method][i], found = _strip_prefix(text[method][i], prefix)
            if not found and text[method][i]:
                no_echo.setdefault(method, []).append(i)
    has_text = {m: np.array([bool(t) for t in text[m]]) for m in METHODS}
    to_full = {
        m: np.where(
            has_text[m],
            [token_overlap(a, t) for a, t in zip(answers, text[m], strict=True)],
            np.nan,
        )
        for m in METHODS
    }
    to_comp = {
        m: np.where(
            has_text[m],
            [token_overlap(a, t) for a, t in zip(answers, completion[m], strict=True)],
            np.nan,
        )
        for m in METHODS
    }
    judge_arr = np.array([judge[m] for m in METHODS], dtype=float)
    to_arr = np.array([to_full[m] for m in METHODS])

    initial = _Table(root / "simpleqa_initial_outputs.csv", ("prompt", "response", "ground_truth"))
    first_500 = [r["prompt"] for r in initial.rows]

    sha = {name: _sha256(root / name) for name in RELEASE_FILES if (root / name).is_file()}
    common = dict(_RELEASE_ATTRS)
    config = {"source": "release", "release_dir": str(root), "simpleqa_csv": str(sq_path or "")}

    def per_method(values: dict[str, Any], kind: Callable[[Any], np.ndarray]) -> xr.Variable:
        return xr.Variable(("method", "prompt"), kind([values[m] for m in METHODS]))

    def floats(v: Any) -> np.ndarray:
        return np.asarray(v, dtype=float)

    results = xr.Dataset(
        {
            "text": per_method(text, str_array),
            "completion": per_method(completion, str_array),
            "token_overlap": (("method", "prompt"), to_arr),
            "token_overlap_completion": per_method(to_comp, floats),
            "token_overlap_released": per_method(released_to, floats),
            "perplexity": per_method(ppl, floats),
            "objective": per_method(objective, floats),
            "judge_score": (("method", "prompt"), judge_arr),
            "judge_notes": per_method(notes, str_array),
            "simpleqa_grade": (
                ("method", "prompt"),
                str_array([grade_string if m == "baseline" else [""] * n for m in METHODS]),
            ),
            "composite": (("method", "prompt"), composite(to_arr, judge_arr)),
            "alpha": (("method", "prompt", "segment"), np.stack([alpha[m] for m in METHODS])),
            "gamma": (("method", "prompt", "segment"), np.stack([gamma[m] for m in METHODS])),
            "explanation": ("prompt", str_array(explanation)),
        },
        coords={
            "method": str_array(list(METHODS)),
            "prompt": np.arange(n, dtype=np.int64),
            "segment": str_array(list(SEGMENTS)),
            "question": ("prompt", str_array(questions)),
            "answer": ("prompt", str_array(answers)),
            "answer_simpleqa": ("prompt", str_array(answer_sq)),
            "topic": ("prompt", str_array(topic)),
            "simpleqa_id": ("prompt", simpleqa_id),
        },
        attrs=provenance(
            "results",
            config,
            **common,
            composite_threshold=COMPOSITE_THRESHOLD,
            composite_rule=f"{COMPOSITE_FORMULA}, missing judge counted as 0 (release parity)",
            token_overlap_scope="text (echoed prompt included, as released)",
            judge_match_rule="graded row with the same prompt_id whose predicted == evaluated text",
            judge_from_summary_score=from_summary,
            judge_summary_disagrees=summary_disagrees,
            echo_not_found=no_echo,
            simpleqa_grade_note=(
                "baseline: incorrect.csv grade_string; full/segmented: no per-item grades "
                "were released (the paper's % CORRECT were typed into its plotting code)"
            ),
            simpleqa_correct_reported=_REPORTED_CORRECT,
            alpha_gamma_note="full: one (alpha, gamma) for all layers, repeated per segment",
            answers_differing_from_simpleqa=mangled,
            simpleqa_unmatched_prompts=unmatched,
            answer_note=(
                "answer = released ground_truth (used by the release for references, TO and "
                "the judge); answer_simpleqa = SimpleQA's; they differ on spreadsheet-mangled dates"
            ),
            release_sha256=sha,
        ),
    )
    check_dims(results, "results", "imported release")

    trial_grades = _trial_grades(graded, questions, answers, text["segmented"], n, config, sha)
    subsets = _subsets(sqa, set(first_500), set(questions), config, sq_path) if sqa else None
    return ReleaseImport(results=results, trial_grades=trial_grades, subsets=subsets)


def _trial_grades(
    graded: dict[int, list[tuple[float, str, str]]],
    questions: list[str],
    answers: list[str],
    selected: list[str],
    n: int,
    config: dict[str, Any],
    sha: dict[str, str],
) -> xr.Dataset:
    from fsnn.judges.metrics import token_overlap

    k = max((len(v) for v in graded.values()), default=1)
    score = np.full((1, n, k), np.nan)
    to = np.full((1, n, k), np.nan)
    is_best = np.zeros((1, n, k), dtype=np.int64)
    texts = np.full((1, n, k), "", dtype=object)
    completions = np.full((1, n, k), "", dtype=object)
    notes = np.full((1, n, k), "", dtype=object)
    for i, rows in graded.items():
        header = STEERING_HEADER.format(q=questions[i])
        for t, (s, predicted, note) in enumerate(rows):
            score[0, i, t] = s
            texts[0, i, t] = predicted
            completions[0, i, t] = _strip_prefix(predicted, header)[0]
            notes[0, i, t] = note
            to[0, i, t] = token_overlap(answers[i], predicted)
            is_best[0, i, t] = int(predicted == selected[i])
    return xr.Dataset(
        {
            "judge_score": (("method", "prompt", "trial"), score),
            "judge_notes": (("method", "prompt", "trial"), notes),
            "text": (("method", "prompt", "trial"), texts),
            "completion": (("method", "prompt", "trial"), completions),
            "token_overlap": (("method", "prompt", "trial"), to),
            "is_best": (("method", "prompt", "trial"), is_best),
        },
        coords={
            "method": str_array(["segmented"]),
            "prompt": np.arange(n, dtype=np.int64),
            "trial": np.arange(k, dtype=np.int64),
            "question": ("prompt", str_array(questions)),
        },
        attrs=provenance(
            "trial_grades",
            config,
            **_RELEASE_ATTRS,
            trial_note=(
                "trial = order of the graded row within its prompt in "
                "mistral_grader_results_segmented.csv, not the Optuna trial number"
            ),
            best_of_k_note=(
                "the release's segmented grade histogram took the max over these rows "
                "(best-of-k); its composite used the is_best row"
            ),
            release_sha256=sha,
        ),
    )


def _subsets(
    sqa: _SimpleQA,
    first_500: set[str],
    failures: set[str],
    config: dict[str, Any],
    path: Path | None,
) -> xr.Dataset:
    m = len(sqa.problems)
    known = set(sqa.problems)
    return xr.Dataset(
        {
            "topic": ("simpleqa_id", str_array(sqa.topics)),
            "answer_type": ("simpleqa_id", str_array(sqa.answer_types)),
            "in_first_500": (
                "simpleqa_id",
                np.array([q in first_500 for q in sqa.problems], dtype=np.int64),
            ),
            "in_failures": (
                "simpleqa_id",
                np.array([q in failures for q in sqa.problems], dtype=np.int64),
            ),
        },
        coords={"simpleqa_id": np.arange(m, dtype=np.int64)},
        attrs=provenance(
            "subsets",
            config,
            simpleqa_csv_sha256=_sha256(path) if path else "",
            match_rule="exact question text",
            unmatched_first_500=sum(q not in known for q in first_500),
        ),
    )


def write_release(imported: ReleaseImport, out: str | Path) -> dict[str, Path]:
    """Write ``results.nc``, ``trial_grades.nc`` and (when present) ``subsets.nc`` into ``out``."""
    out = Path(out)
    paths = {
        "results": write_dataset(imported.results, out / "results.nc"),
        "trial_grades": write_dataset(imported.trial_grades, out / "trial_grades.nc"),
    }
    if imported.subsets is not None:
        paths["subsets"] = write_dataset(imported.subsets, out / "subsets.nc")
    return paths
