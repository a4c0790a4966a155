"""`demo --record FILE`: what the stand-in API accepted, as JSON, for a check outside the demo.

The demo's own summary counts from the daemon's metrics; a test wants the other side's record:
every attribute the sandbox answered 2xx, with its visit, in arrival order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson


def write_record(path: Path, api: Any, seed: int, events: int) -> None:
    """Write {"seed", "events", "accepted": [[account, visitor, sid, attribute], ...]} to `path`."""
    accepted = [[visit.account, visit.visitor, visit.sid, attribute] for visit, attribute in api.delivered()]
    record = {"seed": seed, "events": events, "accepted": accepted}
    path.write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2))
