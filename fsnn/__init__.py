"""fsnn — Fusion Steering (arXiv:2505.22572) with nnsight.

Prompt-specific activation steering: reference activations captured from a text holding
the ground-truth answer and an explanation are fused into every decoder layer, with
strengths searched per prompt by Optuna. The published method is an oracle, upper-bound
setting: the reference uses the ground truth (docs/method.md §1).

The public API (everything else is importable from its module, but is not the front door):

Load and capture
    :func:`load_model`, :class:`LoadedModel`, :class:`ReferenceItem`, :func:`capture_references`
Steer
    :class:`Steering` (reference vectors + layer layout + strengths + mode: ``generate``
    steered text, or ``apply`` inside your own nnsight trace), :class:`Strengths`,
    :class:`SegmentLayout`, :func:`generate` (unsteered), :class:`GenerationOutput`
Search
    :func:`run_search`, :class:`SearchConfig`, :class:`SearchItem`, :func:`token_overlap`
Run the experiment and read it
    :class:`RunConfig`, :func:`run_pipeline`, :func:`open_run`, :class:`Run`
Where traces run
    :class:`LocalBackend`, :class:`SerialisedBackend` (the remote path, run here),
    :class:`NdifBackend`
Judge
    :func:`make_judge`
Errors
    :class:`FsnnError` (one line, naming the problem)

Example:
    >>> import fsnn
    >>> model = fsnn.load_model("smollm2-135m")                          # doctest: +SKIP
    >>> h = fsnn.capture_references(model, [fsnn.ReferenceItem(question=q, answer=a)])  # doctest: +SKIP
    >>> fsnn.Steering.full(h, alpha=0.5, gamma=0.2).generate(model, [prompt])  # doctest: +SKIP

Names are resolved on first use, so ``import fsnn`` itself loads neither torch nor nnsight.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "load_model": "fsnn.models",
    "LoadedModel": "fsnn.models",
    "ReferenceItem": "fsnn.references",
    "capture_references": "fsnn.references",
    "Steering": "fsnn.steer",
    "Strengths": "fsnn.layout",
    "SegmentLayout": "fsnn.layout",
    "generate": "fsnn.generation",
    "GenerationOutput": "fsnn.decode",
    "run_search": "fsnn.search",
    "SearchConfig": "fsnn.search",
    "SearchItem": "fsnn.search",
    "token_overlap": "fsnn.metrics",
    "RunConfig": "fsnn.pipeline",
    "run_pipeline": "fsnn.pipeline",
    "open_run": "fsnn.store",
    "Run": "fsnn.store",
    "LocalBackend": "fsnn.backends",
    "SerialisedBackend": "fsnn.backends",
    "NdifBackend": "fsnn.backends",
    "make_judge": "fsnn.judges",
    "FsnnError": "fsnn.errors",
    "Question": "fsnn.simpleqa",
    "load_simpleqa": "fsnn.simpleqa",
    "select_questions": "fsnn.simpleqa",
}

__all__ = [
    "__version__",
    "FsnnError",
    "GenerationOutput",
    "LoadedModel",
    "LocalBackend",
    "NdifBackend",
    "Question",
    "ReferenceItem",
    "Run",
    "RunConfig",
    "SearchConfig",
    "SearchItem",
    "SegmentLayout",
    "SerialisedBackend",
    "Steering",
    "Strengths",
    "capture_references",
    "generate",
    "load_model",
    "load_simpleqa",
    "make_judge",
    "open_run",
    "run_pipeline",
    "run_search",
    "select_questions",
    "token_overlap",
]

if TYPE_CHECKING:  # pragma: no cover
    from .backends import LocalBackend, NdifBackend, SerialisedBackend
    from .decode import GenerationOutput
    from .errors import FsnnError
    from .generation import generate
    from .judges import make_judge
    from .layout import SegmentLayout, Strengths
    from .metrics import token_overlap
    from .models import LoadedModel, load_model
    from .pipeline import RunConfig, run_pipeline
    from .references import ReferenceItem, capture_references
    from .search import SearchConfig, SearchItem, run_search
    from .simpleqa import Question, load_simpleqa, select_questions
    from .steer import Steering
    from .store import Run, open_run


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fsnn' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolve once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
