"""Reliability of judging: perplexity independent of the batch, judge transport faults retried, a missing grade stops the run resumably.

(The whole campaign is benchmarks/reliability.py.)
"""

from __future__ import annotations

import numpy as np
import pytest

from fsnn.errors import FsnnError
from fsnn.judges.metrics import Perplexity

TEXTS = [
    "Question: What is the capital of France?\nAnswer: Paris, on the Seine.",
    "The Danube flows through Vienna.",
    "A violin has four strings, tuned in fifths: G, D, A and E. " * 3,
    "Hi",
    "Michio Sugeno received the award in 2010.",
]


def test_perplexity_does_not_depend_on_the_batch(tiny_gemma2):
    """A resumed run batches texts differently: each text's PPL must be bit-identical."""
    model, tok = tiny_gemma2.hf_model, tiny_gemma2.tokenizer
    together = Perplexity(model, tok, window=16)(TEXTS)
    for i, text in enumerate(TEXTS):
        alone = Perplexity(model, tok, window=16)([text])[0]
        assert alone == together[i] or (np.isnan(alone) and np.isnan(together[i])), text
    shuffled = Perplexity(model, tok, window=16)(TEXTS[::-1])[::-1]
    assert shuffled == together
    assert np.isfinite(together[0]) and together[0] > 1


def _http_judge(url, cache_path, **kw):
    from fsnn.judges import JudgeCache, JudgeConfig, make_judge

    cfg = JudgeConfig(
        backend="http",
        model="fake",
        base_url=url,
        timeout=kw.pop("timeout", 2.0),
        max_retries=kw.pop("max_retries", 12),
        backoff_base=0.001,
        backoff_max=0.01,
        concurrency=2,
    )
    return make_judge(cfg, cache=JudgeCache(cache_path) if cache_path else None)


ITEMS = [(f"Who wrote book {i}?", f"Author {i}", f"Author {i * 3}") for i in range(4)]


def test_transport_faults_are_retried_to_the_fault_free_grades(tmp_path):
    from fsnn.judges.parse import parse_quality
    from fsnn.judges.prompts import render_quality
    from tests.fake_openai import TRANSPORT_FAULTS, FakeOpenAI, expected_answer

    with FakeOpenAI(TRANSPORT_FAULTS, sleep_timeout=0.5) as server:
        judge = _http_judge(server.url, None, timeout=0.2)
        grades = judge.grade_quality(ITEMS)
    assert sum(server.injected.values()) == len(TRANSPORT_FAULTS)
    assert judge.requests == len(ITEMS) + len(
        TRANSPORT_FAULTS
    )  # every fault is one retried request
    assert [g.value for g in grades] == [
        parse_quality(expected_answer(render_quality(*i))).score for i in ITEMS
    ]


@pytest.mark.parametrize("fault", ["bad_letter", "bad_score"])
def test_an_answer_without_a_valid_grade_is_not_cached(tmp_path, fault):
    from tests.fake_openai import FakeOpenAI

    with FakeOpenAI([fault]) as server:
        judge = _http_judge(server.url, tmp_path / "cache.sqlite")
        grade = judge.grade_simpleqa if fault == "bad_letter" else judge.grade_quality
        first = grade(ITEMS[:1])[0]
        assert first.defaulted or first.missing
        again = grade(ITEMS[:1])[0]  # a rerun asks again and gets the real grade
        assert not again.defaulted and not again.missing and not again.cached
        assert grade(ITEMS[:1])[0].cached  # a valid answer is cached
    assert server.served == 2


def test_fake_server_stops_by_itself():
    from tests.fake_openai import FakeOpenAI

    server = FakeOpenAI(lifetime=0.3)
    server._thread.join(timeout=5)
    assert not server._thread.is_alive()
    with pytest.raises(ValueError, match="unknown fault"):
        FakeOpenAI(["nope"])


def test_a_missing_baseline_grade_stops_the_run_resumably(tiny_gemma2, tmp_path):
    from fsnn.experiment.pipeline import run_pipeline
    from tests.experiment.test_pipeline import small_config, write_csv
    from tests.fake_openai import FakeOpenAI

    csv_path = write_csv(tmp_path / "qa.csv")
    with FakeOpenAI(always="503") as down:
        judge = _http_judge(down.url, tmp_path / "cache.sqlite", max_retries=1)
        with pytest.raises(
            FsnnError,
            match=r"judge http:fake@.*: 2 of 2 baseline grade\(s\) missing \(HTTP 503.*rerun",
        ):
            run_pipeline(
                small_config(limit=2, batch_size=2),
                tmp_path / "run",
                simpleqa_csv=csv_path,
                model=tiny_gemma2,
                judge=judge,
                progress=False,
            )
    assert not (tmp_path / "run" / "baseline.nc").exists()  # no batch saved with a grade missing
