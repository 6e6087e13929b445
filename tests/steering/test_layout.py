"""Steering specs: layouts, validation, parsing."""

from __future__ import annotations

import math

import pytest
import torch

from fsnn.errors import FsnnError
from fsnn.steering.layout import SegmentLayout, Strengths, parse_strengths


@pytest.mark.parametrize(
    "n, ranges",
    [
        (26, ((0, 8), (9, 17), (18, 25))),
        (30, ((0, 9), (10, 19), (20, 29))),
        (28, ((0, 9), (10, 18), (19, 27))),
    ],
)
def test_segmented_thirds_match_array_split(n, ranges):
    assert SegmentLayout.segmented(n).ranges == ranges


def test_per_layer_coefficients_and_untouched_layers():
    layout = SegmentLayout.named("mid=2-3,6-6", 8)
    spec = Strengths(layout=layout, alpha=(0.5, 0.25), gamma=(0.1, 0.2))
    alpha, gamma = spec.per_layer(8)
    assert alpha.tolist() == [0, 0, 0.5, 0.5, 0, 0, 0.25, 0]
    assert torch.allclose(gamma, torch.tensor([0, 0, 0.1, 0.1, 0, 0, 0.2, 0]))
    full = Strengths.full(26, 0.3, 0.7)
    a, g = full.per_layer(26)
    assert bool((a == 0.3).all()) and bool(torch.isclose(g, torch.tensor(0.7)).all())


def test_validation_errors():
    with pytest.raises(FsnnError, match="overlap"):
        SegmentLayout(name="x", ranges=((0, 4), (3, 6)))
    with pytest.raises(FsnnError, match="outside a model"):
        Strengths(
            layout=SegmentLayout(name="x", ranges=((0, 40),)), alpha=(1,), gamma=(1,)
        ).per_layer(30)
    with pytest.raises(FsnnError, match="finite"):
        Strengths.full(4, math.nan, 0.5)
    with pytest.raises(FsnnError, match="finite"):
        Strengths.full(4, 0.5, math.inf)
    with pytest.raises(FsnnError, match="need 3 alpha"):
        Strengths(layout=SegmentLayout.segmented(26), alpha=(0.1, 0.2), gamma=(0.1, 0.2))


def test_parse_cli_specs():
    spec = parse_strengths("full:0.5,0.4", 30)
    assert spec.alpha == (0.5,) and spec.gamma == (0.4,)
    seg = parse_strengths("seg:0.1,0.2,0.3,0.4,0.5,0.6", 26)
    assert seg.layout.ranges == ((0, 8), (9, 17), (18, 25)) and seg.gamma == (0.4, 0.5, 0.6)
    with pytest.raises(FsnnError, match="needs 6 numbers"):
        parse_strengths("seg:0.1,0.2", 26)
    with pytest.raises(FsnnError, match="bad steering spec"):
        parse_strengths("half:0.1,0.2", 26)


def test_expand_segments_is_the_one_per_layer_expansion():
    from fsnn.steering.layout import expand_segments

    layout = SegmentLayout.named("mid=2-3,6-6", 8)
    assert expand_segments((0.5, 0.25), layout, 8).tolist() == [0, 0, 0.5, 0.5, 0, 0, 0.25, 0]
    assert expand_segments((1.0, 2.0), layout, 8).dtype == torch.float32
    spec = Strengths(layout=layout, alpha=(0.5, 0.25), gamma=(0.1, 0.2))
    alpha, gamma = spec.per_layer(8)
    assert torch.equal(alpha, expand_segments(spec.alpha, layout, 8))
    assert torch.equal(gamma, expand_segments(spec.gamma, layout, 8))
    with pytest.raises(FsnnError, match="need 2 value"):
        expand_segments((1.0,), layout, 8)
    with pytest.raises(FsnnError, match="outside a model"):
        expand_segments((1.0, 2.0), layout, 5)
