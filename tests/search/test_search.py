"""Search: metrics vs the release, objective, batched == sequential, resume after SIGKILL."""

from __future__ import annotations

import csv
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from fsnn.errors import FsnnError
from fsnn.judges.metrics import Perplexity, token_overlap
from fsnn.search.objective import ObjectiveConfig, objective
from fsnn.search.run import SearchConfig, SearchItem, open_storage, run_search
from fsnn.steering.layout import SegmentLayout
from tests.conftest import shared_path


def test_token_overlap_hand_cases():
    assert token_overlap("Michio Sugeno", "michio SUGENO!") == 1.0
    assert token_overlap("New York City", "york, new") == round(2 / 3, 4)
    assert token_overlap("the the cat", "the") == 0.5  # word types, not counts
    assert token_overlap("", "anything") == 0.0
    assert token_overlap("?!", "?!") == 0.0  # single punctuation tokens dropped -> empty G
    assert token_overlap("...", "...") == 1.0  # a multi-character token is kept
    assert token_overlap("Zürich", "He lived in Zürich.") == 1.0
    assert token_overlap("São Paulo", "sao paulo") == 0.5
    # a sentence-final period is split off by the Punkt + Treebank pipeline
    assert token_overlap("range", "It is out of range. Then more.") == 1.0


def test_objective_eq6():
    assert objective(1.0, 50.0) == pytest.approx(0.7 - 0.15)
    assert objective(0.5, 1000.0) == pytest.approx(0.35 - 0.3)
    assert objective(0.0, float("nan")) == pytest.approx(-0.3)
    cfg = ObjectiveConfig(w_to=1.0, w_ppl=0.0, ppl_cap=10.0)
    assert objective(0.25, 5.0, cfg) == 0.25


def test_release_token_overlap_and_objective_reproduced():
    release = Path(shared_path("FSNN_RELEASE_DIR"))
    mismatched_to, mismatched_s, n = 0, 0, 0
    for name in ("per_prompt_optuna_summary_full.csv", "per_prompt_optuna_summary_segmented.csv"):
        with open(release / name, newline="") as fh:
            for row in csv.DictReader(fh):
                n += 1
                if token_overlap(row["ground_truth"], row["generated_text"]) != round(
                    float(row["token_overlap"]), 4
                ):
                    mismatched_to += 1
                s = objective(float(row["token_overlap"]), float(row["perplexity"]))
                if abs(s - float(row["combined_score"])) > 1e-6:
                    mismatched_s += 1
    assert n == 520
    assert mismatched_to == 0
    assert mismatched_s == 0


def _items(model, n=2, seed=0):
    torch.manual_seed(seed)
    qs = ["Who received the award in 2010?", "What is the capital of France?", "Which river?"]
    return [
        SearchItem(
            key=f"p{i}",
            prompt=f"Question: {qs[i]}\nAnswer and explanation:",
            answer=["Michio Sugeno", "Paris", "Danube"][i],
            h=torch.randn(model.n_layers, model.d_model),
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("mode", ["faithful", "cached"])
def test_batched_search_equals_sequential(tiny_gemma2, tmp_path, mode):
    model = tiny_gemma2
    ppl = Perplexity(model.hf_model, model.tokenizer)
    layout = SegmentLayout.segmented(model.n_layers)
    items = _items(model)
    results = []
    for k, rows in ((5, 16), (1, 1)):
        cfg = SearchConfig(n_trials=5, batch_trials=k, batch_rows=rows, sampler="random", seed=7)
        storage = open_storage(f"sqlite:///{tmp_path}/s{k}.db")
        results.append(
            run_search(
                model,
                items,
                layout,
                cfg,
                storage=storage,
                ppl=ppl,
                mode=mode,
                max_new_tokens=5,
                progress=False,
            )
        )
    batched, sequential = results
    np.testing.assert_array_equal(batched.alpha.values, sequential.alpha.values)
    assert (batched.completion.values == sequential.completion.values).all()
    np.testing.assert_allclose(batched.objective.values, sequential.objective.values, rtol=1e-5)
    assert batched.is_best.sum("trial").values.tolist() == [1, 1]
    assert len(set(batched.completion.values.ravel())) > 1  # strengths matter


def test_tpe_seed_repeats_and_product_parametrization(tiny_gemma2, tmp_path):
    model = tiny_gemma2
    ppl = Perplexity(model.hf_model, model.tokenizer)
    layout = SegmentLayout.full(model.n_layers)
    items = _items(model, 1)
    runs = []
    for i in range(2):
        cfg = SearchConfig(
            n_trials=3, batch_trials=3, sampler="tpe", seed=3, parametrization="product"
        )
        runs.append(
            run_search(
                model,
                items,
                layout,
                cfg,
                storage=open_storage(f"sqlite:///{tmp_path}/t{i}.db"),
                ppl=ppl,
                max_new_tokens=4,
                progress=False,
            )
        )
    np.testing.assert_array_equal(runs[0].params.values, runs[1].params.values)
    assert runs[0].param.values.tolist() == ["k_all"]
    assert (runs[0].alpha.values == 1.0).all()


def test_bad_search_config():
    with pytest.raises(FsnnError, match="empty parameter range"):
        SearchConfig(low=0.5, high=0.5)
    with pytest.raises(FsnnError, match="n_trials"):
        SearchConfig(n_trials=0)
    with pytest.raises(FsnnError, match="cannot open Optuna storage"):
        open_storage("postgresql://nobody@127.0.0.1:1/none")


SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, torch
    sys.path.insert(0, {root!r})
    from tests.conftest import make_tiny
    from fsnn.models.load import ALIASES, resolve_alias
    from fsnn.judges.metrics import Perplexity
    from fsnn.search.run import SearchConfig, SearchItem, open_storage, run_search
    from fsnn.steering.layout import SegmentLayout
    model = make_tiny("gemma2", resolve_alias(ALIASES["smollm2-135m"]))
    torch.manual_seed(0)
    items = [SearchItem(key=f"p{{i}}", prompt=f"Question: q{{i}}?\\nAnswer and explanation:", answer="Paris",
                        h=torch.randn(model.n_layers, model.d_model)) for i in range(2)]
    cfg = SearchConfig(n_trials=5, batch_trials=2, batch_rows=2, sampler="tpe", seed=1)
    rounds = []
    def on_round():
        rounds.append(1)
        if sys.argv[2] == "kill" and len(rounds) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    ds = run_search(model, items, SegmentLayout.segmented(model.n_layers), cfg,
                    storage=open_storage(sys.argv[1]), ppl=Perplexity(model.hf_model, model.tokenizer),
                    max_new_tokens=4, progress=False, on_round=on_round)
    ds.to_netcdf(sys.argv[3])
    """
)


def test_resume_after_sigkill(tmp_path):
    import optuna
    import xarray as xr

    root = str(Path(__file__).resolve().parents[2])
    script = tmp_path / "search.py"
    script.write_text(SCRIPT.format(root=root))
    killed_db, clean_db = f"sqlite:///{tmp_path}/killed.db", f"sqlite:///{tmp_path}/clean.db"
    first = subprocess.run(
        [sys.executable, str(script), killed_db, "kill", str(tmp_path / "x.nc")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert first.returncode == -9, first.stderr[-2000:]
    storage = optuna.storages.RDBStorage(killed_db)
    partial = {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(storage)}
    assert 0 < sum(partial.values()) < 10
    for args in (
        (killed_db, "run", str(tmp_path / "resumed.nc")),
        (clean_db, "run", str(tmp_path / "clean.nc")),
    ):
        proc = subprocess.run(
            [sys.executable, str(script), *args], capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
    for study in optuna.get_all_study_summaries(storage):
        trials = optuna.load_study(study_name=study.study_name, storage=storage).trials
        numbers = [t.number for t in trials]
        assert len(numbers) == len(set(numbers)) == 5
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    resumed, clean = (
        xr.open_dataset(tmp_path / "resumed.nc"),
        xr.open_dataset(tmp_path / "clean.nc"),
    )
    np.testing.assert_array_equal(resumed.params.values, clean.params.values)
    np.testing.assert_allclose(resumed.objective.values, clean.objective.values, rtol=1e-5)


# ----------------------------------------------------------------------------- fast tests on a stub generator


class _StubModel:
    n_layers, d_model, name = 4, 8, "stub"


def _stub_generate(fail_prompts=(), nan_after=None):
    """A steered_generate stand-in: the completion depends on the strength alone."""
    from fsnn.steering.decode import GenerationOutput

    calls = []

    def fake(model, prompts, h, alpha, gamma, **kw):
        calls.append(list(prompts))
        if any(p in fail_prompts for p in prompts):
            raise RuntimeError("planted failure")
        outs = []
        for p, a, g in zip(prompts, alpha, gamma, strict=True):
            k = float((a * g).max())
            if k > 0.3:
                text = "Paris Paris Paris Paris Paris Paris"
            elif k > 0.05:
                text = f"It is Paris, the capital city {k:.4f}"
            else:
                text = f"I am not sure about that one {k:.4f}"
            outs.append(
                GenerationOutput(prompt=p, completion=text, ids=[1], text=p + text, stopped=True)
            )
        return outs

    fake.calls = calls
    return fake


def _stub_items(n=3):
    return [
        SearchItem(
            key=f"p{i}",
            prompt=f"prompt {i}",
            answer="Paris",
            h=torch.zeros(4, 8),
            norm_scale=torch.ones(4),
        )
        for i in range(n)
    ]


def _stub_ppl(texts):
    return [10.0 for _ in texts]


def test_failed_evaluation_marks_trials_failed_retries_and_carries_on(monkeypatch, tmp_path):
    import optuna

    fake = _stub_generate(fail_prompts=("prompt 1",))
    monkeypatch.setattr("fsnn.steering.steer.steered_generate", fake)
    cfg = SearchConfig(n_trials=3, batch_trials=1, batch_rows=1, sampler="random", max_failures=2)
    storage = open_storage(f"sqlite:///{tmp_path}/f.db")
    ds = run_search(
        _StubModel(),
        _stub_items(),
        SegmentLayout.full(4),
        cfg,
        storage=storage,
        ppl=_stub_ppl,
        progress=False,
    )
    study = optuna.load_study(study_name="p1", storage=storage)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.FAIL) == 3  # max_failures + 1 tries, then given up
    assert optuna.trial.TrialState.RUNNING not in states
    assert all("planted failure" in t.user_attrs["error"] for t in study.trials)
    assert ds.failed_trials.values.tolist() == [0, 3, 0]
    assert ds.attrs["failed_trials"] == 3
    # the other prompts finished their budget; p1 has no finished trial and says so
    assert (ds.trial_number.values[[0, 2]] >= 0).all()
    assert ds.best_trial.values.tolist()[1] == -1
    assert ds.is_best.values[1].sum() == 0
    assert ds.attrs["prompts_without_finished_trial"] == 1


def test_nan_objective_fails_the_trial(monkeypatch, tmp_path):
    import optuna

    import fsnn.search.run as search

    monkeypatch.setattr("fsnn.steering.steer.steered_generate", _stub_generate())
    monkeypatch.setattr(search, "guarded_objective", lambda *a, **k: float("nan"))
    cfg = SearchConfig(n_trials=2, batch_trials=2, sampler="random", max_failures=1)
    storage = open_storage(f"sqlite:///{tmp_path}/n.db")
    ds = run_search(
        _StubModel(),
        _stub_items(1),
        SegmentLayout.full(4),
        cfg,
        storage=storage,
        ppl=_stub_ppl,
        progress=False,
    )
    trials = optuna.load_study(study_name="p0", storage=storage).trials
    assert all(t.state == optuna.trial.TrialState.FAIL for t in trials)
    assert 2 <= len(trials) <= 3  # bounded: never re-queued forever
    assert ds.best_trial.values.tolist() == [-1]


def test_enqueued_start_trials_are_evaluated_first(monkeypatch, tmp_path):
    from fsnn.search.strength import start_params

    fake = _stub_generate()
    monkeypatch.setattr("fsnn.steering.steer.steered_generate", fake)
    cfg = SearchConfig(
        n_trials=5,
        batch_trials=1,
        sampler="tpe",
        n_startup_trials=1,
        start_trials=3,
        parametrization="log_product",
    )
    ds = run_search(
        _StubModel(),
        _stub_items(2),
        SegmentLayout.full(4),
        cfg,
        storage=open_storage(f"sqlite:///{tmp_path}/e.db"),
        ppl=_stub_ppl,
        progress=False,
    )
    expected = [p["k_all"] for p in start_params("log_product", ["all"], *cfg.range, 3)]
    for i in range(2):
        assert ds.trial_number.values[i, :3].tolist() == [0, 1, 2]
        np.testing.assert_allclose(ds.params.values[i, :3, 0], expected)
    # the first three generate calls (one round each) carried the start strengths
    assert len(fake.calls) == 5


@pytest.mark.parametrize("sampler", ["tpe", "gp"])
def test_resumed_study_asks_what_an_uninterrupted_one_would(monkeypatch, tmp_path, sampler):

    monkeypatch.setattr("fsnn.steering.steer.steered_generate", _stub_generate())
    cfg = SearchConfig(
        n_trials=5,
        batch_trials=1,
        sampler=sampler,
        n_startup_trials=2,
        start_trials=1,
        parametrization="norm_relative",
        seed=4,
    )
    layout = SegmentLayout.segmented(4, 2)
    clean = run_search(
        _StubModel(),
        _stub_items(2),
        layout,
        cfg,
        storage=open_storage(f"sqlite:///{tmp_path}/c.db"),
        ppl=_stub_ppl,
        progress=False,
    )

    class Stop(BaseException):
        pass

    rounds = []

    def stop_after_two():
        rounds.append(1)
        if len(rounds) == 2:
            raise Stop

    url = f"sqlite:///{tmp_path}/r.db"
    with pytest.raises(Stop):
        run_search(
            _StubModel(),
            _stub_items(2),
            layout,
            cfg,
            storage=open_storage(url),
            ppl=_stub_ppl,
            progress=False,
            on_round=stop_after_two,
        )
    resumed = run_search(
        _StubModel(),
        _stub_items(2),
        layout,
        cfg,
        storage=open_storage(url),
        ppl=_stub_ppl,
        progress=False,
    )
    np.testing.assert_array_equal(resumed.params.values, clean.params.values)
    np.testing.assert_array_equal(resumed.trial_number.values, clean.trial_number.values)
    assert len({tuple(r) for r in clean.params.values[0]}) == 5  # the sampler explored


def test_resume_of_an_interrupted_round_asks_nothing_new_until_it_is_told(monkeypatch, tmp_path):
    """A kill inside a round leaves its trials RUNNING: the resumed search evaluates them
    and only then asks the next round, as the uninterrupted search did (issue 24: before,
    it asked the next trial beside them, and TPE saw another history)."""

    cfg = SearchConfig(
        n_trials=6,
        batch_trials=1,
        sampler="tpe",
        n_startup_trials=2,
        start_trials=1,
        parametrization="norm_relative",
        seed=4,
    )
    layout = SegmentLayout.segmented(4, 2)
    monkeypatch.setattr("fsnn.steering.steer.steered_generate", _stub_generate())
    clean = run_search(
        _StubModel(),
        _stub_items(2),
        layout,
        cfg,
        storage=open_storage(f"sqlite:///{tmp_path}/c.db"),
        ppl=_stub_ppl,
        progress=False,
    )

    class Stop(BaseException):
        pass

    stub = _stub_generate()

    def killed_in_round_two(*a, **k):
        if len(stub.calls) == 1:  # the second round's trials (#1) are asked, none told
            raise Stop
        return stub(*a, **k)

    url = f"sqlite:///{tmp_path}/r.db"
    monkeypatch.setattr("fsnn.steering.steer.steered_generate", killed_in_round_two)
    with pytest.raises(Stop):
        run_search(
            _StubModel(),
            _stub_items(2),
            layout,
            cfg,
            storage=open_storage(url),
            ppl=_stub_ppl,
            progress=False,
        )
    monkeypatch.setattr("fsnn.steering.steer.steered_generate", _stub_generate())
    resumed = run_search(
        _StubModel(),
        _stub_items(2),
        layout,
        cfg,
        storage=open_storage(url),
        ppl=_stub_ppl,
        progress=False,
    )
    np.testing.assert_array_equal(resumed.params.values, clean.params.values)
    np.testing.assert_array_equal(resumed.trial_number.values, clean.trial_number.values)


def test_search_stores_degeneration_and_prefers_readable(monkeypatch, tmp_path):

    monkeypatch.setattr("fsnn.steering.steer.steered_generate", _stub_generate())
    cfg = SearchConfig(
        n_trials=3,
        batch_trials=3,
        sampler="random",
        start_trials=3,
        parametrization="log_product",
        low=0.01,
        high=1.0,
        score_on="completion",
    )
    ds = run_search(
        _StubModel(),
        _stub_items(1),
        SegmentLayout.full(4),
        cfg,
        storage=open_storage(f"sqlite:///{tmp_path}/d.db"),
        ppl=_stub_ppl,
        progress=False,
    )
    # start strengths 0.032, 0.1, 0.32: unsure / readable answer / "Paris Paris ..." (same TO 1.0)
    assert ds.readable.values[0].tolist() == [1, 1, 0]
    assert ds.token_overlap.values[0].tolist() == [0.0, 1.0, 1.0]
    assert ds.longest_repeat.values[0, 2] == 6
    assert ds.distinct_2.values[0, 2] < 0.5
    assert int(ds.best_trial.values[0]) == 1
    paper = SearchConfig(
        n_trials=3,
        batch_trials=3,
        sampler="random",
        start_trials=3,
        parametrization="log_product",
        low=0.01,
        high=1.0,
        score_on="completion",
        unreadable_penalty=0.0,
    )
    ds0 = run_search(
        _StubModel(),
        _stub_items(1),
        SegmentLayout.full(4),
        paper,
        storage=open_storage(f"sqlite:///{tmp_path}/d0.db"),
        ppl=_stub_ppl,
        progress=False,
    )
    assert (
        ds0.objective.values[0, 2] == ds0.objective.values[0, 1]
    )  # eq. (6) cannot tell them apart here


def test_bad_sampler_and_parametrization():
    with pytest.raises(FsnnError, match="unknown sampler"):
        SearchConfig(sampler="cmaes")
    with pytest.raises(FsnnError, match="unknown parametrization"):
        SearchConfig(parametrization="bogus")
    with pytest.raises(FsnnError, match="log scale"):
        SearchConfig(parametrization="log_product", low=0.0, high=1.0)


def test_results_without_finished_trial_is_explicit(tmp_path):
    """A prompt whose search finished no trial gets NaN/"" results and is counted, never trial 0's."""
    import xarray as xr

    from fsnn.backends.base import LocalBackend
    from fsnn.experiment.pipeline import RunConfig
    from fsnn.experiment.stages import RunContext, results_stage

    class Model:
        def describe(self):
            return {"model": "stub"}

    ctx = RunContext(
        config=RunConfig(score_on="completion"),
        out=tmp_path,
        model=Model(),
        judge=None,
        backend=LocalBackend(),
        simpleqa_sha="",
        _ppl=lambda texts: [10.0 for _ in texts],
    )
    ids = np.array([7, 9])
    coords = {
        "simpleqa_id": ("prompt", ids),
        "question": ("prompt", np.array(["q7", "q9"], dtype=object)),
        "answer": ("prompt", np.array(["Paris", "Rome"], dtype=object)),
    }
    baseline = xr.Dataset(
        {
            k: ("prompt", np.array(v, dtype=object))
            for k, v in {
                "completion": ["no", "no"],
                "text": ["q7 no", "q9 no"],
                "grade": ["INCORRECT"] * 2,
                "grade_source": ["proxy"] * 2,
                "topic": ["Art", "Art"],
            }.items()
        },
        coords=coords,
    )
    refs = xr.Dataset(coords=coords)
    trials = xr.Dataset(
        {
            "completion": (
                ("prompt", "trial"),
                np.array([["It is Paris", "Paris"], ["", ""]], dtype=object),
            ),
            "text": (
                ("prompt", "trial"),
                np.array([["q7 It is Paris", "q7 Paris"], ["", ""]], dtype=object),
            ),
            "alpha": (
                ("prompt", "trial", "segment"),
                np.array([[[1.0], [0.5]], [[np.nan], [np.nan]]]),
            ),
            "gamma": (
                ("prompt", "trial", "segment"),
                np.array([[[0.1], [0.2]], [[np.nan], [np.nan]]]),
            ),
            "objective": (("prompt", "trial"), np.array([[0.1, 0.5], [np.nan, np.nan]])),
            "is_best": (("prompt", "trial"), np.array([[0, 1], [0, 0]], dtype=np.int8)),
            "best_trial": ("prompt", np.array([1, -1])),
        },
        coords={"segment": ["all"]},
    ).expand_dims(method=["full"])
    ds = results_stage(ctx, baseline, refs, trials)
    full = ds.isel(method=1)
    assert str(ds.method.values[1]) == "full"
    assert full.completion.values.tolist() == ["Paris", ""]
    assert full.token_overlap.values[0] == 1.0 and np.isnan(full.token_overlap.values[1])
    assert np.isnan(full.alpha.values[1]).all()
    assert ds.attrs["prompts_without_finished_trial"] == 1
    assert full.readable.values.tolist() == [1, 0]
