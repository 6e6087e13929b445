"""The judge cache key: every setting that changes an answer is in it, nothing else."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator, Sequence
from dataclasses import replace

import pytest

from fsnn.judges import JudgeCache, JudgeConfig
from fsnn.judges.base import Answer, Judge, Prompt

ITEMS = [("Capital of France?", "Paris", "Paris."), ("2+2?", "4", "Five.")]

HTTP = JudgeConfig(backend="http", model="m", base_url="http://127.0.0.1:9/v1")
LOCAL = JudgeConfig(backend="local", model="smollm2-135m")

# One changed value per setting that changes what the judge answers.
ANSWER_CHANGES = {
    "http": {
        "model": "m2",
        "base_url": "http://127.0.0.1:10/v1",
        "temperature": 0.7,
        "max_tokens": 16,
        "simpleqa_template": "simple-evals",
    },
    "local": {
        "model": "qwen2.5-coder-0.5b",
        "revision": "abc123",
        "dtype": "bfloat16",
        "chat_template": False,
        "local_hallucination": True,
        "simpleqa_template": "simple-evals",
    },
}
# Settings that do not change the raw answer.
NEUTRAL_CHANGES = {
    "http": {
        "timeout": 5.0,
        "max_retries": 1,
        "concurrency": 2,
        "backoff_base": 0.1,
        "letter_rule": "simple-evals",
    },
    "local": {
        "batch_size": 2,
        "device": "meta",
        "local_prefix_cache": False,
        "letter_rule": "simple-evals",
    },
}


@pytest.fixture(autouse=True)
def official_template(monkeypatch):
    """A stand-in for the simple-evals package (its template is only read)."""
    module = types.ModuleType("simple_evals.simpleqa_eval")
    module.GRADER_TEMPLATE = "OFFICIAL Q={question} T={target} P={predicted_answer}"
    monkeypatch.setitem(sys.modules, "simple_evals", types.ModuleType("simple_evals"))
    monkeypatch.setitem(sys.modules, "simple_evals.simpleqa_eval", module)


class CountingJudge(Judge):
    """Answers every prompt with a fixed grade and counts the prompts it was asked."""

    def __init__(self, config: JudgeConfig, cache: JudgeCache) -> None:
        super().__init__(config, cache=cache)
        self.asked = 0

    def _answer(self, prompts: Sequence[Prompt]) -> Iterator[tuple[int, Answer]]:
        for i, p in enumerate(prompts):
            self.asked += 1
            yield i, Answer(raw="A" if p.task == "simpleqa" else "Score: 3")


def _asked(config: JudgeConfig, cache: JudgeCache) -> int:
    judge = CountingJudge(config, cache)
    judge.grade_quality(ITEMS)
    judge.grade_simpleqa(ITEMS)
    return judge.asked


def test_answer_changes_cover_every_answer_setting():
    assert set(ANSWER_CHANGES["http"]) | {"backend"} == set(HTTP.answer_settings())
    assert set(ANSWER_CHANGES["local"]) | {"backend"} == set(LOCAL.answer_settings())


@pytest.mark.parametrize(
    "base, field, value",
    [
        (c, f, v)
        for c, name in ((HTTP, "http"), (LOCAL, "local"))
        for f, v in ANSWER_CHANGES[name].items()
    ],
)
def test_toggling_an_answer_setting_misses_the_cache(tmp_path, base, field, value):
    cache = JudgeCache(tmp_path / "answers.sqlite")
    assert _asked(base, cache) == 4
    assert _asked(base, cache) == 0  # same settings: every answer from the cache
    changed = replace(base, **{field: value})
    assert changed.cache_key != base.cache_key
    assert _asked(changed, cache) == 4  # nothing reused across the change
    assert _asked(changed, cache) == 0


@pytest.mark.parametrize(
    "base, field, value",
    [
        (c, f, v)
        for c, name in ((HTTP, "http"), (LOCAL, "local"))
        for f, v in NEUTRAL_CHANGES[name].items()
    ],
)
def test_settings_that_do_not_change_answers_keep_hits(tmp_path, base, field, value):
    cache = JudgeCache(tmp_path / "answers.sqlite")
    assert _asked(base, cache) == 4
    assert _asked(replace(base, **{field: value}), cache) == 0
