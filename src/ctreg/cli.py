"""`ctreg` command line.  ``main(argv) -> int`` is testable without a subprocess.

Each subcommand has an ``_add_<name>(subparsers)`` that declares its arguments and a
``_cmd_<name>(args) -> int`` that runs it.  Progress and errors go to stderr; results to stdout.
"""
from __future__ import annotations

import argparse
import logging
import sys

from . import __version__
from .errors import CTRegError


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ctreg", description="Register two chest CT scans of one patient.")
    p.add_argument("--version", action="version", version=f"ctreg {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(sub)
    return p


_SUBCOMMANDS: list = []


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="ctreg: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args))
    except CTRegError as exc:
        print(f"ctreg {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"ctreg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
