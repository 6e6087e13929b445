"""Validate the "states the answer" check (:mod:`fsnn.judges.states_answer`) on hand labels.

Loads the labelling pool (``pool.py``'s :func:`load_pool`: questions and gold answers from
the SimpleQA CSV, release texts from the release folder, every completion's sha1 checked),
keeps the items of ONE split, joins ``labels_<split>.csv`` and compares the check with the
labels: confusion matrix, precision and recall with 95% Wilson intervals, in the sample
and reweighted to the split's population by the pool's stratum ``weight`` (inverse
inclusion probability; the interval then uses Kish's effective sample size), and every
disagreement with its required and missing tokens.

    FSNN_RELEASE_DIR=... FSNN_SIMPLEQA_CSV=... python experiments/answer_check/validate.py \\
        --split tune [--pool-dir DIR] [--out report.md]

The held-out split is for the final, single evaluation of the frozen check: tune the rule
on ``--split tune`` only.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from fsnn.analysis.stats import wilson_interval
from fsnn.judges.metrics import token_overlap
from fsnn.judges.scoring import TOKEN_OVERLAP_THRESHOLD
from fsnn.judges.states_answer import check

HERE = Path(__file__).resolve().parent
SPLITS = ("tune", "heldout", "heldout2")


def load_pool_module(pool_dir: Path):
    """``pool.py`` of ``pool_dir`` (the labelling pool's loader) as a module."""
    path = pool_dir / "pool.py"
    if not path.is_file():
        raise SystemExit(f"no pool loader at {path}")
    spec = importlib.util.spec_from_file_location("answer_check_pool", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def read_labels(path: Path) -> dict[str, dict]:
    """item -> {label, readable, note} of a labels CSV."""
    with path.open(newline="", encoding="utf-8") as fh:
        return {r["item"]: r for r in csv.DictReader(fh)}


def load_split(
    split: str, release_dir: str, simpleqa_csv: str, pool_dir: Path = HERE
) -> list[dict]:
    """The pool items of ``split`` with ``label`` (0/1), ``label_readable`` and ``note``.

    Raises:
        SystemExit: a labelled item that is not in the split, or an unlabelled one.
    """
    pool = load_pool_module(pool_dir)
    rows = [
        r
        for r in pool.load_pool(release_dir, simpleqa_csv, pool_dir / "pool.csv")
        if r["split"] == split
    ]
    labels = read_labels(pool_dir / f"labels_{split}.csv")
    items = {r["item"] for r in rows}
    if set(labels) != items:
        raise SystemExit(
            f"labels_{split}.csv and the {split} split differ: "
            f"{len(set(labels) - items)} labelled items not in the split, "
            f"{len(items - set(labels))} items unlabelled"
        )
    for r in rows:
        lab = labels[r["item"]]
        r["label"] = int(lab["label"])
        r["label_readable"] = int(lab["readable"]) if lab.get("readable", "") != "" else None
        r["note"] = lab.get("note", "")
    return rows


@dataclass(frozen=True)
class Rate:
    """A proportion ``k / n`` with its 95% Wilson interval (``n`` may be an effective size)."""

    k: float
    n: float

    @property
    def value(self) -> float:
        return self.k / self.n if self.n else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.k, self.n)  # type: ignore[arg-type]

    def __str__(self) -> str:
        lo, hi = self.interval
        return f"{self.value:.3f} [{lo:.3f}, {hi:.3f}]"


def weighted_rate(hits: list[bool], weights: list[float]) -> Rate:
    """Weighted proportion over (hit, weight) pairs, on Kish's effective size (sum w)^2 / sum w^2."""
    total = sum(weights)
    if not total:
        return Rate(0.0, 0.0)
    p = sum(w for h, w in zip(hits, weights, strict=True) if h) / total
    n_eff = total**2 / sum(w * w for w in weights)
    return Rate(p * n_eff, n_eff)


def evaluate(rows: list[dict]) -> dict:
    """Check every row; confusion counts (sample and weighted), precision and recall."""
    for r in rows:
        c = check(r["question"], r["gold"], r["completion"])
        r["check"] = c
        r["pred"] = int(c.states)
        r["to_hit"] = int(token_overlap(r["gold"], r["completion"]) >= TOKEN_OVERLAP_THRESHOLD)
    cells = {
        (y, p): [r for r in rows if r["label"] == y and r["pred"] == p]
        for y in (0, 1)
        for p in (0, 1)
    }
    tp, fp, fn = (len(cells[k]) for k in ((1, 1), (0, 1), (1, 0)))
    predicted = [r for r in rows if r["pred"]]
    positive = [r for r in rows if r["label"]]
    out = {
        "n": len(rows),
        "confusion": {k: len(v) for k, v in cells.items()},
        "weighted_confusion": {k: sum(r["weight"] for r in v) for k, v in cells.items()},
        "precision": Rate(tp, tp + fp),
        "recall": Rate(tp, tp + fn),
        "accuracy": Rate(sum(r["label"] == r["pred"] for r in rows), len(rows)),
        "w_precision": weighted_rate(
            [bool(r["label"]) for r in predicted], [r["weight"] for r in predicted]
        ),
        "w_recall": weighted_rate(
            [bool(r["pred"]) for r in positive], [r["weight"] for r in positive]
        ),
        "w_rate_check": weighted_rate([bool(r["pred"]) for r in rows], [r["weight"] for r in rows]),
        "w_rate_label": weighted_rate(
            [bool(r["label"]) for r in rows], [r["weight"] for r in rows]
        ),
        "disagreements": [r for r in rows if r["label"] != r["pred"]],
        "to_confusion": {
            (y, p): sum(r["label"] == y and r["to_hit"] == p for r in rows)
            for y in (0, 1)
            for p in (0, 1)
        },
    }
    t = out["to_confusion"]
    out["to_precision"] = Rate(t[1, 1], t[1, 1] + t[0, 1])
    out["to_recall"] = Rate(t[1, 1], t[1, 1] + t[1, 0])
    return out


def _short(text: str, n: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def report(split: str, result: dict) -> str:
    """The evaluation as Markdown."""
    c, w = result["confusion"], result["weighted_confusion"]
    lines = [
        f"## Split `{split}`: {result['n']} items",
        "",
        "| | check 1 | check 0 |",
        "|---|---|---|",
        f"| label 1 | {c[1, 1]} (TP) | {c[1, 0]} (FN) |",
        f"| label 0 | {c[0, 1]} (FP) | {c[0, 0]} (TN) |",
        "",
        "Reweighted to the split's population (sum of stratum weights):",
        "",
        "| | check 1 | check 0 |",
        "|---|---|---|",
        f"| label 1 | {w[1, 1]:.1f} | {w[1, 0]:.1f} |",
        f"| label 0 | {w[0, 1]:.1f} | {w[0, 0]:.1f} |",
        "",
        "| measure | sample (95% Wilson) | population-weighted (95% Wilson, Kish n_eff) |",
        "|---|---|---|",
        f"| precision | {result['precision']} ({result['precision'].k:g}/{result['precision'].n:g}) "
        f"| {result['w_precision']} (n_eff {result['w_precision'].n:.1f}) |",
        f"| recall | {result['recall']} ({result['recall'].k:g}/{result['recall'].n:g}) "
        f"| {result['w_recall']} (n_eff {result['w_recall'].n:.1f}) |",
        f"| accuracy | {result['accuracy']} | |",
        f"| rate stated (check) | | {result['w_rate_check']} |",
        f"| rate stated (labels) | | {result['w_rate_label']} |",
        "",
        "The paper's criterion on the same items, token overlap TO >= "
        f"{TOKEN_OVERLAP_THRESHOLD} (fsnn.metrics, on the completion without the echoed prompt; "
        "the pool is stratified by a similar overlap, so only the sample figures are shown): "
        f"TP {result['to_confusion'][1, 1]}, FP {result['to_confusion'][0, 1]}, "
        f"FN {result['to_confusion'][1, 0]}, TN {result['to_confusion'][0, 0]}; "
        f"precision {result['to_precision']}, recall {result['to_recall']}.",
        "",
        f"### Disagreements ({len(result['disagreements'])})",
        "",
    ]
    for r in result["disagreements"]:
        ch = r["check"]
        lines += [
            f"- `{r['item']}` ({r['stratum']}, {r['source']}): label {r['label']}, check {r['pred']}"
            f" (readable {int(ch.readable)}, required {list(ch.required)}, missing {list(ch.missing)})",
            f"  - Q: {_short(r['question'], 200)}",
            f"  - gold: {r['gold']}",
            f"  - completion: {_short(r['completion'])}",
        ]
        if r.get("note"):
            lines.append(f"  - labeller's note: {r['note']}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", choices=SPLITS, required=True)
    parser.add_argument(
        "--release-dir",
        default=os.environ.get("FSNN_RELEASE_DIR"),
        help="the authors' release folder (default $FSNN_RELEASE_DIR)",
    )
    parser.add_argument(
        "--simpleqa-csv",
        default=os.environ.get("FSNN_SIMPLEQA_CSV"),
        help="SimpleQA test set CSV (default $FSNN_SIMPLEQA_CSV)",
    )
    parser.add_argument(
        "--pool-dir",
        type=Path,
        default=HERE,
        help="folder of pool.py, pool.csv and labels_<split>.csv (default: this one)",
    )
    parser.add_argument("--out", type=Path, help="also write the report (Markdown) here")
    args = parser.parse_args(argv)
    if not args.release_dir or not args.simpleqa_csv:
        parser.error(
            "need --release-dir and --simpleqa-csv (or FSNN_RELEASE_DIR, FSNN_SIMPLEQA_CSV)"
        )
    rows = load_split(args.split, args.release_dir, args.simpleqa_csv, args.pool_dir)
    text = report(args.split, evaluate(rows))
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
