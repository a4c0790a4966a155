"""A batch the consumer cannot decompress, served by a real Kafka-protocol broker (librdkafka's mock
cluster over loopback TCP): every offset of it ends as a dead letter, and the partition goes on.

The broken batch is written with a raw Produce request (v3, one RecordBatch v2 that says gzip but
holds no gzip data); the mock broker stores batches as they come. librdkafka then reports
`_BAD_COMPRESSION` at the batch's base offset on every fetch of any offset inside it, without
moving on: the partition would stall, and used to be skipped by the daemon.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from harness import Topics, event, read_to_end, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


@pytest.fixture
def mock_bootstrap() -> Iterator[str]:
    """librdkafka's mock cluster, hosted by a Producer in this process, reachable over loopback TCP."""
    host = Producer({"test.mock.num.brokers": 1, "bootstrap.servers": "", "log_level": 2})
    broker = next(iter(host.list_topics(timeout=10).brokers.values()))
    yield f"{broker.host}:{broker.port}"
    host.flush(5)


def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def broken_batch(records: int) -> bytes:
    """A RecordBatch v2 of `records` records whose attributes say gzip and whose payload is not."""
    now = int(time.time() * 1000)
    payload = b"\x00\x01 this is not gzip data"
    after_crc = struct.pack(">hiqqqhii", 1, records - 1, now, now, -1, -1, -1, records) + payload
    head = struct.pack(">ib", 0, 2) + struct.pack(">I", _crc32c(after_crc))
    return struct.pack(">qi", 0, len(head) + len(after_crc)) + head + after_crc


def produce_raw(bootstrap: str, topic: str, partition: int, batch: bytes) -> int:
    """One Produce v3 request (acks=all); the base offset the broker gave the batch."""

    def string(s: str) -> bytes:
        return struct.pack(">h", len(s)) + s.encode()

    body = struct.pack(">hhi", 0, 3, 1) + string("raw-test") + struct.pack(">hhi", -1, -1, 5000)
    body += struct.pack(">i", 1) + string(topic) + struct.pack(">ii", 1, partition)
    body += struct.pack(">i", len(batch)) + batch
    host, port = bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", sock.recv(4))[0]
        data = b""
        while len(data) < size:
            chunk = sock.recv(size - len(data))
            assert chunk, "connection closed"
            data += chunk
    at = 4 + 4  # correlation id, topic count
    at += 2 + struct.unpack_from(">h", data, at)[0] + 4  # topic name, partition count
    _, error, base = struct.unpack_from(">ihq", data, at)
    assert error == 0, f"produce refused: error {error}"
    return int(base)


def test_every_offset_of_an_undecompressable_batch_is_dead_lettered_and_the_partition_goes_on(
    mock_bootstrap: str, topics: Topics, api, daemon_env, start_daemon
) -> None:
    producer = Producer({"bootstrap.servers": mock_bootstrap})  # creates the topics on first use
    producer.produce(topics.leads, event("1234", "v", topic="before"), key=b"v", partition=0)
    assert producer.flush(10) == 0
    base = produce_raw(mock_bootstrap, topics.leads, 0, broken_batch(3))
    producer.produce(topics.leads, event("1234", "v", topic="after"), key=b"v", partition=0)
    assert producer.flush(10) == 0
    assert base == 1
    env = daemon_env(api.base_url, KAFKA_BOOTSTRAP_SERVERS=mock_bootstrap)
    daemon = start_daemon(env)
    api.wait_delivered(2, timeout=30)
    letters = read_to_end(mock_bootstrap, topics.dlq, at_least=3, timeout=20)
    headers = [{k: (v or b"").decode() for k, v in m.headers() or []} for m in letters]
    assert sorted(int(h["dlq.offset"]) for h in headers) == [1, 2, 3]
    assert {h["dlq.reason"] for h in headers} == {"consume_error"}
    assert all("_BAD_COMPRESSION" in h["dlq.error"] and h["dlq.topic"] == topics.leads for h in headers)
    assert all(not m.value() for m in letters)
    tp = (topics.leads, 0)
    wait_until(lambda: committed_on(mock_bootstrap, topics.group, tp) == 5, 20, "committed past the batch")
    assert [b["lead"]["topic"] for _, b in api.delivered()] == ["before", "after"]
    assert daemon.metric("engagement_invalid_events_total", reason="consume_error") == 3


def committed_on(bootstrap: str, group: str, tp: tuple[str, int]) -> int:
    """The group's committed offset of one partition on the mock cluster."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 2})
    try:
        (got,) = consumer.committed([TopicPartition(*tp)], timeout=10)
    finally:
        consumer.close()
    return int(got.offset)


def test_reports_that_piled_up_while_the_poll_thread_waited_do_not_walk_into_readable_records(
    mock_bootstrap: str, topics: Topics
) -> None:
    """Issue 17 item 4: the walker took every repeated report as proof that the next offset is broken.

    librdkafka fetches ahead while the poll thread waits for the loop (MAX_BATCHES_AHEAD), reporting
    the broken batch again after each fetch error backoff; one consume() then returns several
    reports fetched before the walker's seek. Each used to hand one more offset over as unreadable:
    readable records after a one-record broken batch became empty dead letters, never fetched.
    """
    from consumer.kafka.source import _seek
    from consumer.kafka.unreadable import StuckBatches, unreadable_record

    producer = Producer({"bootstrap.servers": mock_bootstrap})
    producer.produce(topics.leads, b"before", partition=0)
    assert producer.flush(10) == 0
    base = produce_raw(mock_bootstrap, topics.leads, 0, broken_batch(1))
    for i in range(10):
        producer.produce(topics.leads, f"after-{i}".encode(), partition=0)
    assert producer.flush(10) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": mock_bootstrap,
            "group.id": topics.group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "log_level": 2,
        }
    )
    consumer.subscribe([topics.leads])
    stuck = StuckBatches()
    handed: dict[int, bytes | None] = {}
    piled = 0
    deadline = time.monotonic() + 40
    try:
        while len(handed) < 12 and time.monotonic() < deadline:
            messages = consumer.consume(500, 0.1)
            reports = sum(1 for m in messages if unreadable_record(m) is not None)
            if reports and not piled:
                time.sleep(2.0)  # the poll thread waits for a busy loop; librdkafka keeps fetching
                piled = -1
            elif reports and piled < 0:
                piled = reports
            for m in stuck.filter(messages, lambda t, p, o: _seek(consumer, t, p, o)):
                if m.error() is None or unreadable_record(m) is not None:
                    assert m.offset() not in handed, f"offset {m.offset()} handed over twice"
                    handed[m.offset()] = None if m.error() else m.value()
    finally:
        consumer.close()
    assert piled >= 2, "precondition: several reports fetched before the seek came in one batch"
    assert handed == {0: b"before", base: None, **{base + 1 + i: f"after-{i}".encode() for i in range(10)}}
