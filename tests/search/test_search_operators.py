"""The search with the operators of docs/operators.md: config validation, the angle
parametrization, on/off windows, and what reaches steered_generate."""

from __future__ import annotations

import pytest
import torch

from fsnn.errors import FsnnError
from fsnn.search import strength
from fsnn.search.run import SearchConfig, run_search
from fsnn.steering.layout import SegmentLayout
from tests.search.test_search import _stub_generate, _stub_items, _stub_ppl, _StubModel


def test_defaults_are_the_steering_of_before():
    cfg = SearchConfig()
    assert (cfg.operator, cfg.schedule, cfg.windows) == ("fusion", "constant", False)
    paper = SearchConfig.paper()
    assert (paper.operator, paper.schedule, paper.windows) == ("fusion", "constant", False)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(operator="spin"), "unknown steering operator 'spin'"),
        (dict(schedule="decay"), "decay needs a number RHO in \\[0, 1\\]"),
        (dict(schedule="first_n:x"), "first_n needs an integer N >= 1"),
        (dict(windows="yes"), "windows must be True or False"),
        (dict(operator="angular"), "set operator='angular' with parametrization='angle'"),
        (dict(parametrization="angle"), "set operator='angular' with parametrization='angle'"),
        (dict(operator="angular", parametrization="angle", low=0.0), "low must be > 0"),
    ],
)
def test_config_refuses_bad_operator_settings_in_one_line(kwargs, message):
    with pytest.raises(FsnnError, match=message) as info:
        SearchConfig(**kwargs)
    assert "\n" not in str(info.value)


def test_angle_parametrization():
    assert strength.DEFAULT_RANGES["angle"] == (1e-3, 0.1)
    cfg = SearchConfig(operator="angular", parametrization="angle")
    assert cfg.range == (1e-3, 0.1)
    dists = strength.distributions("angle", ("early", "late"), *cfg.range)
    assert set(dists) == {"theta_early", "theta_late"} and all(d.log for d in dists.values())
    start = strength.start_params("angle", ("all",), 1e-3, 0.1, 3)
    assert [round(p["theta_all"], 6) for p in start] == [0.003162, 0.01, 0.031623]
    params = {"theta_early": 0.02, "theta_late": 0.05}
    alpha, gamma = strength.per_layer(params, ((0, 1), (2, 3)), ("early", "late"), 4)
    assert alpha.tolist() == [1.0] * 4 and torch.equal(
        gamma, torch.tensor([0.02, 0.02, 0.05, 0.05])
    )
    assert strength.strengths(params, ("early", "late")) == [0.02, 0.05]


def _recording_generate():
    fake = _stub_generate()
    seen = []

    def generate(model, prompts, h, alpha, gamma, **kw):
        seen.append({"alpha": alpha.clone(), "gamma": gamma.clone(), **kw})
        return fake(model, prompts, h, alpha, gamma, **kw)

    generate.seen = seen
    return generate


def test_search_passes_the_operator_and_gates_off_windows(monkeypatch):

    fake = _recording_generate()
    monkeypatch.setattr("fsnn.steering.steer.steered_generate", fake)
    layout = SegmentLayout(name="two", ranges=((0, 1), (2, 3)), segment_names=("early", "late"))
    mu = torch.randn(4, 8)
    cfg = SearchConfig(
        n_trials=6,
        operator="angular",
        parametrization="angle",
        schedule="first_n:2",
        windows=True,
        sampler="random",
        start_trials=1,
    )
    ds = run_search(
        _StubModel(), _stub_items(2), layout, cfg, ppl=_stub_ppl, progress=False, mu_generic=mu
    )
    assert all(
        call["operator"] == "angular" and call["schedule"] == "first_n:2" for call in fake.seen
    )
    assert all(torch.equal(call["mu_generic"], mu) for call in fake.seen)
    assert list(ds.param.values) == ["theta_early", "theta_late", "on_early", "on_late"]
    assert ds.attrs["operator"] == "angular" and ds.attrs["windows"] == 1
    assert ds.attrs["mu_generic"].startswith("4x8 sha256:")
    on = ds.params.sel(param=["on_early", "on_late"]).values  # (prompt, trial, segment) 1.0 / 0.0
    assert (on[:, 0] == 1).all()  # the start trial steers every segment
    assert (on == 0).any() and (on == 1).any()  # the switches were searched
    layer_gamma = ds.layer_gamma.values
    for p in range(2):
        for t in range(6):
            for s, (first, last) in enumerate(layout.ranges):
                steered = layer_gamma[p, t, first : last + 1]
                if on[p, t, s] == 0:
                    assert (steered == 0).all()  # off: exactly 0, its layers untouched
                else:
                    assert (steered > 0).all() and steered[0] == pytest.approx(
                        ds.strength.values[p, t, s]
                    )
    rows = torch.cat([call["gamma"] for call in fake.seen])
    assert (rows == 0).any()  # some evaluated row had a window off


def test_default_search_calls_steered_generate_as_before(monkeypatch):

    fake = _recording_generate()
    monkeypatch.setattr("fsnn.steering.steer.steered_generate", fake)
    run_search(
        _StubModel(),
        _stub_items(2),
        SegmentLayout.full(4),
        SearchConfig(n_trials=2),
        ppl=_stub_ppl,
        progress=False,
    )
    # one Steering value per row, batched by steer_each: no operator keywords, defaults kept
    assert fake.seen and all(
        set(call)
        == {"alpha", "gamma", "mode", "max_new_tokens", "backend", "batch_size", "stop_at_eos"}
        and call["batch_size"] is None
        and call["stop_at_eos"] is True
        for call in fake.seen
    )


def test_centred_norm_relative_measures_against_mu_generic(tiny_gemma2):
    """End to end on a tiny model: centred, norm-relative scales from ||h - mu_generic||, windows."""
    from fsnn.search.run import SearchItem
    from fsnn.steering.references import capture_generic_mean

    model = tiny_gemma2
    torch.manual_seed(0)
    prompts = [
        "Question: What is the capital of France?\nAnswer and explanation:",
        "Question: Which river flows through Vienna?\nAnswer and explanation:",
    ]
    items = [
        SearchItem(
            key=f"q{i}",
            prompt=p,
            answer="Paris",
            h=torch.randn(model.n_layers, model.d_model),
            norm_scale=torch.ones(model.n_layers),
        )
        for i, p in enumerate(prompts)
    ]
    mu = torch.as_tensor(capture_generic_mean(model).values)
    cfg = SearchConfig(n_trials=2, operator="centred", windows=True, schedule="decay:0.9", seed=1)
    ds = run_search(
        model,
        items,
        SegmentLayout.segmented(model.n_layers, 2),
        cfg,
        ppl=_stub_ppl,
        progress=False,
        mode="cached",
        max_new_tokens=4,
    )
    want = strength.norm_scales(model, prompts, torch.stack([it.h for it in items]), centre=mu)
    assert not torch.allclose(want, torch.ones_like(want))  # the items' own scales were replaced
    s = ds.strength.values  # (prompt, trial, segment)
    on = ds.params.sel(param=["on_s0", "on_s1"]).values
    for p in range(2):
        for t in range(2):
            for seg, (first, last) in enumerate(SegmentLayout.segmented(model.n_layers, 2).ranges):
                got = torch.as_tensor(ds.layer_gamma.values[p, t, first : last + 1])
                expect = s[p, t, seg] * want[p, first : last + 1] * on[p, t, seg]
                torch.testing.assert_close(got, expect.float(), rtol=1e-5, atol=0)
    assert (ds.completion.values != "").all()


def test_a_kl_bounded_search_runs_end_to_end(tiny_gemma2):
    """The search steers with the kl:EPS schedule through the same Steering values: EPS 0
    gives every trial the plain model's completion, a huge EPS the constant schedule's."""
    from fsnn.search.run import SearchItem
    from fsnn.steering.generation import generate

    model = tiny_gemma2
    torch.manual_seed(0)
    prompt = "Question: What is the capital of France?\nAnswer and explanation:"
    items = [
        SearchItem(
            key="q0",
            prompt=prompt,
            answer="Paris",
            h=torch.randn(model.n_layers, model.d_model) * 50,
            norm_scale=torch.ones(model.n_layers),
        )
    ]
    layout = SegmentLayout.full(model.n_layers)

    def search(schedule):
        cfg = SearchConfig(n_trials=2, schedule=schedule, seed=1, low=0.5, high=0.9)
        ds = run_search(
            model,
            items,
            layout,
            cfg,
            ppl=_stub_ppl,
            progress=False,
            mode="cached",
            max_new_tokens=4,
        )
        assert ds.attrs.get("failed_trials", 0) == 0
        return [str(c) for c in ds.completion.values[0]]

    with pytest.raises(FsnnError, match="needs mode 'cached'"):  # before any capture
        run_search(model, items, layout, SearchConfig(schedule="kl:1"), ppl=_stub_ppl)
    plain = generate(model, [prompt], max_new_tokens=4)[0].completion
    assert search("kl:0") == [plain, plain]
    constant = search("constant")
    assert search("kl:1e30") == constant
    assert constant != [plain, plain]  # non-vacuous: the trials' strengths change the text
