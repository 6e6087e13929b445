"""The paper's full configuration (METHOD.md §2): Gemma-2-2B-IT in 8-bit, the first 500
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

from fsnn.pipeline import RunConfig, run_pipeline, summary_table

PAPER = RunConfig(
    model="google/gemma-2-2b-it",
    load_in_8bit=True,
    dtype="float16",
    device="cuda",
    limit=500,
    methods=("full", "segmented"),
    n_trials=5,
    batch_trials=5,
    batch_rows=32,
    sampler="tpe",
    parametrization="alpha_gamma",
    unreadable_penalty=0.0,  # eq. (6) as the paper used it (no readability guard)
    mode="faithful",
    max_new_tokens=100,
    baseline_prompt="qa",
    select="incorrect",
    score_on="full",
    judge="mistral",
    judge_missing="zero",
    ppl_model="openai-community/gpt2",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/paper")
    parser.add_argument("--judge", default=PAPER.judge)
    parser.add_argument("--simpleqa-csv", default=None)
    parser.add_argument("--mode", choices=("faithful", "cached"), default=PAPER.mode)
    args = parser.parse_args(argv)
    from dataclasses import replace

    config = replace(PAPER, judge=args.judge, mode=args.mode)
    results = run_pipeline(config, args.out, simpleqa_csv=args.simpleqa_csv)
    print(summary_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
