"""The ``fsnn`` command line (also ``python -m fsnn``).

Each feature module contributes its subcommands through ``add_commands(subparsers)``;
a handler receives the parsed args and returns an exit status. Errors a user can fix
(:class:`fsnn.errors.FsnnError`) print one line and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import __version__
from .errors import FsnnError

# Modules that define add_commands(subparsers); one line each, in help order.
_MODULES = (
    "fsnn.commands",
    "fsnn.judges.agreement",
    "fsnn.release",
    "fsnn.figures",
    "fsnn.inspect",
    "fsnn.report",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fsnn", description="Fusion Steering (arXiv:2505.22572) with nnsight."
    )
    parser.add_argument("--version", action="version", version=f"fsnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _MODULES:
        importlib.import_module(name).add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except FsnnError as exc:
        print(f"fsnn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fsnn: interrupted (rerun the same command to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
