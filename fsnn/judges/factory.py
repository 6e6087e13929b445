"""Building judges from configs or spec strings, and checking a spec before any load.

The backends (:mod:`~fsnn.judges.http`, :mod:`~fsnn.judges.local`) import
:mod:`~fsnn.judges.base`; this module is the only one that knows them all, and imports
each lazily, so ``base`` never imports its own subclasses (no import cycle) and
choosing an HTTP judge never imports torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fsnn.errors import FsnnError

from .base import Judge, JudgeConfig
from .cache import JudgeCache

__all__ = ["KEYED_HOSTS", "check_judge_spec", "make_judge"]

# Hosted APIs that refuse requests without a key: an http judge there needs api_key_env.
KEYED_HOSTS = {
    "api.mistral.ai": "MISTRAL_API_KEY",
    "api.openai.com": "OPENAI_API_KEY",
}


def check_judge_spec(spec: JudgeConfig | str, **overrides: Any) -> JudgeConfig | None:
    """Check a judge spec completely without loading a model or contacting a server.

    Checks the spec's form (``local:MODEL``, ``http:MODEL@BASE_URL``, ``mistral``), the
    settings (via :class:`JudgeConfig`), that an http base URL is an ``http(s)://`` URL,
    that a hosted API that needs a key has ``api_key_env`` and that the variable it
    names is set (its value is never read into a message), and for local judges that
    the model is a known alias whose packages are installed, an existing ``.gguf``
    file or checkpoint folder, or a hub id ``org/name``; the dtype is known and a CUDA
    device exists.

    Args:
        spec: a :class:`JudgeConfig` or a spec string.
        overrides: settings applied on top of a spec string (as
            :meth:`JudgeConfig.from_spec` takes them).

    ``offline`` (or ``offline:PATH``) is checked by reading its calibration file.

    Returns:
        the validated config (None for the offline judge; callers may ignore it).

    Raises:
        FsnnError: one line naming the problem and the spec.
    """
    if isinstance(spec, str) and spec.partition(":")[0] == "offline":
        from .offline import OfflineJudge

        OfflineJudge(spec.partition(":")[2] or None)  # reads and checks the calibration file
        return None
    config = spec if isinstance(spec, JudgeConfig) else JudgeConfig.from_spec(spec, **overrides)
    label = config.judge_id
    if config.backend == "http":
        url = urlsplit(config.base_url or "")
        if url.scheme not in ("http", "https") or not url.netloc:
            raise FsnnError(
                f"judge {label}: base URL {config.base_url!r} is not an http:// or https:// URL"
            )
        host = (url.hostname or "").lower()
        if config.api_key_env is None and host in KEYED_HOSTS:
            raise FsnnError(
                f"judge {label}: {host} needs an API key; set api_key_env to the name of the "
                f"variable that holds it (e.g. {KEYED_HOSTS[host]})"
            )
    else:
        _check_local_model(config, label)
    if config.api_key_env is not None and not os.environ.get(config.api_key_env):
        raise FsnnError(f"judge {label}: environment variable {config.api_key_env} is not set")
    return config


def _check_local_model(config: JudgeConfig, label: str) -> None:
    from fsnn.models.load import DTYPES

    if config.dtype not in DTYPES:
        raise FsnnError(
            f"judge {label}: unknown dtype {config.dtype!r}; choose one of {', '.join(DTYPES)}"
        )
    if config.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise FsnnError(
                f"judge {label}: device {config.device!r} asked for but CUDA is not available"
            )
    from fsnn.models.load import check_model_spec

    try:
        check_model_spec(config.model)
    except FsnnError as exc:
        raise FsnnError(f"judge {label}: {exc}") from None


def make_judge(
    config: JudgeConfig | str,
    *,
    cache: JudgeCache | str | Path | None = "default",
    model: Any = None,
) -> Judge:
    """Build the judge a config (or a spec string, see :meth:`JudgeConfig.from_spec`) names.

    Args:
        config: the judge's settings, or a spec such as ``local:qwen2.5-coder-1.5b``.
        cache: ``"default"`` (``$FSNN_CACHE_DIR/judges/answers.sqlite``), a path, an open
            :class:`JudgeCache`, or None for no cache.
        model: local judges: an already loaded :class:`fsnn.models.load.LoadedModel` to use
            instead of loading ``config.model`` (loaded lazily on the first cache miss).
    """
    if isinstance(config, str) and config.partition(":")[0] == "offline":
        from .offline import OfflineJudge

        return OfflineJudge(config.partition(":")[2] or None)
    if isinstance(config, str):
        config = JudgeConfig.from_spec(config)
    if isinstance(cache, str) and cache == "default":
        cache = JudgeCache()
    elif isinstance(cache, (str, Path)):
        cache = JudgeCache(cache)
    if config.backend == "http":
        from .http import HttpJudge

        return HttpJudge(config, cache=cache)
    from .local import LocalJudge

    return LocalJudge(config, cache=cache, model=model)
