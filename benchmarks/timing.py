"""Repeated, interleaved timings: wall clock and process CPU time, medians.

The benchmark machine is small and shared, so every figure is a median over repeats,
the variants being compared run interleaved (one of each per round, the order rotated
between rounds), and the process CPU time is recorded next to the wall clock: with one
intra-op thread it is the time this process actually computed, which other processes
on the same cores inflate far less than the wall clock.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Sample", "Timing", "interleaved", "time_call"]


@dataclass(frozen=True, kw_only=True)
class Sample:
    """One timed call: wall and process CPU seconds."""

    wall: float
    cpu: float


def time_call(fn: Callable[[], Any]) -> tuple[Sample, Any]:
    """Run ``fn`` once; return its timing and its result."""
    w, c = time.perf_counter(), time.process_time()
    result = fn()
    return Sample(wall=time.perf_counter() - w, cpu=time.process_time() - c), result


@dataclass(kw_only=True)
class Timing:
    """All samples of one variant.

    Attributes:
        name: the variant.
        samples: one per repeat.
        info: extra facts (tokens generated, batch, ...), JSON-serialisable.
    """

    name: str
    samples: list[Sample] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def wall(self) -> float:
        return statistics.median(s.wall for s in self.samples)

    @property
    def cpu(self) -> float:
        return statistics.median(s.cpu for s in self.samples)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n": len(self.samples),
            "wall_s": round(self.wall, 4),
            "cpu_s": round(self.cpu, 4),
            "wall_samples": [round(s.wall, 4) for s in self.samples],
            "cpu_samples": [round(s.cpu, 4) for s in self.samples],
            **({"info": self.info} if self.info else {}),
        }


def interleaved(
    variants: dict[str, Callable[[], Any]], repeats: int, *, log: Callable[[str], None] = print
) -> tuple[dict[str, Timing], dict[str, Any]]:
    """Time every variant ``repeats`` times, one of each per round, order rotated.

    Returns:
        (timing per variant, last result per variant).
    """
    names = list(variants)
    timings = {n: Timing(name=n) for n in names}
    results: dict[str, Any] = {}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            sample, results[name] = time_call(variants[name])
            timings[name].samples.append(sample)
            log(
                f"    {name:<48} round {r + 1}/{repeats}: wall {sample.wall:7.2f}s  cpu {sample.cpu:7.2f}s"
            )
    return timings, results
