"""A run's configuration: :class:`RunConfig`, one tree, checked before any model loads.

``RunConfig(search=SearchConfig(...), ...)`` nests the search's settings instead of
copying them. Torch-free (nothing here imports torch or nnsight), so ``fsnn --help`` and
config files load in a fraction of a second.

A flat view exists for the places that name settings one by one (command-line flags,
TOML files, a run folder's ``config.json``): :meth:`RunConfig.flat_fields` lists the
names, :meth:`RunConfig.flat` gives the values, and ``RunConfig(n_trials=3)`` is short
for ``RunConfig(search=SearchConfig(n_trials=3))``. The flat names are 0.2's, so config
files and run folders made then still load and continue.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from fsnn.backends.base import BACKENDS
from fsnn.errors import FsnnError
from fsnn.models import DEFAULT_MODEL, DTYPE_NAMES
from fsnn.search.config import SearchConfig
from fsnn.steering.modes import check_generation
from fsnn.steering.specs import check_schedule_mode

__all__ = ["SELECTED_GRADES", "RunConfig"]

# which baseline grades each ``select`` setting steers
SELECTED_GRADES = {"incorrect": ("INCORRECT",), "not-correct": ("INCORRECT", "NOT_ATTEMPTED")}

# SearchConfig fields a run sets through its own: the run's seed seeds its search
_RUN_OWNED = ("seed",)
# search fields every config.json has held since 0.2 (the others appear when not default)
_ALWAYS_IN_IDENTITY = (
    "n_trials",
    "batch_trials",
    "sampler",
    "parametrization",
    "start_trials",
    "n_startup_trials",
    "unreadable_penalty",
    "score_on",
    "objective",
)
# fields that change speed, not numbers: a folder continues whatever their value
_NOT_IDENTITY = ("batch_rows", "batch_size", "device")


def _search_fields() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(SearchConfig) if f.name not in _RUN_OWNED)


@dataclass(frozen=True, kw_only=True, init=False)
class RunConfig:
    """Everything that decides a run's numbers (saved as ``config.json`` and in attrs).

    Attributes:
        model: model spec (alias, path, hub id).
        load_in_8bit, dtype, device: loading options (paper: 8-bit, fp16).
        limit: the first N SimpleQA rows (paper 500); ``ids``/``stratified`` instead.
        ids: explicit SimpleQA row ids.
        stratified: N rows sampled per topic (seeded by ``seed``).
        seed: subset sampling and search seed (it replaces ``search.seed``).
        methods: layouts to search: ``full``, ``segmented``, ``NAME=0-3,8-11``.
        search: how strengths are searched (:class:`fsnn.search.config.SearchConfig`:
            trials, batching, sampler, parametrization, objective, scored text).
        mode: ``faithful`` (parity) or ``cached``.
        max_new_tokens: baseline, enrichment and steered generation (paper 100).
        baseline_prompt: ``qa`` (``Question: {q}\\nAnswer:``) or ``bare`` (the question).
        chat_template: wrap prompts in the tokenizer's chat template (paper: off).
        select: which baseline grades are steered: ``incorrect`` (paper) or
            ``not-correct`` (INCORRECT and NOT_ATTEMPTED).
        judge: judge spec (``local:MODEL``, ``http:MODEL@URL``) or None (offline proxy
            for the baseline grade; judge variables left missing).
        judge_missing: composite with a missing judge score: ``zero`` (release) or
            ``exclude``.
        ppl_model: perplexity scorer spec; None = the unsteered base model (offline);
            ``gpt2`` for paper parity when the hub is reachable.
        on_bad_rows: ``error`` or ``skip`` bad SimpleQA rows.
        backend: where traces run: ``local``; ``ndif`` (model built on the meta
            device; needs ``NDIF_API_KEY`` and a local ``ppl_model``); or ``serialised``
            (every trace serialised as for NDIF and run here, the test of the remote
            path). Part of the folder's identity. See docs/ndif.md.
        batch_size: rows per plain generate call (speed only).
    """

    model: str = DEFAULT_MODEL
    load_in_8bit: bool = False
    dtype: str = "float32"
    device: str = "cpu"
    limit: int | None = 500
    ids: tuple[int, ...] | None = None
    stratified: int | None = None
    seed: int = 0
    methods: tuple[str, ...] = ("full", "segmented")
    search: SearchConfig = field(default_factory=SearchConfig)
    mode: str = "faithful"
    max_new_tokens: int = 100
    baseline_prompt: str = "qa"
    chat_template: bool = False
    select: str = "not-correct"
    judge: str | None = None
    judge_missing: str = "zero"
    ppl_model: str | None = None
    on_bad_rows: str = "error"
    backend: str = "local"
    batch_size: int = 8

    def __init__(self, **kwargs: Any) -> None:
        search_fields = set(_search_fields())
        flat = {k: kwargs.pop(k) for k in list(kwargs) if k in search_fields}
        search = kwargs.pop("search", None) or SearchConfig()
        if not isinstance(search, SearchConfig):
            raise FsnnError(f"search must be a SearchConfig, got {type(search).__name__}")
        unknown = sorted(set(kwargs) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"RunConfig got unknown field(s): {', '.join(unknown)}")
        for f in dataclasses.fields(self):
            if f.name == "search":
                continue
            default = (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            )
            object.__setattr__(self, f.name, kwargs.get(f.name, default))
        try:
            search = replace(search, **flat, seed=self.seed)
        except (TypeError, ValueError) as exc:
            raise FsnnError(f"invalid search setting: {exc}") from None
        object.__setattr__(self, "search", search)
        self.__post_init__()

    def __post_init__(self) -> None:
        from fsnn.steering.layout import SegmentLayout

        check_generation(mode=self.mode, max_new_tokens=self.max_new_tokens)
        check_schedule_mode(self.search.schedule, self.mode, self.backend)
        if self.select not in SELECTED_GRADES:
            raise FsnnError(f"select must be incorrect or not-correct, got {self.select!r}")
        if self.baseline_prompt not in ("qa", "bare"):
            raise FsnnError(f"baseline_prompt must be qa or bare, got {self.baseline_prompt!r}")
        if not self.methods:
            raise FsnnError("no method to search")
        if self.judge_missing not in ("zero", "exclude"):
            raise FsnnError("judge_missing must be zero or exclude")
        if self.backend not in BACKENDS:
            raise FsnnError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.backend == "ndif" and self.ppl_model is None:
            raise FsnnError(
                "an NDIF run needs a local perplexity scorer: set ppl_model (e.g. gpt2 or smollm2-135m)"
            )
        if self.backend != "local" and self.load_in_8bit:
            raise FsnnError("8-bit loading is a local option; NDIF serves its own precision")
        if self.dtype not in DTYPE_NAMES:
            raise FsnnError(f"dtype must be one of {', '.join(DTYPE_NAMES)}, got {self.dtype!r}")
        _check_device(self.device)
        for name in ("limit", "stratified"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise FsnnError(f"{name} must be >= 1, got {value}")
        if self.ids is not None and (not self.ids or min(self.ids) < 0):
            raise FsnnError("ids must be a non-empty list of SimpleQA row numbers >= 0")
        if self.batch_size < 1:
            raise FsnnError(f"batch_size must be >= 1, got {self.batch_size}")
        for method in self.methods:  # names and ranges; ranges vs depth are checked once loaded
            SegmentLayout.named(method, 10**6)
        if self.judge is not None:
            from fsnn.judges.factory import check_judge_spec

            check_judge_spec(self.judge)  # the spec, its model and key variable; loads nothing

    def __getattr__(self, name: str) -> Any:
        # the flat names of the search's settings read through (``config.n_trials``)
        if name in _search_fields():
            return getattr(self.search, name)
        raise AttributeError(f"RunConfig has no attribute {name!r}")

    def search_config(self) -> SearchConfig:
        """The search's settings (0.2's accessor; the value is :attr:`search`)."""
        return self.search

    # ------------------------------------------------------------------ the flat view

    @classmethod
    def flat_fields(cls) -> dict[str, Any]:
        """Every flat setting name -> its type hint: the run's fields (``search`` left
        out) followed by the search's (``seed`` is the run's)."""
        run_hints = typing.get_type_hints(cls)
        search_hints = typing.get_type_hints(SearchConfig)
        out = {f.name: run_hints[f.name] for f in dataclasses.fields(cls) if f.name != "search"}
        out.update({name: search_hints[name] for name in _search_fields()})
        return out

    def flat(self, *, all_search: bool = False) -> dict[str, Any]:
        """The settings by flat name, values as the fields hold them.

        Search settings 0.2 did not expose appear only when they differ from their
        default (``all_search`` lists them all), so a folder made then still matches.
        """
        out = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "search"
        }
        default = SearchConfig()
        for name in _search_fields():
            value = getattr(self.search, name)
            if all_search or name in _ALWAYS_IN_IDENTITY or value != getattr(default, name):
                out[name] = value
        return out

    def identity(self) -> dict[str, Any]:
        """The fields that must match for a run folder to be continued (JSON-ready)."""
        data = {
            k: asdict(v) if dataclasses.is_dataclass(v) and not isinstance(v, type) else v
            for k, v in self.flat().items()
            if k not in _NOT_IDENTITY
        }
        return json.loads(json.dumps(data, default=list))


def _check_device(device: str) -> None:
    """A torch device this machine has (checked before any model loads; ``cpu`` needs no torch)."""
    if device == "cpu":
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise FsnnError(f"unknown device {device!r} (use cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FsnnError(
            f"device {device!r} asked for, but this machine has no CUDA device (use --device cpu)"
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise FsnnError(
            f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise FsnnError("device 'mps' asked for, but MPS is not available here")
