"""Search-stage throughput with Ray workers (issue 24): 2 workers x 1 thread vs 1 x 1.

    PYTHONPATH=. FSNN_SIMPLEQA_CSV=... python benchmarks/ray_scaling.py [--repeats 3]

One folder with the baseline and the references is made first (single process); each
timed run starts from a copy of it, so only the search (and the final scoring) run.
Variants, interleaved round by round with the order rotated: the single process (one
torch thread), ``RayPool(1)`` and ``RayPool(2)`` (one CPU and one torch thread per
worker). Timed: the search stage (``search_stage``, wall) and, for the pools, the Ray
start-up (``ray.init`` + the workers' model loads, until every worker is ready). The
load average is recorded before and after. Writes ``benchmarks/ray_scaling.json``;
nothing here is asserted anywhere, CI never runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import fsnn.experiment.pipeline as pipeline  # noqa: E402
from fsnn.experiment.pipeline import RunConfig, run_pipeline  # noqa: E402
from fsnn.experiment.workers import RayPool  # noqa: E402

TIMES: dict[str, float] = {}


def _timed_search(real):
    def search_stage(ctx, refs):
        start = time.perf_counter()
        out = real(ctx, refs)
        TIMES["search"] = time.perf_counter() - start
        return out

    return search_stage


class TimedPool(RayPool):
    def start(self, *args, **kwargs):
        start = time.perf_counter()
        out = super().start(*args, **kwargs)
        TIMES["startup"] = time.perf_counter() - start
        return out


def _same(a: Path, b: Path) -> bool:
    """trials.nc and results.nc equal but for the volatile attributes."""
    import xarray as xr

    from fsnn.store.files import read_dataset

    for name in ("trials", "results"):
        x, y = read_dataset(a / f"{name}.nc"), read_dataset(b / f"{name}.nc")
        for ds in (x, y):
            ds.attrs = {
                k: v
                for k, v in ds.attrs.items()
                if k not in ("created", "git_sha", "model_source") and not k.startswith("version_")
            }
        try:
            xr.testing.assert_identical(x, y)
        except AssertionError:
            return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args()
    torch.set_num_threads(1)
    pipeline.search_stage = _timed_search(pipeline.search_stage)
    config = RunConfig(
        model=args.model,
        limit=args.prompts,
        n_trials=args.trials,
        max_new_tokens=args.tokens,
        mode="cached",
        select="not-correct",
    )
    tmp = Path(tempfile.mkdtemp(prefix="fsnn-ray-scaling-"))
    load_before = os.getloadavg()
    run_pipeline(
        config, tmp / "prepared", progress=False
    )  # baseline + references (+ one search, unused)
    steered = int(
        __import__("xarray").open_dataset(tmp / "prepared" / "references.nc").sizes["prompt"]
    )
    variants = {
        "single process, 1 thread": 0,
        "RayPool(1), 1 thread": 1,
        "RayPool(2), 1 thread each": 2,
    }
    samples: dict[str, dict[str, list[float]]] = {
        v: {"search": [], "startup": [], "total": []} for v in variants
    }
    names = list(variants)
    for r in range(args.repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            out = tmp / f"{r}-{variants[name]}"
            out.mkdir()
            for f in ("config.json", "baseline.nc", "references.nc"):
                shutil.copy(tmp / "prepared" / f, out / f)
            TIMES.clear()
            start = time.perf_counter()
            if variants[name] == 0:
                run_pipeline(config, out, progress=False)
            else:
                with TimedPool(variants[name], progress=False) as pool:
                    run_pipeline(config, out, progress=False, pool=pool)
            samples[name]["total"].append(time.perf_counter() - start)
            samples[name]["search"].append(TIMES["search"])
            if "startup" in TIMES:
                samples[name]["startup"].append(TIMES["startup"])
            print(
                f"round {r} {name}: search {TIMES['search']:.1f} s, startup {TIMES.get('startup', 0):.1f} s, "
                f"load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
    load_after = os.getloadavg()
    identical = {}  # every pool run's files against the single process of the same round
    for name, k in variants.items():
        if k:
            identical[name] = all(
                _same(tmp / f"{r}-0", tmp / f"{r}-{k}") for r in range(args.repeats)
            )
    trials = steered * args.trials * len(config.methods)
    med = {n: {k: statistics.median(v) for k, v in s.items() if v} for n, s in samples.items()}
    report = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": f"{platform.processor() or platform.machine()}, nproc {os.cpu_count()}",
        "load_before": load_before,
        "load_after": load_after,
        "model": args.model,
        "steered_prompts": steered,
        "trials_per_prompt": args.trials,
        "methods": list(config.methods),
        "new_tokens": args.tokens,
        "mode": "cached",
        "repeats": args.repeats,
        "samples": samples,
        "median": med,
        "identical_to_single": identical,
        "trials_per_s": {n: trials / m["search"] for n, m in med.items()},
        "speedup_2_over_1_workers": med["RayPool(1), 1 thread"]["search"]
        / med["RayPool(2), 1 thread each"]["search"],
        "speedup_2_workers_over_single": med["single process, 1 thread"]["search"]
        / med["RayPool(2), 1 thread each"]["search"],
    }
    (ROOT / "benchmarks" / "ray_scaling.json").write_text(json.dumps(report, indent=1))
    print(
        json.dumps(
            {
                k: report[k]
                for k in (
                    "median",
                    "trials_per_s",
                    "identical_to_single",
                    "speedup_2_over_1_workers",
                    "speedup_2_workers_over_single",
                    "load_before",
                    "load_after",
                )
            },
            indent=1,
        )
    )
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
