"""The paper's full configuration (docs/method.md §2): Gemma-2-2B-IT in 8-bit, the first 500
SimpleQA rows -> the INCORRECT ones -> 5 Optuna trials per prompt, full-layer and
segmented, faithful (no-KV-cache) steering, 100 new tokens, judged by an
OpenAI-compatible endpoint (paper: mistral-small-latest).

Needs the hub (gated Gemma weights), a GPU for reasonable speed, and a judge key::

    export MISTRAL_API_KEY=...      # read from the environment, never stored
    python experiments/simpleqa_paper.py --out runs/paper [--judge mistral | local:qwen2.5-coder-1.5b | http:MODEL@URL]

Rerun the same command to resume. Parity switches kept as in the release: TO/PPL on the
full decoded text (``score_on="full"``), a missing judge score counts as 0, GPT-2 small
as the perplexity scorer.
"""

from __future__ import annotations

import argparse

from fsnn.experiment.config_file import (
    PAPER_PRESET,
    config_sources,
    format_config,
    resolve_run_config,
)
from fsnn.experiment.pipeline import run_pipeline, summary_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/paper")
    # the same preset as `fsnn run --paper` (resolved only here: it needs CUDA and the judge's key)
    parser.add_argument("--judge", default=PAPER_PRESET["judge"])
    parser.add_argument("--simpleqa-csv", default=None)
    parser.add_argument("--mode", choices=("faithful", "cached"), default=PAPER_PRESET["mode"])
    args = parser.parse_args(argv)
    flags = {"judge": args.judge, "mode": args.mode}
    config = resolve_run_config(preset=PAPER_PRESET, flag_values=flags)
    print(format_config(config, config_sources(preset=PAPER_PRESET, flag_values=flags)))
    results = run_pipeline(config, args.out, simpleqa_csv=args.simpleqa_csv)
    print(summary_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
