"""`engagement-consumer check-config`: validate the environment and print the effective configuration."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from consumer.config import Settings
from consumer.config.credentials import PAUSED_FILE, masked, scan
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
    out["accounts"] = listing(settings)
    print(json.dumps(out, indent=2, sort_keys=True, default=str))
    return 0


def listing(settings: Settings) -> dict[str, dict[str, str]]:
    """The accounts the daemon would serve, each with its kind and where its credentials are (masked)."""
    single = {"kind": "oauth1", "source": "LP_* (single set)"}
    if settings.lp_pause_file and os.path.exists(settings.lp_pause_file):
        single["paused"] = f"yes ({settings.lp_pause_file} exists)"
    if settings.lp_credentials_dir is None:
        return {settings.lp_account or "* (every account)": single}
    found, _ = scan(Path(settings.lp_credentials_dir))
    out = {
        account: {**masked(creds), "source": str(Path(settings.lp_credentials_dir) / account)}
        for account, creds in found.items()
    }
    for account, entry in out.items():
        if (Path(settings.lp_credentials_dir) / account / PAUSED_FILE).exists():
            entry["paused"] = f"yes ({PAUSED_FILE} file in its folder)"
    if settings.lp_account:
        out[settings.lp_account] = single
    return out
