"""Environment variables fsnn reads, in one place.

| variable | meaning | default |
|---|---|---|
| ``FSNN_CACHE_DIR`` | converted models, downloaded data, judge cache | ``~/.cache/fsnn`` |
| ``FSNN_SIMPLEQA_CSV`` | path of ``simple_qa_test_set.csv`` | download from the public URL |
| ``FSNN_RELEASE_DIR`` | the authors' released CSVs (Fusion_Steering repo) | none |
| ``NDIF_API_KEY`` | NDIF key for remote runs (never stored) | none |
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "env_path"]


def cache_dir(*parts: str) -> Path:
    """``$FSNN_CACHE_DIR/<parts>`` (default ``~/.cache/fsnn``), created on demand."""
    root = Path(os.environ.get("FSNN_CACHE_DIR") or Path.home() / ".cache" / "fsnn")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def env_path(name: str) -> Path | None:
    """The path held by environment variable ``name``, or None when unset/empty."""
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None
