"""Per-prompt Optuna search of steering strengths (docs/method.md §2.6), trials batched.

For each prompt and method an Optuna study searches (alpha, gamma) per segment,
uniform in [0.01, 1.0] (paper: 5 trials, default sampler, no seed), maximising

    S_opt = 0.7 * TO - 0.3 * min(PPL / 100, 1)                        (eq. 6)

Speed comes from ask-and-tell: K trials of one prompt — and the trials of several
prompts — are asked together and evaluated as the rows of ONE batched steered
generate, then told. Studies live in Optuna's RDB storage (SQLite in the run folder by
default, any SQLAlchemy URL accepted), so an interrupted search resumes: finished
trials are kept, trials left RUNNING by a killed process are evaluated with their
stored parameters (no duplicate or missing trial numbers), and new ones are asked.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from .backends import Backend, resolve_backend
from .decode import GenerationOutput
from .errors import FsnnError
from .layout import SegmentLayout
from .metrics import ObjectiveConfig, objective, token_overlap
from .steer import steered_generate

__all__ = ["SearchConfig", "SearchItem", "open_storage", "run_search", "trial_coefficients"]


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    """How strengths are searched.

    Attributes:
        n_trials: completed trials per prompt and method (paper 5).
        batch_trials: trials of one prompt asked together (K); rows of several
            prompts share one generate up to ``batch_rows``.
        batch_rows: rows per steered generate call.
        low, high: uniform range of alpha and gamma (paper [0.01, 1.0]).
        parametrization: ``alpha_gamma`` (paper: 2 per segment) or ``product``
            (k = alpha*gamma per segment, alpha fixed to 1 — docs/method.md §3 shows only the
            product matters; range [low*low, high*high]).
        sampler: ``random`` or ``tpe`` (paper: Optuna's default TPE, unseeded).
        seed: makes a search repeat exactly (per-prompt seeds derive from it).
        tpe_multivariate, tpe_constant_liar: explicit TPE settings.
        score_on: ``full`` (prompt + completion, as the release scored) or
            ``completion`` (generated text only).
        objective: eq. (6) weights.
    """

    n_trials: int = 5
    batch_trials: int = 5
    batch_rows: int = 16
    low: float = 0.01
    high: float = 1.0
    parametrization: Literal["alpha_gamma", "product"] = "alpha_gamma"
    sampler: Literal["random", "tpe"] = "tpe"
    seed: int | None = 0
    tpe_multivariate: bool = False
    tpe_constant_liar: bool = True
    score_on: Literal["full", "completion"] = "full"
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)

    def __post_init__(self) -> None:
        if self.n_trials <= 0:
            raise FsnnError(f"n_trials must be > 0, got {self.n_trials}")
        if self.batch_trials <= 0 or self.batch_rows <= 0:
            raise FsnnError("batch_trials and batch_rows must be > 0")
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or not self.low < self.high:
            raise FsnnError(f"empty parameter range [{self.low}, {self.high}]")
        if self.parametrization not in ("alpha_gamma", "product"):
            raise FsnnError(f"unknown parametrization {self.parametrization!r}")
        if self.sampler not in ("random", "tpe"):
            raise FsnnError(f"unknown sampler {self.sampler!r}")
        if self.score_on not in ("full", "completion"):
            raise FsnnError(f"score_on must be 'full' or 'completion', got {self.score_on!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class SearchItem:
    """One prompt to search: its key in storage, texts and reference vectors.

    Attributes:
        key: stable id (e.g. the SimpleQA row) naming the prompt's study.
        prompt: the steering prompt.
        answer: the ground truth (TO is computed against it: the oracle setting).
        h: reference vectors, (layer, hidden) float32.
    """

    key: str
    prompt: str
    answer: str
    h: torch.Tensor


def open_storage(url: str) -> Any:
    """Optuna RDB storage at ``url`` (SQLite path URL or any SQLAlchemy URL).

    Raises:
        FsnnError: when the storage cannot be reached or created.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    except Exception as exc:  # sqlalchemy/optuna raise many types
        raise FsnnError(f"cannot open Optuna storage {url!r}: {str(exc).splitlines()[0]}") from None


def _sampler(config: SearchConfig, key: str) -> Any:
    import optuna

    seed = None
    if config.seed is not None:  # distinct, reproducible seed per prompt
        seed = int(hashlib.sha256(f"{config.seed}:{key}".encode()).hexdigest()[:8], 16)
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(
        seed=seed, multivariate=config.tpe_multivariate, constant_liar=config.tpe_constant_liar
    )


def _distributions(layout: SegmentLayout, config: SearchConfig) -> dict[str, Any]:
    from optuna.distributions import FloatDistribution

    if config.parametrization == "product":
        d = FloatDistribution(config.low * config.low, config.high * config.high)
        return {f"k_{name}": d for name in layout.segment_names}
    d = FloatDistribution(config.low, config.high)
    out = {}
    for name in layout.segment_names:
        out[f"alpha_{name}"] = d
        out[f"gamma_{name}"] = d
    return out


def trial_coefficients(params: dict[str, float], layout: SegmentLayout) -> tuple[list[float], list[float]]:
    """(alpha per segment, gamma per segment) of a trial's parameters."""
    alpha, gamma = [], []
    for name in layout.segment_names:
        if f"k_{name}" in params:
            alpha.append(1.0)
            gamma.append(float(params[f"k_{name}"]))
        else:
            alpha.append(float(params[f"alpha_{name}"]))
            gamma.append(float(params[f"gamma_{name}"]))
    return alpha, gamma


def _per_layer(values: Sequence[float], layout: SegmentLayout, n_layers: int) -> torch.Tensor:
    out = torch.zeros(n_layers, dtype=torch.float32)
    for (first, last), v in zip(layout.ranges, values, strict=True):
        out[first : last + 1] = v
    return out


def score_texts(
    outputs: Sequence[GenerationOutput], answers: Sequence[str], ppl: Callable[[Sequence[str]], list[float]],
    config: SearchConfig,
) -> list[dict[str, float]]:
    """TO, PPL and S_opt of generated rows, on the full text or the completion only."""
    texts = [o.text if config.score_on == "full" else o.completion for o in outputs]
    ppls = ppl(texts)
    scores = []
    for text, answer, p in zip(texts, answers, ppls, strict=True):
        to = token_overlap(answer, text)
        scores.append({"token_overlap": to, "perplexity": p, "objective": objective(to, p, config.objective)})
    return scores


def run_search(
    model: Any,
    items: Sequence[SearchItem],
    layout: SegmentLayout,
    config: SearchConfig,
    *,
    storage: Any = None,
    ppl: Callable[[Sequence[str]], list[float]] | None = None,
    mode: str = "faithful",
    max_new_tokens: int = 100,
    study_prefix: str = "",
    progress: bool = True,
    on_round: Callable[[], None] | None = None,
    backend: Backend | str | None = None,
) -> xr.Dataset:
    """Search every prompt's strengths for one layout; resumable through ``storage``.

    Args:
        model: a :class:`fsnn.models.LoadedModel`.
        items: prompts with their reference vectors.
        layout: the method's segments (``full``, ``segmented``, custom).
        config: the search settings.
        storage: an Optuna storage (:func:`open_storage`); None = in memory (no resume).
        ppl: scorer of texts' perplexity; None = the steered model itself
            (:class:`fsnn.metrics.Perplexity`).
        mode: steering mode, ``faithful`` or ``cached``.
        max_new_tokens: per trial.
        study_prefix: prefix of study names (e.g. the method).
        progress: show a tqdm bar of completed trials.
        on_round: called after each batch of trials is told (checkpoint hook).
        backend: where the steered generations run (:mod:`fsnn.backends`); each batch
            is one ``backend.call`` (retries and one-line errors on NDIF).

    Returns:
        The trials of all prompts, :func:`trials_dataset`.
    """
    import optuna

    backend = resolve_backend(backend)
    if storage is None:
        storage = optuna.storages.InMemoryStorage()
    if ppl is None:
        from .metrics import Perplexity

        ppl = Perplexity(model.hf_model, model.tokenizer)
    layout.check(model.n_layers)
    dists = _distributions(layout, config)
    studies = {}
    for item in items:
        name = f"{study_prefix}{item.key}"
        studies[item.key] = optuna.create_study(
            study_name=name, storage=storage, direction="maximize", load_if_exists=True,
            sampler=_sampler(config, name),
        )
    by_key = {item.key: item for item in items}
    done = sum(min(config.n_trials, _n_complete(s)) for s in studies.values())
    bar = tqdm(total=len(items) * config.n_trials, initial=done, desc=f"search {layout.name}",
               disable=not progress, unit="trial")
    while True:
        rows: list[tuple[str, Any]] = []  # (prompt key, trial)
        for key, study in studies.items():
            complete = _n_complete(study)
            running = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.RUNNING]
            # trials a killed process left RUNNING keep their number and parameters
            for frozen in running[: max(0, config.n_trials - complete)]:
                rows.append((key, _Resumed(frozen)))
            want = min(config.batch_trials, config.n_trials - complete - len(running))
            for _ in range(max(0, want)):
                # reseed per trial number: a resumed search asks what an uninterrupted
                # one would have asked, whatever happened to this process's RNG
                study.sampler = _sampler(config, f"{study.study_name}#{len(study.get_trials(deepcopy=False))}")
                rows.append((key, study.ask(dists)))
        if not rows:
            break
        for start in range(0, len(rows), config.batch_rows):
            chunk = rows[start : start + config.batch_rows]
            h = torch.stack([by_key[k].h for k, _ in chunk]).float()
            alphas, gammas = [], []
            for _, trial in chunk:
                a, g = trial_coefficients(trial.params, layout)
                alphas.append(_per_layer(a, layout, model.n_layers))
                gammas.append(_per_layer(g, layout, model.n_layers))
            def evaluate(chunk=chunk, h=h, alphas=alphas, gammas=gammas):
                return steered_generate(
                    model, [by_key[k].prompt for k, _ in chunk], h, torch.stack(alphas), torch.stack(gammas),
                    mode=mode, max_new_tokens=max_new_tokens, backend=backend,
                )

            outputs = backend.call(evaluate, what=f"steering batch of {len(chunk)} rows")
            scores = score_texts(outputs, [by_key[k].answer for k, _ in chunk], ppl, config)
            for (key, trial), out, score in zip(chunk, outputs, scores, strict=True):
                study = studies[key]
                handle = optuna.trial.Trial(study, trial._trial_id)
                try:
                    for name, value in (("completion", out.completion), ("text", out.text), *score.items()):
                        handle.set_user_attr(name, value)
                    study.tell(trial.number, score["objective"])
                except (RuntimeError, ValueError):
                    pass  # another worker finished this trial first (shared storage)
            bar.update(len(chunk))
            if on_round is not None:
                on_round()
    bar.close()
    return trials_dataset(items, layout, studies, config)


class _Resumed:
    """A RUNNING trial from storage, evaluated again with its stored parameters."""

    def __init__(self, frozen: Any):
        self.params = frozen.params
        self.number = frozen.number
        self._trial_id = frozen._trial_id


def _n_complete(study: Any) -> int:
    import optuna

    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def trials_dataset(
    items: Sequence[SearchItem], layout: SegmentLayout, studies: dict[str, Any], config: SearchConfig
) -> xr.Dataset:
    """Completed trials as a Dataset with dims (prompt, trial[, segment, param]).

    The first ``n_trials`` completed trials of each prompt, by trial number; ``is_best``
    marks the highest objective (first on ties), as Optuna's best trial.
    """
    import optuna

    n, t = len(items), config.n_trials
    params = list(_distributions(layout, config))
    seg = layout.n_segments
    alpha = np.full((n, t, seg), np.nan)
    gamma = np.full((n, t, seg), np.nan)
    raw = np.full((n, t, len(params)), np.nan)
    numbers = np.full((n, t), -1, dtype=np.int64)
    scores = {k: np.full((n, t), np.nan) for k in ("token_overlap", "perplexity", "objective")}
    texts = {k: np.full((n, t), "", dtype=object) for k in ("completion", "text")}
    for i, item in enumerate(items):
        trials = studies[item.key].get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        for j, trial in enumerate(sorted(trials, key=lambda tr: tr.number)[:t]):
            a, g = trial_coefficients(trial.params, layout)
            alpha[i, j], gamma[i, j] = a, g
            raw[i, j] = [trial.params[p] for p in params]
            numbers[i, j] = trial.number
            for k in scores:
                scores[k][i, j] = trial.user_attrs.get(k, np.nan)
            for k in texts:
                texts[k][i, j] = trial.user_attrs.get(k, "")
    best = np.full(n, -1, dtype=np.int64)
    is_best = np.zeros((n, t), dtype=np.int8)
    for i in range(n):
        row = scores["objective"][i]
        if np.isfinite(row).any():
            best[i] = int(np.nanargmax(row))
            is_best[i, best[i]] = 1
    return xr.Dataset(
        {
            "alpha": (("prompt", "trial", "segment"), alpha),
            "gamma": (("prompt", "trial", "segment"), gamma),
            "params": (("prompt", "trial", "param"), raw),
            "trial_number": (("prompt", "trial"), numbers),
            **{k: (("prompt", "trial"), v) for k, v in scores.items()},
            **{k: (("prompt", "trial"), v) for k, v in texts.items()},
            "is_best": (("prompt", "trial"), is_best),
            "best_trial": (("prompt",), best),
        },
        coords={
            "prompt_key": ("prompt", np.asarray([it.key for it in items], dtype=object)),
            "trial": np.arange(t),
            "segment": np.asarray(layout.segment_names, dtype=object),
            "param": np.asarray(params, dtype=object),
        },
        attrs={"layout": layout.to_json(), "search": str(config.to_dict())},
    )
