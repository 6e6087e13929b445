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
    :func:`states_answer` (the headline check: readable and stating the gold answer,
    docs/answer_check.md), :func:`make_judge`
Errors
    :class:`FsnnError` (one line, naming the problem)

Example:
    >>> import fsnn
    >>> model = fsnn.load_model("smollm2-135m")                          # doctest: +SKIP
    >>> h = fsnn.capture_references(model, [fsnn.ReferenceItem(question=q, answer=a)])  # doctest: +SKIP
    >>> fsnn.Steering.full(h, alpha=0.5, gamma=0.2).generate(model, [prompt])  # doctest: +SKIP

Names are resolved on first use, so ``import fsnn`` itself loads neither torch nor nnsight.

The package is laid out in stage folders (docs/architecture.md): ``models``, ``backends``,
``steering``, ``judges``, ``search``, ``store``, ``experiment``, ``analysis``. The flat
module paths of 0.2 (``fsnn.fusion``, ``fsnn.pipeline``, ...) still import, with one
``FutureWarning`` each, for this release: :data:`MOVED` says where each went.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "load_model": "fsnn.models.load",
    "LoadedModel": "fsnn.models.load",
    "ReferenceItem": "fsnn.steering.references",
    "capture_references": "fsnn.steering.references",
    "Steering": "fsnn.steering.steer",
    "Strengths": "fsnn.steering.layout",
    "SegmentLayout": "fsnn.steering.layout",
    "generate": "fsnn.steering.generation",
    "GenerationOutput": "fsnn.steering.decode",
    "run_search": "fsnn.search.run",
    "SearchConfig": "fsnn.search.run",
    "SearchItem": "fsnn.search.run",
    "token_overlap": "fsnn.judges.metrics",
    "states_answer": "fsnn.judges.states_answer",
    "RunConfig": "fsnn.experiment.pipeline",
    "run_pipeline": "fsnn.experiment.pipeline",
    "open_run": "fsnn.store.files",
    "Run": "fsnn.store.files",
    "LocalBackend": "fsnn.backends.base",
    "SerialisedBackend": "fsnn.backends.base",
    "NdifBackend": "fsnn.backends.base",
    "make_judge": "fsnn.judges",
    "FsnnError": "fsnn.errors",
    "Question": "fsnn.experiment.simpleqa",
    "load_simpleqa": "fsnn.experiment.simpleqa",
    "select_questions": "fsnn.experiment.simpleqa",
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
    "states_answer",
    "token_overlap",
]

if TYPE_CHECKING:  # pragma: no cover
    from fsnn.backends.base import LocalBackend, NdifBackend, SerialisedBackend
    from fsnn.experiment.pipeline import RunConfig, run_pipeline
    from fsnn.experiment.simpleqa import Question, load_simpleqa, select_questions
    from fsnn.judges.metrics import token_overlap
    from fsnn.judges.states_answer import states_answer
    from fsnn.models.load import LoadedModel, load_model
    from fsnn.search.run import SearchConfig, SearchItem, run_search
    from fsnn.steering.decode import GenerationOutput
    from fsnn.steering.generation import generate
    from fsnn.steering.layout import SegmentLayout, Strengths
    from fsnn.steering.references import ReferenceItem, capture_references
    from fsnn.steering.steer import Steering
    from fsnn.store.files import Run, open_run

    from .errors import FsnnError
    from .judges import make_judge


# 0.2's module paths -> their homes in the stage folders (issue 23). ``fsnn.models``,
# ``fsnn.search``, ``fsnn.store`` and ``fsnn.judges`` are folders now and still hold the
# names those modules had, so they need no entry.
MOVED: dict[str, str] = {
    "fsnn.environment": "fsnn.store.environment",
    "fsnn.layers": "fsnn.models.layers",
    "fsnn.backends": "fsnn.backends",
    "fsnn.remote": "fsnn.backends.ndif",
    "fsnn.retry": "fsnn.backends.retry",
    "fsnn.fusion": "fsnn.steering.fusion",
    "fsnn.layout": "fsnn.steering.layout",
    "fsnn.strength": "fsnn.search.strength",
    "fsnn.references": "fsnn.steering.references",
    "fsnn.steer": "fsnn.steering.steer",
    "fsnn.intervention": "fsnn.steering.intervention",
    "fsnn.generation": "fsnn.steering.generation",
    "fsnn.decode": "fsnn.steering.decode",
    "fsnn.prompts": "fsnn.steering.prompts",
    "fsnn.beyond": "fsnn.search.label_free",
    "fsnn.metrics": "fsnn.judges.metrics",
    "fsnn.degeneration": "fsnn.judges.degeneration",
    "fsnn.scoring": "fsnn.judges.scoring",
    "fsnn.judges.agreement": "fsnn.analysis.judge_agreement",
    "fsnn.judges.release": "fsnn.analysis.release_grades",
    "fsnn.release": "fsnn.analysis.release",
    "fsnn.schema": "fsnn.store.schema",
    "fsnn.lock": "fsnn.store.lock",
    "fsnn.config_file": "fsnn.experiment.config_file",
    "fsnn.pipeline": "fsnn.experiment.pipeline",
    "fsnn.stages": "fsnn.experiment.stages",
    "fsnn.simpleqa": "fsnn.experiment.simpleqa",
    "fsnn.stats": "fsnn.analysis.stats",
    "fsnn.summary": "fsnn.analysis.summary",
    "fsnn.inspect": "fsnn.analysis.inspect",
    "fsnn.figures": "fsnn.analysis.figures",
    "fsnn.report": "fsnn.analysis.report",
}
del MOVED["fsnn.backends"]  # a folder of the same name: its module is fsnn.backends.base

# names that left an old module for another one when it moved
_SPLIT: dict[str, dict[str, str]] = {
    "fsnn.metrics": {
        "ObjectiveConfig": "fsnn.search.objective",
        "objective": "fsnn.search.objective",
    },
    "fsnn.degeneration": {"guarded_objective": "fsnn.search.objective"},
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module path as its new module (the same object), warning once."""

    def __init__(self) -> None:
        self._own_spec: dict[str, Any] = {}

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: Any) -> Any:
        new = MOVED[spec.name]
        warnings.warn(
            f"{spec.name} moved to {new}; the old path goes away after 0.3",
            FutureWarning,
            stacklevel=2,
        )
        module = importlib.import_module(new)
        if spec.name in _SPLIT:  # a view of the new module that also finds the names that left it
            return _SplitModule(spec.name, module, _SPLIT[spec.name])
        self._own_spec[new] = module.__spec__
        return module

    def exec_module(self, module: Any) -> None:
        # the import system stamped the old name's spec on the module: give it back its own
        if module.__name__ in self._own_spec:
            module.__spec__ = self._own_spec[module.__name__]


class _SplitModule(types.ModuleType):
    def __init__(self, name: str, main: Any, elsewhere: dict[str, str]) -> None:
        super().__init__(name, main.__doc__)
        self._main, self._elsewhere = main, elsewhere

    def __getattr__(self, attr: str) -> Any:
        where = self._elsewhere.get(attr)
        return getattr(importlib.import_module(where) if where else self._main, attr)


if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fsnn' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolve once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
