"""Fit the offline judge (``fsnn.judges.offline.fit``) on the train prompts of the release.

Usage::

    python experiments/fit_offline_judge.py [--release-dir DIR] [--out PATH]

Splits the release's 260 prompts by :func:`fsnn.judges.offline.fit.split_prompts` (seed 0,
half train), fits the ordinal model on the train prompts' graded rows only (ridge
penalty and decode rule chosen by 5-fold cross-validation over train prompts), and
writes the calibration JSON (default: the one shipped in the package). The held-out
prompts are never read by the fit; evaluate them with
``fsnn judge-agreement --judge offline --split heldout --json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from fsnn.analysis.release_grades import METHODS, graded_rows, selected_rows
from fsnn.judges.offline import fit, model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--release-dir", help="the authors' release folder (default $FSNN_RELEASE_DIR)"
    )
    parser.add_argument(
        "--out",
        default=str(Path(model.__file__).parent / "calibration" / model.CALIBRATION_FILE),
        help="where to write the calibration JSON",
    )
    parser.add_argument("--seed", type=int, default=fit.SPLIT_SEED, help="split seed")
    args = parser.parse_args()

    start = time.perf_counter()
    rows = graded_rows(args.release_dir)
    train, heldout = fit.split_prompts(seed=args.seed)
    selected = {m: selected_rows(m, args.release_dir) for m in METHODS}
    split = {
        "rule": "numpy.random.default_rng(seed).permutation(260); first half = train",
        "seed": args.seed,
        "train_fraction": fit.TRAIN_FRACTION,
        "n_prompts": fit.N_PROMPTS,
    }
    cal = fit.fit_calibration(
        rows, train_prompts=train, selected=selected, split=split, seed=args.seed
    )
    assert not set(cal.train_prompts) & set(heldout)
    cal.save(args.out)
    print(
        json.dumps(
            {
                "out": args.out,
                "l2": cal.l2,
                "decode": cal.decode,
                "simpleqa_correct": cal.simpleqa_correct,
                "cv": cal.info["cv"],
                "seconds": round(time.perf_counter() - start, 1),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
