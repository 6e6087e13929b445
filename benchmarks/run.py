"""fsnn benchmark suite (issue 9): ``python -m benchmarks.run [--quick] [--out docs/benchmarks.md]``.

Prints each figure as it is measured and writes ``benchmarks/results.json`` (every
sample) and a markdown report (machine, versions, date, tables). Sections:

a. steering overhead: steered ``cached`` generate vs plain generate; nnsight vs plain hooks
b. batched trials: K trials as the rows of one steered generate vs K sequential calls
c. faithful vs cached at growing lengths (the quadratic curve), and how far they agree
d. reference capture: one pass for all layers vs one pass per layer
e. end to end per prompt: the paper protocol this package's way vs the release's plan
f. 8-bit (bitsandbytes) vs fp32 vs bf16 on CPU

Every figure is a median over repeated runs; the variants compared run interleaved in
the same process. Not run by CI; nothing here is asserted anywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fsnn.store.files import atomic_write_text

from .timing import Sample, Timing, interleaved, time_call

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("a", "b", "c", "d", "e", "f")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Sizes of every section (``--quick`` shrinks them).

    Attributes:
        repeats: timed repeats per figure (medians are reported).
        a_tokens, a_batches: new tokens and batch sizes of the overhead rows.
        b_tokens, b_ks, b_direct_k: new tokens, trial counts K, and the K whose K
            sequential calls are timed directly every round (the other sequential
            figures are K x the median single-call time).
        b_faithful_ks: K of the faithful rows of (b).
        c_lengths: new tokens of the faithful-vs-cached rows.
        d_items: prompts per capture call.
        e_tokens, e_prompts, e_naive_prompts: new tokens, prompts through the package
            plan, prompts through the naive plan (one run each: ~250 s per prompt).
        e_faithful: also time the package plan in faithful mode (one prompt, one run).
        f_tokens: new tokens of the dtype rows.
    """

    repeats: int = 3
    a_tokens: int = 64
    a_batches: tuple[int, ...] = (1, 8)
    b_tokens: int = 32
    b_ks: tuple[int, ...] = (1, 4, 8, 16, 32)
    b_direct_k: int = 8
    b_faithful_ks: tuple[int, ...] = (4,)
    c_lengths: tuple[int, ...] = (32, 100, 200)
    d_items: int = 4
    e_tokens: int = 100
    e_prompts: int = 8
    e_naive_prompts: int = 1
    e_faithful: bool = True
    f_tokens: int = 32


QUICK = Settings(
    repeats=3,
    a_tokens=16,
    a_batches=(1, 8),
    b_tokens=16,
    b_ks=(1, 4, 8),
    b_direct_k=4,
    b_faithful_ks=(4,),
    c_lengths=(16, 32, 48),
    d_items=2,
    e_tokens=16,
    e_prompts=2,
    e_naive_prompts=1,
    e_faithful=False,
    f_tokens=16,
)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- context


def machine_info(threads: int) -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "mem_gib": mem,
        "torch_threads": threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in (
        "fsnn",
        "torch",
        "transformers",
        "nnsight",
        "optuna",
        "bitsandbytes",
        "accelerate",
        "numpy",
    ):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def simpleqa_rows(n: int) -> list[Any]:
    from fsnn.experiment.simpleqa import simpleqa_path

    from .protocol import QA

    path = simpleqa_path()  # $FSNN_SIMPLEQA_CSV, else the cached download (no machine path)
    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        for i, rec in enumerate(csv.DictReader(fh)):
            if i >= n:
                break
            rows.append(QA(key=f"simpleqa-{i}", question=rec["problem"], answer=rec["answer"]))
    return rows


def comparison(
    name: str,
    num: Timing | dict[str, float],
    den: Timing | dict[str, float],
    *,
    kind: str,
    goal: str | None = None,
    ok: Callable[[float], bool] | None = None,
    note: str = "",
) -> dict[str, Any]:
    """num/den of wall and CPU medians. ``kind``: 'speedup' (num is the slow one) or
    'overhead' (num is the steered one, shown as a percentage)."""
    nw, nc = (num.wall, num.cpu) if isinstance(num, Timing) else (num["wall"], num["cpu"])
    dw, dc = (den.wall, den.cpu) if isinstance(den, Timing) else (den["wall"], den["cpu"])
    rw, rc = nw / dw, nc / dc
    out: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "ratio_wall": round(rw, 3),
        "ratio_cpu": round(rc, 3),
    }
    if goal:
        out["goal"] = goal
        out["met_wall"] = bool(ok(rw)) if ok else None
        out["met_cpu"] = bool(ok(rc)) if ok else None
    if note:
        out["note"] = note
    return out


class Bench:
    """Shared state: the loaded models, prompts, references, coefficients."""

    def __init__(self, args: argparse.Namespace, settings: Settings):
        from fsnn.models.load import load_model
        from fsnn.steering.references import ReferenceItem, capture_references

        from .hook_steer import load_raw_model

        self.args, self.s = args, settings
        log(f"loading {args.model} (fp32, nnsight) and an unwrapped copy for the plain paths")
        self.model = load_model(args.model)
        self.raw = load_raw_model(self.model.source)
        n_rows = max(
            32,
            settings.e_prompts,
            settings.e_naive_prompts,
            max(settings.a_batches),
            settings.d_items,
        )
        self.rows = simpleqa_rows(n_rows)
        from fsnn.steering.prompts import PAPER_TEMPLATES

        self.prompts = [PAPER_TEMPLATES.steering_prompt(r.question) for r in self.rows]
        self.items = [
            ReferenceItem(
                question=r.question,
                answer=r.answer,
                explanation=f"{r.answer} is the answer to the question: {r.question}",
            )
            for r in self.rows
        ]
        # real reference vectors of the first rows (answer + a one-sentence explanation)
        n_ref = max(settings.a_batches)
        self.h = torch.from_numpy(capture_references(self.model, self.items[:n_ref]).values)
        gen = torch.Generator().manual_seed(0)
        # per row one (alpha, gamma) pair shared by all layers ("full"), uniform [0.01, 1]
        pair = 0.01 + 0.99 * torch.rand(
            max(settings.b_ks + settings.a_batches + (32,)), 2, generator=gen
        )
        L = self.model.n_layers
        self.alpha = pair[:, :1].expand(-1, L).contiguous()
        self.gamma = pair[:, 1:].expand(-1, L).contiguous()
        # warm-up: first calls pay one-off costs (allocator, lazy imports)
        self.steer(self.prompts[:1], self.h[:1], 0, 1, "cached", 2)
        self.plain(self.prompts[:1], 2)

    @contextlib.contextmanager
    def no_eos(self, *models: Any) -> Iterator[None]:
        """Rows generate exactly max_new_tokens: with ``stop_at_eos=False`` fsnn passes no
        EOS id, but transformers fills it in from the checkpoint's generation config and
        still ends a finished batch early, so timed variants could run different numbers
        of steps. The benchmark clears that default while it times fixed-length rows."""
        modules = [self.raw] + [m.hf_model for m in (self.model, *models)]
        saved = [mod.generation_config.eos_token_id for mod in modules]
        for mod in modules:
            mod.generation_config.eos_token_id = None
        try:
            yield
        finally:
            for mod, eos in zip(modules, saved, strict=True):
                mod.generation_config.eos_token_id = eos

    def plain(self, prompts: list[str], tokens: int, model: Any = None) -> Any:
        from fsnn.steering.generation import generate

        return generate(
            model or self.model,
            prompts,
            max_new_tokens=tokens,
            batch_size=len(prompts),
            stop_at_eos=False,
        )

    def steer(
        self,
        prompts: list[str],
        h: torch.Tensor,
        first: int,
        n: int,
        mode: str,
        tokens: int,
        model: Any = None,
    ) -> Any:
        """Steered rows ``first..first+n`` of the coefficient table."""
        from fsnn.steering.steer import steered_generate

        return steered_generate(
            model or self.model,
            prompts,
            h,
            self.alpha[first : first + n],
            self.gamma[first : first + n],
            mode=mode,
            max_new_tokens=tokens,
            stop_at_eos=False,
        )


# --------------------------------------------------------------------------- sections


def section_a(b: Bench) -> dict[str, Any]:
    from .hook_steer import hook_steered_generate, raw_generate
    from .probes import nnsight_probe

    s, rows, comps, notes = b.s, [], [], []
    tok = b.model.tokenizer
    for batch in s.a_batches:
        log(f"  (a) batch {batch}, {s.a_tokens} new tokens")
        p, h, n = b.prompts[:batch], b.h[:batch], batch
        variants = {
            f"B={batch} plain generate (fsnn.steering.generation)": lambda p=p: b.plain(
                p, s.a_tokens
            ),
            f"B={batch} plain generate, unwrapped model": lambda p=p: raw_generate(
                b.raw, tok, p, max_new_tokens=s.a_tokens
            ),
            f"B={batch} steered cached, nnsight (fsnn.steering.steer)": lambda p=p, h=h, n=n: (
                b.steer(p, h, 0, n, "cached", s.a_tokens)
            ),
            f"B={batch} steered cached, plain hooks": lambda p=p, h=h, n=n: hook_steered_generate(
                b.raw, tok, p, h, b.alpha[:n], b.gamma[:n], max_new_tokens=s.a_tokens
            ),
        }
        if batch == 1:  # where the nnsight path's overhead goes
            variants[f"B={batch} nnsight generate, no layer touched"] = lambda p=p: nnsight_probe(
                b.model, p, max_new_tokens=s.a_tokens, read_layers=False
            )
            variants[f"B={batch} nnsight generate, every layer's output read"] = lambda p=p: (
                nnsight_probe(b.model, p, max_new_tokens=s.a_tokens, read_layers=True)
            )
        t, res = interleaved(variants, s.repeats, log=log)
        for x in t.values():
            x.info.update(batch=batch, new_tokens=s.a_tokens)
            rows.append(x.to_dict())
        plain, raw, nn, hook = (t[k] for k in list(variants)[:4])
        if batch == 1:
            bare, read = (t[k] for k in list(variants)[4:])
            comps.append(
                comparison(
                    f"B={batch} breakdown: generate under an nnsight trace (no layers / plain)",
                    bare,
                    plain,
                    kind="overhead",
                )
            )
            comps.append(
                comparison(
                    f"B={batch} breakdown: stopping at {b.model.n_layers} layers (read / no layers)",
                    read,
                    bare,
                    kind="overhead",
                )
            )
            comps.append(
                comparison(
                    f"B={batch} breakdown: the steering itself (steered / read)",
                    nn,
                    read,
                    kind="overhead",
                )
            )
        same = [o.ids for o in res[nn.name]] == res[hook.name].tolist()
        full = all(len(o.ids) == s.a_tokens for o in res[nn.name] + res[plain.name])
        notes.append(
            f"B={batch}: nnsight and plain-hook steered tokens identical: {same}; "
            f"every row generated {s.a_tokens} tokens: {full}"
        )
        comps.append(
            comparison(
                f"B={batch} steering overhead, nnsight path (steered / plain)",
                nn,
                plain,
                kind="overhead",
                goal="<= 10%",
                ok=lambda r: r <= 1.10,
            )
        )
        comps.append(
            comparison(
                f"B={batch} steering overhead, plain-hook path (steered / plain, unwrapped)",
                hook,
                raw,
                kind="overhead",
            )
        )
        comps.append(
            comparison(
                f"B={batch} nnsight's own cost (nnsight steered / hook steered)",
                nn,
                hook,
                kind="overhead",
            )
        )
        comps.append(
            comparison(
                f"B={batch} nnsight wrappers on a plain generate (fsnn / unwrapped)",
                plain,
                raw,
                kind="overhead",
            )
        )
    return {
        "title": "(a) Steering overhead: cached steering at every layer and step vs plain generate",
        "rows": rows,
        "comparisons": comps,
        "notes": notes,
    }


def section_b(b: Bench) -> dict[str, Any]:
    s, rows, comps, notes = b.s, [], [], []
    prompt, h0 = b.prompts[0], b.h[:1]
    for mode, ks in (("cached", s.b_ks), ("faithful", s.b_faithful_ks)):
        if not ks:
            continue
        log(f"  (b) {mode}: K = {ks}, {s.b_tokens} new tokens, one prompt")
        batched = {
            k: Timing(name=f"{mode} K={k} batched (one call of K rows)", info={"K": k}) for k in ks
        }
        single = Timing(name=f"{mode} single-row call", info={"K": 1})
        direct_k = s.b_direct_k if mode == "cached" else None
        direct = Timing(
            name=f"{mode} K={direct_k} sequential (K calls, timed directly)", info={"K": direct_k}
        )
        for r in range(s.repeats):
            jobs: list[tuple[str, Any]] = [("batched", k) for k in ks]
            jobs += [("direct", direct_k)] if direct_k else [("single", 1)]
            jobs = jobs[r % len(jobs) :] + jobs[: r % len(jobs)]
            for what, k in jobs:
                if what == "batched":
                    sample, _ = time_call(
                        lambda k=k, mode=mode: b.steer(
                            [prompt] * k, h0.expand(k, -1, -1), 0, k, mode, s.b_tokens
                        )
                    )
                    batched[k].samples.append(sample)
                    if k == 1:
                        single.samples.append(sample)
                elif what == "single":
                    sample, _ = time_call(
                        lambda mode=mode: b.steer([prompt], h0, 1, 1, mode, s.b_tokens)
                    )
                    single.samples.append(sample)
                else:  # K sequential single-row calls, each a single-call sample too
                    parts = []
                    for i in range(k):
                        part, _ = time_call(
                            lambda i=i, mode=mode: b.steer([prompt], h0, i, 1, mode, s.b_tokens)
                        )
                        single.samples.append(part)
                        parts.append(part)
                    sample = Sample(wall=sum(p.wall for p in parts), cpu=sum(p.cpu for p in parts))
                    direct.samples.append(sample)
                log(
                    f"    {mode} {what} K={k} round {r + 1}: wall {sample.wall:7.2f}s  cpu {sample.cpu:7.2f}s"
                )
        for t in (*batched.values(), single, *([direct] if direct_k else [])):
            t.info["new_tokens"] = s.b_tokens
            rows.append(t.to_dict())
        if direct_k:
            comps.append(
                comparison(
                    f"{mode} K={direct_k}: sequential (timed) / batched",
                    direct,
                    batched[direct_k],
                    kind="speedup",
                    goal=">= 5x" if direct_k == 8 else None,
                    ok=(lambda r: r >= 5) if direct_k == 8 else None,
                )
            )
        for k in ks:
            if k == 1:
                continue
            est = {"wall": k * single.wall, "cpu": k * single.cpu}
            goal = k == 8 and mode == "cached" and direct_k != 8  # else the timed row carries it
            comps.append(
                comparison(
                    f"{mode} K={k}: sequential (K x median single call) / batched",
                    est,
                    batched[k],
                    kind="speedup",
                    goal=">= 5x" if goal else None,
                    ok=(lambda r: r >= 5) if goal else None,
                )
            )
        notes.append(f"{mode}: single-call median over {len(single.samples)} calls")
    return {
        "title": "(b) Batched trials: K trials of one prompt in one steered generate vs K sequential calls",
        "rows": rows,
        "comparisons": comps,
        "notes": notes,
    }


def section_c(b: Bench) -> dict[str, Any]:
    s, rows, comps, notes = b.s, [], [], []
    prompt, h0 = b.prompts[:1], b.h[:1]
    for n in s.c_lengths:
        log(f"  (c) {n} new tokens, batch 1")
        variants = {
            f"{mode} {n} tokens": (lambda mode=mode, n=n: b.steer(prompt, h0, 0, 1, mode, n))
            for mode in ("cached", "faithful")
        }
        t, res = interleaved(variants, s.repeats, log=log)
        cached, faithful = t[f"cached {n} tokens"], t[f"faithful {n} tokens"]
        for x in (cached, faithful):
            x.info["new_tokens"] = n
            rows.append(x.to_dict())
        a, f = res[cached.name][0].ids, res[faithful.name][0].ids
        first = next((i for i, (x, y) in enumerate(zip(a, f, strict=True)) if x != y), len(a))
        agree = sum(x == y for x, y in zip(a, f, strict=True)) / len(a)
        notes.append(
            f"{n} tokens: cached and faithful agree on the first {first} tokens, "
            f"{agree:.0%} of positions equal"
        )
        comps.append(comparison(f"{n} tokens: faithful / cached", faithful, cached, kind="speedup"))
    return {
        "title": "(c) Faithful (no KV cache) vs cached steering, batch 1: the quadratic curve",
        "rows": rows,
        "comparisons": comps,
        "notes": notes,
    }


def section_d(b: Bench) -> dict[str, Any]:
    from fsnn.steering.references import capture_references

    s = b.s
    items = b.items[: s.d_items]
    log(f"  (d) capture of {len(items)} references")
    variants = {
        f"one pass for all layers ({len(items)} prompts)": lambda: capture_references(
            b.model, items
        ),
        f"one pass per layer ({len(items)} prompts)": lambda: capture_references(
            b.model, items, per_layer_passes=True
        ),
    }
    t, res = interleaved(variants, s.repeats, log=log)
    one, per = (t[k] for k in variants)
    vals = list(res.values())
    same = bool(abs(vals[0].values - vals[1].values).max() <= 1e-5)
    return {
        "title": "(d) Reference capture: one traced pass for all layers vs one pass per layer",
        "rows": [one.to_dict(), per.to_dict()],
        "comparisons": [comparison("per layer / one pass", per, one, kind="speedup")],
        "notes": [f"same vectors (max abs diff <= 1e-5): {same}; {b.model.n_layers} layers"],
    }


def section_e(b: Bench) -> dict[str, Any]:
    from .protocol import naive_plan, package_plan

    s, rows, comps, notes = b.s, [], [], []
    n_trials = 5
    naive_rows = b.rows[: s.e_naive_prompts]
    batch_rows = min(40, s.e_prompts * n_trials)

    def per_prompt(t: Timing, n: int) -> Timing:
        out = Timing(name=f"{t.name}, per prompt", info={**t.info, "per_prompt_of": n})
        out.samples = [Sample(wall=x.wall / n, cpu=x.cpu / n) for x in t.samples]
        return out

    log(f"  (e) package plan, cached: {s.e_prompts} prompts, {s.e_tokens} new tokens, x{s.repeats}")
    variants = {
        f"package, cached, {s.e_prompts} prompts batched": lambda: package_plan(
            b.model,
            b.rows[: s.e_prompts],
            mode="cached",
            max_new_tokens=s.e_tokens,
            batch_rows=batch_rows,
        ),
        f"package, cached, {len(naive_rows)} prompt(s) alone": lambda: package_plan(
            b.model, naive_rows, mode="cached", max_new_tokens=s.e_tokens, batch_rows=batch_rows
        ),
    }
    t, res = interleaved(variants, s.repeats, log=log)
    many, alone = (t[k] for k in variants)
    many.info.update(res[many.name])
    alone.info.update(res[alone.name])
    many_pp, alone_pp = per_prompt(many, s.e_prompts), per_prompt(alone, len(naive_rows))
    faithful_pp = None
    if s.e_faithful:
        log(f"  (e) package plan, faithful: {len(naive_rows)} prompt(s), one run")
        sample, info = time_call(
            lambda: package_plan(
                b.model,
                naive_rows,
                mode="faithful",
                max_new_tokens=s.e_tokens,
                batch_rows=batch_rows,
            )
        )
        faithful = Timing(
            name=f"package, faithful, {len(naive_rows)} prompt(s)", samples=[sample], info=info
        )
        log(f"    {faithful.name}: wall {sample.wall:.1f}s cpu {sample.cpu:.1f}s")
        faithful_pp = per_prompt(faithful, len(naive_rows))
    naive = Timing(name="naive plan (release's execution plan)", info={"prompts": len(naive_rows)})
    for row in naive_rows:
        log(f"  (e) naive plan, {row.key}: ~250 s at 100 tokens")
        sample, info = time_call(
            lambda row=row: naive_plan(b.model, row, max_new_tokens=s.e_tokens)
        )
        naive.samples.append(sample)
        naive.info.setdefault("runs", []).append(info)
        naive.info["generated_tokens"] = (
            naive.info.get("generated_tokens", 0) + info["generated_tokens"]
        )
        log(f"    naive {row.key}: wall {sample.wall:.1f}s cpu {sample.cpu:.1f}s")
    for x in (
        many,
        many_pp,
        alone,
        alone_pp,
        *([faithful, faithful_pp] if faithful_pp else []),
        naive,
    ):
        x.info["new_tokens"] = s.e_tokens
        rows.append(x.to_dict())
    paper = s.e_tokens == 100  # the goal is stated for the paper's 100 new tokens
    comps.append(
        comparison(
            f"naive / package cached ({s.e_prompts} prompts batched), per prompt",
            naive,
            many_pp,
            kind="speedup",
            goal=">= 20x" if paper else None,
            ok=(lambda r: r >= 20) if paper else None,
        )
    )
    comps.append(
        comparison(
            f"naive / package cached ({len(naive_rows)} prompt(s) alone), per prompt",
            naive,
            alone_pp,
            kind="speedup",
        )
    )
    if faithful_pp:
        comps.append(
            comparison(
                "naive / package faithful (same prompt(s)), per prompt",
                naive,
                faithful_pp,
                kind="speedup",
                note="faithful is compute-bound on CPU: batching gains little",
            )
        )
    for x in (many, alone, *([faithful] if faithful_pp else [])):
        if "stages_cpu_s" in x.info:
            notes.append(
                f"CPU seconds by stage, {x.name} (last run): " + _stages(x.info["stages_cpu_s"])
            )
    for run in naive.info.get("runs", []):
        if "stages_cpu_s" in run:
            notes.append("CPU seconds by stage, naive plan: " + _stages(run["stages_cpu_s"]))
    notes.append(
        "naive plan: serial trials, faithful (no KV cache), one capture pass per layer, the perplexity "
        "model loaded again for every trial; one run per prompt (it is the slow one)"
    )
    notes.append(
        f"package plan: prompts batched by 8 in generate and capture, trials of all prompts asked together "
        f"(rows per steered generate <= {batch_rows}), one perplexity scorer with its cache"
    )
    notes.append(
        "both plans use SmolLM2 itself as the perplexity scorer and stop rows at EOS, as the search does "
        "(generated_tokens in results.json)"
    )
    return {
        "title": f"(e) End to end per prompt: paper protocol (baseline, enrichment, capture, 5 trials x "
        f"full + segmented, perplexity), {s.e_tokens} new tokens",
        "rows": rows,
        "comparisons": comps,
        "notes": notes,
    }


def _stages(stages: dict[str, float]) -> str:
    return "; ".join(f"{k} {v:.1f}" for k, v in stages.items())


def section_f(b: Bench) -> dict[str, Any]:
    from fsnn.models.load import load_model

    s, rows, comps, notes = b.s, [], [], []
    models = {"fp32": b.model}
    log("  (f) loading bf16 and 8-bit (bitsandbytes) models")
    models["bf16"] = load_model(b.args.model, dtype="bfloat16")
    try:
        models["int8"] = load_model(b.args.model, load_in_8bit=True)
    except Exception as exc:  # bitsandbytes without CPU support
        notes.append(f"8-bit load failed: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    prompt, h0 = b.prompts[:1], b.h[:1]
    variants = {}
    for name, m in models.items():
        variants[f"{name} plain"] = lambda m=m: b.plain(prompt, s.f_tokens, model=m)
        variants[f"{name} steered cached"] = lambda m=m: b.steer(
            prompt, h0, 0, 1, "cached", s.f_tokens, model=m
        )
    log(f"  (f) batch 1, {s.f_tokens} new tokens")
    with b.no_eos(*models.values()):
        t, res = interleaved(variants, s.repeats, log=log)
    for name, x in t.items():
        x.info.update(
            new_tokens=s.f_tokens,
            batch=1,
            dtype=models[name.split()[0]].dtype,
            quantization=models[name.split()[0]].quantization,
        )
        rows.append(x.to_dict())
    for name in models:
        if name == "fp32":
            continue
        for what in ("plain", "steered cached"):
            comps.append(
                comparison(
                    f"{name} / fp32, {what}", t[f"{name} {what}"], t[f"fp32 {what}"], kind="speedup"
                )
            )
        comps.append(
            comparison(
                f"{name}: steering overhead (steered / plain)",
                t[f"{name} steered cached"],
                t[f"{name} plain"],
                kind="overhead",
            )
        )
    ref = res["fp32 plain"][0].ids
    for name in models:
        ids = res[f"{name} plain"][0].ids
        same = sum(x == y for x, y in zip(ids, ref, strict=False)) / max(1, len(ref))
        notes.append(f"{name} plain greedy tokens equal to fp32's at {same:.0%} of positions")
    return {
        "title": "(f) Precision on CPU: 8-bit (bitsandbytes LLM.int8) vs fp32 vs bf16, batch 1",
        "rows": rows,
        "comparisons": comps,
        "notes": notes,
    }


# --------------------------------------------------------------------------- report


def _fmt_ratio(c: dict[str, Any]) -> tuple[str, str]:
    if c["kind"] == "overhead":
        return f"{(c['ratio_wall'] - 1) * 100:+.1f}%", f"{(c['ratio_cpu'] - 1) * 100:+.1f}%"
    return f"{c['ratio_wall']:.2f}x", f"{c['ratio_cpu']:.2f}x"


def _met(c: dict[str, Any]) -> str:
    if "goal" not in c:
        return ""
    mark = {True: "yes", False: "no", None: "?"}
    return f"{c['goal']}: wall {mark[c['met_wall']]}, CPU {mark[c['met_cpu']]}"


INTRO = """\
# Benchmarks

Measured by `python -m benchmarks.run{quick}` (the suite lives in `benchmarks/`, outside
`tests/`; CI never runs it and no test asserts a timing). Every figure is the **median**
over repeated runs; the variants compared in a table ran **interleaved** (one of each per
round, order rotated) in the same process. Raw samples: `benchmarks/results.json`.

**Read the CPU column first.** The machine below has {nproc} cores shared with other
work (load average {load_start} at the start, {load_end} at the end), so the suite runs
torch with {threads} intra-op thread(s) and records both the wall clock and the process
CPU time. The wall clock includes time the process waited for a core; the CPU time is
the work it did, and it is the steadier of the two here. Ratios are computed from each
column's medians. Absolute figures from such a machine are indicative; ratios measured
side by side are the point.

**GPU figures: blocked.** No GPU was lent to the session that measured this (the device
machine is drawn for a fraction of tasks; this task was not drawn). The H100/H200 rows
of issue 9 (8-bit Gemma-2-2B steering, batched trials on GPU) remain to be measured.

- date: {date}
- mode: {mode}
- model: {model}
- machine: {cpu_model}, nproc {nproc}, {mem} GiB RAM, torch threads {threads}, {platform}
- versions: {versions}
- suite time: {total:.0f} s wall{merged}

The full suite takes about 25 minutes on this machine (section (e) alone about 14:
the naive plan is ~200 s per prompt), `--quick` about 6. One section can be measured
again into the same files with `python -m benchmarks.run --sections e --merge`, and
this page rebuilt from the JSON with `--render-only`.
"""

GOALS = """\
## Goals (issue 9)

| goal | measured (wall) | measured (CPU) | met |
|---|---|---|---|
{rows}
"""


def render_markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    intro = INTRO.format(
        quick=" --quick" if results["mode"] == "quick" else "",
        nproc=m["nproc"],
        threads=m["torch_threads"],
        load_start=m["load_average_start"],
        load_end=m.get("load_average_end"),
        date=results["date"],
        mode=results["mode"],
        model=results["model"],
        cpu_model=m["cpu_model"],
        mem=m["mem_gib"],
        platform=m["platform"],
        versions=", ".join(f"{k} {v}" for k, v in results["versions"].items()),
        total=results["total_wall_s"],
        merged=(
            f" (sum of the sections; measured in {results['merged_runs']} runs of the suite, dates below)"
            if results.get("merged_runs")
            else ""
        ),
    )
    parts = [intro]
    goal_rows = [
        c for sec in results["sections"].values() for c in sec["comparisons"] if "goal" in c
    ]
    if goal_rows:
        parts.append(
            GOALS.format(
                rows="\n".join(
                    f"| {c['name']} ({c['goal']}) | {_fmt_ratio(c)[0]} | {_fmt_ratio(c)[1]} | {_met(c)} |"
                    for c in goal_rows
                )
            )
        )
    for key, sec in results["sections"].items():
        parts.append(f"## {sec['title']}\n")
        if "date" in sec:
            parts.append(
                f"_measured {sec['date']}, {sec['section_wall_s']:.0f} s wall, "
                f"load average before {sec['load_average']}_\n"
            )
        parts.append(SECTION_TEXT.get(key, "") + "\n")
        parts.append(
            "| variant | wall s (median) | CPU s (median) | n | details |\n|---|---|---|---|---|"
        )
        for r in sec["rows"]:
            info = ", ".join(
                f"{k}={v}"
                for k, v in r.get("info", {}).items()
                if k
                in (
                    "batch",
                    "new_tokens",
                    "K",
                    "per_prompt_of",
                    "dtype",
                    "quantization",
                    "generated_tokens",
                    "prompts",
                )
            )
            parts.append(
                f"| {r['name']} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['n']} | {info} |"
            )
        parts.append("\n| comparison | ratio (wall) | ratio (CPU) | goal |\n|---|---|---|---|")
        for c in sec["comparisons"]:
            w, cp = _fmt_ratio(c)
            parts.append(f"| {c['name']} | {w} | {cp} | {_met(c)} |")
        if sec.get("notes"):
            parts.append("")
            parts.extend(f"- {n}" for n in sec["notes"])
        parts.append("")
    parts.append(EPILOGUE)
    return "\n".join(parts).rstrip() + "\n"


EPILOGUE = """\
## What the profile changed (issue 9, item 2)

Profile of the cached steered generate (SmolLM2, batch 1, 64 new tokens, one thread;
cProfile plus timers inside the traced loop). Before the change the nnsight path cost
about 9% over plain generate, in four parts of 2-4% each: running generate under
an nnsight trace at all (with the per-step read of the chosen token); stopping at each
of the 30 layers to read its output (one greenlet switch per layer and step); *writing*
each output back (a second switch per layer and step); and the steering math, about 17
small torch calls per layer and step (slice, casts, three `.to`, four reshapes, the
running-mean update, eqs. 3-5). Each of those calls costs 5-8 us inside the loop (the
layer's weights have just streamed through the cache), against 2-3 us in a warm
microbenchmark.

Changes, all bit-identical (the same float32 operations in the same order; checked
against the previous code on the final-norm hidden state of every step, fp32, bf16 and
8-bit, both modes, padded rows with different active layers; tests pass):

1. `fsnn/steer.py`: the steered activation is written into the block's output in place
   (`a.copy_(...)`) instead of assigned to `.output`: one switch per layer and step, not two.
2. `fsnn/fusion.py` `fuse_decode_step`: the running-mean update and eqs. (3)-(5) of a
   decode step in one pure function, on operands shaped once per call ((B, 1, H)
   references and running sums, (B, 1, 1) coefficients): 8 tensor calls instead of ~17.
3. `fsnn/steer.py`: the validity mask is made float32 once per call, so `masked_sum`'s
   cast is a no-op (it runs at every layer of every step in faithful mode).

Measured once, old and new code interleaved in one process (CPU medians): batch 1,
64 tokens, 5 runs: overhead 9.2% -> 7.5%; batch 8, 3 runs: 5.8% -> 3.4%. Run to run
noise on this shared machine is about +-2 points.

Left as they are, with the reason:

- The rest of the nnsight path's cost (the trace around generate, one switch per layer
  and step) is nnsight's own; the plain-hook path above shows the floor without it.
- The per-step `.cpu()` of the chosen token is free on a CPU; on a GPU it is a device
  sync per step. Reading the tokens once from generate's output would remove it, but it
  changes what an early-EOS stop returns in the remote path; to do with GPU figures.
- Batched trials: K=8 in one call is short of 5x on this CPU because one thread's fp32
  GEMM with 8 rows costs 2-3x the single-row GEMV (the 49k-vocabulary lm_head: about
  10 ms at 1 row, 41 ms at 8, 42 ms at 32), not because of Python per-row work; the
  gain grows with K (see (b)).
- Re-tokenisation per steered call is under a millisecond; `Perplexity` already scores
  identical texts once (trial texts rarely repeat).
- End to end, (e)'s stage breakdown shows where the package plan's time goes: model
  compute, not Python. For 8 prompts (107 CPU s): the steered generates of the search
  48%, the perplexity passes 24% (the scorer's forward over each trial's ~130 tokens;
  its log-softmax is under 10% of it), baseline and enrichment generation 25%, Optuna
  and storage 3%. The >= 20x goal is missed (about 15x) because the naive plan's cost
  is only ~200 s at 100 tokens on this CPU, while the package plan still pays a full
  perplexity forward per trial and batch-8 generations; more prompts per batch
  (generate's `batch_size`, `batch_rows`) lower the per-prompt cost further, since a
  step of 16 rows costs little more than one of 8 here (see (b)).

Found on the way: with `stop_at_eos=False`, `steered_generate` passes no EOS id, but
transformers fills in the checkpoint's `eos_token_id` (2 for SmolLM2), so a batch whose
rows all reach EOS still ends early (a single row can end after one token) and a row's
tokens after its EOS are argmaxes over pad inputs. The suite clears the checkpoint's
EOS while it times fixed-length rows (`Bench.no_eos`); the fix belongs in
`fsnn/steer.py` (`_generation_config`). `fsnn.steering.generation.generate` instead forbids EOS
(`min_new_tokens`), so its fixed-length tokens can differ from the steered path's.
"""


SECTION_TEXT = {
    "a": (
        "Steered `cached` generate (fsnn.steering.steer: nnsight, every layer, every step) against the plain greedy "
        "generate of the same rows and tokens (`stop_at_eos=False`). The *plain-hook* path "
        "(`benchmarks/hook_steer.py`) applies the same math with PyTorch forward hooks on a transformers model "
        "nnsight never wrapped; its ratio to the nnsight path is nnsight's own cost. Overheads are "
        "steered/plain - 1."
    ),
    "b": (
        "K search trials of one prompt as the K rows of one steered generate (what `run_search` does) against "
        "K single-row calls. The K=8 sequential figure is timed directly each round; the other sequential "
        "figures are K x the median single-row call (the calls are identical in shape)."
    ),
    "c": (
        "Faithful mode re-runs the whole sequence at every step (no KV cache, as the release ran); cached "
        "mode steps one token. Batch 1, the same prompt and coefficients. The notes say how far the two "
        "methods' greedy tokens agree (they are different methods: docs/method.md §9)."
    ),
    "d": "`capture_references` with one traced pass for all layers vs `per_layer_passes=True` (the release's plan).",
    "e": (
        "The paper protocol per prompt without the judges. *package*: this package's primitives as a run "
        "composes them (batched generate and capture, `run_search` with all trials of all prompts asked "
        "together, one perplexity scorer with a cache). *naive*: the release's execution plan "
        "(`benchmarks/protocol.py`: one prompt at a time, serial trials, faithful steering without KV cache, "
        "one capture pass per layer, the perplexity model reloaded for every call). Per-prompt figures divide "
        "a run's time by its prompts."
    ),
    "f": (
        "The same model loaded fp32, bf16 and 8-bit (bitsandbytes LLM.int8, fp16 activations), plain and "
        "steered cached generate. On CPU 8-bit saves memory, not time."
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a few minutes")
    parser.add_argument(
        "--out", default=str(ROOT / "docs" / "benchmarks.md"), help="markdown report"
    )
    parser.add_argument(
        "--json", default=str(ROOT / "benchmarks" / "results.json"), help="results JSON"
    )
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help="comma separated subset of a,b,c,d,e,f"
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed repeats per figure (default 3)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (default 1: see docs)"
    )
    parser.add_argument(
        "--naive-prompts", type=int, default=None, help="prompts through the naive plan"
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="update the sections measured now in the existing results JSON, keep the others",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite the markdown from the existing results JSON, measure nothing",
    )
    args = parser.parse_args(argv)
    if args.render_only:
        atomic_write_text(args.out, render_markdown(json.loads(Path(args.json).read_text())))
        log(f"wrote {args.out} from {args.json}")
        return 0
    import warnings

    warnings.filterwarnings("ignore")
    settings = QUICK if args.quick else Settings()
    from dataclasses import replace

    if args.repeats:
        settings = replace(settings, repeats=args.repeats)
    if args.naive_prompts:
        settings = replace(settings, e_naive_prompts=args.naive_prompts)
    sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "model": args.model,
        "machine": machine_info(torch.get_num_threads()),
        "versions": versions(),
        "settings": {
            k: list(v) if isinstance(v, tuple) else v for k, v in settings.__dict__.items()
        },
        "sections": {},
    }
    old = None
    if args.merge and Path(args.json).exists():
        old = json.loads(Path(args.json).read_text())
        if old.get("mode") != results["mode"] or old.get("model") != results["model"]:
            parser.error(
                "--merge: the existing results were measured in another mode or with another model"
            )
    bench = Bench(args, settings)
    funcs = {
        "a": section_a,
        "b": section_b,
        "c": section_c,
        "d": section_d,
        "e": section_e,
        "f": section_f,
    }
    for key in sections:
        log(f"section ({key})")
        load = [round(x, 2) for x in os.getloadavg()]
        date = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        t0 = time.perf_counter()
        with bench.no_eos() if key in ("a", "b", "c") else contextlib.nullcontext():
            results["sections"][key] = funcs[key](bench)
        results["sections"][key].update(
            section_wall_s=round(time.perf_counter() - t0, 1), date=date, load_average=load
        )
        _print_section(results["sections"][key])
        results["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        results["total_wall_s"] = round(time.perf_counter() - start, 1)
        md = _save(results, old, args)  # after every section: a long run keeps what it measured
    print(md)
    log(f"wrote {args.json} and {args.out} ({results['total_wall_s']:.0f} s)")
    return 0


def _save(results: dict[str, Any], old: dict[str, Any] | None, args: argparse.Namespace) -> str:
    """Write the JSON and the markdown; with ``old``, keep its sections not measured now."""
    out = dict(results)
    if old is not None:
        merged = {**old["sections"], **results["sections"]}
        out["sections"] = {k: merged[k] for k in SECTIONS if k in merged}
        out["total_wall_s"] = round(
            sum(sec.get("section_wall_s", 0.0) for sec in merged.values()), 1
        )
        out["merged_runs"] = old.get("merged_runs", 1) + 1
    # atomic: an interrupted save never leaves half a results file (folders made as needed)
    atomic_write_text(args.json, json.dumps(out, indent=1) + "\n")
    md = render_markdown(out)
    atomic_write_text(args.out, md)
    return md


def _print_section(sec: dict[str, Any]) -> None:
    log(f"== {sec['title']}")
    for r in sec["rows"]:
        log(f"   {r['name']:<60} wall {r['wall_s']:8.2f}s  cpu {r['cpu_s']:8.2f}s  n={r['n']}")
    for c in sec["comparisons"]:
        w, cp = _fmt_ratio(c)
        log(f"   {c['name']:<72} wall {w:>8}  cpu {cp:>8}  {_met(c)}")


if __name__ == "__main__":
    raise SystemExit(main())
