"""Rebuild the committed figures in ``figures/`` from the authors' released results.

Imports the release CSVs into a run folder (``results.nc``, ``trial_grades.nc``,
``subsets.nc``), prints the summary table and draws every figure as PNG and PDF::

    FSNN_RELEASE_DIR=../shared/data/fusion_steering_release \\
    FSNN_SIMPLEQA_CSV=../shared/data/simpleqa/simple_qa_test_set.csv \\
    python experiments/regenerate_figures.py

No model and no GPU are needed: figures come only from the saved datasets.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from fsnn.analysis.figures import render_all
from fsnn.analysis.release import format_summary, import_release, write_release
from fsnn.errors import FsnnError
from fsnn.store.environment import env_path

REPO_ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--release-dir", type=Path, default=env_path("FSNN_RELEASE_DIR"),
                   help="released CSVs (default: $FSNN_RELEASE_DIR)")  # fmt: skip
    p.add_argument("--simpleqa-csv", type=Path, default=env_path("FSNN_SIMPLEQA_CSV"),
                   help="simple_qa_test_set.csv (default: $FSNN_SIMPLEQA_CSV)")  # fmt: skip
    p.add_argument("--run-dir", type=Path, default=None,
                   help="where the datasets go (default: a new temporary folder)")  # fmt: skip
    p.add_argument("--out", type=Path, default=REPO_ROOT / "figures",
                   help="figure folder (default: the repository's figures/)")  # fmt: skip
    p.add_argument("--format", default="png,pdf", help="comma-separated formats")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        # No silent default: the release lives outside the repository and must be named.
        if args.release_dir is None:
            raise FsnnError("set FSNN_RELEASE_DIR or pass --release-dir (the released CSVs)")
        if args.simpleqa_csv is None:
            raise FsnnError(
                "set FSNN_SIMPLEQA_CSV or pass --simpleqa-csv (needed for Fig. 1 topics)"
            )
        with tempfile.TemporaryDirectory(prefix="fsnn-release-") as tmp:
            run = args.run_dir or Path(tmp)
            imported = import_release(args.release_dir, args.simpleqa_csv)
            write_release(imported, run)
            print(format_summary(imported.results))
            print(
                f"datasets in {run}"
                + ("" if args.run_dir else " (temporary; keep them with --run-dir)")
            )
            formats = [f.strip() for f in args.format.split(",") if f.strip()]
            for path in render_all(run, args.out, formats, best_of_k=True):
                print(f"wrote {path}")
    except FsnnError as exc:
        print(f"regenerate_figures: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
