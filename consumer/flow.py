"""Backpressure: which partitions to pause so that pending events stay bounded (DESIGN.md, *Delivery rules*).

A partition pauses when its pending window is full and resumes when it drained to half; every
partition pauses when too much is pending in all, when every account is halted (nothing can be
sent, and parking would only copy the topic) or while stopping. Polling goes on while paused.
"""

from __future__ import annotations

import structlog

from consumer.config import Settings
from consumer.kafka.offsets import OffsetTracker
from consumer.kafka.source import KafkaSource
from consumer.values.records import TopicPartition

log = structlog.get_logger("consumer.app")


class Backpressure:
    """The paused partitions, and whether the process as a whole holds too much."""

    def __init__(self, settings: Settings, tracker: OffsetTracker) -> None:
        self._s = settings
        self._tracker = tracker
        self.paused: set[TopicPartition] = set()
        self.overloaded = False

    def adjust(self, source: KafkaSource, halted: bool, stopping: bool) -> None:
        """Pause and resume partitions as their pending windows (and the halts) now ask."""
        s, tracker = self._s, self._tracker
        assigned = tracker.partitions()
        total = tracker.pending_total
        if total >= s.max_pending_events:
            self.overloaded = True
        elif total <= s.max_pending_events // 2:
            self.overloaded = False
        # Every account halted: nothing can be sent, and parking would only copy the topic: pause
        # (one held account among others: its records park, the others keep flowing).
        if halted or stopping or self.overloaded:
            want = set(assigned)
        else:
            high, low = s.max_pending_per_partition, s.max_pending_per_partition // 2
            want = {
                tp
                for tp in assigned
                if tracker.pending(tp) >= high or (tp in self.paused and tracker.pending(tp) > low)
            }
        pause, resume = want - self.paused, self.paused - want
        if pause or resume:
            source.pause(sorted(pause))
            source.resume(sorted(resume))
            self.paused = want
            log.info(
                "flow_changed",
                paused=len(want),
                assigned=len(assigned),
                pending=total,
                halted=halted,
                overloaded=self.overloaded,
            )
