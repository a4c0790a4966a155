"""Test harness: the real broker, the stand-in API in a thread, the daemon as a subprocess, helpers.

Factory fixtures clean up after themselves (arq style): every daemon started is stopped, every
API server closed. Nothing here sleeps to synchronise: `wait_until` polls a condition with a deadline.
The one clock-only wait is `hold_for`: the duration of an injected fault, not a synchronisation.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from consumer.config.credentials import Credentials
from consumer.sandbox.api import SandboxAPI
from consumer.sandbox.broker import LocalBroker, free_port

__all__ = [
    "CREDS",
    "Daemon",
    "LocalBroker",
    "ThreadedAPI",
    "Topics",
    "dead_letter_reasons",
    "free_port",
    "hold_for",
    "next_id",
    "read_to_end",
    "read_topic",
    "wait_until",
]

CREDS = Credentials("test-consumer-key", "test-consumer-secret", "test-token", "test-token-secret")
_ids = itertools.count(1)


def next_id() -> int:
    """A number unique in this test session."""
    return next(_ids)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll `predicate` until it returns something truthy, or fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def hold_for(seconds: float, what: str) -> None:
    """Let an injected fault last `seconds` (a fault's duration, never a synchronisation: use wait_until)."""
    if seconds > 0:
        print(f"holding {seconds:.1f}s: {what}")  # shown with a failure: which fault held how long
        time.sleep(seconds)


@dataclass
class Topics:
    """A test's own topics and consumer group."""

    leads: str
    services: str
    dlq: str
    group: str
    partitions: int
    park: str = ""  # the park topic ("": no park)

    def env(self) -> dict[str, str]:
        """The daemon's environment for these topics."""
        return {
            "LEAD_TOPICS": self.leads,
            "SERVICE_TOPICS": self.services,
            "DLQ_TOPIC": self.dlq,
            "PARK_TOPIC": self.park,
            "KAFKA_GROUP_ID": self.group,
        }


@dataclass
class Produced:
    """What a test produced: per message its topic, partition, offset (from delivery reports)."""

    records: list[tuple[str, int, int]] = field(default_factory=list)

    def end_offsets(self) -> dict[tuple[str, int], int]:
        """One past the last produced offset per partition."""
        out: dict[tuple[str, int], int] = {}
        for t, p, o in self.records:
            out[(t, p)] = max(out.get((t, p), 0), o + 1)
        return out


def produce(broker: LocalBroker, messages: list[tuple[Any, ...]]) -> Produced:
    """Produce (topic, key, value[, headers]) messages; wait for every delivery report; records in order."""
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    slots: list[tuple[str, int, int] | None] = [None] * len(messages)
    errors: list[str] = []

    def reporter(i: int) -> Callable[[Any, Any], None]:
        def report(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                slots[i] = (msg.topic(), msg.partition(), msg.offset())

        return report

    for i, (topic, key, value, *headers) in enumerate(messages):
        producer.produce(
            topic, key=key, value=value, headers=headers[0] if headers else None, on_delivery=reporter(i)
        )
        producer.poll(0)
    assert producer.flush(30) == 0, "produce did not finish"
    assert not errors, errors
    assert all(s is not None for s in slots)
    return Produced([s for s in slots if s is not None])


def event(account: str, visitor: str, sid: str = "sid-1", **fields: Any) -> bytes:
    """An event message value."""
    return json.dumps({"account": account, "visitor": visitor, "sid": sid, **fields}).encode()


# Errors that mean the topic or partition is not there (a reader must fail, not return nothing).
_MISSING = {
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError._UNKNOWN_PARTITION,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
}


def read_to_end(
    bootstrap: str, topic: str, at_least: int = 0, timeout: float = 20.0, **config: Any
) -> list[Any]:
    """Every message of a topic, from the start to the end of each partition (assign + EOF, no group).

    Fails when the topic does not exist. With `at_least`, waits until that many messages are there
    (still reading to the end, so extra messages are returned, not left unseen).
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{next(_ids)}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 50,
            **config,
        }
    )
    out: list[Any] = []
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        assert meta is not None and meta.error is None and meta.partitions, (
            f"{topic}: no such topic ({meta.error if meta is not None else 'not in metadata'})"
        )
        parts = list(meta.partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(at_end) < len(parts) or len(out) < at_least:
            assert time.monotonic() < deadline, (
                f"{topic}: {len(out)} messages (wanted at least {at_least}), "
                f"{len(at_end)} of {len(parts)} partitions at their end within {timeout}s"
            )
            for m in consumer.consume(500, 0.2):
                err = m.error()
                if err is None:
                    out.append(m)
                    at_end.discard(m.partition())
                elif err.code() == KafkaError._PARTITION_EOF:
                    at_end.add(m.partition())
                elif err.code() in _MISSING or err.fatal():
                    raise AssertionError(f"{topic}: {err.str()}")
    finally:
        consumer.close()
    return out


def read_topic(broker: LocalBroker, topic: str, count: int, timeout: float = 30.0) -> list[Any]:
    """Exactly `count` messages of a topic: waits for them, reads to the end, fails on more or fewer."""
    out = read_to_end(broker.bootstrap, topic, at_least=count, timeout=timeout)
    assert len(out) == count, f"{topic}: {len(out)} messages, expected exactly {count}"
    return out


def dead_letter_reasons(broker: LocalBroker, topic: str) -> list[str]:
    """The `dlq.reason` of every dead letter in a DLQ topic, read to its end.

    Checks that nothing was dead-lettered read this, not a metric: a counter child is absent
    until first counted, and a dead letter with another reason than the one asked about is missed.
    Read after the daemon stopped (its dead letters flushed) or after the commits passed the
    records in question (a dead letter is acknowledged before its record counts as done).
    """
    return [dict(m.headers())["dlq.reason"].decode() for m in read_to_end(broker.bootstrap, topic)]


def committed(
    broker: LocalBroker, group: str, partitions: list[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """The group's committed offsets."""
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    try:
        got = consumer.committed([TopicPartition(t, p) for t, p in partitions], timeout=10)
    finally:
        consumer.close()
    return {(tp.topic, tp.partition): tp.offset for tp in got}


class Daemon:
    """The real daemon (`python -m consumer run`) as a subprocess with its log in a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.http_port = int(env["HTTP_PORT"])
        self._log = open(log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "consumer", "run"], env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def get(self, path: str) -> tuple[int, str]:
        """GET a path of the operations server: (status, body); (0, error) when not reachable."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError as e:
            return 0, str(e)

    def wait_ready(self, timeout: float = 40.0) -> None:
        """Wait until /readyz answers 200 (joined, session open, not halted)."""

        def ready() -> bool:
            assert self.proc.poll() is None, f"daemon exited early:\n{self.logs()[-3000:]}"
            return self.get("/readyz")[0] == 200

        wait_until(ready, timeout, "daemon ready")

    def logs(self) -> str:
        """Everything the daemon logged so far."""
        return self.log_path.read_text(errors="replace")

    def log_events(self) -> list[dict[str, Any]]:
        """The JSON log lines, parsed."""
        out = []
        for line in self.logs().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def scrape(self) -> tuple[set[str], dict[tuple[str, frozenset[tuple[str, str]]], float]]:
        """/metrics parsed: (sample names the daemon declares, {(sample name, labels): value})."""
        status, body = self.get("/metrics")
        assert status == 200, f"/metrics answered {status}: {body[:200]}"
        declared: set[str] = set()
        samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(body):
            declared.add(family.name)
            declared.update(f"{family.name}_{suffix}" for suffix in _SUFFIXES.get(family.type, ()))
            for s in family.samples:  # an empty label value is no label (as Prometheus reads it)
                samples[(s.name, frozenset((k, v) for k, v in s.labels.items() if v))] = s.value
        return declared, samples

    def metric(self, name: str, **labels: str) -> float:
        """One sample of /metrics, with exactly these labels; fails when it is absent."""
        declared, samples = self.scrape()
        key = (name, frozenset(labels.items()))
        if key not in samples:
            near = sorted(dict(k[1]) for k in samples if k[0] == name)
            raise AssertionError(
                f"no sample {name}{labels or ''} in /metrics"
                + (f" (label sets there: {near})" if near else "")
                + ("" if name in declared else f"; {name} is not declared at all")
            )
        return samples[key]

    def metric_or_zero(self, name: str, **labels: str) -> float:
        """A counter/gauge child that may not exist yet (0 then); the metric itself must be declared."""
        declared, samples = self.scrape()
        assert name in declared, f"{name} is not declared in /metrics (renamed?)"
        return samples.get((name, frozenset(labels.items())), 0.0)

    def metric_sum(self, name: str) -> float:
        """A declared metric summed over every label set (0 when it has no children yet)."""
        declared, samples = self.scrape()
        assert name in declared, f"{name} is not declared in /metrics (renamed?)"
        return sum(v for (n, _), v in samples.items() if n == name)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int:
        """Send a signal and wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        """SIGKILL, no goodbye."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


# The sample names a family of each type exposes besides its own name.
_SUFFIXES = {
    "counter": ("total", "created"),
    "histogram": ("bucket", "count", "sum", "created"),
    "summary": ("count", "sum", "created"),
}


class ThreadedAPI:
    """The stand-in API served from its own thread and loop, so sync tests can drive a subprocess."""

    def __init__(self, credentials: Credentials = CREDS) -> None:
        self.api = SandboxAPI(credentials)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sandbox-api", daemon=True)

    def start(self, ssl_context: ssl.SSLContext | None = None) -> ThreadedAPI:
        """Serve on 127.0.0.1 (random port); HTTPS with `ssl_context`."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.api.start(ssl_context=ssl_context), self._loop).result(10)
        return self

    def on_loop(self, action: Callable[[], Any]) -> None:
        """Run `action` on the API's own loop (e.g. change its TLS certificate) and wait for it."""

        async def run() -> None:
            action()

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def stop(self) -> None:
        """Stop serving and end the thread."""
        asyncio.run_coroutine_threadsafe(self.api.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.api, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("api", "_loop", "_thread"):
            object.__setattr__(self, name, value)
        else:  # scripting attributes (latency, throttle_rps, ...) belong to the API itself
            setattr(self.api, name, value)

    def wait_delivered(self, count: int, timeout: float = 30.0) -> None:
        """Wait until at least `count` attributes were answered 2xx (the failure says what there was then)."""
        try:
            wait_until(lambda: len(self.api.delivered()) >= count, timeout, f"{count} attributes delivered")
        except AssertionError as exc:
            seen = f"have {len(self.api.delivered())}, statuses {dict(self.api.requests_by_status())}"
            raise AssertionError(f"{exc} ({seen})") from None
