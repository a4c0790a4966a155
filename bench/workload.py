"""The events a scenario produces: visits of N lead attributes, stamped with their produce time.

Each message is a lead event of the contract (about 130 bytes), keyed by visitor so one visit stays
in one partition; its `topic` field carries ``t:<time.time()>`` at produce, so the stand-in API can
tell the produce-to-API time of every attribute. The events of one visit are produced back to back
(what coalescing needs); visits are spread over the partitions by the key.

With an encoding other than ``json`` (the `formats` scenarios) the same event is written as other
producers write it (consumer/tools/encode.py: CloudEvents, Connect envelope, Avro via a registry).
The stamp is a fixed-width placeholder replaced in the encoded bytes at produce time, so it works
inside Avro's length-prefixed strings too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from confluent_kafka import Producer

from consumer.tools.encode import Encoder

PRODUCER_CONFIG = {
    "batch.num.messages": 10000,
    "batch.size": 1_000_000,
    "queue.buffering.max.messages": 2_000_000,
    "queue.buffering.max.kbytes": 1_048_576,
    "message.timeout.ms": 120_000,
}


@dataclass
class ProduceReport:
    """What producing cost: messages, seconds, failures (from delivery reports)."""

    messages: int = 0
    seconds: float = 0.0
    failed: int = 0
    first_error: str = ""

    @property
    def rate(self) -> float:
        """Messages per second."""
        return self.messages / self.seconds if self.seconds > 0 else 0.0


def visitor_id(i: int) -> str:
    """A base64-looking visitor id (with `+`, `/` and `=`, which the URL must percent-encode)."""
    return f"Vb{i:07d}+q/Z=="


def _traceparent(v: int, k: int) -> bytes:
    """A producer's traceparent, its trace id spread over all its bits (a ratio sampler reads the low 64)."""
    trace_id = ((v + 1) * 0x9E3779B97F4A7C15F39CC0605CEDC835) & (2**128 - 1)
    return f"00-{trace_id:032x}-{k + 1:016x}-01".encode()


STAMP = b"0000000000.000000"  # replaced by b"%017.6f" % time.time() (same width) when produced
Item = tuple[bytes, bytes, list[tuple[str, bytes]] | None]


def events(
    visits: int,
    per_visit: int,
    first_visit: int = 0,
    encoding: str = "json",
    registry_url: str | None = None,
    topic: str = "",
    account: str = "1234",
    traceparent: bool = False,
) -> Iterator[Item]:
    """(key, value, headers) of `visits` visits of `per_visit` lead events; the stamp is set when produced.

    `traceparent`: each event carries a producer's W3C `traceparent` header (plain JSON only).
    """
    encoder = Encoder(encoding, registry_url) if encoding != "json" else None
    for v in range(first_visit, first_visit + visits):
        visitor = visitor_id(v)
        key = visitor.encode()
        for k in range(per_visit):
            if encoder is None:
                yield (
                    key,
                    (
                        f'{{"account":"{account}","visitor":"{visitor}","sid":"s.{v}","topic":"t:{STAMP.decode()}",'
                        f'"value":{k + 1},"currency":"USD","leadId":"L{v}.{k}"}}'
                    ).encode(),
                    [("traceparent", _traceparent(v, k))] if traceparent else None,
                )
                continue
            obj = {
                "account": account,
                "visitor": visitor,
                "sid": f"s.{v}",
                "topic": f"t:{STAMP.decode()}",
                "value": float(k + 1),
                "currency": "USD",
                "leadId": f"L{v}.{k}",
            }
            value, headers = encoder.encode(obj, "lead", topic)
            yield key, value, [(h, bytes(x or b"")) for h, x in headers] if headers else None


class BenchProducer:
    """A confluent Producer tuned for bulk (big batches, linger), counting delivery failures."""

    def __init__(self, bootstrap: str, linger_ms: int = 20) -> None:
        self.report = ProduceReport()
        conf = {"bootstrap.servers": bootstrap, "linger.ms": linger_ms, **PRODUCER_CONFIG}
        self._producer: Producer | None = Producer({**conf, "on_delivery": self._delivered})

    def _delivered(self, err: object, msg: object) -> None:
        if err is not None:
            self.report.failed += 1
            self.report.first_error = self.report.first_error or str(err)

    def produce(self, topic: str, items: Iterator[Item], rate: float | None = None) -> None:
        """Produce every item (as fast as possible, or paced at `rate` per second); stamp each value."""
        started = time.monotonic()
        assert self._producer is not None
        produce, poll = self._producer.produce, self._producer.poll
        n = 0
        for key, template, headers in items:
            if rate is not None:
                ahead = started + n / rate - time.monotonic()
                if ahead > 0:
                    poll(0)
                    time.sleep(ahead)
            value = template.replace(STAMP, b"%017.6f" % time.time())
            while True:
                try:
                    produce(topic, value, key, headers=headers)
                    break
                except BufferError:
                    poll(0.05)
            n += 1
            if not n % 1000:
                poll(0)
        self.flush()
        self.report.messages += n
        self.report.seconds += time.monotonic() - started

    def flush(self, timeout: float = 120.0) -> None:
        """Wait for every delivery report."""
        if self._producer is None:
            return
        left = self._producer.flush(timeout)
        if left:
            self.report.failed += left
            self.report.first_error = self.report.first_error or f"{left} messages not acknowledged"

    def close(self) -> None:
        """Flush and let librdkafka go now (the delivery callback makes a cycle the GC would keep)."""
        self.flush()
        self._producer = None
