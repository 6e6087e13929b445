"""Run configurations from TOML files and the paper's preset, with one precedence rule.

``fsnn run --config run.toml`` reads a TOML file whose top-level keys are
:class:`fsnn.experiment.config.RunConfig` field names::

    model = "smollm2-135m"
    limit = 20
    methods = ["full", "segmented"]
    n_trials = 5
    mode = "cached"
    judge = "local:qwen2.5-coder-1.5b"

    [objective]            # eq. (6) weights, optional
    w_to = 0.7

``fsnn run --paper`` starts from :data:`PAPER_PRESET` (the settings of the paper, also
used by ``experiments/simpleqa_paper.py``). Precedence, highest first: command-line
flags > the file > the preset > RunConfig's defaults (:func:`resolve_run_config`).
:func:`format_config` prints the resolved config as TOML (each value with where it came
from), so the header of a run can be saved and reused as its config file.

TOML has no null: leave a key out to keep the lower layer's value; for the optional
text fields (``judge``, ``ppl_model``) the string ``"none"`` means None (no judge, the
base model as perplexity scorer).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fsnn.errors import FsnnError
from fsnn.search.config import SearchConfig

if TYPE_CHECKING:
    from .config import RunConfig

__all__ = [
    "PAPER_PRESET",
    "config_sources",
    "format_config",
    "load_config_file",
    "resolve_from_cli",
    "resolve_run_config",
]

# The paper's run (docs/method.md §2): Gemma-2-2B-IT in 8-bit fp16 on a GPU, first 500 SimpleQA
# rows -> the INCORRECT ones, full-layer and segmented, faithful steering, 100 new tokens, GPT-2
# perplexity, Mistral judge with a missing grade counted as 0; the search is SearchConfig.paper()
# (the one definition of the paper's search).
PAPER_PRESET: dict[str, Any] = {
    "model": "google/gemma-2-2b-it",
    "load_in_8bit": True,
    "dtype": "float16",
    "device": "cuda",
    "limit": 500,
    "methods": ("full", "segmented"),
    **{
        k: v
        for k, v in dataclasses.asdict(SearchConfig.paper(batch_rows=32)).items()
        if k
        not in (
            "seed",
            "objective",
            "low",
            "high",
            "tpe_multivariate",
            "tpe_constant_liar",
            "max_failures",
        )
    },
    "mode": "faithful",
    "max_new_tokens": 100,
    "baseline_prompt": "qa",
    "select": "incorrect",
    "judge": "mistral",
    "judge_missing": "zero",
    "ppl_model": "openai-community/gpt2",
}

_NONE_WORD = "none"


def _run_config_type() -> type[RunConfig]:
    from .config import RunConfig

    return RunConfig


def _fields() -> dict[str, Any]:
    """Flat setting name -> its resolved type hint (:meth:`RunConfig.flat_fields`)."""
    return _run_config_type().flat_fields()


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None)) + (
            f' or "{_NONE_WORD}"' if type(None) in args and str in args else ""
        )
    if origin is tuple:
        return "a list of " + {str: "strings", int: "integers", float: "numbers"}.get(
            args[0], _describe(args[0])
        )
    if dataclasses.is_dataclass(hint):
        return f"a table of {', '.join(f.name for f in dataclasses.fields(hint))}"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, str(hint)
    )


def _convert(value: Any, hint: Any) -> Any:
    """``value`` as ``hint`` wants it; raises TypeError when it cannot be."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and value == _NONE_WORD and str in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg)
            except TypeError:
                continue
        raise TypeError
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise TypeError
        return tuple(_convert(v, args[0]) for v in value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):  # a dataclass, not an instance
        if not isinstance(value, Mapping):
            raise TypeError
        sub = typing.get_type_hints(hint)
        unknown = [k for k in value if k not in sub]
        if unknown:
            raise TypeError
        try:
            return hint(**{k: _convert(v, sub[k]) for k, v in value.items()})
        except ValueError:
            raise TypeError from None
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise TypeError
    if hint is str:
        if isinstance(value, str):
            return value
        raise TypeError
    if typing.get_origin(hint) is typing.Literal:
        if value in args:
            return value
        raise TypeError
    raise TypeError


def _check_keys(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    fields = _fields()
    for key in values:
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise FsnnError(f"{where}: unknown key {key!r} (not a RunConfig field{hint})")
    return fields


def _typed(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    fields = _check_keys(values, where)
    out = {}
    for key, value in values.items():
        try:
            out[key] = _convert(value, fields[key])
        except TypeError:
            raise FsnnError(
                f"{where}: key {key!r} must be {_describe(fields[key])}, got {value!r}"
            ) from None
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    """The RunConfig fields set by a TOML file, converted to their types.

    Args:
        path: a ``.toml`` file; top-level keys are RunConfig field names.

    Returns:
        field name -> value (lists become tuples, ``[objective]`` an ObjectiveConfig).

    Raises:
        FsnnError: a missing or unreadable file, invalid TOML, an unknown key or a
            value of the wrong type (the file and the key named).
    """
    path = Path(path)
    if not path.is_file():
        raise FsnnError(f"config file not found: {path}")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise FsnnError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise FsnnError(f"{path}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise FsnnError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    return _typed(raw, str(path))


def _layers(file_values: Mapping[str, Any] | None, preset: Mapping[str, Any] | None,
            flag_values: Mapping[str, Any] | None) -> list[tuple[str, dict[str, Any]]]:  # fmt: skip
    """(source, values) from lowest to highest precedence; None flags mean "not given"."""
    layers = [("preset", dict(preset or {})), ("file", dict(file_values or {})),
              ("flag", {k: v for k, v in (flag_values or {}).items() if v is not None})]  # fmt: skip
    for source, values in layers:
        _check_keys(
            values, {"preset": "preset", "file": "config file", "flag": "command line"}[source]
        )
    return layers


def resolve_run_config(
    file_values: Mapping[str, Any] | None = None,
    preset: Mapping[str, Any] | None = None,
    flag_values: Mapping[str, Any] | None = None,
) -> Any:
    """One RunConfig from the layers: flags > file > preset > RunConfig's defaults.

    Args:
        file_values: from :func:`load_config_file` (or None).
        preset: e.g. :data:`PAPER_PRESET` for ``--paper`` (or None).
        flag_values: from the command line; a None value means the flag was not given.

    Returns:
        the validated :class:`fsnn.experiment.config.RunConfig`.

    Raises:
        FsnnError: an unknown field in any layer, or a value RunConfig rejects.
    """
    merged: dict[str, Any] = {}
    for _, values in _layers(file_values, preset, flag_values):
        merged.update(values)
    try:
        return _run_config_type()(**merged)
    except (TypeError, ValueError) as exc:
        raise FsnnError(f"invalid run configuration: {exc}") from None


def config_sources(
    file_values: Mapping[str, Any] | None = None,
    preset: Mapping[str, Any] | None = None,
    flag_values: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Field name -> where its value comes from: ``flag``, ``file``, ``preset`` or ``default``."""
    sources = dict.fromkeys(_fields(), "default")
    for source, values in _layers(file_values, preset, flag_values):
        for key in values:
            sources[key] = source
    return sources


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML basic string


def format_config(config: Any, sources: Mapping[str, str] | None = None) -> str:
    """The resolved config as TOML (loadable by :func:`load_config_file`), printed at a run's start.

    Args:
        config: a RunConfig.
        sources: from :func:`config_sources`; each line then says where its value came from.
    """
    sources = sources or {}
    hints = type(config).flat_fields()
    lines = ["# fsnn run configuration (precedence: flags > file > preset > defaults)"]
    tables = []
    for name, value in config.flat().items():
        note = f"  # {sources[name]}" if name in sources else ""
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            body = "\n".join(
                f"{k} = {_toml_value(v)}" for k, v in dataclasses.asdict(value).items()
            )
            tables.append(f"[{name}]{note}\n{body}")
        elif value is None and str in typing.get_args(hints[name]):
            lines.append(f'{name} = "{_NONE_WORD}"{note}')
        elif value is None:  # TOML has no null: left out, so the default applies on reload
            lines.append(f"# {name} = (none){note}")
        else:
            lines.append(f"{name} = {_toml_value(value)}{note}")
    return "\n".join(lines + [""] + tables) + "\n"


def resolve_from_cli(
    config_path: str | Path | None, paper: bool, flag_values: Mapping[str, Any]
) -> tuple[Any, str]:
    """What ``fsnn run --config FILE --paper FLAGS...`` runs, and the header it prints.

    Args:
        config_path: the ``--config`` file, or None.
        paper: ``--paper`` given.
        flag_values: RunConfig field -> flag value (None: not given).

    Returns:
        the RunConfig and :func:`format_config` of it with each value's source.
    """
    file_values = load_config_file(config_path) if config_path is not None else {}
    preset = PAPER_PRESET if paper else {}
    config = resolve_run_config(file_values, preset, flag_values)
    return config, format_config(config, config_sources(file_values, preset, flag_values))
