"""The one exception type users see: a clear, one-line message naming the problem."""

from __future__ import annotations

__all__ = ["FsnnError"]


class FsnnError(Exception):
    """A user-facing error: bad input, missing package, unreadable file, bad config.

    The CLI prints ``str(error)`` on one line and exits with status 2, never a traceback.
    """
