"""Judge agreement of offline judges with the release's Mistral grades (issue 6).

Grades the 1045 released answers (baseline 260, full 260, segmented 525) on the 1-5
quality rubric with each judge given, compares with ``mistral-small-latest``, and
writes per judge ``<out-dir>/<judge>.json`` / ``.nc`` plus ``<out-dir>/summary.md``
(a markdown table of every report in the folder). Answers are cached in
``<out-dir>/answers.sqlite``, so an interrupted run resumes and a rerun is free.

Usage::

    python experiments/judge_agreement.py local:smollm2-135m
    python experiments/judge_agreement.py local:qwen2.5-coder-0.5b --limit 300
    python experiments/judge_agreement.py --summary-only
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fsnn.analysis.judge_agreement import agreement_main, format_report, judge_slug, summary_table
from fsnn.errors import FsnnError
from fsnn.judges.base import JudgeConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("judges", nargs="*", help="judge specs (local:MODEL, http:MODEL@URL)")
    parser.add_argument("--limit", type=int, help="stratified subset of N rows per judge")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--release-dir", help="default $FSNN_RELEASE_DIR")
    parser.add_argument("--out-dir", default="runs/judge_agreement")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--summary-only", action="store_true", help="only rebuild summary.md")
    args = parser.parse_args(argv)
    out_dir = Path(args.out_dir)
    try:
        for spec in [] if args.summary_only else args.judges:
            config = JudgeConfig.from_spec(spec, batch_size=args.batch_size)
            report = agreement_main(
                config,
                release_dir=args.release_dir,
                limit=args.limit,
                seed=args.seed,
                out=out_dir / judge_slug(config.judge_id),
                cache=out_dir / "answers.sqlite",
            )
            print(format_report(report), flush=True)
    except FsnnError as exc:
        print(f"judge_agreement: error: {exc}", file=sys.stderr)
        return 2
    reports = [json.loads(p.read_text()) for p in sorted(out_dir.glob("*.json"))]
    reports = [r for r in reports if "overall" in r and "judge_id" in r]
    if reports:
        table = summary_table(reports)
        (out_dir / "summary.md").write_text(table + "\n")
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
