"""The local transformers judge: constrained next-token grades, batching, cache.

Tiny random models check the batching machinery exactly (batched == one at a time,
shared-prefix cache == plain forward) on every claimed architecture; the real
SmolLM2-135M-Instruct grades a few released rows and answers the second call from the
cache.
"""

from __future__ import annotations

import os

import pytest

from fsnn.judges import JudgeCache, JudgeConfig, make_judge
from fsnn.judges.local import LocalJudge
from tests.conftest import ARCHS

ITEMS = [
    ("Who wrote Hamlet?", "William Shakespeare", "Shakespeare wrote it around 1600."),
    ("What is the capital of France?", "Paris", "It is Lyon, a large city in the south-east."),
    ("How many legs does a spider have?", "8", "Eight."),
    ("Largest planet?", "Jupiter", "Saturn? No, Jupiter is the largest planet by far."),
]


def local(model, **kw) -> LocalJudge:
    judge = make_judge(
        JudgeConfig(backend="local", model=model.name, **kw), cache=None, model=model
    )
    assert isinstance(judge, LocalJudge)
    return judge


def max_diff(a, b) -> float:
    return max(abs(x.probs[k] - y.probs[k]) for x, y in zip(a, b, strict=True) for k in x.probs)


@pytest.mark.parametrize("arch", ARCHS)
def test_batched_and_prefix_cache_equal_one_by_one(tiny_factory, arch):
    model = tiny_factory(arch)
    reference = local(model, batch_size=1, local_prefix_cache=False)
    ref_q, ref_s = reference.grade_quality(ITEMS), reference.grade_simpleqa(ITEMS)
    batched = local(model, batch_size=3, local_prefix_cache=False)
    assert max_diff(batched.grade_quality(ITEMS), ref_q) < 1e-5
    prefixed = local(model, batch_size=3)  # shared prefix run once, then batches of 3
    assert max_diff(prefixed.grade_quality(ITEMS), ref_q) < 1e-5
    assert max_diff(prefixed.grade_simpleqa(ITEMS), ref_s) < 1e-5
    for g in ref_q:
        assert set(g.probs) == {"1", "2", "3", "4", "5"}
        assert sum(g.probs.values()) == pytest.approx(1.0, abs=1e-5)
        assert g.value == int(max(g.probs, key=g.probs.get)) and g.raw == f"Score: {g.value}"
    assert all(g.value in ("CORRECT", "INCORRECT", "NOT_ATTEMPTED") for g in ref_s)


def test_choice_tokens_follow_the_prompt(tiny_gemma2):
    """Each answer is one token right after a context shared by all answers."""
    judge = local(tiny_gemma2)
    tok = tiny_gemma2.tokenizer
    from fsnn.judges.base import Prompt

    text = judge.render(Prompt(task="quality", user="hi", prefill="Score: "))
    assert text.endswith("Score: ") and "<|im_start|>assistant" in text  # chat template used
    context, targets = judge._encode(text, ["1", "2", "3", "4", "5"])
    for digit, target in zip("12345", targets, strict=True):
        assert tok.decode(context + [target]).endswith(f"Score: {digit}")
    plain = local(tiny_gemma2, chat_template=False)
    assert plain.id == "local:tiny-gemma2;chat_template=0"
    assert not plain.render(Prompt(task="simpleqa", user="hi")).startswith("<|im_start|>")


def test_hallucination_flag(tiny_gemma2):
    judge = local(tiny_gemma2, local_hallucination=True)
    grades = judge.grade_quality(ITEMS[:2])
    for g in grades:
        assert g.hallucination in (True, False) and "\nHallucination: " in g.raw
        assert g.value in (1, 2, 3, 4, 5)


def test_failure_is_missing_not_a_crash(tiny_gemma2, monkeypatch):
    judge = local(tiny_gemma2)

    def boom(*args, **kwargs):
        raise RuntimeError("simulated out of memory")

    monkeypatch.setattr(judge, "_forward", boom)
    grades = judge.grade_quality(ITEMS[:2])
    assert all(g.value is None and "simulated out of memory" in g.error for g in grades)
    assert judge.stats["failed"] == 2


@pytest.mark.real
def test_smollm2_grades_released_rows_and_caches(smollm2, tmp_path):
    folder = os.environ.get("FSNN_RELEASE_DIR")
    if folder:
        from fsnn.analysis.release_grades import graded_rows

        rows = graded_rows(folder)
        rows = rows.groupby("method").head(1)
        items = list(zip(rows.question, rows.target, rows.predicted, strict=True))
    else:  # still a real-model test without the shared data
        items = ITEMS
    cache = JudgeCache(tmp_path / "answers.sqlite")
    judge = make_judge("local:smollm2-135m", cache=cache, model=smollm2)
    quality = judge.grade_quality(items)
    simpleqa = judge.grade_simpleqa(items)
    assert all(g.value in (1, 2, 3, 4, 5) and g.error is None for g in quality)
    assert all(g.value in ("CORRECT", "INCORRECT", "NOT_ATTEMPTED") for g in simpleqa)
    assert all(g.judge_id == "local:smollm2-135m" and not g.cached for g in quality + simpleqa)
    assert all(1.0 <= g.expected <= 5.0 for g in quality)
    # non-vacuous: the grade distribution depends on the item
    assert len({round(g.probs["1"], 4) for g in quality}) > 1
    assert cache.stats() == {"hits": 0, "misses": 2 * len(items)}
    again = judge.grade_quality(items)
    assert cache.hits == len(items)  # counted, not timed
    assert [g.value for g in again] == [g.value for g in quality] and all(g.cached for g in again)
    assert again[0].probs == pytest.approx(quality[0].probs)
    # prefix-cache path == plain path on the real model too
    plain = local(smollm2, local_prefix_cache=False)
    assert max_diff(plain.grade_quality(items), quality) < 1e-4
