"""How close is the ``cached`` mode to the ``faithful`` one, at the strengths a search picked?

Reads a finished run folder (``references.nc`` + ``results.nc``), regenerates every
steered method's best trial in both modes, and reports per method:

- the cached regeneration reproduces the run's stored completion (a self-check when the
  run used cached mode);
- exact-match rate of cached vs faithful completions;
- token-level match rate: the fraction of positions (over the longer completion) where
  the two token sequences agree, and the mean length of the common prefix;
- mean token overlap (TO) with the answer in each mode, and the TO >= 0.5 rate.

    python -m benchmarks.mode_agreement runs/NAME [--max-new-tokens 100] [--out docs/mode_agreement.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from fsnn.judges.metrics import token_overlap
from fsnn.models.load import load_model
from fsnn.steering.layout import SegmentLayout
from fsnn.steering.prompts import PAPER_TEMPLATES
from fsnn.steering.steer import steered_generate
from fsnn.store.files import atomic_write_text, open_run


def _match(a: list[int], b: list[int]) -> tuple[float, int]:
    n = max(len(a), len(b))
    same = sum(x == y for x, y in zip(a, b, strict=False))
    prefix = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        prefix += 1
    return (same / n if n else 1.0), prefix


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--batch-rows", type=int, default=16)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    run = Path(args.run)
    folder = open_run(run, require=("references", "results"))
    refs, results = folder.require("references"), folder.require("results")
    config = json.loads(results.attrs["config"])
    model = load_model(config["model"], dtype=config.get("dtype", "float32"))
    max_new = args.max_new_tokens or config["max_new_tokens"]
    h = torch.from_numpy(np.asarray(refs.h.values, dtype=np.float32))
    prompts = [PAPER_TEMPLATES.steering_prompt(str(q)) for q in refs.question.values]
    answers = [str(a) for a in refs.answer.values]
    report: dict = {
        "run": str(run),
        "model": model.name,
        "max_new_tokens": max_new,
        "prompts": len(prompts),
        "methods": {},
    }
    for method in [str(m) for m in results.method.values if str(m) != "baseline"]:
        layout = SegmentLayout.named(method, model.n_layers)
        r = results.sel({"method": method})
        alpha = torch.zeros(len(prompts), model.n_layers)
        gamma = torch.zeros(len(prompts), model.n_layers)
        for i in range(len(prompts)):
            a_seg = r.alpha.sel(segment=list(layout.segment_names)).values[i]
            g_seg = r.gamma.sel(segment=list(layout.segment_names)).values[i]
            for (first, last), a, g in zip(layout.ranges, a_seg, g_seg, strict=True):
                alpha[i, first : last + 1], gamma[i, first : last + 1] = float(a), float(g)
        outs, seconds = {}, {}
        for mode in ("cached", "faithful"):
            start = time.perf_counter()
            outs[mode] = steered_generate(
                model,
                prompts,
                h,
                alpha,
                gamma,
                mode=mode,
                max_new_tokens=max_new,
                batch_size=args.batch_rows,
            )
            seconds[mode] = time.perf_counter() - start
        pairs = [
            _match(c.ids, f.ids) for c, f in zip(outs["cached"], outs["faithful"], strict=True)
        ]
        to = {
            m: [token_overlap(a, o.text) for a, o in zip(answers, outs[m], strict=True)]
            for m in outs
        }
        stored = [str(c) for c in r.completion.values]
        report["methods"][method] = {
            "cached_reproduces_run": float(
                np.mean([o.completion == s for o, s in zip(outs["cached"], stored, strict=True)])
            ),
            "exact_match": float(
                np.mean(
                    [c.ids == f.ids for c, f in zip(outs["cached"], outs["faithful"], strict=True)]
                )
            ),
            "token_match_rate": float(np.mean([p[0] for p in pairs])),
            "mean_common_prefix_tokens": float(np.mean([p[1] for p in pairs])),
            "mean_to_cached": float(np.mean(to["cached"])),
            "mean_to_faithful": float(np.mean(to["faithful"])),
            "to_ge_0.5_cached": float(np.mean(np.asarray(to["cached"]) >= 0.5)),
            "to_ge_0.5_faithful": float(np.mean(np.asarray(to["faithful"]) >= 0.5)),
            "seconds_cached": seconds["cached"],
            "seconds_faithful": seconds["faithful"],
        }
        print(method, json.dumps(report["methods"][method], indent=1))
    if args.out:
        atomic_write_text(args.out, json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
