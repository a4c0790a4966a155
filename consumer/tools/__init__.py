"""Sub-commands of the CLI; each module has `add_parser(subparsers)` that sets `handler`."""

from __future__ import annotations

from types import ModuleType

from consumer.tools import check_config, convert, demo, produce, replay, run, top

COMMANDS: list[ModuleType] = [run, check_config, convert, produce, replay, demo, top]
