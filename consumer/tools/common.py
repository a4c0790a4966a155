"""What the sub-commands share: loading the configuration, or saying each problem on one line."""

from __future__ import annotations

import sys

from consumer.config import Settings, load_settings
from consumer.errors import ConfigError


def settings_or_report(*, require_kafka: bool = True, require_credentials: bool = True) -> Settings | None:
    """Load settings from the environment; on problems print one `config error:` line each, return None."""
    try:
        return load_settings(require_kafka=require_kafka, require_credentials=require_credentials)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return None
