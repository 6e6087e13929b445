"""The steering modes and the generation length: what they may be, checked in one place.

``faithful`` recomputes every position at every decoding step with the steering applied
(the release's method, no KV cache); ``cached`` steers the prompt pass and each new
token once, with the KV cache (docs/method.md §9). Torch-free: configs use it.
"""

from __future__ import annotations

from typing import Literal, cast

from fsnn.errors import FsnnError

__all__ = ["MODES", "Mode", "as_mode", "check_generation"]

Mode = Literal["faithful", "cached"]
MODES: tuple[str, ...] = ("faithful", "cached")


def check_generation(*, mode: str | None = None, max_new_tokens: int | None = None) -> None:
    """Raise a one-line :class:`FsnnError` for an unknown mode or a length below 1."""
    if mode is not None and mode not in MODES:
        raise FsnnError(f"unknown steering mode {mode!r}: mode must be faithful or cached")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise FsnnError(f"max_new_tokens must be >= 1, got {max_new_tokens}")


def as_mode(mode: str) -> Mode:
    """``mode`` (e.g. a config's string) as a :data:`Mode`; one-line FsnnError if unknown."""
    check_generation(mode=mode)
    return cast(Mode, mode)
