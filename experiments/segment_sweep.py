"""Steer one layer segment at a time: which third of the network carries the answer?

For a seeded, topic-stratified sample of SimpleQA questions, capture each question's
reference vectors once (docs/method.md §3, eq. 1), then steer ONLY the early, the
middle or the late third of the decoder layers, at a few strengths k = alpha * gamma
(alpha = 1), and measure how often the completion reaches the answer (token overlap on
the completion only, TO >= 0.5). Every (segment, strength) cell steers the same prompts
with the same number of generated tokens, so cells are paired.

Uses only the public API (``import fsnn``). Writes a labeled dataset
``segment_sweep.nc`` (dims prompt, segment, strength) and a figure with 95% bootstrap
intervals over prompts. This is the oracle setting: the answer builds the reference.

    python experiments/segment_sweep.py --out runs/segment_sweep            # ~10 min, 2 CPU cores
    python experiments/segment_sweep.py --out runs/segment_sweep --quick    # ~1 min
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import xarray as xr

import fsnn

STRENGTHS = (0.0, 0.05, 0.1, 0.2, 0.4)
SEGMENT_NAMES = ("early", "middle", "late")


def bootstrap_interval(
    values: np.ndarray, *, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean over prompts (last axis)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.shape[-1], size=(n_boot, values.shape[-1]))
    means = values[..., idx].mean(axis=-1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def sweep(
    model: fsnn.LoadedModel,
    questions: list[fsnn.Question],
    *,
    max_new_tokens: int,
    strengths: tuple[float, ...],
    mode: str,
) -> xr.Dataset:
    items = [fsnn.ReferenceItem(question=q.question, answer=q.answer) for q in questions]
    h = fsnn.capture_references(model, items)
    prompts = [
        f"Question: {q.question}\nAnswer and explanation:" for q in questions
    ]  # docs/method.md §4
    thirds = fsnn.SegmentLayout.segmented(model.n_layers)
    to = np.full((len(questions), len(SEGMENT_NAMES), len(strengths)), np.nan)
    completions = np.full(to.shape, "", dtype=object)
    for s, (name, layer_range) in enumerate(zip(SEGMENT_NAMES, thirds.ranges, strict=True)):
        layout = fsnn.SegmentLayout(name=name, ranges=(layer_range,), segment_names=(name,))
        for k, strength in enumerate(strengths):
            steering = fsnn.Steering(
                references=h,
                mode=mode,
                strengths=fsnn.Strengths(layout=layout, alpha=(1.0,), gamma=(strength,)),
            )
            outs = steering.generate(model, prompts, max_new_tokens=max_new_tokens)
            for p, (q, out) in enumerate(zip(questions, outs, strict=True)):
                to[p, s, k] = fsnn.token_overlap(q.answer, out.completion)
                completions[p, s, k] = out.completion
            print(
                f"{name:>6} k={strength:<5} TO>=0.5: {np.mean(to[:, s, k] >= 0.5):.0%}", flush=True
            )
    return xr.Dataset(
        {
            "token_overlap": (("prompt", "segment", "strength"), to),
            "completion": (("prompt", "segment", "strength"), completions),
        },
        coords={
            "prompt": np.arange(len(questions)),
            "segment": np.asarray(SEGMENT_NAMES, dtype=object),
            "strength": np.asarray(strengths, dtype=float),
            "simpleqa_id": ("prompt", np.asarray([q.id for q in questions], dtype=np.int64)),
            "question": ("prompt", np.asarray([q.question for q in questions], dtype=object)),
            "answer": ("prompt", np.asarray([q.answer for q in questions], dtype=object)),
            "layers": ("segment", np.asarray([f"{a}-{b}" for a, b in thirds.ranges], dtype=object)),
        },
        attrs={
            "model": model.name,
            "mode": mode,
            "max_new_tokens": max_new_tokens,
            "scored_on": "completion",
            "alpha": 1.0,
            "fsnn_version": fsnn.__version__,
            "note": "oracle setting: the gold answer builds the reference",
        },
    )


def plot(ds: xr.Dataset, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    hit = (ds.token_overlap.values >= 0.5).astype(float)  # (prompt, segment, strength)
    for s, name in enumerate(ds.segment.values):
        rate = hit[:, s].mean(axis=0)
        lo_hi = np.array([bootstrap_interval(hit[:, s, k]) for k in range(ds.sizes["strength"])])
        ax.errorbar(
            ds.strength.values + (s - 1) * 0.004,
            rate,
            yerr=[rate - lo_hi[:, 0], lo_hi[:, 1] - rate],
            marker="o",
            capsize=3,
            label=f"{name} (layers {ds.layers.values[s]})",
        )
    ax.set_xlabel("strength k = alpha * gamma (only this segment steered)")
    ax.set_ylabel("share of prompts with TO >= 0.5 (completion)")
    ax.set_title(
        f"{ds.attrs['model']}, {ds.attrs['mode']}, n = {ds.sizes['prompt']} prompts, 95% bootstrap CI"
    )
    ax.set_ylim(-0.02, 1.02)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--out", default="runs/segment_sweep", help="output folder")
    parser.add_argument("--model", default="smollm2-135m", help="model alias, folder or hub id")
    parser.add_argument(
        "--simpleqa-csv", default=None, help="SimpleQA CSV (default $FSNN_SIMPLEQA_CSV)"
    )
    parser.add_argument(
        "--per-topic", type=int, default=2, help="questions sampled per SimpleQA topic"
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="tokens per steered answer")
    parser.add_argument(
        "--mode", choices=("faithful", "cached"), default="cached", help="steering mode"
    )
    parser.add_argument(
        "--quick", action="store_true", help="4 questions, 2 strengths, 12 tokens (smoke test)"
    )
    args = parser.parse_args(argv)
    try:
        questions = fsnn.select_questions(
            fsnn.load_simpleqa(args.simpleqa_csv), stratified=args.per_topic, seed=args.seed
        )
        strengths, tokens = STRENGTHS, args.max_new_tokens
        if args.quick:
            questions, strengths, tokens = questions[:4], (0.0, 0.2), 12
        started = time.perf_counter()
        model = fsnn.load_model(args.model)
        ds = sweep(model, questions, max_new_tokens=tokens, strengths=strengths, mode=args.mode)
    except fsnn.FsnnError as exc:
        print(f"segment_sweep: error: {exc}", file=sys.stderr)
        return 2
    ds.attrs["wall_seconds"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".segment_sweep.nc.tmp"
    ds.to_netcdf(
        tmp,
        engine="netcdf4",
        encoding={
            k: {"dtype": str} for k in ("completion", "question", "answer", "segment", "layers")
        },
    )
    tmp.replace(out / "segment_sweep.nc")  # atomic: never half a file
    plot(ds, out / "segment_sweep.png")
    print(
        f"wrote {out / 'segment_sweep.nc'} and {out / 'segment_sweep.png'} ({ds.attrs['wall_seconds']} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
