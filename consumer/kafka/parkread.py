"""Reading parked records back: a sync Consumer on its own thread, assign() only, no group, no commits.

The loop tells it which park partitions to read and from where (`read(partition, offset)`: every
call starts a new *serial* for that partition; batches carry the serial they were fetched under, so
the loop drops what was fetched before a re-positioning), and when to pause (a bounded read-ahead).
End-of-partition events are handed over too: they tell the loop it has seen everything parked so far.
Positions live with the source partitions' commits (consumer.kafka.parkbook), never in this consumer.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message
from confluent_kafka import TopicPartition as KafkaTP

log = structlog.get_logger("consumer.kafka.parkread")

POLL_TIMEOUT_S = 0.1
BATCH_SIZE = 500
MAX_BATCHES_AHEAD = 2


@dataclass(frozen=True, slots=True)
class Fetched:
    """What one poll gave for one park partition: records, and the end offset when it reached the end."""

    partition: int
    serial: int
    messages: list[Message]
    end: int | None = None  # reached the end of the partition at this offset


Deliver = Callable[[list[Fetched]], None]


class ParkReader:
    """Owns the park Consumer and its thread."""

    def __init__(
        self, config: dict[str, Any], topic: str, loop: asyncio.AbstractEventLoop, deliver: Deliver
    ) -> None:
        self._config = {
            **config,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
        self.topic = topic
        self._loop = loop
        self._deliver = deliver
        self._commands: queue.SimpleQueue[tuple[str, int, int, int]] = queue.SimpleQueue()
        self._serial: dict[int, int] = {}  # loop side: the latest serial asked for, per partition
        self._stop = threading.Event()
        self._ahead = threading.Semaphore(MAX_BATCHES_AHEAD)
        self._thread = threading.Thread(target=self._run, name="park-reader", daemon=True)
        self.reading: set[int] = set()  # loop side: partitions being read
        self.fatal: str | None = None
        self.last_poll = time.monotonic()

    # ---- loop side ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def read(self, partition: int, offset: int) -> int:
        """Read a park partition from `offset` (again, if it is being read); returns the new serial."""
        serial = self._serial[partition] = self._serial.get(partition, 0) + 1
        self.reading.add(partition)
        self._commands.put(("read", partition, offset, serial))
        return serial

    def stop_reading(self, partition: int) -> None:
        """Read this park partition no more (for now)."""
        if partition in self.reading:
            self.reading.discard(partition)
            self._serial[partition] = self._serial.get(partition, 0) + 1
            self._commands.put(("stop", partition, 0, self._serial[partition]))

    def pause(self, partition: int) -> None:
        """Fetch nothing more of it for now (read-ahead full)."""
        self._commands.put(("pause", partition, 0, 0))

    def resume(self, partition: int) -> None:
        """Fetch it again."""
        self._commands.put(("resume", partition, 0, 0))

    def current(self, fetched: Fetched) -> bool:
        """True when a batch was fetched under the latest positioning of its partition."""
        return fetched.partition in self.reading and self._serial.get(fetched.partition) == fetched.serial

    async def close(self) -> None:
        """Stop the thread and close the consumer."""
        self._stop.set()
        await asyncio.to_thread(self._thread.join, 10.0)

    # ---- thread side -------------------------------------------------------------------------
    def _run(self) -> None:
        consumer: Consumer | None = None
        serials: dict[int, int] = {}
        try:
            consumer = Consumer(self._config)
            while not self._stop.is_set():
                self._apply(consumer, serials)
                if not self._ahead.acquire(timeout=POLL_TIMEOUT_S):
                    self.last_poll = time.monotonic()
                    continue
                batch = consumer.consume(BATCH_SIZE, POLL_TIMEOUT_S) if serials else []
                self.last_poll = time.monotonic()
                if not serials:
                    self._stop.wait(POLL_TIMEOUT_S)
                fetched = _group(batch, serials)
                if fetched:
                    self._loop.call_soon_threadsafe(self._hand_over, fetched)
                else:
                    self._ahead.release()
        except Exception as exc:  # the thread must never die silently
            self.fatal = f"{type(exc).__name__}: {exc}"
            log.exception("park_reader_failed")
        finally:
            if consumer is not None:
                try:
                    consumer.close()
                except Exception:
                    log.exception("park_reader_close_failed")

    def _hand_over(self, fetched: list[Fetched]) -> None:
        try:
            self._deliver(fetched)
        finally:
            self._ahead.release()

    def _apply(self, consumer: Consumer, serials: dict[int, int]) -> None:
        while True:
            try:
                kind, partition, offset, serial = self._commands.get_nowait()
            except queue.Empty:
                return
            tp = KafkaTP(self.topic, partition)
            try:
                if kind in ("read", "stop") and partition in serials:
                    consumer.incremental_unassign([tp])
                    del serials[partition]
                if kind == "read":
                    consumer.incremental_assign([KafkaTP(self.topic, partition, offset)])
                    serials[partition] = serial
                elif kind == "pause" and partition in serials:
                    consumer.pause([tp])
                elif kind == "resume" and partition in serials:
                    consumer.resume([tp])
            except KafkaException as exc:
                log.warning("park_reader_command_failed", command=kind, partition=partition, error=str(exc))


def _group(batch: list[Message], serials: dict[int, int]) -> list[Fetched]:
    """Split a poll's messages by park partition, tagged with the serial each was fetched under."""
    out: dict[int, Fetched] = {}
    for m in batch:
        partition = m.partition()
        if partition is None or partition not in serials:
            continue
        got = out.get(partition)
        if got is None:
            got = out[partition] = Fetched(partition, serials[partition], [])
        err = m.error()
        if err is None:
            got.messages.append(m)
            if got.end is not None:  # more came after the end seen: not at the end any more
                got = out[partition] = Fetched(partition, got.serial, got.messages)
        elif err.code() == KafkaError._PARTITION_EOF:
            out[partition] = Fetched(partition, got.serial, got.messages, m.offset())
        else:
            log.warning("park_read_error", partition=partition, error=err.str())
    return list(out.values())
