"""The `engagement-consumer` command: `run` the daemon, plus operator tools (each with --help)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from consumer import __version__
from consumer.tools import COMMANDS


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-command per tool."""
    parser = argparse.ArgumentParser(
        prog="engagement-consumer",
        description="Kafka lead/service events -> LivePerson Engagement Attributes, at least once.",
        epilog="Configuration comes from the environment (see README.md / config/defaults.env).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run the chosen command; return the exit code."""
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
