"""Label-free Fusion Steering (issue 14): the pieces, and that no test answer leaks."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fsnn import beyond
from fsnn.errors import FsnnError
from fsnn.experiment.simpleqa import Question

ROOT = Path(__file__).resolve().parents[2]


def _experiment():
    spec = importlib.util.spec_from_file_location(
        "beyond_oracle", ROOT / "experiments" / "beyond_oracle.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- ridge


def test_ridge_matches_lstsq_of_the_augmented_system():
    rng = np.random.default_rng(0)
    x, y, lam = rng.normal(size=(12, 30)), rng.normal(size=(12, 5)), 0.7
    model = beyond.fit_ridge(x, y, lam)
    xc, yc = x - x.mean(0), y - y.mean(0)
    # ridge = least squares on [Xc; sqrt(lam) I] W = [Yc; 0]
    aug_x = np.vstack([xc, np.sqrt(lam) * np.eye(30)])
    aug_y = np.vstack([yc, np.zeros((30, 5))])
    w, *_ = np.linalg.lstsq(aug_x, aug_y, rcond=None)
    np.testing.assert_allclose(model.weight, w, atol=1e-9)
    q = rng.normal(size=(3, 30))
    np.testing.assert_allclose(model.predict(q), (q - x.mean(0)) @ w + y.mean(0), atol=1e-9)


def test_ridge_refuses_bad_input():
    with pytest.raises(FsnnError, match="lambda"):
        beyond.fit_ridge(np.ones((3, 2)), np.ones((3, 1)), 0.0)
    with pytest.raises(FsnnError, match="same n"):
        beyond.fit_ridge(np.ones((3, 2)), np.ones((4, 1)), 1.0)


def test_lambda_cv_prefers_small_lambda_on_noiseless_linear_data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 4))
    y = x @ rng.normal(size=(4, 3))
    lam, errors = beyond.choose_lambda(x, y, (1e-3, 100.0), folds=4)
    assert errors[1e-3] < errors[100.0]
    assert lam == pytest.approx(1e-3 * np.trace((x - x.mean(0)) @ (x - x.mean(0)).T) / 40)


# --------------------------------------------------------------------------- retrieval, vote, strengths


def test_nearest_picks_the_most_cosine_similar_key():
    rng = np.random.default_rng(2)
    keys = rng.normal(size=(6, 16))
    queries = 3.0 * keys[[4, 0, 2]] + 0.01 * rng.normal(size=(3, 16))  # scale: cosine ignores it
    assert beyond.nearest(keys, queries).tolist() == [4, 0, 2]


def test_majority_vote_normalises_and_breaks_ties_by_first_sample():
    assert beyond.majority_answer(["London", "Paris.", "the paris", "London!", "Paris"]) == "Paris."
    assert beyond.majority_answer(["B", "A", "A", "B"]) == "B"
    assert beyond.majority_answer(["", "", "Rome"]) == "Rome"
    assert beyond.majority_answer(["", " "]) == ""


def test_answer_line_takes_the_first_non_empty_line():
    assert beyond.answer_line("\n  Michio Sugeno\nHe is") == "Michio Sugeno"


def test_fixed_strengths_are_median_products_over_finished_searches():
    # products 0.02, 0.1, (skipped), 0.24: median 0.1 (medians apart would give 0.3 * 0.2 = 0.06)
    alpha = np.array([[0.1], [0.5], [np.nan], [0.3]])
    gamma = np.array([[0.2], [0.2], [0.9], [0.8]])
    a, g = beyond.fixed_strengths(alpha, gamma)
    assert a == (1.0,) and g == pytest.approx((0.1,))
    # log_product trials (alpha 1, gamma k), two segments: the median k per segment
    k = np.array([[0.001, 0.5], [0.01, 0.05], [0.1, 0.005]])
    assert beyond.fixed_strengths(np.ones_like(k), k) == ((1.0, 1.0), (0.01, 0.05))
    with pytest.raises(FsnnError, match="no train search"):
        beyond.fixed_strengths(np.full((2, 1), np.nan), np.ones((2, 1)))


def test_few_shot_prompt_holds_the_examples_then_the_question():
    p = beyond.few_shot_prompt([("Q1?", "A1")], "Q2?")
    assert p == "Question: Q1?\nAnswer: A1\n\nQuestion: Q2?\nAnswer:"


# --------------------------------------------------------------------------- DoLa


def test_dola_pick_equal_layers_is_argmax_and_contrast_picks_within_plausible_set():
    torch.manual_seed(0)
    logp = torch.log_softmax(torch.randn(5, 50), -1)
    assert torch.equal(beyond.dola_pick(logp, logp, 0.1), logp.argmax(-1))
    final = torch.log(torch.tensor([[0.5, 0.4, 0.1 - 1e-4, 1e-4]]))
    early = torch.log(torch.tensor([[0.7, 0.1, 0.1, 0.1]]))
    assert beyond.dola_pick(final, early, 0.1).tolist() == [1]
    # token 3 (p 1e-4) would win on contrast but is not plausible
    assert beyond.dola_pick(
        final, torch.log(torch.tensor([[0.7, 0.1, 0.1, 1e-9]])), 0.1
    ).tolist() == [1]


def test_dola_with_the_final_layer_as_early_layer_is_greedy(tiny_factory):
    import fsnn

    model = tiny_factory("llama")
    prompts = ["Question: Who wrote Hamlet?\nAnswer:", "Question: Capital of France?\nAnswer:"]
    greedy = fsnn.generate(model, prompts, max_new_tokens=6)
    dola = beyond.dola_generate(model, prompts, early_layer=model.n_layers - 1, max_new_tokens=6)
    assert [o.ids for o in dola] == [o.ids for o in greedy]
    contrast = beyond.dola_generate(model, prompts, early_layer=0, max_new_tokens=6)
    assert all(len(o.ids) <= 6 for o in contrast)
    with pytest.raises(FsnnError, match="early layer"):
        beyond.dola_generate(model, prompts, early_layer=model.n_layers, max_new_tokens=2)


# --------------------------------------------------------------------------- leaks


def _questions(n: int, start: int, answer: str) -> list[Question]:
    return [
        Question(
            id=start + i,
            question=f"Which city hosted event number {start + i}?",
            answer=answer.format(i=start + i),
            topic="t",
            answer_type="Place",
        )
        for i in range(n)
    ]


def test_label_free_inputs_do_not_depend_on_test_answers(tiny_factory, monkeypatch):
    """Change every test answer: references, strengths, vote, few-shot and the label-free
    strength searches stay identical, no planted test answer appears in what any
    label-free stage was fed, and every searched item's answer is empty."""
    import fsnn

    experiment = _experiment()
    model = tiny_factory("llama")
    layout = fsnn.SegmentLayout.full(model.n_layers)
    oracle = fsnn.SearchConfig(
        n_trials=2,
        batch_trials=1,
        n_startup_trials=2,
        parametrization="log_product",
        start_trials=1,
        score_on="completion",
        seed=0,
    )
    free_config = experiment.label_free_search_config(oracle)
    assert free_config.objective.w_to == 0 and free_config.n_trials == oracle.n_trials
    searched_items = []
    real_search = fsnn.run_search

    def spy(model, items, *args, **kwargs):
        searched_items.extend(items)
        return real_search(model, items, *args, **kwargs)

    monkeypatch.setattr(fsnn, "run_search", spy)
    train = _questions(4, 100, "Trainville {i}")
    rng = np.random.default_rng(0)
    refs = rng.normal(size=(4, model.n_layers, model.d_model)).astype(np.float32)
    best = (rng.uniform(0.1, 1, size=(4, 1)), rng.uniform(0.1, 1, size=(4, 1)))
    runs = []
    for plant in ("Zqxplant Alpha {i}", "Vwkplant Omega {i}"):
        test = _questions(2, 200, plant)
        seen = beyond.Seen()
        out = experiment.label_free_inputs(
            model,
            train,
            test,
            train_refs=refs,
            train_best=best,
            n_samples=2,
            temperature=0.8,
            tokens=4,
            seed=0,
            seen=seen,
        )
        for name in experiment.SEARCHED:
            trials = experiment.label_free_search(
                model,
                test,
                out[name],
                layout,
                free_config,
                name=name,
                seen=seen,
                tokens=4,
                progress=False,
            )
            out[f"{name}_searched"] = (
                trials["objective"].values,
                trials["completion"].values.tolist(),
                trials["strength"].values,
            )
        texts = " ".join(t for ts in seen.texts.values() for t in ts).lower()
        for q in test:
            assert q.answer.lower() not in texts
        for stage in ("predictor", "strengths", "few_shot"):
            assert seen.ids[stage] <= {q.id for q in train}, stage
        runs.append(out)
    assert len(searched_items) == 2 * len(experiment.SEARCHED) * 2
    assert all(item.answer == "" for item in searched_items)
    a, b = runs
    for key in ("self_consistency", "learned", "retrieval"):
        np.testing.assert_array_equal(a[key], b[key])
    for name in experiment.SEARCHED:
        (obj_a, text_a, k_a), (obj_b, text_b, k_b) = a[f"{name}_searched"], b[f"{name}_searched"]
        assert np.isfinite(obj_a).all()
        np.testing.assert_array_equal(obj_a, obj_b)
        np.testing.assert_array_equal(k_a, k_b)
        assert text_a == text_b
    for key in ("alpha", "gamma", "lambda", "majority", "samples", "few_shot", "neighbour"):
        assert a[key] == b[key], key


def test_label_free_search_refuses_an_objective_that_weighs_token_overlap(tiny_factory):
    import fsnn

    experiment = _experiment()
    model = tiny_factory("llama")
    config = fsnn.SearchConfig(n_trials=1)  # eq. (6): w_to 0.7
    refs = np.zeros((1, model.n_layers, model.d_model), dtype=np.float32)
    with pytest.raises(FsnnError, match="must not weigh token overlap"):
        experiment.label_free_search(
            model,
            _questions(1, 200, "X"),
            refs,
            fsnn.SegmentLayout.full(model.n_layers),
            config,
            name="learned",
            seen=beyond.Seen(),
            progress=False,
        )


def test_split_by_question_is_disjoint_and_seeded():
    experiment = _experiment()
    split = experiment.split_by_question([5, 3, 9, 3, 11, 2, 7], 3, seed=4)
    assert not set(split["train"]) & set(split["test"])
    assert sorted(split["train"] + split["test"]) == [2, 3, 5, 7, 9, 11]
    assert len(split["train"]) == 3
    assert split == experiment.split_by_question([5, 3, 9, 3, 11, 2, 7], 3, seed=4)


def test_quick_run_end_to_end_with_planted_test_answers(tmp_path, tiny_factory, monkeypatch):
    """The --quick shape on a tiny random model and a planted CSV: it writes the labeled
    dataset, resumes from its checkpoints, and the audit shows no test answer reached
    the predictor, the strengths or a test question's reference."""
    import fsnn
    from fsnn.store.files import read_dataset

    experiment = _experiment()
    model = tiny_factory("llama")
    monkeypatch.setattr(fsnn, "load_model", lambda name: model)
    path = tmp_path / "qa.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["metadata", "problem", "answer"])
        for i in range(14):
            meta = "{'topic': 'Geography', 'answer_type': 'Place', 'urls': []}"
            w.writerow([meta, f"Which town hosted fair number {i}?", f"Plantedanswer{i:02d}xq"])
    out = tmp_path / "run"
    args = ["--out", str(out), "--csv", str(path), "--quick", "--n-boot", "50"]
    assert experiment.main(args) == 0
    ds = read_dataset(out / "beyond_oracle.nc")
    split = json.loads((out / "split.json").read_text())
    assert not set(split["train"]) & set(split["test"])
    assert len(split["train"]) == 6 and len(split["test"]) == 4
    assert list(ds["method"].values) == list(experiment.METHODS)
    assert ds["token_overlap"].shape == (len(experiment.METHODS), 4)
    assert set(ds["question_id"].values.tolist()) == set(split["test"])
    seen = json.loads((out / "seen.json").read_text())
    test_answers = [a.lower() for a in ds["answer"].values]
    all_seen = " ".join(t for ts in seen["texts"].values() for t in ts).lower()
    assert test_answers and not any(a in all_seen for a in test_answers)
    assert set(seen["ids"]["predictor"]) == set(split["train"])
    assert set(seen["ids"]["strengths"]) == set(split["train"])
    for name in experiment.SEARCHED:
        assert set(seen["ids"][f"search_{name}"]) == set(split["test"])
    # the search settings are in the provenance: scale-aware default, rounds of one trial
    oracle_search = json.loads(ds.attrs["oracle_search"])
    assert oracle_search["parametrization"] == "log_product" and oracle_search["batch_trials"] == 1
    assert oracle_search["n_startup_trials"] == 2 and oracle_search["unreadable_penalty"] == 1.0
    free_search = json.loads(ds.attrs["label_free_search"])
    assert (
        free_search["objective"]["w_to"] == 0.0
        and free_search["n_trials"] == oracle_search["n_trials"]
    )
    # a rerun with other search settings into the same folder is refused, not mixed
    assert experiment.main([*args, "--parametrization", "alpha_gamma"]) == 2
    # resume: a rerun reuses every checkpoint and gives the same numbers
    before = ds["token_overlap"].values.copy()
    assert experiment.main(args) == 0
    np.testing.assert_array_equal(
        read_dataset(out / "beyond_oracle.nc")["token_overlap"].values, before
    )
