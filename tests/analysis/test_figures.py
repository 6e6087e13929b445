"""Figures: each draws on the imported release and on tiny datasets with gaps, and saves."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.image import imread

from fsnn import cli
from fsnn.analysis.figures import (
    DPI,
    fig1_topics,
    fig2_accuracy,
    fig3_scores,
    fig4_simpleqa_correct,
    fig5_alpha_gamma,
    fig6_to_vs_perplexity,
    render_all,
    save_figure,
)
from fsnn.analysis.release import composite, import_release, write_release
from fsnn.errors import FsnnError
from fsnn.store.files import provenance, read_dataset, write_dataset
from fsnn.store.schema import str_array

REPO_ROOT = Path(__file__).resolve().parents[2]


def _env_path(name: str) -> Path:
    value = os.environ.get(name)
    if not value:
        pytest.skip(f"{name} is not set (CI sets it to a path under ../shared/data)")
    path = Path(value) if Path(value).is_absolute() else REPO_ROOT / value
    if not path.exists():
        pytest.skip(f"{name}={value} does not exist here")
    return path


@pytest.fixture(scope="module")
def release():
    return import_release(_env_path("FSNN_RELEASE_DIR"), _env_path("FSNN_SIMPLEQA_CSV"))


def synthetic_results(
    methods: tuple[str, ...] = ("baseline", "segmented", "my-spec"), n: int = 12, seed: int = 0
) -> xr.Dataset:
    """A small results dataset with gaps: no full-layer, NaN judge for one method,
    SimpleQA grades only for baseline, NaN alpha/gamma for baseline."""
    rng = np.random.default_rng(seed)
    m = len(methods)
    to = rng.choice([0.0, 0.5, 1.0], size=(m, n))
    judge = rng.integers(1, 6, size=(m, n)).astype(float)
    judge[-1] = np.nan  # the last method was never judged
    grades = np.full((m, n), "", dtype=object)
    grades[0] = rng.choice(["CORRECT", "INCORRECT", "NOT_ATTEMPTED"], size=n)
    alpha = rng.uniform(0.01, 1, size=(m, n, 3))
    alpha[0] = np.nan
    text = str_array(np.full((m, n), "Question: q\nAnswer and explanation: a"))
    return xr.Dataset(
        {
            "text": (("method", "prompt"), text),
            "completion": (("method", "prompt"), str_array(np.full((m, n), " a"))),
            "token_overlap": (("method", "prompt"), to),
            "perplexity": (
                ("method", "prompt"),
                np.where(alpha[..., 0] >= 0, rng.uniform(2, 200, (m, n)), np.nan),
            ),
            "judge_score": (("method", "prompt"), judge),
            "simpleqa_grade": (("method", "prompt"), grades),
            "composite": (("method", "prompt"), composite(to, judge)),
            "alpha": (("method", "prompt", "segment"), alpha),
            "gamma": (("method", "prompt", "segment"), alpha[..., ::-1].copy()),
        },
        coords={
            "method": str_array(list(methods)),
            "prompt": np.arange(n),
            "segment": str_array(["early", "middle", "late"]),
            "question": ("prompt", str_array([f"q{i}" for i in range(n)])),
            "topic": ("prompt", str_array(["Art"] * n)),
        },
        attrs=provenance("results", {}, model="tiny-random", judge="none", mode="cached"),
    )


def synthetic_subsets(n: int = 40) -> xr.Dataset:
    rng = np.random.default_rng(1)
    topics = rng.choice(["Art", "Science and technology", "Sports", ""], size=n)
    first = np.zeros(n, dtype=np.int64)
    first[:20] = 1
    fail = np.zeros(n, dtype=np.int64)
    fail[:20:2] = 1
    return xr.Dataset(
        {"topic": ("simpleqa_id", str_array(topics)), "in_first_500": ("simpleqa_id", first),
         "in_failures": ("simpleqa_id", fail)},
        coords={"simpleqa_id": np.arange(n)},
    )  # fmt: skip


def synthetic_trials(results: xr.Dataset, k: int = 4) -> xr.Dataset:
    rng = np.random.default_rng(2)
    m, n = results.sizes["method"], results.sizes["prompt"]
    best = np.zeros((m, n, k), dtype=np.int64)
    best[:, :, 0] = 1
    return xr.Dataset(
        {
            "objective": (("method", "prompt", "trial"), rng.normal(size=(m, n, k))),
            "token_overlap": (
                ("method", "prompt", "trial"),
                rng.choice([0.0, 0.5, 1.0], (m, n, k)),
            ),
            "perplexity": (("method", "prompt", "trial"), rng.uniform(2, 300, (m, n, k))),
            "is_best": (("method", "prompt", "trial"), best),
        },
        coords={"method": results["method"].values, "prompt": results["prompt"].values},
        attrs=provenance("trials", {}),
    )


def _check_saved(fig: Figure, stem: Path) -> None:
    paths = save_figure(fig, stem, ("png", "pdf"))
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    img = imread(paths[0])
    w, h = fig.get_size_inches()
    assert img.shape[:2] == (round(h * DPI), round(w * DPI))
    assert float(np.var(img[..., :3])) > 0, "blank image"
    assert paths[1].read_bytes()[:5] == b"%PDF-"


FIGS: dict[str, Callable[..., Figure]] = {
    "fig2": fig2_accuracy,
    "fig3": fig3_scores,
    "fig4": fig4_simpleqa_correct,
    "fig5": fig5_alpha_gamma,
    "fig6": fig6_to_vs_perplexity,
}


@pytest.mark.parametrize("name", sorted(FIGS))
def test_figures_on_synthetic_gaps(name, tmp_path):
    _check_saved(FIGS[name](synthetic_results()), tmp_path / name)


@pytest.mark.parametrize("name", sorted(FIGS))
def test_figures_on_a_single_method_without_grades(name, tmp_path):
    ds = synthetic_results(methods=("full",))  # its only method has NaN judge, no grades
    _check_saved(FIGS[name](ds), tmp_path / name)


def test_fig1_and_extras_on_synthetic(tmp_path):
    _check_saved(fig1_topics(synthetic_subsets()), tmp_path / "fig1")
    ds = synthetic_results()
    _check_saved(fig6_to_vs_perplexity(ds, synthetic_trials(ds)), tmp_path / "fig6_trials")
    tg = xr.Dataset(
        {"judge_score": (("method", "prompt", "trial"), np.full((1, 12, 2), 5.0))},
        coords={"method": str_array(["segmented"])},
    )
    _check_saved(fig2_accuracy(ds, tg, best_of_k=True), tmp_path / "fig2_bok")


def test_figures_on_the_release(release, tmp_path):
    res = release.results
    _check_saved(fig1_topics(release.subsets), tmp_path / "fig1")
    _check_saved(fig2_accuracy(res, release.trial_grades, best_of_k=True), tmp_path / "fig2_bok")
    for name, fn in FIGS.items():
        _check_saved(fn(res), tmp_path / name)


def test_render_all_and_cli(tmp_path, capsys):
    run = tmp_path / "run"
    ds = synthetic_results()
    write_dataset(ds, run / "results.nc")
    write_dataset(synthetic_subsets(), run / "subsets.nc")
    write_dataset(synthetic_trials(ds), run / "trials.nc")
    paths = render_all(run, formats=("png",))
    assert sorted(p.name for p in paths) == [
        "fig0_states_answer.png", "fig1_topics.png", "fig2_accuracy.png", "fig3_scores.png",
        "fig4_simpleqa_correct.png", "fig5_alpha_gamma.png", "fig6_to_vs_perplexity.png",
    ]  # fmt: skip
    assert cli.main(["figures", str(run), "--out", str(tmp_path / "figs"), "--format", "pdf"]) == 0
    assert len(list((tmp_path / "figs").glob("*.pdf"))) == 7
    assert "fig6_to_vs_perplexity.pdf" in capsys.readouterr().out


def test_render_all_release_run(release, tmp_path):
    write_release(release, tmp_path / "run")
    paths = render_all(tmp_path / "run", tmp_path / "figs", ("png",), best_of_k=True)
    assert len(paths) == 8


def test_results_with_wrong_dims_is_an_error(tmp_path):
    run = tmp_path / "run"
    ds = synthetic_results().transpose("prompt", "method", "segment")
    write_dataset(ds, run / "results.nc")
    with pytest.raises(FsnnError, match=r"'token_overlap' has dims \('prompt', 'method'\)"):
        read_dataset(run / "results.nc", "results")
    with pytest.raises(FsnnError, match="has dims"):
        render_all(run)
    assert cli.main(["figures", str(run)]) == 2
    with pytest.raises(FsnnError, match="run folder not found"):
        render_all(tmp_path / "empty")
    write_dataset(synthetic_results(), run / "results.nc")
    with pytest.raises(FsnnError, match="unknown figure format"):
        render_all(run, formats=("gif",))


def test_every_rate_bar_has_its_bootstrap_error_bar():
    """Error bars equal the summary's 95% intervals (one per drawn rate bar)."""
    from matplotlib.collections import LineCollection

    from fsnn.analysis.summary import summarize

    res = synthetic_results()
    s = {e["method"]: e["rates"] for e in summarize(res)["methods"]}
    fig = fig2_accuracy(res)
    keys = ("composite_ge_0.6", "token_overlap_ge_0.5", "judge_ge_4")
    for ax, key in zip(fig.axes[:3], keys, strict=True):
        drawn = [m for m in ("baseline", "segmented", "my-spec") if s[m][key] is not None]
        bars = [c for c in ax.collections if isinstance(c, LineCollection)]
        assert len(bars) == len(drawn), key
        for seg, m in zip(bars, drawn, strict=True):
            (x0, lo), (x1, hi) = seg.get_segments()[0]
            assert (lo, hi) == pytest.approx((100 * s[m][key]["low"], 100 * s[m][key]["high"]))
    fig4 = fig4_simpleqa_correct(res)  # only baseline has SimpleQA grades
    bars = [c for c in fig4.axes[0].collections if isinstance(c, LineCollection)]
    assert len(bars) == 1
    (_, lo), (_, hi) = bars[0].get_segments()[0]
    r = s["baseline"]["simpleqa_correct"]
    assert (lo, hi) == pytest.approx((100 * r["low"], 100 * r["high"]))
