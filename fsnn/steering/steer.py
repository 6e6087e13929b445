"""Steered generation through nnsight (docs/method.md §2, §9): the :class:`Steering` value
and the batched :func:`steered_generate` under it.

Two named modes — different methods, not two speeds of one:

``faithful`` (parity, default for paper reproduction)
    As the release ran it: no KV cache, so every decode step re-runs the whole sequence;
    at every steered layer mu is the mean over all valid positions of the current pass
    (prompt + tokens so far, upstream layers already steered) and the shift is applied
    to every position. Cost grows quadratically with the number of new tokens.

``cached`` (speed; an approximation of faithful)
    KV cache on. The prompt pass is steered exactly as faithful step 0. Each new token
    is steered with mu = the running mean, over all positions so far (prompt and
    generated, this token included), of the layer's block outputs before this layer's
    own shift (upstream layers already steered). Earlier positions are *not* re-steered
    as the sequence grows (their cached keys/values keep the shift of the step that
    computed them), which is where it departs from faithful; docs/benchmarks.md
    measures how far.

A :class:`Steering` is one intervention as a value (reference vectors, the layer
layout with its strengths, the mode, the operator and its schedule; docs/operators.md
for the operators beyond eq. (5)): ``steering.generate(model, prompts)`` answers
steered, ``steering.apply(model)`` steers inside a user's own nnsight trace. Under it,
:func:`steered_generate` gives every row of a batch its own reference vectors and its
own (alpha, gamma) per layer, so one generate call evaluates many search trials (of one
or several prompts). The loop body that runs inside the trace is
:mod:`fsnn.steering.intervention`, shared with the NDIF session path.
Left padding never enters mu (masked mean) and a padded row yields the same tokens as
the row run alone. Greedy; each row stops at its own EOS.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import nnsight
import numpy as np
import torch

from fsnn.backends.base import Backend, resolve_backend
from fsnn.errors import FsnnError

from .decode import GenerationOutput, decode_rows, encode, eos_ids, greedy_config
from .intervention import steer_pass, steer_steps
from .layout import SegmentLayout, Strengths
from .modes import MODES, Mode, check_generation
from .operators import schedule_multipliers
from .remote_code import trace_remote
from .specs import OPERATORS, check_operator, check_schedule_mode, parse_schedule

__all__ = [
    "MODES",
    "OPERATORS",
    "Mode",
    "RowPlan",
    "Steering",
    "plan_rows",
    "steer_each",
    "steer_in_session",
    "steer_rows",
    "steered_generate",
]


def _as_tensor(values: Any, name: str) -> torch.Tensor:
    if hasattr(values, "values") and not isinstance(values, torch.Tensor):  # xarray
        values = values.values
    try:
        return torch.as_tensor(
            np.asarray(values) if not isinstance(values, torch.Tensor) else values,
            dtype=torch.float32,
        )
    except (TypeError, ValueError) as exc:
        raise FsnnError(f"{name} is not numeric: {exc}") from None


def _check_inputs(
    model: Any, n_rows: int, h: torch.Tensor, alpha: torch.Tensor, gamma: torch.Tensor
) -> None:
    if h.ndim != 3 or h.shape[0] != n_rows:
        raise FsnnError(f"references must be (rows={n_rows}, layer, hidden), got {tuple(h.shape)}")
    if h.shape[1] != model.n_layers or h.shape[2] != model.d_model:
        raise FsnnError(
            f"references are for {h.shape[1]} layers x {h.shape[2]} hidden, but model "
            f"{model.name} has {model.n_layers} layers x {model.d_model} hidden"
        )
    for name, t in (("alpha", alpha), ("gamma", gamma)):
        if tuple(t.shape) != (n_rows, model.n_layers):
            raise FsnnError(
                f"{name} must be (rows={n_rows}, layer={model.n_layers}), got {tuple(t.shape)}"
            )
        if not bool(torch.isfinite(t).all()):
            raise FsnnError(f"{name} holds NaN or inf")
    if not bool(torch.isfinite(h).all()):
        raise FsnnError("reference vectors hold NaN or inf")


def validated_inputs(
    model: Any, n_rows: int, h: Any, alpha: Any, gamma: Any, *, mode: str, max_new_tokens: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check a steering request and return (h, alpha, gamma) as float32 tensors.

    Shared by every entry point (local, remote session) so they refuse the same input.
    """
    check_generation(mode=mode, max_new_tokens=max_new_tokens)
    h, alpha, gamma = (
        _as_tensor(h, "references"),
        _as_tensor(alpha, "alpha"),
        _as_tensor(gamma, "gamma"),
    )
    _check_inputs(model, n_rows, h, alpha, gamma)
    return h, alpha, gamma


def validated_operator(
    operator: str,
    schedule: str,
    mu_generic: Any,
    *,
    n_layers: int,
    d_model: int,
    alpha: torch.Tensor | None = None,
    gamma: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """Check the operator, the schedule spec and mu_generic; return mu_generic as (layer, hidden) float32.

    ``fusion`` takes no mu_generic; ``angular`` and ``centred`` need one
    (:func:`fsnn.steering.references.capture_generic_mean`). ``angular`` reads
    alpha * gamma as an angle in radians, which must be >= 0.
    """
    check_operator(operator)
    parse_schedule(schedule)
    if operator == "fusion":
        if mu_generic is not None:
            raise FsnnError(
                "mu_generic is used by the angular and centred operators only, not by fusion"
            )
        return None
    if mu_generic is None:
        raise FsnnError(
            f"operator {operator!r} needs mu_generic, the (layer, hidden) generic mean "
            "(fsnn.steering.references.capture_generic_mean)"
        )
    mu = _as_tensor(mu_generic, "mu_generic")
    if tuple(mu.shape) != (n_layers, d_model):
        raise FsnnError(
            f"mu_generic must be (layer={n_layers}, hidden={d_model}), got {tuple(mu.shape)}"
        )
    if not bool(torch.isfinite(mu).all()):
        raise FsnnError("mu_generic holds NaN or inf")
    if (
        operator == "angular"
        and alpha is not None
        and gamma is not None
        and bool(((alpha * gamma) < 0).any())
    ):
        raise FsnnError(
            "angular steering reads alpha * gamma as an angle in radians: it must be >= 0"
        )
    return mu


# --------------------------------------------------------------------------- the value


@dataclass(frozen=True, kw_only=True)
class Steering:
    """One Fusion Steering intervention as a value (docs/method.md §3).

    Attributes:
        references: eq. (1) reference vectors: (layer, hidden) for one prompt, or
            (prompt, layer, hidden) for a batch of prompts (a tensor, a numpy array,
            or the DataArray :func:`fsnn.capture_references` returns). Stored as float32.
        strengths: the layer layout and its (alpha, gamma) per segment. A segment whose
            alpha * gamma is exactly 0 is a window that is off: its layers are untouched.
        mode: ``faithful`` (no KV cache; the published method) or ``cached``.
        operator: how a steered layer's output x changes, k = alpha * gamma of its
            segment (docs/operators.md):
            ``fusion`` (default, the paper): eq. (5), x + k (h_l - mu_l), mu_l the
            pass's mean (cached decode steps: the running mean);
            ``centred``: x + k (h_l - mu_generic,l), a fixed shift per row and layer;
            ``angular``: x rotated by the angle k (radians, >= 0) toward the direction
            h_l - mu_generic,l, keeping ||x|| (never past it).
        schedule: the multiplier m(t) of the strength at decode step t (step 0 = the
            prompt pass): ``constant`` (default), ``prompt_only``, ``first_n:N``,
            ``decay:RHO`` (:mod:`fsnn.steering.specs`). ``faithful``: step t's pass
            re-runs every position, all steered with m(t) k. ``cached``: step t steers
            its new position with m(t) k; cached positions keep their own step's.
            ``kl:EPS`` (``cached`` only, local models): m(t) per row and step, the
            largest in [0, 1] that keeps the step's next-token distribution within
            EPS nats of the unsteered one (:mod:`fsnn.steering.kl_decode`).
        mu_generic: (layer, hidden) generic mean (:func:`fsnn.steering.references.capture_generic_mean`),
            needed by ``centred`` and ``angular``, refused by ``fusion``.

    Example:
        >>> steering = Steering.full(h, alpha=0.5, gamma=0.4)           # doctest: +SKIP
        >>> steering.generate(model, [prompt], max_new_tokens=40)      # doctest: +SKIP
    """

    references: Any
    strengths: Strengths
    mode: Mode = "faithful"
    operator: str = "fusion"
    schedule: str = "constant"
    mu_generic: Any = None

    def __post_init__(self) -> None:
        h = _as_tensor(self.references, "references")
        if h.ndim not in (2, 3):
            raise FsnnError(
                f"references must be (layer, hidden) or (prompt, layer, hidden), got {tuple(h.shape)}"
            )
        if not bool(torch.isfinite(h).all()):
            raise FsnnError("reference vectors hold NaN or inf")
        check_generation(mode=self.mode)
        check_schedule_mode(self.schedule, self.mode)
        self.strengths.layout.check(h.shape[-2])
        alpha, gamma = self.strengths.per_layer(h.shape[-2])
        mu = validated_operator(
            self.operator,
            self.schedule,
            self.mu_generic,
            n_layers=h.shape[-2],
            d_model=h.shape[-1],
            alpha=alpha,
            gamma=gamma,
        )
        object.__setattr__(self, "references", h)
        object.__setattr__(self, "mu_generic", mu)

    @classmethod
    def full(
        cls, references: Any, *, alpha: float, gamma: float, mode: Mode = "faithful", **options: Any
    ) -> Steering:
        """Every layer shares one (alpha, gamma): the paper's full-layer steering.

        ``options``: ``operator``, ``schedule``, ``mu_generic`` (e.g. ``alpha=1.0,
        gamma=0.1, operator="angular", mu_generic=mu``: a 0.1 rad rotation)."""
        n_layers = _as_tensor(references, "references").shape[-2]
        return cls(
            references=references,
            strengths=Strengths.full(n_layers, alpha, gamma),
            mode=mode,
            **options,
        )

    @classmethod
    def segmented(
        cls,
        references: Any,
        *,
        alpha: Sequence[float],
        gamma: Sequence[float],
        mode: Mode = "faithful",
        **options: Any,
    ) -> Steering:
        """Near-equal contiguous layer segments (thirds for 3 pairs), one pair each; ``options`` as :meth:`full`."""
        n_layers = _as_tensor(references, "references").shape[-2]
        return cls(
            references=references,
            strengths=Strengths.segmented(n_layers, tuple(alpha), tuple(gamma)),
            mode=mode,
            **options,
        )

    @classmethod
    def layerwise(
        cls,
        references: Any,
        *,
        alpha: Any,
        gamma: Any,
        mode: Mode = "faithful",
        **options: Any,
    ) -> Steering:
        """One (alpha, gamma) per layer, each layer its own segment: what one search trial
        steers with once norm scaling and windows made its segment pairs per-layer
        (:func:`fsnn.search.run.trial_layers`); ``options`` as :meth:`full`.

        Args:
            references: (layer, hidden) or (prompt, layer, hidden), as for the class.
            alpha, gamma: (layer,) each; a layer with alpha * gamma = 0 is left as it is.
        """
        n_layers = _as_tensor(references, "references").shape[-2]
        a = _as_tensor(alpha, "alpha").reshape(-1).tolist()
        g = _as_tensor(gamma, "gamma").reshape(-1).tolist()
        if len(a) != n_layers or len(g) != n_layers:
            raise FsnnError(
                f"layerwise steering needs {n_layers} alpha and gamma values, "
                f"got {len(a)} and {len(g)}"
            )
        layout = SegmentLayout(
            name="layerwise",
            ranges=tuple((i, i) for i in range(n_layers)),
            segment_names=tuple(f"L{i}" for i in range(n_layers)),
        )
        return cls(
            references=references,
            strengths=Strengths(layout=layout, alpha=tuple(a), gamma=tuple(g)),
            mode=mode,
            **options,
        )

    @property
    def layout(self) -> SegmentLayout:
        return self.strengths.layout

    @property
    def n_layers(self) -> int:
        return int(self.references.shape[-2])

    def per_layer(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha (layer,), gamma (layer,)) float32; 0 outside the steered layers."""
        return self.strengths.per_layer(self.n_layers)

    def rows(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(h (n, layer, hidden), alpha (n, layer), gamma (n, layer)) for n rows."""
        h = self.references
        if h.ndim == 2:
            h = h.expand(n, *h.shape)
        elif h.shape[0] != n:
            raise FsnnError(f"{h.shape[0]} reference rows for {n} prompt(s)")
        alpha, gamma = self.per_layer()
        return h, alpha.expand(n, -1), gamma.expand(n, -1)

    def generate(
        self,
        model: Any,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = 100,
        batch_size: int | None = None,
        backend: Backend | str | None = None,
        stop_at_eos: bool = True,
    ) -> list[GenerationOutput]:
        """Greedy generation of ``prompts`` with this steering (one row per prompt)."""
        h, alpha, gamma = self.rows(len(prompts))
        return steered_generate(
            model,
            prompts,
            h,
            alpha,
            gamma,
            mode=self.mode,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            backend=backend,
            stop_at_eos=stop_at_eos,
            **self._options(),
        )

    def _same_call(self, other: Steering) -> bool:
        """``other`` can share one steered generation call with this (rows differ only in
        references and strengths)."""
        if (self.mode, self.operator, self.schedule) != (
            other.mode,
            other.operator,
            other.schedule,
        ):
            return False
        if self.mu_generic is None or other.mu_generic is None:
            return self.mu_generic is other.mu_generic
        return self.mu_generic is other.mu_generic or torch.equal(self.mu_generic, other.mu_generic)

    def _options(self) -> dict[str, Any]:
        """The operator keywords of :func:`steered_generate`; none for the default (the paper's call)."""
        if (self.operator, self.schedule) == ("fusion", "constant"):
            return {}
        return {"operator": self.operator, "schedule": self.schedule, "mu_generic": self.mu_generic}

    def apply(
        self, model: Any, *, rows: int | None = None, mask: torch.Tensor | None = None
    ) -> None:
        """Steer the forward pass of the nnsight trace this is called in (eqs. 2-5).

        Call it inside ``with model.lm.trace(...):`` before reading later modules; each
        steered layer's output is changed in place by the operator (fusion: mu being the
        pass's mean over ``mask`` (B, T), default every position). One pass is step 0
        of any schedule, where every schedule's multiplier is 1.

        Args:
            model: the loaded model the trace runs on.
            rows: batch rows of the trace (default: the number of reference rows).
            mask: 1 for real tokens, 0 for padding (left-padded batches need it).
        """
        if parse_schedule(self.schedule)[0] == "kl":
            raise FsnnError(
                f"schedule {self.schedule!r} chooses each step's strength while generating: "
                "use generate(); apply() steers one pass at full strength"
            )
        n = (
            rows
            if rows is not None
            else (1 if self.references.ndim == 2 else self.references.shape[0])
        )
        plan = _layer_plan(model, *self.rows(n), operator=self.operator, mu_generic=self.mu_generic)
        if mask is None:
            mask = torch.ones(n, model.max_length or 8192)
        steer_pass(
            plan[0],
            plan[1],
            plan[2],
            plan[3],
            mask.to(model.device, torch.float32),
            operator=self.operator,
            gates=plan[4],
        )

    def describe(self) -> dict[str, Any]:
        """What a result file records of this steering (JSON-serialisable).

        ``operator`` and ``schedule`` always; for ``centred``/``angular`` also
        ``mu_generic``: its shape and a sha256 prefix of its float32 bytes, so two
        results steered with different generic means are told apart.
        """
        out = {
            "layout": self.layout.to_json(),
            "mode": self.mode,
            "operator": self.operator,
            "schedule": self.schedule,
            **self.strengths.params(),
        }
        if self.mu_generic is not None:
            import hashlib

            mu = self.mu_generic.contiguous().numpy()
            out["mu_generic"] = (
                f"{mu.shape[0]}x{mu.shape[1]} sha256:{hashlib.sha256(mu.tobytes()).hexdigest()[:16]}"
            )
        return out


# --------------------------------------------------------------------------- batched rows


@dataclass(frozen=True)
class RowPlan:
    """One generate call's worth of steered rows, ready for a trace.

    Attributes:
        prompts: the rows' prompts.
        enc: their left-padded encoding.
        envoys: the active layers' envoys (strengths non-zero for some row).
        h, alpha, gamma: per active layer, (B, 1, H), (B, 1, 1), (B, 1, 1) float32
            (``centred``/``angular``: the direction h - mu_generic, the strength
            alpha * gamma, and None; :mod:`fsnn.steering.intervention`).
        mask: valid positions of every pass, (B, prompt + new) float32.
        config: the greedy generation config.
        eos: token ids that end a row.
        gates: per active layer, None or (B, 1, 1) bool: the rows steered there (fusion).
        operator: the operator name.
        scales: the schedule's m(t) per step, None for ``constant`` and ``kl``.
        kl_epsilon: the bound of the ``kl:EPS`` schedule, None for the fixed schedules.
    """

    prompts: list[str]
    enc: Any
    envoys: list[Any]
    h: list[torch.Tensor]
    alpha: list[torch.Tensor]
    gamma: list[torch.Tensor] | None
    mask: torch.Tensor
    config: Any
    eos: set[int]
    gates: list[Any] | None = None
    operator: str = "fusion"
    scales: list[float] | None = None
    kl_epsilon: float | None = None

    def outputs(self, model: Any, picked: Sequence[torch.Tensor]) -> list[GenerationOutput]:
        """Decode the tokens a trace picked (one (B,) tensor per step)."""
        new = (
            torch.stack(list(picked), dim=1)
            if len(picked)
            else torch.empty(len(self.prompts), 0, dtype=torch.long)
        )
        return decode_rows(
            model, self.prompts, self.enc, torch.cat([self.enc.input_ids, new], dim=1), self.eos
        )


def _layer_plan(
    model: Any,
    h: torch.Tensor,
    alpha: torch.Tensor,
    gamma: torch.Tensor,
    *,
    operator: str = "fusion",
    mu_generic: torch.Tensor | None = None,
) -> tuple[
    list[Any], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor] | None, list[Any] | None
]:
    """(envoys, h, alpha, gamma, gates) of the active layers, shaped for the loop body.

    Fusion: the references and (alpha, gamma), and a gate for a layer where some rows'
    alpha * gamma is 0 and others' not (None where every row is steered, which keeps the
    paper's code path). ``centred``/``angular``: the direction h - mu_generic and the
    strength alpha * gamma; gamma and gates are None (the operators themselves return
    x where the strength is 0).
    """
    device = model.device
    k = alpha * gamma
    # Layers whose coefficients are zero for every row are the identity: skip them.
    active = [li for li in range(model.n_layers) if bool((k[:, li] != 0).any())]
    envoys = [model.layer(li) for li in active]
    if operator != "fusion":
        if mu_generic is None:  # validated_operator refuses this first
            raise ValueError(f"operator {operator!r} needs mu_generic")
        mu = mu_generic.float()
        return (
            envoys,
            [(h[:, li, None].float() - mu[li]).to(device) for li in active],
            [k[:, li, None, None].clone().to(device) for li in active],
            None,
            None,
        )
    mixed = [bool((k[:, li] == 0).any()) for li in active]
    # clone: a slice is a view, and a remote request would carry its whole storage
    # (all L layers) once per layer. Shaped once for a decode step's (B, 1, H).
    return (
        envoys,
        [h[:, li, None].clone().to(device) for li in active],
        [alpha[:, li, None, None].clone().to(device) for li in active],
        [gamma[:, li, None, None].clone().to(device) for li in active],
        [
            (k[:, li, None, None] != 0).to(device) if mix else None
            for li, mix in zip(active, mixed, strict=True)
        ]
        if any(mixed)
        else None,
    )


def plan_rows(
    model: Any,
    prompts: list[str],
    h: torch.Tensor,
    alpha: torch.Tensor,
    gamma: torch.Tensor,
    *,
    mode: Mode,
    max_new_tokens: int,
    stop_at_eos: bool = True,
    operator: str = "fusion",
    schedule: str = "constant",
    mu_generic: torch.Tensor | None = None,
) -> RowPlan:
    """Encode rows and lay out their per-layer operands (validated inputs)."""
    check_schedule_mode(schedule, mode)
    enc = encode(model, prompts, max_new_tokens)
    eos = eos_ids(model) if stop_at_eos else set()
    mask = torch.cat(
        [
            enc.attention_mask,
            torch.ones(len(prompts), max_new_tokens, dtype=enc.attention_mask.dtype),
        ],
        dim=1,
    ).to(device=model.device, dtype=torch.float32)
    envoys, h_act, a_act, g_act, gates = _layer_plan(
        model, h, alpha, gamma, operator=operator, mu_generic=mu_generic
    )
    config = greedy_config(model, max_new_tokens, use_cache=mode != "faithful", eos=eos)
    kind, schedule_args = parse_schedule(schedule)
    return RowPlan(
        prompts=prompts,
        enc=enc,
        envoys=envoys,
        h=h_act,
        alpha=a_act,
        gamma=g_act,
        mask=mask,
        config=config,
        eos=eos,
        gates=gates,
        operator=operator,
        scales=None if kind == "kl" else schedule_multipliers(schedule, max_new_tokens),
        kl_epsilon=schedule_args.get("epsilon"),
    )


def _validated_call(
    model: Any,
    n: int,
    h: Any,
    alpha: Any,
    gamma: Any,
    mode: Mode,
    max_new_tokens: int,
    operator: str,
    schedule: str,
    mu_generic: Any,
    backend: str = "local",
) -> tuple[Any, Any, Any, Any]:
    """The checks every steered-generation entry point makes before any trace:
    (h, alpha, gamma) as tensors of the model's shape, the schedule against the mode
    and the backend (by name), then the operator's inputs."""
    h, alpha, gamma = validated_inputs(
        model, n, h, alpha, gamma, mode=mode, max_new_tokens=max_new_tokens
    )
    check_schedule_mode(schedule, mode, backend)
    mu = validated_operator(
        operator,
        schedule,
        mu_generic,
        n_layers=model.n_layers,
        d_model=model.d_model,
        alpha=alpha,
        gamma=gamma,
    )
    return h, alpha, gamma, mu


def steered_generate(
    model: Any,
    prompts: Sequence[str],
    h: torch.Tensor,
    alpha: torch.Tensor,
    gamma: torch.Tensor,
    *,
    mode: Mode = "faithful",
    max_new_tokens: int = 100,
    batch_size: int | None = None,
    backend: Backend | str | None = None,
    stop_at_eos: bool = True,
    operator: str = "fusion",
    schedule: str = "constant",
    mu_generic: Any = None,
) -> list[GenerationOutput]:
    """Greedy generation with every row steered toward its own reference.

    Args:
        model: a :class:`fsnn.models.load.LoadedModel`.
        prompts: B prompt texts (the steering prompt of each row).
        h: reference vectors, (B, layer, hidden) — eq. (1) of each row's prompt.
        alpha: interpolation weight, (B, layer); 0 outside the steered layers.
        gamma: additive strength, (B, layer); 0 outside the steered layers.
        mode: ``faithful`` (no cache, parity) or ``cached`` (KV cache, running mean).
        max_new_tokens: tokens to generate per row (fewer when the row hits EOS).
        batch_size: rows per generate call (default: all B in one call).
        backend: where the traces run (:mod:`fsnn.backends.base`; default local). This
            function makes the traces; wrapping it in ``backend.call`` adds retries.
        stop_at_eos: False generates exactly ``max_new_tokens`` per row (benchmarks).
        operator: ``fusion`` (eq. (5), the default), ``centred`` or ``angular``; the
            strength of a row at a layer is alpha * gamma (for ``angular`` an angle in
            radians). :class:`Steering` says what each does.
        schedule: ``constant`` (default), ``prompt_only``, ``first_n:N``, ``decay:RHO`` or
            ``kl:EPS`` (``cached`` mode on a local model; :mod:`fsnn.steering.kl_decode`).
        mu_generic: (layer, hidden) generic mean, for ``centred`` and ``angular``.

    Returns:
        One :class:`GenerationOutput` per row, in order.

    Raises:
        FsnnError: shapes that do not match the model, NaN/inf coefficients, an unknown
            mode, operator or schedule, ``kl:EPS`` in ``faithful`` mode or on a remote
            backend, a missing or misshapen mu_generic, a prompt too long for the context.
    """
    n = len(prompts)
    where = resolve_backend(backend)
    h, alpha, gamma, mu = _validated_call(
        model,
        n,
        h,
        alpha,
        gamma,
        mode,
        max_new_tokens,
        operator,
        schedule,
        mu_generic,
        _backend_name(model, where),
    )
    step = batch_size or n
    outputs: list[GenerationOutput] = []
    for start in range(0, n, step):
        sl = slice(start, start + step)
        plan = plan_rows(
            model,
            list(prompts[sl]),
            h[sl],
            alpha[sl],
            gamma[sl],
            mode=mode,
            max_new_tokens=max_new_tokens,
            stop_at_eos=stop_at_eos,
            operator=operator,
            schedule=schedule,
            mu_generic=mu,
        )
        outputs.extend(
            steer_rows(model, plan, mode=mode, max_new_tokens=max_new_tokens, backend=where)
        )
    return outputs


def _backend_name(model: Any, backend: Backend) -> str:
    """Where the traces of a call run, by name: a model loaded for NDIF counts as remote."""
    return "ndif" if getattr(model, "remote", False) else backend.name


def steer_each(
    model: Any,
    prompts: Sequence[str],
    steerings: Sequence[Steering],
    *,
    max_new_tokens: int = 100,
    batch_size: int | None = None,
    backend: Backend | str | None = None,
    stop_at_eos: bool = True,
) -> list[GenerationOutput]:
    """Greedy generation of each prompt with its own :class:`Steering`, batched.

    The search's call: one row per (prompt, trial), each trial its own references and
    strengths. The values must share mode, operator, schedule and ``mu_generic`` (they
    are one generation call); each holds one prompt's references.

    Returns:
        One :class:`GenerationOutput` per prompt, in order; the same as calling each
        value's :meth:`Steering.generate` alone (the batch is the same computation).

    Raises:
        FsnnError: counts that differ, a value holding several prompts' references, or
            values that cannot share one call.
    """
    if len(prompts) != len(steerings):
        raise FsnnError(f"{len(prompts)} prompt(s) for {len(steerings)} steering value(s)")
    if not steerings:
        return []
    first = steerings[0]
    rows = []
    for i, s in enumerate(steerings):
        if s.references.ndim == 3 and s.references.shape[0] != 1:
            raise FsnnError(
                f"steering value {i} holds {s.references.shape[0]} prompts' references, want 1"
            )
        if not first._same_call(s):
            raise FsnnError(
                f"steering value {i} differs from value 0 in mode, operator, schedule or "
                "mu_generic: they cannot share one generation call"
            )
        if s.references.shape[-2:] != first.references.shape[-2:]:
            raise FsnnError(
                f"steering value {i} has references of shape {tuple(s.references.shape[-2:])}, "
                f"value 0 {tuple(first.references.shape[-2:])}"
            )
        rows.append(s.rows(1))
    h, alpha, gamma = (torch.cat(parts) for parts in zip(*rows, strict=True))
    return steered_generate(
        model,
        prompts,
        h,
        alpha,
        gamma,
        mode=first.mode,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        backend=backend,
        stop_at_eos=stop_at_eos,
        **first._options(),
    )


@torch.no_grad()
@contextmanager
def _eos_may_end_the_loop() -> Iterator[None]:
    """Silence nnsight's note that the bounded step loop ended before ``max_new_tokens``.

    Every row hitting EOS early ends the generation, and the loop's remaining steps are
    never reached: that is the intended stop, not a problem to show the user."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*was never reached", category=UserWarning)
        yield


def steer_rows(
    model: Any,
    plan: RowPlan,
    *,
    mode: Mode,
    max_new_tokens: int,
    backend: Backend,
) -> list[GenerationOutput]:
    """One nnsight-traced generate call over one planned batch of rows (the ``kl:EPS``
    schedule: its own decode loop, :mod:`fsnn.steering.kl_decode`)."""
    if plan.kl_epsilon is not None:
        from .kl_decode import kl_bounded_rows

        check_schedule_mode(f"kl:{plan.kl_epsilon!r}", mode, _backend_name(model, backend))
        return kl_bounded_rows(model, plan, epsilon=plan.kl_epsilon, max_new_tokens=max_new_tokens)
    lm_head = model.lm.lm_head
    envoys, h_act, a_act, g_act, mask = plan.envoys, plan.h, plan.alpha, plan.gamma, plan.mask
    faithful = mode == "faithful"
    options = _loop_options(
        plan
    )  # outside the trace: its body ships to the server, this module does not
    with (
        _eos_may_end_the_loop(),
        model.lm.generate(
            plan.enc, generation_config=plan.config, remote=trace_remote(backend)
        ) as tracer,
    ):
        picked = nnsight.save([])  # saved before the loop: survives an early EOS stop
        steer_steps(
            tracer,
            envoys,
            lm_head,
            h_act,
            a_act,
            g_act,
            mask,
            picked,
            faithful=faithful,
            max_new_tokens=max_new_tokens,
            **options,
        )
    return plan.outputs(model, picked)


def _loop_options(plan: RowPlan) -> dict[str, Any]:
    """The loop body's operator keywords; none for the paper's eq. (5), constant, every row steered."""
    if plan.operator == "fusion" and plan.scales is None and plan.gates is None:
        return {}
    return {"operator": plan.operator, "scales": plan.scales, "gates": plan.gates}


# --------------------------------------------------------------------------- NDIF sessions


@torch.no_grad()
def steer_in_session(
    model: Any,
    prompts: Sequence[str],
    h: torch.Tensor,
    alpha: torch.Tensor,
    gamma: torch.Tensor,
    *,
    mode: Mode = "faithful",
    max_new_tokens: int = 100,
    batch_size: int | None = None,
    backend: Backend | str | None = "ndif",
    stop_at_eos: bool = True,
    operator: str = "fusion",
    schedule: str = "constant",
    mu_generic: Any = None,
) -> list[GenerationOutput]:
    """:func:`fsnn.steering.steer.steered_generate`, every chunk a trace of ONE nnsight session.

    With ``batch_size`` smaller than the number of rows, ``steered_generate`` makes one
    remote request per chunk; here all chunks go in one request (one upload, one queue
    wait, one download) and run one after the other on the server. Same arguments,
    same outputs (tested equal). Each trace runs the same loop body as
    :func:`fsnn.steering.steer.steer_rows` (:func:`fsnn.steering.intervention.steer_steps`, shipped by
    value), so the two paths cannot drift apart.

    Args:
        model, prompts, h (B, layer, hidden), alpha (B, layer), gamma (B, layer), mode,
        max_new_tokens, batch_size, stop_at_eos, operator, schedule, mu_generic: as
        :func:`fsnn.steering.steer.steered_generate`.
        backend: where the session runs (:mod:`fsnn.backends.base`; default NDIF).

    Returns:
        One :class:`~fsnn.steering.generation.GenerationOutput` per row, in order.
    """
    n = len(prompts)
    session_backend = resolve_backend(backend)
    h, alpha, gamma, mu = _validated_call(
        model,
        n,
        h,
        alpha,
        gamma,
        mode,
        max_new_tokens,
        operator,
        schedule,
        mu_generic,
        # a session's traces run together, so even a local session cannot probe between them
        "session" if session_backend.name == "local" else session_backend.name,
    )
    faithful = mode == "faithful"
    step_rows = batch_size or n
    plans = [
        plan_rows(
            model,
            list(prompts[start : start + step_rows]),
            h[start : start + step_rows],
            alpha[start : start + step_rows],
            gamma[start : start + step_rows],
            mode=mode,
            max_new_tokens=max_new_tokens,
            stop_at_eos=stop_at_eos,
            operator=operator,
            schedule=schedule,
            mu_generic=mu,
        )
        for start in range(0, n, step_rows)
    ]
    lm = model.lm
    lm_head = lm.lm_head
    # plain tuples and dicts: a RowPlan (an fsnn class) could not be rebuilt on a server without fsnn
    chunks = [
        (p.enc, p.config, p.envoys, p.h, p.alpha, p.gamma, p.mask, _loop_options(p)) for p in plans
    ]
    with _eos_may_end_the_loop(), lm.session(remote=trace_remote(session_backend)):
        results = nnsight.save([])
        for enc, config, envoys, h_act, a_act, g_act, mask, options in chunks:
            picked: list[Any] = []  # filled in place, so an early EOS stop keeps the steps it ran
            results.append(picked)
            with lm.generate(enc, generation_config=config) as tracer:
                steer_steps(
                    tracer,
                    envoys,
                    lm_head,
                    h_act,
                    a_act,
                    g_act,
                    mask,
                    picked,
                    faithful=faithful,
                    max_new_tokens=max_new_tokens,
                    **options,
                )
    outputs: list[GenerationOutput] = []
    for plan, picked in zip(plans, results, strict=True):
        outputs.extend(plan.outputs(model, list(picked)))
    return outputs
