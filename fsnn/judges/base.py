"""Judge configuration, grades, and the caching logic every backend shares.

A judge turns (question, target, predicted) items into :class:`Grade` objects for two
tasks (see :mod:`fsnn.judges.prompts`): the SimpleQA rubric and the 1-5 quality grade.
Backends only answer prompts; this module renders the prompts, looks answers up in the
:class:`~fsnn.judges.cache.JudgeCache`, stores new ones as they arrive, and parses every
answer into a grade that records the judge id. A failed request is a *missing* grade
with its reason, never an exception.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypedDict

from fsnn.backends.retry import RetryPolicy
from fsnn.errors import FsnnError

from .cache import JudgeCache, prompt_sha256
from .parse import LetterRule, parse_quality, parse_simpleqa
from .prompts import Task, render_quality, render_simpleqa

__all__ = [
    "MISTRAL",
    "Answer",
    "Grade",
    "Item",
    "Judge",
    "JudgeConfig",
    "Prompt",
]

log = logging.getLogger("fsnn.judges")

Item = tuple[str, str, str]
"""(question, gold target, predicted text) of one graded answer."""

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RETRY = RetryPolicy()  # the one set of retry defaults (fsnn.backends.retry)


@dataclass(frozen=True, kw_only=True)
class JudgeConfig:
    """How to reach a judge and how to ask it.

    Attributes:
        backend: ``"http"`` (OpenAI-compatible chat completions: Mistral, OpenAI, vLLM,
            Ollama, llama.cpp server) or ``"local"`` (a transformers model, graded from
            constrained next-token scores).
        model: the model name the server expects (http), or a model spec that
            :func:`fsnn.models.load.load_model` accepts (local).
        base_url: the API root holding ``/chat/completions`` (http only), e.g.
            ``https://api.mistral.ai/v1``.
        api_key_env: the NAME of the environment variable holding the API key (e.g.
            ``MISTRAL_API_KEY``), read at request time; None for servers without keys.
            The key itself never enters a config, log, cache or result file.
        temperature: sampling temperature (paper: 0).
        timeout: seconds per HTTP request.
        max_retries: retries after the first attempt (timeouts, 429, 5xx, bad JSON);
            the retry settings default to :class:`fsnn.backends.retry.RetryPolicy`'s.
        concurrency: HTTP requests in flight at once.
        max_tokens: answer length limit of an HTTP request.
        backoff_base: first retry delay in seconds; doubles each retry, with jitter.
        backoff_max: upper bound of a backoff delay (a Retry-After header wins).
        batch_size: prompts per forward pass (local).
        device: torch device (local).
        dtype: weight dtype (local).
        chat_template: wrap local prompts in the tokenizer's chat template when it has
            one (instruct models).
        simpleqa_template: ``"fsnn"`` (this project's wording) or ``"simple-evals"``
            (the official template, loaded from the installed package).
        letter_rule: how the SimpleQA letter is read (``"word"`` or ``"simple-evals"``).
        local_hallucination: local judges also read the Y/N hallucination flag (one
            more forward pass per item).
        local_prefix_cache: local judges run the prompt prefix shared by a call's
            items (chat header and rubric) once and reuse its key/value cache; same
            grades up to float rounding, about twice as fast.
        revision: local judges: the hub revision (branch, tag or commit) of a hub-id
            model; None = the hub's default. Part of the cache key.
    """

    backend: Literal["http", "local"]
    model: str
    base_url: str | None = None
    api_key_env: str | None = None
    temperature: float = 0.0
    timeout: float = 60.0
    max_retries: int = _RETRY.retries
    concurrency: int = 4
    max_tokens: int = 256
    backoff_base: float = _RETRY.backoff_base
    backoff_max: float = _RETRY.backoff_max
    batch_size: int = 8
    device: str = "cpu"
    dtype: str = "float32"
    chat_template: bool = True
    simpleqa_template: Literal["fsnn", "simple-evals"] = "fsnn"
    letter_rule: LetterRule = "word"
    local_hallucination: bool = False
    local_prefix_cache: bool = True
    revision: str | None = None

    def __post_init__(self) -> None:
        if self.backend not in ("http", "local"):
            raise FsnnError(f"unknown judge backend {self.backend!r}; use 'http' or 'local'")
        if not self.model:
            raise FsnnError("a judge needs a model name")
        if self.backend == "http" and not self.base_url:
            raise FsnnError("an http judge needs base_url (e.g. https://api.mistral.ai/v1)")
        if self.api_key_env is not None and not _ENV_NAME.match(self.api_key_env):
            # Never echo the value: it may be a key pasted in the wrong place.
            raise FsnnError(
                "api_key_env must be the NAME of an environment variable "
                "(e.g. MISTRAL_API_KEY), not the key itself"
            )
        for name in ("timeout", "backoff_base", "backoff_max"):
            if getattr(self, name) < 0:
                raise FsnnError(f"judge {name} must be >= 0")
        if self.max_retries < 0 or self.concurrency < 1 or self.batch_size < 1:
            raise FsnnError("judge max_retries must be >= 0, concurrency and batch_size >= 1")
        if self.simpleqa_template not in ("fsnn", "simple-evals"):
            raise FsnnError("simpleqa_template must be 'fsnn' or 'simple-evals'")
        if self.letter_rule not in ("word", "simple-evals"):
            raise FsnnError("letter_rule must be 'word' or 'simple-evals'")

    @property
    def judge_id(self) -> str:
        """Stable id stored with every grade: ``http:MODEL@URL`` or ``local:MODEL``.

        Settings that change answers are appended when they differ from the defaults
        (``;temperature=0.7``, ``;dtype=bfloat16``, ``;template=simple-evals``...).
        """
        if self.backend == "http":
            base = f"http:{self.model}@{self.base_url.rstrip('/')}"  # type: ignore[union-attr]
        else:
            base = f"local:{self.model}"
        extras = []
        if self.temperature != 0:
            extras.append(f"temperature={self.temperature:g}")
        if self.backend == "local":
            if self.dtype != "float32":
                extras.append(f"dtype={self.dtype}")
            if not self.chat_template:
                extras.append("chat_template=0")
            if self.revision:
                extras.append(f"revision={self.revision}")
        if self.simpleqa_template != "fsnn":
            extras.append(f"template={self.simpleqa_template}")
        return ";".join([base, *extras])

    def answer_settings(self) -> dict[str, Any]:
        """The settings that change a judge's raw answer to a given prompt.

        ``backend``, ``model`` and ``simpleqa_template`` always; http judges add
        ``base_url``, ``temperature`` and ``max_tokens``; local judges add ``revision``,
        ``dtype``, ``chat_template`` and ``local_hallucination``. Left out, because they
        do not change the answer: timeouts, retries, concurrency, batch size, device and
        the prefix cache (same grades up to float rounding), the key's variable name,
        and ``letter_rule`` (the cache holds raw answers; the letter is read from them
        anew on every lookup).
        """
        names = ["backend", "model", "simpleqa_template"]
        if self.backend == "http":
            names += ["base_url", "temperature", "max_tokens"]
        else:
            names += ["revision", "dtype", "chat_template", "local_hallucination"]
        return {name: getattr(self, name) for name in names}

    @property
    def cache_key(self) -> str:
        """The judge's key in the answer cache: ``judge_id#`` + a hash of its answer settings.

        The hash covers the canonical JSON of :meth:`answer_settings`, so changing any
        setting that changes answers never reuses answers cached under another.
        """
        doc = json.dumps(self.answer_settings(), sort_keys=True, separators=(",", ":"))
        return f"{self.judge_id}#{prompt_sha256(doc)[:16]}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe settings (holds the key's variable name, never its value)."""
        return asdict(self)

    @classmethod
    def from_spec(cls, spec: str, **overrides: Any) -> JudgeConfig:
        """Parse ``local:MODEL``, ``http:MODEL@BASE_URL`` or ``mistral`` (the paper's).

        Example:
            >>> JudgeConfig.from_spec("local:smollm2-135m").judge_id
            'local:smollm2-135m'
        """
        if spec == "mistral":
            kwargs: dict[str, Any] = dict(MISTRAL)
        elif spec.startswith("local:") and len(spec) > 6:
            kwargs = {"backend": "local", "model": spec[6:]}
        elif spec.startswith("http:") and "@" in spec:
            model, _, url = spec[5:].partition("@")
            kwargs = {"backend": "http", "model": model, "base_url": url}
        else:
            raise FsnnError(
                f"bad judge spec {spec!r}; use local:MODEL, http:MODEL@BASE_URL or mistral"
            )
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kwargs)


# The paper's judge (docs/method.md §7).
MISTRAL: dict[str, Any] = {
    "backend": "http",
    "model": "mistral-small-latest",
    "base_url": "https://api.mistral.ai/v1",
    "api_key_env": "MISTRAL_API_KEY",
    "temperature": 0.0,
}


@dataclass(frozen=True, kw_only=True)
class Prompt:
    """What a backend is asked: one user message, optionally a pre-filled answer start.

    Attributes:
        task: ``"simpleqa"`` or ``"quality"``.
        user: the user message (the rendered rubric).
        prefill: text the answer starts with (local judges: the grade is the next token).
    """

    task: Task
    user: str
    prefill: str = ""

    def document(self) -> str:
        """The full prompt as one canonical string (what the cache key hashes)."""
        doc = {"messages": [{"role": "user", "content": self.user}], "prefill": self.prefill}
        return json.dumps(doc, sort_keys=True, ensure_ascii=False)


@dataclass(frozen=True, kw_only=True)
class Answer:
    """A backend's reply to one prompt: raw text, or the reason there is none."""

    raw: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    cached: bool = False


@dataclass(frozen=True, kw_only=True)
class Grade:
    """One judged item.

    Attributes:
        task: ``"simpleqa"`` or ``"quality"``.
        value: ``"CORRECT"``/``"INCORRECT"``/``"NOT_ATTEMPTED"`` (simpleqa) or 1..5
            (quality); None when missing.
        raw: the judge's answer text (``""`` when the request failed).
        judge_id: which judge made the grade.
        error: why ``value`` is None (request failure or unparseable answer).
        hallucination: the Y/N flag when the judge gave one.
        notes: the judge's notes (quality task).
        defaulted: simpleqa: no letter found, grade defaulted to NOT_ATTEMPTED (C).
        probs: local judges: probability of each allowed answer token, renormalised.
        cached: the answer came from the cache.
    """

    task: Task
    value: str | int | None
    raw: str
    judge_id: str
    error: str | None = None
    hallucination: bool | None = None
    notes: str = ""
    defaulted: bool = False
    probs: dict[str, float] | None = None
    cached: bool = False

    @property
    def missing(self) -> bool:
        return self.value is None

    @property
    def expected(self) -> float | None:
        """Quality task with probabilities: E[score] = sum_k k * p_k; else the value."""
        if self.task == "quality" and self.probs:
            return float(sum(int(k) * p for k, p in self.probs.items()))
        return float(self.value) if isinstance(self.value, int) else None


class _GradeCommon(TypedDict):
    """The :class:`Grade` fields every grade of one answer shares (``Judge._to_grade``)."""

    task: Task
    raw: str
    judge_id: str
    cached: bool
    probs: dict[str, float] | None


class Judge:
    """A judge: grades (question, target, predicted) items for the SimpleQA rubric and the
    1-5 quality grade, recording its id in every grade.

    A subclass does one of two things:

    - answer prompts (implement :meth:`_answer`): the HTTP and local judges. This class
      renders the prompts, looks answers up in the cache, stores new ones and parses each
      into a grade;
    - grade items itself (override :meth:`grade_simpleqa` and :meth:`grade_quality`): the
      offline judge (:class:`fsnn.judges.offline.OfflineJudge`), which has no prompts.

    Attributes:
        config: the judge's settings (:class:`JudgeConfig` for a judge answering prompts).
        id: the judge id recorded in every grade.
        cache: the answer cache, or None when caching is off.
        stats: ``answered`` and ``failed`` counts and ``seconds`` spent in the backend
            (cache hits excluded), since the judge was made.
    """

    def __init__(
        self, config: Any, *, cache: JudgeCache | None = None, judge_id: str | None = None
    ) -> None:
        cls = type(self)
        answers = cls._answer is not Judge._answer
        grades = (
            cls.grade_simpleqa is not Judge.grade_simpleqa
            and cls.grade_quality is not Judge.grade_quality
        )
        if not (answers or grades):
            raise TypeError(
                f"{cls.__name__} must implement _answer, or grade_simpleqa and grade_quality"
            )
        self.config = config
        self.id = config.judge_id if judge_id is None else judge_id
        self.cache = cache
        self.stats: dict[str, float] = {"answered": 0, "failed": 0, "seconds": 0.0}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r})"

    def grade_simpleqa(self, items: Sequence[Item]) -> list[Grade]:
        """SimpleQA-rubric grades (CORRECT / INCORRECT / NOT_ATTEMPTED) of ``items``."""
        prompts = [
            Prompt(
                task="simpleqa",
                user=render_simpleqa(q, t, p, template=self.config.simpleqa_template),
                prefill=self._prefill("simpleqa"),
            )
            for q, t, p in items
        ]
        return self._grade(prompts)

    def grade_quality(self, items: Sequence[Item]) -> list[Grade]:
        """1-5 quality grades (with hallucination flag and notes when given) of ``items``."""
        prompts = [
            Prompt(task="quality", user=render_quality(q, t, p), prefill=self._prefill("quality"))
            for q, t, p in items
        ]
        return self._grade(prompts)

    def _prefill(self, task: Task) -> str:
        return ""

    def _answer(self, prompts: Sequence[Prompt]) -> Iterator[tuple[int, Answer]]:
        """Answer ``prompts``, yielding (index, answer) as each is done (any order)."""
        raise NotImplementedError(
            f"{type(self).__name__} grades items itself: it answers no prompts"
        )

    def _grade(self, prompts: Sequence[Prompt]) -> list[Grade]:
        hashes = [prompt_sha256(p.document()) for p in prompts]
        answers: dict[str, Answer] = {}
        todo: list[str] = []
        for h in hashes:
            if h in answers or h in todo:
                continue  # the same prompt twice in one call is asked once
            hit = self.cache.get(self.config.cache_key, h) if self.cache is not None else None
            if hit is not None:
                answers[h] = Answer(raw=hit[0], meta=hit[1], cached=True)
            else:
                todo.append(h)
        if todo:
            first = {h: i for i, h in reversed(list(enumerate(hashes)))}
            batch = [prompts[first[h]] for h in todo]
            start = time.perf_counter()
            for j, answer in self._answer(batch):
                h = todo[j]
                answers[h] = answer
                if answer.error is None:
                    self.stats["answered"] += 1
                    # an answer without a valid grade is not cached: a rerun asks again
                    if self.cache is not None and _parses(
                        batch[j].task, answer.raw, self.config.letter_rule
                    ):
                        self.cache.put(
                            self.config.cache_key, h, answer.raw, answer.meta, task=batch[j].task
                        )
                else:
                    self.stats["failed"] += 1
                    log.warning("judge %s: missing grade: %s", self.id, answer.error)
            self.stats["seconds"] += time.perf_counter() - start
        return [self._to_grade(p.task, answers[h]) for p, h in zip(prompts, hashes, strict=True)]

    def _to_grade(self, task: Task, answer: Answer) -> Grade:
        common: _GradeCommon = {
            "task": task,
            "raw": answer.raw,
            "judge_id": self.id,
            "cached": answer.cached,
            "probs": answer.meta.get("probs"),
        }
        if answer.error is not None:
            return Grade(value=None, error=answer.error, **common)
        if task == "simpleqa":
            parsed = parse_simpleqa(answer.raw, rule=self.config.letter_rule)
            return Grade(value=parsed.grade, defaulted=parsed.defaulted, **common)
        q = parse_quality(answer.raw)
        return Grade(
            value=q.score, error=q.error, hallucination=q.hallucination, notes=q.notes, **common
        )


def _parses(task: Task, raw: str, rule: LetterRule) -> bool:
    """Whether ``raw`` holds a valid grade (a rubric letter, or a quality score 1-5)."""
    if task == "simpleqa":
        return not parse_simpleqa(raw, rule=rule).defaulted
    return parse_quality(raw).score is not None
