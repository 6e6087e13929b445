"""Parametrizations of strength: coinciding ones steer identically; norm-relative shifts have the asked size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fsnn.errors import FsnnError
from fsnn.search.strength import distributions, norm_scales, per_layer, start_params, strengths
from fsnn.steering.fusion import fuse
from fsnn.steering.layout import SegmentLayout
from fsnn.steering.steer import steered_generate

RANGES = ((0, 1), (2, 3))
NAMES = ("early", "late")


def _shift(
    alpha: torch.Tensor, gamma: torch.Tensor, h: torch.Tensor, mu: torch.Tensor
) -> torch.Tensor:
    """Per-layer shift a'' - a of eqs. (3)-(5) for one row, (layer, hidden)."""
    a = torch.zeros(len(alpha), 1, h.shape[-1])
    return fuse(a, h, mu, alpha, gamma)[:, 0]


def test_coinciding_parametrizations_give_the_same_per_layer_shift():
    torch.manual_seed(0)
    h, mu = torch.randn(4, 8), torch.randn(4, 8)
    scale = torch.full((4,), 2.0)
    variants = [
        per_layer(
            {"alpha_early": 0.5, "gamma_early": 0.4, "alpha_late": 1.0, "gamma_late": 0.05},
            RANGES,
            NAMES,
            4,
        ),
        per_layer({"k_early": 0.2, "k_late": 0.05}, RANGES, NAMES, 4),
        per_layer({"s_early": 0.1, "s_late": 0.025}, RANGES, NAMES, 4, norm_scale=scale),
    ]
    shifts = [_shift(a, g, h, mu) for a, g in variants]
    for other in shifts[1:]:
        assert torch.equal(shifts[0], other)
    assert not torch.equal(shifts[0][0], torch.zeros(8))


def test_coinciding_parametrizations_generate_the_same_tokens(tiny_gemma2):
    model = tiny_gemma2
    layout = SegmentLayout.segmented(model.n_layers, 2)
    torch.manual_seed(1)
    h = torch.randn(1, model.n_layers, model.d_model)
    scale = torch.full((model.n_layers,), 4.0)
    names = layout.segment_names
    rows = [
        per_layer(
            {
                f"alpha_{names[0]}": 0.5,
                f"gamma_{names[0]}": 0.5,
                f"alpha_{names[1]}": 0.25,
                f"gamma_{names[1]}": 1.0,
            },
            layout.ranges,
            names,
            model.n_layers,
        ),
        per_layer(
            {f"k_{names[0]}": 0.25, f"k_{names[1]}": 0.25}, layout.ranges, names, model.n_layers
        ),
        per_layer(
            {f"s_{names[0]}": 0.0625, f"s_{names[1]}": 0.0625},
            layout.ranges,
            names,
            model.n_layers,
            norm_scale=scale,
        ),
    ]
    outs = [
        steered_generate(
            model,
            ["Question: who?\nAnswer and explanation:"],
            h,
            a[None],
            g[None],
            mode="cached",
            max_new_tokens=6,
        )[0].ids
        for a, g in rows
    ]
    assert outs[0] == outs[1] == outs[2]


def test_norm_relative_shift_has_the_requested_size(tiny_gemma2):
    """Oracle: mu and the median position norm from plain torch hooks, not the traced pass."""
    model = tiny_gemma2
    prompts = ["Question: who won?\nAnswer and explanation:", "Q: capital of France?"]
    torch.manual_seed(2)
    h = torch.randn(2, model.n_layers, model.d_model)
    scales = norm_scales(model, prompts, h)
    enc = model.tokenizer(prompts, return_tensors="pt", padding=True)
    captured = {}
    hooks = [
        model.hf_layer(i).register_forward_hook(
            lambda _m, _i, out, i=i: captured.__setitem__(
                i, (out[0] if isinstance(out, tuple) else out).detach()
            )
        )
        for i in range(model.n_layers)
    ]
    try:
        with torch.no_grad():
            model.hf_model(**enc)
    finally:
        for hook in hooks:
            hook.remove()
    s = 0.3
    for row in range(2):
        valid = enc.attention_mask[row].bool()
        alpha, gamma = per_layer(
            {"s_all": s},
            ((0, model.n_layers - 1),),
            ("all",),
            model.n_layers,
            norm_scale=scales[row],
        )
        for layer in range(model.n_layers):
            acts = captured[layer][row][valid].float()
            mu = acts.mean(0)
            typical = acts.norm(dim=-1).median()
            shift = alpha[layer] * gamma[layer] * (h[row, layer] - mu)
            assert float(shift.norm()) == pytest.approx(s * float(typical), rel=1e-4)


def test_distributions_and_start_points():
    d = distributions("log_product", ["all"], 1e-3, 1.0)
    assert d["k_all"].log and d["k_all"].low == 1e-3
    assert list(distributions("alpha_gamma", NAMES, 0.01, 1.0)) == [
        "alpha_early",
        "gamma_early",
        "alpha_late",
        "gamma_late",
    ]
    starts = start_params("norm_relative", ["all"], 0.01, 1.0, 3)
    np.testing.assert_allclose([p["s_all"] for p in starts], [0.01**0.75, 0.1, 0.01**0.25])
    ag = start_params("alpha_gamma", NAMES, 0.01, 1.0, 2)
    assert all(p["alpha_early"] == 1.0 for p in ag)
    assert strengths(ag[0], NAMES) == [ag[0]["gamma_early"], ag[0]["gamma_late"]]
    with pytest.raises(FsnnError, match="log scale"):
        distributions("norm_relative", ["all"], 0.0, 1.0)
    with pytest.raises(FsnnError, match="norm scales"):
        per_layer({"s_all": 0.1}, ((0, 3),), ("all",), 4)
    with pytest.raises(FsnnError, match="unknown parametrization"):
        distributions("bogus", ["all"], 0.1, 1.0)


def test_strength_study_quick_shape(tmp_path, monkeypatch):
    """The study's --quick shape runs end to end and writes its labeled dataset and figure."""
    import importlib.util
    import sys
    from pathlib import Path

    from fsnn.store.files import read_dataset
    from tests.conftest import shared_path

    shared_path("FSNN_SIMPLEQA_CSV")
    script = Path(__file__).resolve().parents[2] / "experiments" / "strength_study.py"
    spec = importlib.util.spec_from_file_location("strength_study", script)
    study = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "strength_study", study)  # dataclasses look their module up
    spec.loader.exec_module(study)
    assert (
        study.main(["--out", str(tmp_path), "--quick", "--mode", "cached", "--threads", "2"]) == 0
    )
    summary = read_dataset(tmp_path / "summary-cached.nc")
    assert summary.sizes["model"] == 1 and summary.budget.values.tolist() == [2]
    assert (summary.n.values == 3).all()
    assert (
        (summary.readable_answer_rate <= summary.answer_rate) | summary.answer_rate.isnull()
    ).all()
    assert (tmp_path / "readable_answer_vs_budget-cached.png").stat().st_size > 0
    # resumable: a second run finds every cell done and rewrites the same summary
    assert study.main(["--out", str(tmp_path), "--quick", "--mode", "cached"]) == 0
    again = read_dataset(tmp_path / "summary-cached.nc")
    np.testing.assert_array_equal(
        again.readable_answer_rate.values, summary.readable_answer_rate.values
    )
