"""The reliability suite's Kafka side: a paced producer, reading a topic to its end, committed offsets."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, Producer, TopicPartition
from harness import read_to_end

if TYPE_CHECKING:
    from scenario import Spec

QUIET = {"log_level": 2}  # the suite's own clients: no "connection refused" noise during cuts
TP = tuple[str, int]


class Stream:
    """Produce specs from a thread at `rate` messages/s (None: as fast as possible); offsets from reports."""

    def __init__(self, bootstrap: str, specs: list[Spec], rate: float | None = None, chunk: int = 20) -> None:
        self.specs = specs
        self.rate = rate
        self.chunk = chunk
        self.acked = 0
        self.errors: list[str] = []
        self._producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all", **QUIET})
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stream", daemon=True)

    def start(self) -> Stream:
        """Begin producing."""
        self._thread.start()
        return self

    def join(self, timeout: float = 60.0) -> None:
        """Wait until every spec is produced and acknowledged."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"stream still producing after {timeout}s ({self.acked} acked)"
        assert not self.errors, self.errors[:5]
        assert self.acked == len(self.specs), f"{self.acked} of {len(self.specs)} acknowledged"

    def _run(self) -> None:
        began = time.monotonic()
        for n, spec in enumerate(self.specs):
            self._producer.produce(
                spec.topic,
                key=spec.key,
                value=spec.value,
                headers=spec.headers,
                on_delivery=self._report(spec),
            )
            if (n + 1) % self.chunk == 0:
                self._producer.poll(0)
                if self.rate:
                    ahead = began + (n + 1) / self.rate - time.monotonic()
                    if ahead > 0 and self._halt.wait(ahead):  # pacing the load, not synchronising
                        break
        self._producer.flush(60)

    def _report(self, spec: Spec):  # type: ignore[no-untyped-def]
        def report(err: Any, msg: Any) -> None:
            if err is not None:
                self.errors.append(f"{spec.index}: {err}")
            else:
                spec.partition, spec.offset = msg.partition(), msg.offset()
                self.acked += 1

        return report


def produce_all(bootstrap: str, specs: list[Spec]) -> None:
    """Produce specs as fast as possible and wait for every acknowledgement."""
    Stream(bootstrap, specs).start().join()


def read_all(bootstrap: str, topic: str, timeout: float = 20.0) -> list[Any]:
    """Every message of a topic, to the end of each partition; fails when the topic does not exist."""
    return read_to_end(bootstrap, topic, timeout=timeout, **QUIET)


def committed_offsets(bootstrap: str, group: str, tps: list[TP]) -> dict[TP, int]:
    """The group's committed offsets (negative: none)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, **QUIET})
    try:
        got = consumer.committed([TopicPartition(t, p) for t, p in tps], timeout=10)
    finally:
        consumer.close()
    return {(tp.topic, tp.partition): tp.offset for tp in got}


class MockCluster:
    """librdkafka's mock cluster hosted in this process; it keeps commit metadata (Tansu drops it).

    Other processes (the daemon) reach it over loopback TCP at `bootstrap`. Topics are created on
    first use with 4 partitions; CreateTopics is not served.
    """

    PARTITIONS = 4

    def __init__(self) -> None:
        self._host = Producer({"test.mock.num.brokers": 1, "bootstrap.servers": "", **QUIET})
        brokers = self._host.list_topics(timeout=10).brokers.values()
        self.bootstrap = ",".join(f"{b.host}:{b.port}" for b in brokers)

    def create(self, *topics: str) -> None:
        """Create topics (a producer's metadata request creates them on the mock cluster)."""
        for topic in topics:
            meta = self._host.list_topics(topic, timeout=10).topics[topic]
            assert meta.error is None and len(meta.partitions) == self.PARTITIONS, (topic, meta.error)

    def close(self) -> None:
        """Stop hosting the cluster (it lives as long as its hosting client)."""
        self._host.flush(5)
        del self._host


@dataclass
class DeadLetter:
    """One record read back from the dead-letter topic."""

    origin: tuple[str, int, int]
    reason: str
    error: str
    headers: dict[str, bytes | None]
    key: bytes | None
    value: bytes | None


def dead_letters(messages: list[Any]) -> list[DeadLetter]:
    """Parse dead-letter records (origin and reason headers)."""
    out = []
    for m in messages:
        h = dict(m.headers() or [])
        origin = (h["dlq.topic"].decode(), int(h["dlq.partition"]), int(h["dlq.offset"]))
        out.append(
            DeadLetter(origin, h["dlq.reason"].decode(), h["dlq.error"].decode(), h, m.key(), m.value())
        )
    return out
