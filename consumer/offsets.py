"""Offset tracking: per partition, commit only the contiguous prefix of offsets that are done."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

TopicPartition = tuple[str, int]


@dataclass(slots=True)
class PartitionOffsets:
    """Offsets consumed but not done for one partition, in consumption (= offset) order.

    Memory is proportional to the pending offsets only: a done offset is forgotten at once,
    so one slow visit holding the low watermark does not make the tracker grow with throughput.
    """

    pending: OrderedDict[int, None] = field(default_factory=OrderedDict)
    next_offset: int | None = None  # one past the highest offset seen
    committed: int | None = None  # last offset handed out for commit

    def add(self, offset: int) -> None:
        """Record a consumed offset (offsets arrive in increasing order; gaps are allowed)."""
        self.pending[offset] = None
        if self.next_offset is None or offset >= self.next_offset:
            self.next_offset = offset + 1

    def done(self, offset: int) -> bool:
        """Mark an offset done; False if it was not pending (already done, or from before a revoke)."""
        return self.pending.pop(offset, 0) is None

    def committable(self) -> int | None:
        """The offset to commit: the lowest still pending, or one past the highest seen."""
        if self.pending:
            return next(iter(self.pending))
        return self.next_offset


class OffsetTracker:
    """All assigned partitions' offsets; answers what may be committed and how much is pending."""

    def __init__(self) -> None:
        self._parts: dict[TopicPartition, PartitionOffsets] = {}
        self._generation: dict[TopicPartition, int] = {}
        self._next_generation = 1
        self.pending_total = 0

    def assign(self, tp: TopicPartition) -> int:
        """Start tracking a newly assigned partition (idempotent); return its assignment generation."""
        if tp not in self._parts:
            self._parts[tp] = PartitionOffsets()
            self._generation[tp] = self._next_generation
            self._next_generation += 1
        return self._generation[tp]

    def generation(self, tp: TopicPartition) -> int | None:
        """The current assignment generation of a partition, None if not assigned."""
        return self._generation.get(tp)

    def drop(self, tp: TopicPartition) -> None:
        """Forget a partition (revoked or lost); later completions for it are ignored."""
        part = self._parts.pop(tp, None)
        self._generation.pop(tp, None)
        if part is not None:
            self.pending_total -= len(part.pending)

    def owns(self, tp: TopicPartition, generation: int) -> bool:
        """True while the partition is assigned to us in the same assignment generation."""
        return self._generation.get(tp) == generation

    def add(self, tp: TopicPartition, offset: int) -> bool:
        """Record a consumed offset; False (and nothing recorded) if the partition is not ours."""
        part = self._parts.get(tp)
        if part is None:
            return False
        if offset not in part.pending:
            part.add(offset)
            self.pending_total += 1
        return True

    def done(self, tp: TopicPartition, offset: int, generation: int) -> None:
        """Mark one offset delivered or dead-lettered (acknowledged); stale generations are ignored."""
        part = self._parts.get(tp)
        if part is not None and self._generation[tp] == generation and part.done(offset):
            self.pending_total -= 1

    def pending(self, tp: TopicPartition) -> int:
        """How many offsets of the partition are consumed and not yet done."""
        part = self._parts.get(tp)
        return len(part.pending) if part else 0

    def partitions(self) -> list[TopicPartition]:
        """The partitions tracked now."""
        return list(self._parts)

    def to_commit(self, tps: list[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """Offsets that advanced since last asked, for the given (default: all) partitions."""
        out: dict[TopicPartition, int] = {}
        for tp in self._parts if tps is None else tps:
            part = self._parts.get(tp)
            if part is None:
                continue
            offset = part.committable()
            if offset is not None and offset != part.committed:
                part.committed = offset
                out[tp] = offset
        return out

    def position(self, tp: TopicPartition) -> int | None:
        """The committable offset of a partition right now (for tests and logs)."""
        part = self._parts.get(tp)
        return part.committable() if part else None
