"""`engagement-consumer run`: the daemon."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from consumer.errors import ConfigError


def add_parser(sub: Any) -> None:
    """Register `run`."""
    p = sub.add_parser("run", help="run the daemon (configuration from the environment)")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    """Load the configuration (exit 1 with one line per problem), then run until SIGTERM/SIGINT."""
    from consumer import logs
    from consumer.app import App
    from consumer.cli import run_async
    from consumer.config import load_settings

    try:
        settings = load_settings()
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return 1
    logs.configure(settings.log_level, settings.log_format)

    async def serve() -> int:
        return await App(settings).run()

    return run_async(serve())
