"""Shared fixtures (factories clean up after themselves); the machinery lives in harness.py."""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import CREDS, Daemon, LocalBroker, ThreadedAPI, Topics, free_port, next_id
from promserver import PromServer


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """One Tansu broker for the session; tests isolate themselves with their own topics and groups."""
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with LocalBroker(log_path=log) as b:
        yield b


@pytest.fixture
def topics(broker: LocalBroker) -> Topics:
    """Fresh lead/service/dead-letter/park topics (3 partitions each; DLQ 1) and a fresh group id."""
    n = next_id()
    t = Topics(f"leads-{n}", f"services-{n}", f"dlq-{n}", f"group-{n}", 3, f"park-{n}")
    broker.create_topics({t.leads: 3, t.services: 3, t.dlq: 1, t.park: 3})
    return t


@pytest.fixture
def daemon_env(broker: LocalBroker, topics: Topics) -> Callable[..., dict[str, str]]:
    """Build a daemon environment for a base URL, with fast test timings; overrides as keywords."""

    def build(base_url: str, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "LP_"))}
        env.update(topics.env())
        env.update(
            {
                "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                "KAFKA_SESSION_TIMEOUT_MS": "6000",
                "KAFKA_HEARTBEAT_INTERVAL_MS": "500",
                "COMMIT_INTERVAL_S": "0.5",
                "LP_BASE_URL": base_url,
                "LP_CONSUMER_KEY": CREDS.consumer_key,
                "LP_CONSUMER_SECRET": CREDS.consumer_secret,
                "LP_ACCESS_TOKEN": CREDS.access_token,
                "LP_ACCESS_TOKEN_SECRET": CREDS.access_token_secret,
                "HTTP_PORT": str(free_port()),
                "RETRY_INITIAL_S": "0.05",
                "RETRY_MAX_BACKOFF_S": "0.5",
                "RETRY_MAX_ELAPSED_S": "20",
                "NOT_FOUND_BACKOFF_S": "0.05",
                "HALT_BACKOFF_INITIAL_S": "0.2",
                "HALT_BACKOFF_MAX_S": "1",
                "HTTP_TIMEOUT_S": "2",
                "SHUTDOWN_DRAIN_S": "10",
                "REVOKE_DRAIN_S": "5",
                "STATS_INTERVAL_MS": "500",
                "LOG_FORMAT": "json",
            }
        )
        env.update(overrides)
        return env

    return build


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Start daemons from an environment; each is stopped (SIGTERM, then SIGKILL) at teardown."""
    started: list[Daemon] = []
    n = itertools.count(1)

    def start(env: dict[str, str], wait_ready: bool = True) -> Daemon:
        d = Daemon(env, tmp_path / f"daemon-{next(n)}.log")
        started.append(d)
        if wait_ready:
            d.wait_ready()
        return d

    yield start
    for d in started:
        if d.proc.poll() is None:
            try:
                d.stop(timeout=20)
            except subprocess.TimeoutExpired:
                d.kill()


@pytest.fixture
def api() -> Iterator[ThreadedAPI]:
    """A running stand-in API that checks OAuth signatures, path, query and headers."""
    server = ThreadedAPI().start()
    yield server
    server.stop()


@pytest.fixture
def start_prometheus(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], PromServer]]:
    """Start Prometheus servers from a config (loopback, own storage); each is stopped at teardown.

    Skips naming the binary when `prometheus` is not on PATH (fails instead under CI=true)."""
    started: list[PromServer] = []
    n = itertools.count(1)

    def start(config: dict[str, Any]) -> PromServer:
        server = PromServer(config, tmp_path / f"prometheus-{next(n)}")
        started.append(server)
        return server.wait_ready()

    yield start
    for server in started:
        server.stop()
