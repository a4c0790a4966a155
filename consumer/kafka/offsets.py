"""Offset tracking: per partition, commit the first offset not done, and a map of what is done above it.

The map (consumer.kafka.offsetmap) rides in the commit's metadata; the next owner of the partition reads
it at assignment and skips the offsets it names (DESIGN.md, *Commits that remember what is done
above the gap*).

Done means seen and settled. Within [first consumed, one past the highest seen) an offset is done
when it was seen (handed to `add`) and is no longer pending, or when the log does not hold it
(compaction, transaction markers): such an offset is never fetched. Which gaps are the log's is
told by the caller: `add(..., after=n)` says n is the offset fetched just before this one for the
partition, in one unbroken fetch stream (the poll thread hands every fetched record over, in order;
the loop remembers the last one per partition, across batches, so a transaction marker at a batch
boundary is a gap like any other). A gap between two offsets seen one after the other in that
stream is the log's. A gap above the highest offset seen that the stream passed (a fetched record
that never reached `add`; before the first offset added, counted from the first fetched, which the
caller tells `fetching`) is *unseen*: never named done, and the commit stays below it, so the next
owner fetches it again. This holds for offsets the previous owner's map lets us skip too.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import structlog

from consumer.kafka import offsetmap, parkbook
from consumer.kafka.offsetmap import Outcome, Run
from consumer.kafka.parkbook import Kept
from consumer.ops import metrics

log = structlog.get_logger("consumer.kafka.offsets")

TopicPartition = tuple[str, int]
METADATA_MAX_BYTES = 4096  # the broker's default offset.metadata.max.bytes: the limit without maps


class CommitPoint(NamedTuple):
    """What to commit for a partition: the first offset not done, and the map of done ones above it."""

    offset: int
    metadata: str = ""


@dataclass(slots=True)
class PartitionOffsets:
    """Offsets consumed but not done for one partition, in consumption (= offset) order.

    Memory is proportional to the pending offsets only: a done offset is forgotten at once,
    so one slow visit holding the low watermark does not make the tracker grow with throughput.
    """

    pending: OrderedDict[int, None] = field(default_factory=OrderedDict)
    next_offset: int | None = None  # one past the highest offset seen
    committed: tuple[int, int | None, int, int, int, int] | None = (
        None  # state when last handed out for commit
    )
    inherited: deque[Run] | None = None  # done runs named by the previous owner's map, not reached yet
    inherited_base: int = 0  # the committed offset that map came with
    resumed: int | None = None  # the group's committed offset at assignment (>= 0), if any
    unseen: list[Run] = field(default_factory=list)  # fetched, never added: not done (see the module doc)
    floor: int | None = None  # the first offset fetched in this assignment (`OffsetTracker.fetching`)
    sent: CommitPoint | None = None  # the commit point last handed out
    kept: Kept = Kept.FULL  # how much of the park part that carried

    def skips(self, offset: int) -> bool:
        """True if the previous owner's map names this offset done (then it counts as seen and done)."""
        runs = self.inherited
        assert runs is not None
        if self.next_offset is None and offset < self.inherited_base:
            # Not resumed from the commit the map belongs to (an offset reset: the log was truncated
            # or the topic recreated), so its offsets may name other records now: forget it.
            self.inherited = None
            return False
        while runs and runs[0][1] <= offset:
            runs.popleft()
        if not runs:
            self.inherited = None
        if runs and runs[0][0] <= offset:
            if self.next_offset is None or offset >= self.next_offset:
                self.next_offset = offset + 1
            return True
        return False

    def unseen_before(self, offset: int, after: int | None) -> Run | None:
        """Note the run fetched before `offset` and never added, if `after` shows one; return it.

        `after`: the offset fetched just before this one (None: not told, a gap is the log's).
        """
        if after is None or after == (self.next_offset or 0) - 1:
            return None
        if self.next_offset is not None and offset < self.next_offset:
            return None
        start = self.next_offset if self.next_offset is not None else self.floor
        if start is None or offset <= start:
            return None
        self.unseen.append((start, offset))
        return (start, offset)

    def add(self, offset: int) -> None:
        """Record a consumed offset (offsets arrive in increasing order; gaps are allowed)."""
        self.pending[offset] = None
        if self.next_offset is None or offset >= self.next_offset:
            self.next_offset = offset + 1

    def done(self, offset: int) -> bool:
        """Mark an offset done; False if it was not pending (already done, or from before a revoke)."""
        return self.pending.pop(offset, 0) is None

    def committable(self) -> int | None:
        """The offset to commit: the lowest still pending or unseen, or one past the highest seen."""
        if self.unseen:
            first = self.unseen[0][0]
            return min(first, next(iter(self.pending))) if self.pending else first
        if self.pending:
            return next(iter(self.pending))
        return self.next_offset

    def done_runs(self, base: int) -> Iterator[Run]:
        """Done offsets above `base` (the committable offset), as sorted runs, lowest first."""
        prev = base
        end = base if self.next_offset is None else self.next_offset
        holes: Iterable[Run] = ((o, o + 1) for o in self.pending)  # not done: pending, and unseen runs
        if self.unseen:
            holes = heapq.merge(holes, self.unseen)
        for hole_start, hole_end in holes:
            if hole_start > prev:
                yield (prev, hole_start)
            prev = max(prev, hole_end)
        start = prev
        for run_start, run_end in self.inherited or ():
            if run_end <= end:
                continue
            run_start = max(run_start, end)
            if run_start > end:  # a gap: what we consumed ends the first run
                if end > start:
                    yield (start, end)
                start = run_start
            end = run_end
        if end > start:
            yield (start, end)


class OffsetTracker:
    """All assigned partitions' offsets; answers what may be committed and how much is pending."""

    def __init__(self, map_max_bytes: int = 0) -> None:
        self.map_max_bytes = map_max_bytes  # 0: plain commits, no offset maps
        self._limit: dict[TopicPartition, int] = {}  # metadata limits lowered by the broker's refusals
        self._parts: dict[TopicPartition, PartitionOffsets] = {}
        self._generation: dict[TopicPartition, int] = {}
        self._next_generation = 1
        self.pending_total = 0
        # The park's part of each commit's metadata (consumer.kafka.parkbook): (version, text); the
        # offset map follows it in what is left of map_max_bytes.
        self.annex: Callable[[TopicPartition], tuple[int, str]] | None = None

    def assign(self, tp: TopicPartition, committed: int | None = None, metadata: str | None = None) -> int:
        """Start tracking a newly assigned partition; return its new assignment generation.

        `committed`/`metadata`: the group's commit for it; a readable map there names offsets to skip.
        State left from an earlier assignment (a revoke that had not finished on the loop when the
        poll thread gave up waiting for it) is dropped: that assignment is over.
        """
        self.drop(tp)
        part = self._parts[tp] = PartitionOffsets()
        generation = self._generation[tp] = self._next_generation
        self._next_generation += 1
        if committed is not None and committed >= 0:
            part.resumed = committed
        if self.map_max_bytes and committed is not None and committed >= 0:
            part.inherited = self._read_map(tp, committed, metadata)
            part.inherited_base = committed
        return generation

    @staticmethod
    def _read_map(tp: TopicPartition, committed: int, metadata: str | None) -> deque[Run] | None:
        runs, unread = offsetmap.decode(metadata, committed)
        if runs is not None:
            log.info(
                "offset_map_read",
                topic=tp[0],
                partition=tp[1],
                committed=committed,
                done_runs=len(runs),
                done_offsets=sum(e - s for s, e in runs),
            )
            return deque(runs)
        elif unread is not None and unread is not offsetmap.Unread.NONE:
            metrics.OFFSET_MAP_UNREAD.labels(unread.value).inc()
            log.warning(
                "offset_map_ignored", topic=tp[0], partition=tp[1], committed=committed, reason=unread.value
            )
        return None

    def generation(self, tp: TopicPartition) -> int | None:
        """The current assignment generation of a partition, None if not assigned."""
        return self._generation.get(tp)

    def drop(self, tp: TopicPartition, generation: int | None = None) -> None:
        """Forget a partition (revoked or lost); later completions for it are ignored.

        With `generation`, only while the partition is still in that assignment: a late drop of a
        slow revoke must not erase a newer assignment of the same partition.
        """
        if generation is not None and self._generation.get(tp) != generation:
            return
        part = self._parts.pop(tp, None)
        self._generation.pop(tp, None)
        if part is not None:
            self.pending_total -= len(part.pending)

    def owns(self, tp: TopicPartition, generation: int) -> bool:
        """True while the partition is assigned to us in the same assignment generation."""
        return self._generation.get(tp) == generation

    def fetching(self, tp: TopicPartition, offset: int) -> None:
        """The first offset fetched for the partition in this assignment (before anything is added)."""
        part = self._parts.get(tp)
        if part is not None and part.floor is None:
            part.floor = offset

    def add(self, tp: TopicPartition, offset: int, after: int | None = None) -> bool:
        """Record a consumed offset; False (and nothing recorded) if the partition is not ours.

        `after`: the offset fetched just before this one for the partition (see the module doc).
        """
        part = self._parts.get(tp)
        if part is None:
            return False
        if after is not None and (unseen := part.unseen_before(offset, after)) is not None:
            log.error(
                "offsets_unseen",
                topic=tp[0],
                partition=tp[1],
                start=unseen[0],
                end=unseen[1],
                fetched_after=after,
                action="not done: the commit stays below them, the next owner fetches them again",
            )
        if part.inherited is not None and part.skips(offset):
            metrics.SKIPPED_DONE.inc()
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

    def to_commit(self, tps: list[TopicPartition] | None = None) -> dict[TopicPartition, CommitPoint]:
        """Commit points of the given (default: all) partitions that changed since last asked."""
        out: dict[TopicPartition, CommitPoint] = {}
        for tp in self._parts if tps is None else tps:
            part = self._parts.get(tp)
            if part is None:
                continue
            offset = self._committable(part)
            if offset is None:
                continue
            # Done never reverts, so a map that misses a change is stale but true: a cheap key will do.
            annex = self.annex(tp)[0] if self.annex is not None else 0
            state = (
                offset,
                part.next_offset,
                len(part.pending),
                len(part.inherited or ()),
                len(part.unseen),
                annex,
            )
            if state != part.committed:
                part.committed = state
                out[tp] = self._point(tp, part, offset)
        return out

    def commit_failed(self, tps: Iterable[TopicPartition]) -> None:
        """The broker refused these partitions' last commit: `to_commit` hands them out again."""
        for tp in tps:
            part = self._parts.get(tp)
            if part is not None:
                part.committed = None

    def metadata_refused(self, tps: Iterable[TopicPartition]) -> None:
        """The broker refused these partitions' commit metadata as too large: halve their limit (for the
        life of the process) and hand them out again; other partitions keep theirs."""
        for tp in tps:
            part = self._parts.get(tp)
            sent = part.sent if part is not None else None
            step = len(parkbook.shorter(*sent)) if sent is not None else self.limit(tp) // 2
            limit = self._limit[tp] = min(self.limit(tp), step)
            metrics.COMMIT_METADATA_REFUSED.inc()
            log.error(
                "commit_metadata_refused",
                topic=tp[0],
                partition=tp[1],
                limit_bytes=limit,
                note="the broker's offset.metadata.max.bytes is below OFFSET_MAP_MAX_BYTES: this partition's "
                "commits say less from now on (more duplicates after a takeover); lower OFFSET_MAP_MAX_BYTES",
            )
            if part is not None:
                part.committed = None

    def limit(self, tp: TopicPartition) -> int:
        """The most commit metadata (park part and offset map) a partition's commit may carry."""
        return self._limit.get(tp, self.map_max_bytes or METADATA_MAX_BYTES)

    def commit_point(self, tp: TopicPartition) -> CommitPoint | None:
        """The commit point of a partition now (None before its first event)."""
        part = self._parts.get(tp)
        offset = self._committable(part) if part else None
        if part is None or offset is None:
            return None
        return self._point(tp, part, offset)

    def _committable(self, part: PartitionOffsets) -> int | None:
        """The offset to commit; with a park, the resumed commit before the first event (its park
        positions move while nothing new is consumed, and they travel in this commit's metadata)."""
        offset = part.committable()
        if offset is None and self.annex is not None:
            return part.resumed
        return offset

    def _point(self, tp: TopicPartition, part: PartitionOffsets, offset: int) -> CommitPoint:
        """The commit point: the park part within the partition's limit, the offset map in what is left."""
        limit = self.limit(tp)
        annex = ""
        if self.annex is not None:
            annex, kept = parkbook.cap(self.annex(tp)[1], limit)
            self._note(tp, part, kept, limit)
        room = (limit if self.map_max_bytes else 0) - len(annex)
        metadata = ""
        if room > len(offsetmap.HEAD) + 1:
            metadata, outcome = offsetmap.encode(offset, part.done_runs(offset), room)
            if outcome is Outcome.TRUNCATED or outcome is Outcome.PLAIN:
                metrics.OFFSET_MAP_OVERSIZE.inc()
        part.sent = CommitPoint(offset, annex + metadata)
        return part.sent

    @staticmethod
    def _note(tp: TopicPartition, part: PartitionOffsets, kept: Kept, limit: int) -> None:
        """Count a park part cut down to fit, and log when a partition's cut changes."""
        if kept is not Kept.FULL:
            metrics.COMMIT_METADATA_DEGRADED.labels(kept.value).inc()
        if kept is not part.kept:
            part.kept = kept
            (log.warning if kept is not Kept.FULL else log.info)(
                "commit_metadata_degraded" if kept is not Kept.FULL else "commit_metadata_full",
                topic=tp[0],
                partition=tp[1],
                kept=kept.value,
                limit_bytes=limit,
            )

    def position(self, tp: TopicPartition) -> int | None:
        """The committable offset of a partition right now (for tests and logs)."""
        part = self._parts.get(tp)
        return part.committable() if part else None
