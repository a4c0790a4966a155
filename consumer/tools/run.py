"""`engagement-consumer run`: the daemon."""

from __future__ import annotations

import argparse
from typing import Any

from consumer.tools.common import settings_or_report


def add_parser(sub: Any) -> None:
    """Register `run`."""
    p = sub.add_parser("run", help="run the daemon (configuration from the environment)")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    """Load the configuration (exit 1 with one line per problem), then run until SIGTERM/SIGINT."""
    from consumer.app import App
    from consumer.ops import logs, tracing
    from consumer.util.aio import run_async

    settings = settings_or_report()
    if settings is None:
        return 1
    logs.configure(settings.log_level, settings.log_format, traces=tracing.configured())

    async def serve() -> int:
        return await App(settings).run()

    return run_async(serve())
