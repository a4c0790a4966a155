"""Faults injected into the daemon's own interpreter (this folder on its PYTHONPATH): bugs on demand.

RELIABILITY_FAULT_INTAKE=<marker>: reading a message whose value holds the marker raises
RuntimeError, as an intake bug met by one record would (scenario 17a). Nothing else is changed.
"""

from __future__ import annotations

import os
from typing import Any

_MARKER = os.environ.get("RELIABILITY_FAULT_INTAKE", "").encode()

if _MARKER:
    from consumer.formats import reader

    _read = reader.EventReader.read

    def _faulty_read(self: reader.EventReader, topic: str, value: bytes | None, headers: Any) -> Any:
        if value and _MARKER in value:
            raise RuntimeError("fault injected by the reliability suite")
        return _read(self, topic, value, headers)

    reader.EventReader.read = _faulty_read  # type: ignore[method-assign]
