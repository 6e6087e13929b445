"""The labelling pool for the "states the answer" check: candidates, split, sample, loader.

A candidate is one (question, gold answer, completion) triple. Sources:

* ``release:{baseline,full,segmented}`` -- the authors' Gemma-2-2B texts (baseline:
  ``incorrect.csv``'s response; steered: the Optuna-selected ``generated_text`` of the
  per-prompt summaries), read with :func:`fsnn.release.read_release`, echoed prompt
  stripped as :mod:`fsnn.release` does (baseline: the bare question; steered:
  ``Question: {q}\\nAnswer and explanation:``). Questions are matched to SimpleQA by
  exact text. The text is NOT stored in ``pool.csv``; it is resolved from the release
  folder at load time and checked against ``completion_sha1``.
* ``beyond_oracle:{model}:{method}`` -- ``figures/beyond_oracle/*.nc`` (variable
  ``completion`` over (method, prompt), coord ``question_id`` = SimpleQA row).
* ``readable_labels`` -- ``tests/data/readable_labels.csv`` (SmolLM2-135M, column
  ``completion``, ``simpleqa_id``).
* ``release:initial`` -- only for the split ``heldout2``: the release's
  ``simpleqa_initial_outputs.csv`` (Gemma-2-2B baseline answers to the first 500
  SimpleQA questions, correct ones included), question matched to SimpleQA by exact
  text, echoed question stripped as for ``release:baseline``. Stored like the other
  release texts: reference and sha1 only.

Questions and gold answers always come from the SimpleQA CSV by ``simpleqa_id``.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
POOL_CSV = Path(__file__).resolve().parent / "pool.csv"
SEED = 20261202
SPLITS = ("tune", "heldout")
HELDOUT2 = "heldout2"  # a second held-out batch, on questions in neither split above
ALL_SPLITS = (*SPLITS, HELDOUT2)
HELDOUT2_SEED = 20261203
HELDOUT2_SIZE = 120  # to_hi: all of it up to half of this; to_lo: the rest
INITIAL_FILE = "simpleqa_initial_outputs.csv"
OVERLAP_HI = 0.5  # stratum "to_hi": gold-token overlap >= 0.5, else "to_lo"
STRATA = ("to_hi", "to_lo")
ORIGINS = ("own", "release")
PER_STRATUM = 65  # per split and overlap stratum: 130 items per split
OWN_QUOTA = {"to_hi": 20, "to_lo": 33}  # items of our own models per stratum (at most)
RELEASE_METHODS = ("baseline", "full", "segmented")
STEERING_HEADER = "Question: {q}\nAnswer and explanation:"
COLUMNS = (
    "item", "split", "stratum", "source", "source_key", "simpleqa_id", "completion_sha1",
    "overlap", "stratum_size", "stratum_sampled", "weight", "completion",
)  # fmt: skip


@dataclass(frozen=True)
class Candidate:
    source: str
    source_key: str
    simpleqa_id: int
    completion: str
    own: bool  # produced by this project (text stored in pool.csv)


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def _tokens(text: str) -> set[str]:
    return set(re.findall(r"[0-9a-z]+", text.lower()))


def gold_overlap(gold: str, completion: str) -> float:
    """Fraction of the gold's word types (lowercased alphanumeric runs) in the completion."""
    g = _tokens(gold)
    return round(len(g & _tokens(completion)) / len(g), 4) if g else 0.0


def read_simpleqa(path: str | Path) -> tuple[list[str], list[str]]:
    """(problems, answers) of the SimpleQA CSV; list index = ``simpleqa_id``."""
    with Path(path).open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [r["problem"] for r in rows], [r["answer"] for r in rows]


# ------------------------------------------------------------------ candidate sources


def release_candidates(release_dir: str | Path, problems: list[str]) -> list[Candidate]:
    from fsnn.analysis.release import read_release

    tables = read_release(release_dir)
    qid = {q: k for k, q in enumerate(problems)}
    files = {
        "baseline": "incorrect.csv#row={i}",
        "full": "per_prompt_optuna_summary_full.csv#prompt_idx={i}",
        "segmented": "per_prompt_optuna_summary_segmented.csv#prompt_idx={i}",
    }
    out = []
    for method in RELEASE_METHODS:
        for i, (question, sel) in enumerate(
            zip(tables.questions, tables.selected[method], strict=True)
        ):
            if question not in qid:
                continue
            prefix = question if method == "baseline" else STEERING_HEADER.format(q=question)
            text = sel.text
            completion = text[len(prefix) :] if text.startswith(prefix) else text
            key = f"release/{files[method].format(i=i)}"
            out.append(Candidate(f"release:{method}", key, qid[question], completion, False))
    return out


def initial_candidates(release_dir: str | Path, problems: list[str]) -> list[Candidate]:
    """``release:initial``: one candidate per row of ``simpleqa_initial_outputs.csv``
    whose question is a SimpleQA question (exact text); ``#row=i`` counts data rows from 0."""
    path = Path(release_dir).expanduser() / INITIAL_FILE
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if rows and not {"prompt", "response"} <= set(rows[0]):
        raise ValueError(f"{INITIAL_FILE}: needs the columns prompt and response")
    qid = {q: k for k, q in enumerate(problems)}
    out = []
    for i, r in enumerate(rows):
        question, text = r["prompt"], r["response"]
        if question not in qid:
            continue
        completion = text[len(question) :] if text.startswith(question) else text
        key = f"release/{INITIAL_FILE}#row={i}"
        out.append(Candidate("release:initial", key, qid[question], completion, False))
    return out


def beyond_oracle_candidates(root: Path = ROOT) -> list[Candidate]:
    import xarray as xr

    out = []
    for path in sorted((root / "figures" / "beyond_oracle").glob("*.nc")):
        rel = path.relative_to(root).as_posix()
        with xr.open_dataset(path) as ds:
            if "completion" not in ds:
                continue
            comp = ds["completion"].transpose("method", "prompt").values
            methods = [str(m) for m in ds["method"].values]
            prompts = [int(p) for p in ds["prompt"].values]
            qids = [int(q) for q in ds["question_id"].values]
        for a, method in enumerate(methods):
            for b, prompt in enumerate(prompts):
                out.append(
                    Candidate(
                        f"beyond_oracle:{path.stem}:{method}",
                        f"{rel}#method={method}&prompt={prompt}",
                        qids[b],
                        str(comp[a, b]),
                        True,
                    )
                )
    return out


def readable_label_candidates(root: Path = ROOT) -> list[Candidate]:
    path = root / "tests" / "data" / "readable_labels.csv"
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [
        Candidate(
            "readable_labels",
            f"tests/data/readable_labels.csv#row={r['row']}",
            int(r["simpleqa_id"]),
            r["completion"],
            True,
        )
        for r in rows
    ]


def candidates(release_dir: str | Path, problems: list[str]) -> tuple[list[Candidate], dict]:
    """All candidates, empty ones and exact duplicates (same question, same stripped text)
    dropped; the first occurrence wins (release, then beyond_oracle files in name order,
    then readable_labels). Returns (candidates, counts)."""
    raw = (
        release_candidates(release_dir, problems)
        + beyond_oracle_candidates()
        + readable_label_candidates()
    )
    seen: set[tuple[int, str]] = set()
    out, n_empty, n_dup = [], 0, 0
    for c in raw:
        text = c.completion.strip()
        if not text:
            n_empty += 1
            continue
        if (c.simpleqa_id, text) in seen:
            n_dup += 1
            continue
        seen.add((c.simpleqa_id, text))
        out.append(c)
    return out, {"raw": len(raw), "empty": n_empty, "duplicate": n_dup, "kept": len(out)}


# ------------------------------------------------------------------ split and sample


def split_questions(cands: list[Candidate], seed: int = SEED) -> dict[int, str]:
    """simpleqa_id -> split. Questions with a completion of our own models and release-only
    questions are shuffled separately and dealt alternately, so both splits mix sources."""
    rng = np.random.default_rng(seed)
    own = sorted({c.simpleqa_id for c in cands if c.own})
    rest = sorted({c.simpleqa_id for c in cands} - set(own))
    split = {}
    for group in (own, rest):
        for j, q in enumerate(rng.permutation(group)):
            split[int(q)] = SPLITS[j % 2]
    return split


def build(release_dir: str | Path, simpleqa_csv: str | Path, seed: int = SEED):
    """The pool rows (dicts with :data:`COLUMNS`) and the candidate counts.

    Per split, two overlap strata of :data:`PER_STRATUM` items each (``to_hi``: gold
    overlap >= :data:`OVERLAP_HI`; ``to_lo``: the rest), each split into cells by origin
    (``own``: this project's models; ``release``: Gemma-2-2B). ``own`` gets up to
    :data:`OWN_QUOTA` of the stratum (all of it when fewer exist), ``release`` the rest;
    within a cell the draw is uniform without replacement. ``stratum`` names the cell
    (e.g. ``to_hi:own``); ``weight`` = cell size / cell sample (inverse inclusion
    probability), so population rates of a split are weighted means over its items.
    The ``heldout2`` rows (:func:`_heldout2`) are appended after these, with their own
    generator, so the rows of ``tune`` and ``heldout`` do not depend on them.
    """
    problems, answers = read_simpleqa(simpleqa_csv)
    cands, counts = candidates(release_dir, problems)
    split = split_questions(cands, seed)
    rng = np.random.default_rng(seed + 1)
    rows = []
    for s in SPLITS:
        for stratum in STRATA:
            cells = {
                origin: [
                    c for c in cands
                    if split[c.simpleqa_id] == s
                    and c.own == (origin == "own")
                    and (gold_overlap(answers[c.simpleqa_id], c.completion) >= OVERLAP_HI)
                    == (stratum == "to_hi")
                ]
                for origin in ORIGINS
            }  # fmt: skip
            n_own = min(OWN_QUOTA[stratum], len(cells["own"]))
            sizes = {"own": n_own, "release": min(PER_STRATUM - n_own, len(cells["release"]))}
            for origin in ORIGINS:
                members, n = cells[origin], sizes[origin]
                cell = f"{stratum}:{origin}"
                counts[f"{s}:{cell}"] = f"{n} of {len(members)}"
                pick = sorted(rng.choice(len(members), size=n, replace=False).tolist())
                rows += [_row(members[k], s, cell, len(members), n, answers) for k in pick]
    rows += _heldout2(release_dir, problems, answers, split, counts)
    items = [r["item"] for r in rows]
    assert len(set(items)) == len(items), "item ids collide"
    return rows, counts


def _row(c: Candidate, split: str, cell: str, size: int, n: int, answers: list[str]) -> dict:
    return {
        "item": "i" + sha1(c.source_key)[:10],
        "split": split,
        "stratum": cell,
        "source": c.source,
        "source_key": c.source_key,
        "simpleqa_id": c.simpleqa_id,
        "completion_sha1": sha1(c.completion),
        "overlap": gold_overlap(answers[c.simpleqa_id], c.completion),
        "stratum_size": size,
        "stratum_sampled": n,
        "weight": round(size / n, 6),
        "completion": c.completion if c.own else "",
    }


def _heldout2(
    release_dir: str | Path,
    problems: list[str],
    answers: list[str],
    split: dict[int, str],
    counts: dict,
    seed: int = HELDOUT2_SEED,
) -> list[dict]:
    """The ``heldout2`` rows: ``release:initial`` completions of questions that are in
    neither ``tune`` nor ``heldout`` (not in ``split``, i.e. no candidate of the first
    pool), empty ones dropped. Strata as in :func:`build` (origin: ``release``):
    ``to_hi`` gets up to half of :data:`HELDOUT2_SIZE` (all of it when fewer exist),
    ``to_lo`` the rest; uniform draws without replacement with ``default_rng(seed)``.
    """
    cands = [
        c for c in initial_candidates(release_dir, problems)
        if c.simpleqa_id not in split and c.completion.strip()
    ]  # fmt: skip
    counts[f"{HELDOUT2}:candidates"] = len(cands)
    rng = np.random.default_rng(seed)
    cells = {
        stratum: [
            c for c in cands
            if (gold_overlap(answers[c.simpleqa_id], c.completion) >= OVERLAP_HI)
            == (stratum == "to_hi")
        ]
        for stratum in STRATA
    }  # fmt: skip
    n_hi = min(HELDOUT2_SIZE // 2, len(cells["to_hi"]))
    sizes = {"to_hi": n_hi, "to_lo": min(HELDOUT2_SIZE - n_hi, len(cells["to_lo"]))}
    rows = []
    for stratum in STRATA:
        members, n = cells[stratum], sizes[stratum]
        cell = f"{stratum}:release"
        counts[f"{HELDOUT2}:{cell}"] = f"{n} of {len(members)}"
        pick = sorted(rng.choice(len(members), size=n, replace=False).tolist())
        rows += [_row(members[k], HELDOUT2, cell, len(members), n, answers) for k in pick]
    return rows


# ------------------------------------------------------------------ loader


def load_pool(
    release_dir: str | Path, simpleqa_csv: str | Path, pool_csv: str | Path = POOL_CSV
) -> list[dict]:
    """The pool's rows with ``question``, ``gold`` and ``completion`` filled in.

    Release texts are re-read from ``release_dir``; every completion's sha1 is checked.

    Raises:
        ValueError: a completion that cannot be found or whose sha1 differs.
    """
    problems, answers = read_simpleqa(simpleqa_csv)
    with Path(pool_csv).open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    release = None
    out = []
    for r in rows:
        r = dict(r)
        r["simpleqa_id"] = int(r["simpleqa_id"])
        for k in ("overlap", "weight"):
            r[k] = float(r[k])
        for k in ("stratum_size", "stratum_sampled"):
            r[k] = int(r[k])
        if r["source"].startswith("release:"):
            if release is None:
                release = {
                    c.source_key: c.completion
                    for c in release_candidates(release_dir, problems)
                    + initial_candidates(release_dir, problems)
                }
            if r["source_key"] not in release:
                raise ValueError(f"{r['item']}: {r['source_key']} not in the release")
            r["completion"] = release[r["source_key"]]
        if sha1(r["completion"]) != r["completion_sha1"]:
            raise ValueError(f"{r['item']}: completion sha1 differs ({r['source_key']})")
        r["question"] = problems[r["simpleqa_id"]]
        r["gold"] = answers[r["simpleqa_id"]]
        out.append(r)
    return out
