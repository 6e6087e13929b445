"""The one exception type users see: a clear, one-line message naming the problem."""

from __future__ import annotations

__all__ = ["BackendUnavailable", "FsnnError"]


class FsnnError(Exception):
    """A user-facing error: bad input, missing package, unreadable file, bad config.

    The CLI prints ``str(error)`` on one line and exits with status 2, never a traceback.
    """


class BackendUnavailable(FsnnError):
    """The execution service could not run a call: network down or an HTTP status,
    after the retries. Nothing about the call's inputs: a search stops on it (its trials
    stay pending and resume unchanged) instead of failing trials one after another."""
