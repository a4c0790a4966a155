"""`engagement-consumer check-config`: validate the environment and print the effective configuration."""

from __future__ import annotations

import argparse
import json
from typing import Any

from consumer.tools.common import settings_or_report


def add_parser(sub: Any) -> None:
    """Register `check-config`."""
    p = sub.add_parser(
        "check-config",
        help="validate the environment; print the effective configuration with secrets masked",
        description="Exit 0 and print the effective configuration (secrets masked), "
        "or exit 1 with one line per problem.",
    )
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    """Print the masked configuration, or one line per problem and exit 1."""

    settings = settings_or_report()
    if settings is None:
        return 1
    out = settings.masked()
    out["status_policy_effective"] = settings.policy.describe()
    print(json.dumps(out, indent=2, sort_keys=True, default=str))
    return 0
