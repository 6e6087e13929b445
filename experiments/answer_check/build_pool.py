"""Build the labelling pool of the "states the answer" check (deterministic, seeded).

Writes ``experiments/answer_check/pool.csv`` (see README.md in this folder) and, with
``--sheet-dir``, one readable labelling sheet per split (``heldout_sheet.md`` first, then
``HELDOUT_READY``, then ``tune_sheet.md``, then ``heldout2_sheet.md``; ``--sheets`` picks
some of them). Sheets hold question, gold and completion text, so they are never
committed.

Usage::

    FSNN_RELEASE_DIR=... FSNN_SIMPLEQA_CSV=... python experiments/answer_check/build_pool.py \\
        [--sheet-dir DIR [--sheets heldout2 ...]]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pool as P  # noqa: E402


def _sheet(rows: list[dict], split: str, path: Path, seed: int) -> None:
    mine = [r for r in rows if r["split"] == split]
    order = np.random.default_rng(seed + 2 + P.ALL_SPLITS.index(split)).permutation(len(mine))
    lines = [
        f"# Labelling sheet: {split} ({len(mine)} items, random order)",
        "",
        "Question: does this completion state the gold answer? (1/0), and is it readable (1/0)?",
        "Completions are shown between the ~~~~ fences exactly as stored (leading/trailing "
        "whitespace included).",
        "",
    ]
    for n, k in enumerate(order, start=1):
        r = mine[k]
        lines += [
            f"## {n}. {r['item']}",
            "",
            f"**Question:** {r['question']}",
            "",
            f"**Gold:** {r['gold']}",
            "",
            "**Completion:**",
            "",
            "~~~~",
            r["completion"],
            "~~~~",
            "",
        ]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release-dir", default=os.environ.get("FSNN_RELEASE_DIR"))
    parser.add_argument("--simpleqa-csv", default=os.environ.get("FSNN_SIMPLEQA_CSV"))
    parser.add_argument("--out", default=str(P.POOL_CSV))
    parser.add_argument("--sheet-dir", help="write the labelling sheets here (not committed)")
    parser.add_argument(
        "--sheets",
        nargs="+",
        choices=P.ALL_SPLITS,
        default=list(P.ALL_SPLITS),
        help="the splits whose sheets --sheet-dir gets (default: all)",
    )
    parser.add_argument("--seed", type=int, default=P.SEED)
    args = parser.parse_args(argv)
    if not args.release_dir or not args.simpleqa_csv:
        parser.error(
            "need --release-dir / $FSNN_RELEASE_DIR and --simpleqa-csv / $FSNN_SIMPLEQA_CSV"
        )
    rows, counts = P.build(args.release_dir, args.simpleqa_csv, args.seed)
    with open(args.out, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=P.COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    for k, v in counts.items():
        print(f"{k}: {v}")
    if args.sheet_dir:
        full = P.load_pool(args.release_dir, args.simpleqa_csv, args.out)  # checks the sha1s
        out = Path(args.sheet_dir)
        out.mkdir(parents=True, exist_ok=True)
        if "heldout" in args.sheets:
            _sheet(full, "heldout", out / "heldout_sheet.md", args.seed)
            (out / "HELDOUT_READY").write_text("heldout_sheet.md complete\n", encoding="utf-8")
        for split in ("tune", P.HELDOUT2):
            if split in args.sheets:
                _sheet(full, split, out / f"{split}_sheet.md", args.seed)
        print(f"sheets: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
