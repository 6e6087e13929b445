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
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from fsnn.backends.base import Backend, resolve_backend
from fsnn.errors import BackendUnavailable, FsnnError
from fsnn.judges.degeneration import degeneration
from fsnn.judges.metrics import token_overlap
from fsnn.steering.decode import GenerationOutput
from fsnn.steering.layout import SegmentLayout
from fsnn.steering.modes import Mode
from fsnn.steering.specs import check_schedule_mode
from fsnn.steering.steer import Steering, steer_each
from fsnn.store.schema import search_trials_dataset

from . import strength
from .config import SAMPLERS, SearchConfig
from .objective import guarded_objective

__all__ = [
    "SAMPLERS",
    "SearchConfig",
    "SearchItem",
    "open_storage",
    "run_search",
    "storage_error",
    "trial_layers",
]
# SAMPLERS and SearchConfig live in fsnn.search.config


@dataclass(frozen=True, kw_only=True)
class SearchItem:
    """One prompt to search: its key in storage, texts and reference vectors.

    Attributes:
        key: stable id (e.g. the SimpleQA row) naming the prompt's study.
        prompt: the steering prompt.
        answer: the ground truth (TO is computed against it: the oracle setting).
        h: reference vectors, (layer, hidden) float32.
        norm_scale: (layer,) ||a_l||_typ / ||h_l - mu_l|| of the prompt
            (:func:`fsnn.search.strength.norm_scales`), used by ``norm_relative``; computed
            by :func:`run_search` when None.
    """

    key: str
    prompt: str
    answer: str
    h: torch.Tensor
    norm_scale: torch.Tensor | None = None


def open_storage(url: str, recover: str = "") -> Any:
    """Optuna RDB storage at ``url`` (SQLite path URL or any SQLAlchemy URL).

    Args:
        url: the storage URL.
        recover: what the user can do when it cannot be opened (appended to the error).

    Raises:
        FsnnError: when the storage cannot be reached or created (one line naming the
            SQLite file, or the URL, and ``recover``).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    except Exception as exc:  # sqlalchemy/optuna raise many types
        raise storage_error(url, exc, recover) from None


def storage_error(url: str, exc: BaseException, recover: str = "") -> FsnnError:
    """The one-line error of an unusable Optuna storage (a corrupt SQLite file, mostly)."""
    lines = str(exc).strip().splitlines()
    cause = lines[0] if lines else type(exc).__name__
    if url.startswith("sqlite:///"):  # a file: most likely damaged (truncated, overwritten)
        text = f"cannot open Optuna storage {url.removeprefix('sqlite:///')} (corrupt? {cause})"
    else:
        text = f"cannot open Optuna storage {url!r}: {cause}"
    return FsnnError(text + (f"; {recover}" if recover else ""))


def _sampler(config: SearchConfig, key: str) -> Any:
    import warnings

    import optuna

    seed = None
    if config.seed is not None:  # distinct, reproducible seed per prompt
        seed = int(hashlib.sha256(f"{config.seed}:{key}".encode()).hexdigest()[:8], 16)
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():  # GPSampler and some TPE options are "experimental"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if config.sampler == "gp":
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=config.n_startup_trials)
        return optuna.samplers.TPESampler(
            seed=seed,
            multivariate=config.tpe_multivariate,
            constant_liar=config.tpe_constant_liar,
            n_startup_trials=config.n_startup_trials,
        )


def _distributions(layout: SegmentLayout, config: SearchConfig) -> dict[str, Any]:
    dists = strength.distributions(config.parametrization, layout.segment_names, *config.range)
    if config.windows:
        from fsnn.steering.operators import window_distributions

        dists.update(window_distributions(layout.segment_names))
    return dists


def trial_layers(
    params: dict[str, Any],
    layout: SegmentLayout,
    n_layers: int,
    norm_scale: torch.Tensor | None,
    config: SearchConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha (layer,), gamma (layer,)) a trial steers with: :func:`fsnn.search.strength.per_layer`,
    and with ``config.windows`` exactly 0 in the layers of every segment whose ``on_S`` is False."""
    alpha, gamma = strength.per_layer(
        params, layout.ranges, layout.segment_names, n_layers, norm_scale
    )
    if config.windows:
        from fsnn.steering.operators import WINDOW_PREFIX

        for (first, last), name in zip(layout.ranges, layout.segment_names, strict=True):
            if params.get(f"{WINDOW_PREFIX}_{name}") is False:
                alpha[first : last + 1] = 0.0
                gamma[first : last + 1] = 0.0
    return alpha, gamma


def score_texts(
    outputs: Sequence[GenerationOutput],
    answers: Sequence[str],
    ppl: Callable[[Sequence[str]], list[float]],
    config: SearchConfig,
) -> list[dict[str, float]]:
    """TO, PPL, degeneration and the objective of generated rows.

    TO and PPL see the full text or the completion (``config.score_on``); the
    degeneration measures always judge the completion, the only text steering wrote.
    """
    texts = [o.text if config.score_on == "full" else o.completion for o in outputs]
    ppls = ppl(texts)
    scores = []
    for out, text, answer, p in zip(outputs, texts, answers, ppls, strict=True):
        to = token_overlap(answer, text)
        deg = degeneration(out.completion)
        scores.append(
            {
                "token_overlap": to,
                "perplexity": p,
                "distinct_2": float(deg["distinct_2"]),
                "longest_repeat": int(deg["longest_repeat"]),
                "readable": int(deg["readable"]),
                "objective": guarded_objective(
                    to, p, bool(deg["readable"]), config.objective, config.unreadable_penalty
                ),
            }
        )
    return scores


def _fail(study: Any, trial: Any, error: str) -> None:
    """Mark a trial FAILED with its error as a user attr (never left RUNNING to be re-queued)."""
    import optuna

    try:
        optuna.trial.Trial(study, trial._trial_id).set_user_attr("error", error[:500])
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    except (RuntimeError, ValueError):
        pass  # another worker finished this trial first (shared storage)


def run_search(
    model: Any,
    items: Sequence[SearchItem],
    layout: SegmentLayout,
    config: SearchConfig,
    *,
    storage: Any = None,
    ppl: Callable[[Sequence[str]], list[float]] | None = None,
    mode: Mode = "faithful",
    max_new_tokens: int = 100,
    study_prefix: str = "",
    progress: bool = True,
    on_round: Callable[[], None] | None = None,
    backend: Backend | str | None = None,
    mu_generic: Any = None,
) -> xr.Dataset:
    """Search every prompt's strengths for one layout; resumable through ``storage``.

    A trial whose evaluation raises or whose objective is NaN is marked FAILED (the
    error stored as its ``error`` user attr) and replaced by a new trial, up to
    ``config.max_failures`` per prompt; the other prompts carry on either way. A
    :class:`fsnn.errors.BackendUnavailable` (NDIF down after its retries) stops the
    search instead: the batch's trials stay RUNNING and a rerun evaluates them with the
    same parameters, so an outage never changes the trial history.

    Args:
        model: a :class:`fsnn.models.load.LoadedModel`.
        items: prompts with their reference vectors.
        layout: the method's segments (``full``, ``segmented``, custom).
        config: the search settings.
        storage: an Optuna storage (:func:`open_storage`); None = in memory (no resume).
        ppl: scorer of texts' perplexity; None = the steered model itself
            (:class:`fsnn.judges.metrics.Perplexity`).
        mode: steering mode, ``faithful`` or ``cached``.
        max_new_tokens: per trial.
        study_prefix: prefix of study names (e.g. the method).
        progress: show a tqdm bar of completed trials.
        on_round: called after each batch of trials is told (checkpoint hook).
        backend: where the steered generations run (:mod:`fsnn.backends.base`); each batch
            is one ``backend.call`` (retries and one-line errors on NDIF).
        mu_generic: (layer, hidden) generic mean for ``config.operator`` ``centred`` or
            ``angular``; None captures it (:func:`fsnn.steering.references.capture_generic_mean`).
            With ``centred`` and ``norm_relative`` the norm scales are measured against
            it (||h_l - mu_generic,l||), replacing the items' own.

    Returns:
        The trials of all prompts, :func:`collect_trials`.
    """
    import optuna

    backend = resolve_backend(backend)
    # before any capture: a schedule that cannot run here fails every trial otherwise
    check_schedule_mode(
        config.schedule, mode, "ndif" if getattr(model, "remote", False) else backend.name
    )
    if storage is None:
        storage = optuna.storages.InMemoryStorage()
    if ppl is None:
        from fsnn.judges.metrics import Perplexity

        ppl = Perplexity(model.hf_model, model.tokenizer)
    layout.check(model.n_layers)
    dists = _distributions(layout, config)
    # the operator's fixed operands, built once per search (docs/operators.md)
    operator_options: dict[str, Any] = {}
    if config.operator == "fusion":
        mu_generic = None  # eq. (5) has no generic mean: never recorded for it
    if (config.operator, config.schedule) != ("fusion", "constant"):
        operator_options = {"operator": config.operator, "schedule": config.schedule}
    if config.operator != "fusion":
        if mu_generic is None:
            from fsnn.steering.references import capture_generic_mean

            mu_generic = backend.call(
                lambda: capture_generic_mean(model, backend=backend), what="generic mean"
            )
        if not isinstance(mu_generic, torch.Tensor):  # a DataArray or an array
            mu_generic = torch.as_tensor(np.asarray(getattr(mu_generic, "values", mu_generic)))
        mu_generic = mu_generic.float()
        operator_options["mu_generic"] = mu_generic
    centre = mu_generic if config.operator == "centred" else None
    if config.parametrization == "norm_relative" and (
        centre is not None or any(it.norm_scale is None for it in items)
    ):
        # one unpadded pass per prompt when traces run here: a prompt's scale (and so its
        # trials) then does not depend on which prompts share its search (shards, workers:
        # docs/scaling.md); NDIF keeps batches of 8, a request each
        per_pass = 8 if backend.remote_model else 1
        scales = backend.call(
            lambda: strength.norm_scales(
                model,
                [it.prompt for it in items],
                torch.stack([it.h for it in items]),
                backend=backend,
                batch_size=per_pass,
                centre=centre,
            ),
            what="norm scales",
        )
        items = [
            replace(it, norm_scale=scales[i]) if it.norm_scale is None or centre is not None else it
            for i, it in enumerate(items)
        ]
    start = strength.start_params(
        config.parametrization,
        layout.segment_names,
        *config.range,
        min(config.start_trials, config.n_trials),
    )
    if config.windows:  # the start trials steer every segment
        from fsnn.steering.operators import WINDOW_PREFIX

        start = [
            {**p, **{f"{WINDOW_PREFIX}_{name}": True for name in layout.segment_names}}
            for p in start
        ]
    # one "study created" line per prompt is noise (and open_storage does the same)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    studies = {}
    for item in items:
        name = f"{study_prefix}{item.key}"
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            direction="maximize",
            load_if_exists=True,
            sampler=_sampler(config, name),
        )
        if start and not study.get_trials(deepcopy=False):  # a resumed study has them already
            for params in start:
                study.enqueue_trial(params)
        studies[item.key] = study
    by_key = {item.key: item for item in items}
    done = sum(min(config.n_trials, _n_state(s, "COMPLETE")) for s in studies.values())
    bar = tqdm(
        total=len(items) * config.n_trials,
        initial=done,
        desc=f"search {layout.name}",
        disable=not progress,
        unit="trial",
    )
    while True:
        rows: list[tuple[str, Any]] = []  # (prompt key, trial)
        for key, study in studies.items():
            if _n_state(study, "FAIL") > config.max_failures:
                continue  # given up: reported in the trials dataset
            complete = _n_state(study, "COMPLETE")
            running = [
                t
                for t in study.get_trials(deepcopy=False)
                if t.state == optuna.trial.TrialState.RUNNING
            ]
            # trials a killed process left RUNNING keep their number and parameters
            for frozen in running[: max(0, config.n_trials - complete)]:
                rows.append((key, _Resumed(frozen)))
            # a round with RUNNING trials is the rest of an interrupted round: ask nothing new
            # until they are told, as the uninterrupted search had their results when it asked
            want = 0 if running else min(config.batch_trials, config.n_trials - complete)
            for _ in range(max(0, want)):
                # reseed per trial number: a resumed search asks what an uninterrupted
                # one would have asked, whatever happened to this process's RNG
                study.sampler = _sampler(
                    config, f"{study.study_name}#{len(study.get_trials(deepcopy=False))}"
                )
                rows.append((key, study.ask(dists)))
        if not rows:
            break
        for first in range(0, len(rows), config.batch_rows):
            chunk = rows[first : first + config.batch_rows]
            prompts = [by_key[k].prompt for k, _ in chunk]
            # a trial's parameters that do not fit the layout stop the search (as always);
            # what the steering itself refuses fails the batch's trials, below
            layers = [
                trial_layers(trial.params, layout, model.n_layers, by_key[k].norm_scale, config)
                for k, trial in chunk
            ]
            try:
                # each (prompt, trial) row is one Steering value; the batch is one call
                steerings = [
                    Steering.layerwise(by_key[k].h, alpha=a, gamma=g, mode=mode, **operator_options)
                    for (k, _), (a, g) in zip(chunk, layers, strict=True)
                ]

                def evaluate(prompts=prompts, steerings=steerings):
                    return steer_each(
                        model, prompts, steerings, max_new_tokens=max_new_tokens, backend=backend
                    )

                outputs = backend.call(evaluate, what=f"steering batch of {len(chunk)} rows")
                scores = score_texts(outputs, [by_key[k].answer for k, _ in chunk], ppl, config)
            except BackendUnavailable:
                raise  # the service is down, not the trial bad: stop; RUNNING trials resume as asked
            except Exception as exc:  # noqa: BLE001 - any failure of one batch fails its trials, not the search
                error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                for key, trial in chunk:
                    _fail(studies[key], trial, error)
                bar.update(0)
                continue
            for (key, trial), out, score in zip(chunk, outputs, scores, strict=True):
                study = studies[key]
                if not math.isfinite(score["objective"]):
                    _fail(study, trial, f"objective is {score['objective']}")
                    continue
                handle = optuna.trial.Trial(study, trial._trial_id)
                try:
                    for name, value in (
                        ("completion", out.completion),
                        ("text", out.text),
                        *score.items(),
                    ):
                        handle.set_user_attr(name, value)
                    study.tell(trial.number, score["objective"])
                except (RuntimeError, ValueError):
                    pass  # another worker finished this trial first (shared storage)
                except Exception as exc:  # noqa: BLE001 - storage hiccup: fail this trial, keep going
                    _fail(study, trial, f"tell failed: {type(exc).__name__}: {exc}")
            bar.update(len(chunk))
            if on_round is not None:
                on_round()
    bar.close()
    ds = collect_trials(items, layout, studies, config, n_layers=model.n_layers)
    if mu_generic is not None:
        import hashlib

        mu = mu_generic.contiguous().numpy()
        ds.attrs["mu_generic"] = (
            f"{mu.shape[0]}x{mu.shape[1]} sha256:{hashlib.sha256(mu.tobytes()).hexdigest()[:16]}"
        )
    return ds


class _Resumed:
    """A RUNNING trial from storage, evaluated again with its stored parameters."""

    def __init__(self, frozen: Any):
        self.params = frozen.params
        self.number = frozen.number
        self._trial_id = frozen._trial_id


def _n_state(study: Any, state: str) -> int:
    import optuna

    return len(study.get_trials(deepcopy=False, states=(getattr(optuna.trial.TrialState, state),)))


def collect_trials(
    items: Sequence[SearchItem],
    layout: SegmentLayout,
    studies: dict[str, Any],
    config: SearchConfig,
    n_layers: int | None = None,
) -> xr.Dataset:
    """Completed trials as a Dataset with dims (prompt, trial[, segment, param, layer]).

    The first ``n_trials`` completed trials of each prompt, by trial number; ``is_best``
    marks the highest objective (first on ties), as Optuna's best trial. A prompt with
    no completed trial has ``best_trial = -1`` and no ``is_best`` (never trial 0);
    ``failed_trials`` counts each prompt's FAILED trials (attrs: totals).

    ``alpha``/``gamma`` are per segment (a norm-relative trial's gamma: the mean over
    the segment's layers); ``layer_alpha``/``layer_gamma`` hold the exact per-layer
    values steered with, ``strength`` the sampled value (alpha*gamma, k or s).
    """
    import optuna

    n, t = len(items), config.n_trials
    n_layers = n_layers if n_layers is not None else (items[0].h.shape[0] if items else 0)
    params = list(_distributions(layout, config))
    seg = layout.n_segments
    alpha = np.full((n, t, seg), np.nan)
    gamma = np.full((n, t, seg), np.nan)
    sampled = np.full((n, t, seg), np.nan)
    layer_alpha = np.full((n, t, n_layers), np.nan, dtype=np.float32)
    layer_gamma = np.full((n, t, n_layers), np.nan, dtype=np.float32)
    raw = np.full((n, t, len(params)), np.nan)
    numbers = np.full((n, t), -1, dtype=np.int64)
    scores = {
        k: np.full((n, t), np.nan)
        for k in ("token_overlap", "perplexity", "objective", "distinct_2")
    }
    ints = {k: np.full((n, t), -1, dtype=np.int64) for k in ("longest_repeat", "readable")}
    texts = {k: np.full((n, t), "", dtype=object) for k in ("completion", "text")}
    failed = np.zeros(n, dtype=np.int64)
    for i, item in enumerate(items):
        study = studies[item.key]
        failed[i] = _n_state(study, "FAIL")
        trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        for j, trial in enumerate(sorted(trials, key=lambda tr: tr.number)[:t]):
            la, lg = trial_layers(trial.params, layout, n_layers, item.norm_scale, config)
            layer_alpha[i, j], layer_gamma[i, j] = la.numpy(), lg.numpy()
            alpha[i, j] = [float(la[first : last + 1].mean()) for first, last in layout.ranges]
            gamma[i, j] = [float(lg[first : last + 1].mean()) for first, last in layout.ranges]
            sampled[i, j] = strength.strengths(trial.params, layout.segment_names)
            raw[i, j] = [trial.params[p] for p in params]
            numbers[i, j] = trial.number
            for k in scores:
                scores[k][i, j] = trial.user_attrs.get(k, np.nan)
            for k in ints:
                value = trial.user_attrs.get(k)
                ints[k][i, j] = -1 if value is None else int(value)
            for k in texts:
                texts[k][i, j] = trial.user_attrs.get(k, "")
    best = np.full(n, -1, dtype=np.int64)
    is_best = np.zeros((n, t), dtype=np.int8)
    for i in range(n):
        row = scores["objective"][i]
        if np.isfinite(row).any():
            best[i] = int(np.nanargmax(row))
            is_best[i, best[i]] = 1
    return search_trials_dataset(
        {
            "alpha": alpha,
            "gamma": gamma,
            "strength": sampled,
            "layer_alpha": layer_alpha,
            "layer_gamma": layer_gamma,
            "params": raw,
            "trial_number": numbers,
            **scores,
            **ints,
            **texts,
            "is_best": is_best,
            "best_trial": best,
            "failed_trials": failed,
        },
        prompt_keys=[it.key for it in items],
        n_trials=t,
        segments=layout.segment_names,
        params=params,
        n_layers=n_layers,
        attrs={
            "layout": layout.to_json(),
            "search": str(config.to_dict()),
            "parametrization": config.parametrization,
            "sampler": config.sampler,
            "operator": config.operator,
            "schedule": config.schedule,
            "windows": int(config.windows),
            "failed_trials": int(failed.sum()),
            "prompts_without_finished_trial": int((best < 0).sum()),
        },
    )
