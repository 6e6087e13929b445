"""Steering specs: which layers are steered, grouped in segments sharing (alpha, gamma).

- ``full``: one segment holding every layer (one pair; paper "full-layer").
- ``segmented``: three near-equal contiguous thirds, larger ones first as
  ``numpy.array_split`` sizes them (0-8, 9-17, 18-25 for 26 layers); one pair each.
- any explicit list of inclusive layer ranges; layers outside every range are untouched.

A :class:`SegmentLayout` is the *shape* of a method (the segments); a
:class:`Strengths` is a layout plus the (alpha, gamma) values of each segment.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fsnn.errors import FsnnError

if TYPE_CHECKING:
    import torch

__all__ = ["SegmentLayout", "Strengths", "expand_segments", "parse_strengths"]

SEGMENT_NAMES_3 = ("early", "middle", "late")


@dataclass(frozen=True, kw_only=True)
class SegmentLayout:
    """Contiguous, non-overlapping, inclusive layer ranges, each steered with one pair.

    Attributes:
        name: method name used in result files (``full``, ``segmented``, custom).
        ranges: ((first, last), ...) inclusive layer indices, in increasing order.
        segment_names: one label per range (``all``; ``early``/``middle``/``late``).
    """

    name: str
    ranges: tuple[tuple[int, int], ...]
    segment_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.ranges:
            raise FsnnError(f"layout {self.name!r}: no layer range")
        names = self.segment_names or tuple(f"s{i}" for i in range(len(self.ranges)))
        if len(names) != len(self.ranges):
            raise FsnnError(
                f"layout {self.name!r}: {len(names)} names for {len(self.ranges)} ranges"
            )
        object.__setattr__(self, "segment_names", tuple(names))
        previous = -1
        for first, last in self.ranges:
            if first < 0 or last < first:
                raise FsnnError(f"layout {self.name!r}: bad layer range {first}-{last}")
            if first <= previous:
                raise FsnnError(
                    f"layout {self.name!r}: layer ranges overlap or are unordered at {first}-{last}"
                )
            previous = last

    @classmethod
    def full(cls, n_layers: int) -> SegmentLayout:
        return cls(name="full", ranges=((0, n_layers - 1),), segment_names=("all",))

    @classmethod
    def segmented(cls, n_layers: int, n_segments: int = 3) -> SegmentLayout:
        """Near-equal thirds, larger first (9/9/8 for 26 layers, 10/9/9 for 28)."""
        if n_layers < n_segments:
            raise FsnnError(f"cannot split {n_layers} layers into {n_segments} segments")
        chunks = np.array_split(np.arange(n_layers), n_segments)
        names = SEGMENT_NAMES_3 if n_segments == 3 else tuple(f"s{i}" for i in range(n_segments))
        return cls(
            name="segmented",
            ranges=tuple((int(c[0]), int(c[-1])) for c in chunks),
            segment_names=names,
        )

    @classmethod
    def named(cls, name: str, n_layers: int) -> SegmentLayout:
        """``full``, ``segmented``, or ``custom:NAME=0-3,8-11`` style explicit ranges."""
        if name == "full":
            return cls.full(n_layers)
        if name == "segmented":
            return cls.segmented(n_layers)
        if name.startswith("custom:") or "=" in name:
            label, _, body = name.removeprefix("custom:").partition("=")
            try:
                ranges = tuple(
                    (int(a), int(b or a))
                    for a, _, b in (part.strip().partition("-") for part in body.split(","))
                )
            except ValueError:
                raise FsnnError(
                    f"bad layer ranges in method {name!r} (want NAME=0-3,8-11)"
                ) from None
            layout = cls(name=label, ranges=ranges)
            layout.check(n_layers)
            return layout
        raise FsnnError(f"unknown method {name!r}: use full, segmented or NAME=first-last,...")

    @property
    def n_segments(self) -> int:
        return len(self.ranges)

    def check(self, n_layers: int) -> None:
        """Raise when a range falls outside a model of ``n_layers`` blocks."""
        for first, last in self.ranges:
            if last >= n_layers:
                raise FsnnError(
                    f"layout {self.name!r}: layer range {first}-{last} outside a model with {n_layers} layers"
                )

    def layers(self) -> list[int]:
        return [layer for first, last in self.ranges for layer in range(first, last + 1)]

    def to_json(self) -> str:
        return json.dumps(
            {"name": self.name, "ranges": self.ranges, "segment_names": self.segment_names}
        )


def expand_segments(values: Sequence[float], layout: SegmentLayout, n_layers: int) -> torch.Tensor:
    """One value per segment spread over that segment's layers (docs/method.md §3, eqs. 3-5).

    The only place where per-segment strengths become per-layer ones; layers outside
    every range get 0 (unsteered).

    Args:
        values: one number per segment of ``layout`` (alpha or gamma).
        layout: the segments.
        n_layers: decoder blocks of the model.

    Returns:
        float32 tensor, shape (layer,).

    Raises:
        FsnnError: a count of values that is not the layout's segment count, or a range
            outside the model.
    """
    values = [float(v) for v in values]
    if len(values) != layout.n_segments:
        raise FsnnError(
            f"layout {layout.name!r}: {layout.n_segments} segment(s) need {layout.n_segments} "
            f"value(s), got {len(values)}"
        )
    layout.check(n_layers)
    import torch  # the layout itself is torch-free: configs validate layouts without torch

    out = torch.zeros(n_layers, dtype=torch.float32)
    for (first, last), v in zip(layout.ranges, values, strict=True):
        out[first : last + 1] = v
    return out


@dataclass(frozen=True, kw_only=True)
class Strengths:
    """A layout with (alpha, gamma) per segment (docs/method.md §3, eqs. 3-5).

    Attributes:
        layout: the segments.
        alpha: interpolation weight per segment.
        gamma: additive strength per segment.
    """

    layout: SegmentLayout
    alpha: tuple[float, ...]
    gamma: tuple[float, ...]

    def __post_init__(self) -> None:
        n = self.layout.n_segments
        object.__setattr__(self, "alpha", tuple(float(x) for x in self.alpha))
        object.__setattr__(self, "gamma", tuple(float(x) for x in self.gamma))
        if len(self.alpha) != n or len(self.gamma) != n:
            raise FsnnError(
                f"spec {self.layout.name!r}: {n} segment(s) need {n} alpha and {n} gamma values, "
                f"got {len(self.alpha)} and {len(self.gamma)}"
            )
        for label, values in (("alpha", self.alpha), ("gamma", self.gamma)):
            for v in values:
                if not math.isfinite(v):
                    raise FsnnError(f"spec {self.layout.name!r}: {label} must be finite, got {v}")

    @classmethod
    def full(cls, n_layers: int, alpha: float, gamma: float) -> Strengths:
        return cls(layout=SegmentLayout.full(n_layers), alpha=(alpha,), gamma=(gamma,))

    @classmethod
    def segmented(
        cls, n_layers: int, alpha: tuple[float, ...], gamma: tuple[float, ...]
    ) -> Strengths:
        return cls(layout=SegmentLayout.segmented(n_layers, len(alpha)), alpha=alpha, gamma=gamma)

    def per_layer(self, n_layers: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha (layer,), gamma (layer,)) float32; 0 for layers outside every range."""
        return (
            expand_segments(self.alpha, self.layout, n_layers),
            expand_segments(self.gamma, self.layout, n_layers),
        )

    def params(self) -> dict[str, float]:
        out = {}
        for name, a, g in zip(self.layout.segment_names, self.alpha, self.gamma, strict=True):
            out[f"alpha_{name}"] = a
            out[f"gamma_{name}"] = g
        return out


def parse_strengths(text: str, n_layers: int) -> Strengths:
    """Parse the CLI form: ``full:ALPHA,GAMMA`` or ``seg:a1,a2,a3,g1,g2,g3``.

    Also ``NAME=0-3,8-11:a1,a2,g1,g2`` for explicit ranges.
    """
    head, _, values = text.rpartition(":")
    try:
        numbers = [float(v) for v in values.split(",") if v.strip()]
    except ValueError:
        raise FsnnError(f"bad steering spec {text!r}: values must be numbers") from None
    if head == "full":
        layout = SegmentLayout.full(n_layers)
    elif head in ("seg", "segmented"):
        layout = SegmentLayout.segmented(n_layers)
    elif "=" in head:
        layout = SegmentLayout.named(head, n_layers)
    else:
        raise FsnnError(f"bad steering spec {text!r}: use full:A,G or seg:a1,a2,a3,g1,g2,g3")
    n = layout.n_segments
    if len(numbers) != 2 * n:
        raise FsnnError(
            f"steering spec {text!r}: {layout.name} needs {2 * n} numbers, got {len(numbers)}"
        )
    spec = Strengths(layout=layout, alpha=tuple(numbers[:n]), gamma=tuple(numbers[n:]))
    layout.check(n_layers)
    return spec
