"""Fixtures of the reliability suite: a recorder for the figures (results.json), and common steps."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from harness import Daemon, LocalBroker, free_port
from kafka_io import MockCluster
from mock_faults import FaultyMockCluster
from scenario import Figures
from tcp_proxy import TcpProxy

RESULTS = Path(os.environ.get("RELIABILITY_RESULTS", Path(__file__).parent / "out" / "results.json"))


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
        return out.stdout.strip()
    except OSError:
        return ""


@dataclass
class Recorder:
    """One scenario's row(s) in results.json: figures, injection, seconds."""

    test: str
    started: float = field(default_factory=time.monotonic)

    def record(self, scenario: str, title: str, injection: str, figures: Figures, **extra: Any) -> None:
        """Merge a row into results.json (keyed by scenario id; a rerun replaces the row)."""
        row = {
            "scenario": scenario,
            "title": title,
            "injection": injection,
            **figures.row(),
            "seconds": round(time.monotonic() - self.started, 1),
            "test": self.test,
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": _commit(),
            **extra,
        }
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        rows = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
        rows = [r for r in rows if r.get("scenario") != scenario] + [row]
        rows.sort(key=lambda r: r["scenario"])
        tmp = RESULTS.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows, indent=2) + "\n")
        tmp.replace(RESULTS)
        print(f"\n[{scenario}] {json.dumps({k: row[k] for k in figures.row()} | {'s': row['seconds']})}")


@pytest.fixture
def recorder(request: pytest.FixtureRequest) -> Recorder:
    """Start the scenario clock; `.record(...)` writes its row."""
    return Recorder(request.node.nodeid)


@pytest.fixture
def log_events_of() -> Callable[[Daemon, str], list[dict[str, Any]]]:
    """The daemon's JSON log lines with a given event name."""

    def pick(daemon: Daemon, name: str) -> list[dict[str, Any]]:
        return [e for e in daemon.log_events() if e.get("event") == name]

    return pick


@pytest.fixture
def results_file() -> Iterator[Path]:
    """Where the figures go (tests/reliability/out/results.json unless RELIABILITY_RESULTS is set)."""
    yield RESULTS


@pytest.fixture
def proxied_broker(tmp_path: Path) -> Iterator[tuple[LocalBroker, TcpProxy]]:
    """A dedicated Tansu that advertises a loopback proxy's address: every client goes through it."""
    port = free_port()
    with TcpProxy(port) as proxy, LocalBroker(port, tmp_path / "tansu.log", advertised_port=proxy.port) as b:
        yield b, proxy


@pytest.fixture
def mock_cluster() -> Iterator[MockCluster]:
    """A librdkafka mock cluster hosted by this test process (keeps commit metadata)."""
    cluster = MockCluster()
    yield cluster
    cluster.close()


@pytest.fixture
def faulty_cluster() -> Iterator[FaultyMockCluster]:
    """A librdkafka mock cluster hosted by this test process whose answers a test can make fail."""
    cluster = FaultyMockCluster()
    yield cluster
    cluster.close()
