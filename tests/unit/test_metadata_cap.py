"""Commit metadata within the broker's cap, degraded per partition (issue 27 item 8).

A partition's commit metadata is its park part (parked accounts and their positions) then its offset
map. The broker refuses a commit whose metadata exceeds its `offset.metadata.max.bytes` (4096 by
default). What must hold: the metadata never exceeds the cap; it says less, never more (a parked
record is never dropped from what the next owner reads back; duplicates are allowed); a takeover
reads back from the stored positions when they fit; and a refusal degrades that partition only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTP
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.kafka import offsetmap, parkbook
from consumer.kafka.commits import commit_sync
from consumer.kafka.offsets import CommitPoint, OffsetTracker
from consumer.kafka.parkbook import ANY, ParkBook

pytestmark = pytest.mark.timeout(20)
TP, TP2 = ("leads", 0), ("leads", 1)
CAP = 4096


def parked_book(accounts: int, tp: tuple[str, int] = TP) -> tuple[ParkBook, dict[str, int]]:
    """`accounts` accounts parked for `tp`, each with records read back out of order (a done map each)."""
    book = ParkBook()
    positions = {}
    for i in range(accounts):
        name = f"account-{i:04d}"
        entry = book.enter(tp, name)
        first = 100_000 + 37 * i
        entry.writes = 1
        book.written(tp, entry, first, 1_700_000_000.0 + i)
        entry.count = 9
        entry.upto = first + 30
        entry.pending = {first + 2: None, first + 9: None, first + 20: None}  # 3..8, 10..19, 21..29 done
        positions[name] = first + 2
    return book, positions


def tracker_over(book: ParkBook, *tps: tuple[str, int]) -> OffsetTracker:
    """A tracker (maps on, the broker's default cap) whose commits carry `book`'s park part."""
    tracker = OffsetTracker(map_max_bytes=CAP)
    tracker.annex = lambda tp: (book.version.get(tp, 0), book.metadata(tp))
    for tp in tps:
        generation = tracker.assign(tp, 0, None)
        for offset in range(0, 400):
            tracker.add(tp, offset)
        for offset in range(1, 400, 2):  # every other one done: a long offset map
            tracker.done(tp, offset, generation)
    return tracker


def taken_over(metadata: str) -> ParkBook:
    """The park book of the next owner reading this commit metadata."""
    book = ParkBook()
    book.assign(TP, 0, parkbook.split(metadata)[0])
    return book


def test_positions_that_fit_are_kept_when_the_done_maps_do_not() -> None:
    book, positions = parked_book(90)
    assert len(book.metadata(TP)) > CAP, "the scenario must overflow the cap with its done maps"
    point = tracker_over(book, TP).to_commit()[TP]
    assert len(point.metadata) <= CAP, f"{len(point.metadata)} bytes: the broker refuses the commit"
    got = taken_over(point.metadata)
    assert {e.account: e.position for _, e in got.entries(TP)} == positions, "a takeover replays all"


def test_positions_that_do_not_fit_become_a_census_from_the_lowest_position() -> None:
    book, positions = parked_book(300)
    point = tracker_over(book, TP).to_commit()[TP]
    assert len(point.metadata) <= CAP, f"{len(point.metadata)} bytes: the broker refuses the commit"
    ((_, entry),) = taken_over(point.metadata).entries(TP)
    assert entry.account == ANY and entry.position == min(positions.values()), "read back from the start"


def test_a_refused_partition_steps_down_alone_the_offset_map_first_then_the_park_part() -> None:
    book, positions = parked_book(20)
    both, _ = parked_book(20, TP2)
    book._entries[TP2] = both._entries[TP2]
    tracker = tracker_over(book, TP, TP2)
    first = tracker.to_commit()
    steps = [first[TP].metadata]
    while steps[-1]:
        tracker.metadata_refused([TP])
        again = tracker.to_commit()
        assert list(again) == [TP], "only the refused partition is committed again"
        assert len(again[TP].metadata) < len(steps[-1]), "a refused commit must say less"
        steps.append(again[TP].metadata)
        assert len(steps) < 10, "the steps down do not end"
    parks = [parkbook.split(m)[0] for m in steps]
    full = parks[0]
    maps = [parkbook.split(m)[1] for m in steps]
    assert (
        maps[0] and maps.index(None) >= 1 and parks[: maps.index(None) + 1] == [full] * (maps.index(None) + 1)
    )
    named = [{e.account: e.position for e in parkbook.decode(p) or []} for p in parks if p]
    assert named[0] == positions and positions in named[1:], "positions only comes before the census"
    assert named[-1] == {ANY: min(positions.values())} and steps[-1] == ""
    book.enter(TP2, "new")  # TP2 changes: its next commit carries everything, as before
    assert len(tracker.to_commit()[TP2].metadata) >= len(first[TP2].metadata)


@dataclass
class SmallBroker:
    """A stand-in Consumer whose broker refuses commit metadata beyond `limit` (the whole request)."""

    limit: int
    committed: dict[tuple[str, int], tuple[int, str]] = field(default_factory=dict)

    def commit(self, offsets: list[KafkaTP], asynchronous: bool) -> None:
        if any(len(p.metadata or "") > self.limit for p in offsets):
            raise KafkaException(KafkaError(KafkaError.OFFSET_METADATA_TOO_LARGE))
        self.committed.update({(p.topic, p.partition): (p.offset, p.metadata or "") for p in offsets})


def test_a_synchronous_commit_refused_as_too_large_keeps_the_park_positions() -> None:
    book, positions = parked_book(20)
    point = tracker_over(book, TP).to_commit()[TP]
    broker = SmallBroker(limit=len(parkbook.split(point.metadata)[0]) + 10)
    assert commit_sync(broker, {TP: point, TP2: CommitPoint(7, "")}, "revoke_commit")  # type: ignore[arg-type]
    offset, metadata = broker.committed[TP]
    assert offset == point.offset and broker.committed[TP2] == (7, "")
    got = taken_over(metadata)
    assert {e.account: e.position for _, e in got.entries(TP)} == positions, "the park part was dropped"


def _runs(base: int, cuts: list[int]) -> list[tuple[int, int]]:
    """Sorted disjoint runs above `base`, from gap and length pairs."""
    runs, at = [], base
    for gap, length in zip(cuts[::2], cuts[1::2], strict=False):
        start = at + gap + (1 if runs else 0)
        runs.append((start, start + length))
        at = start + length
    return runs


def _offsets(runs: list[tuple[int, int]] | None) -> set[int]:
    return {o for s, e in runs or () for o in range(s, e)}


ACCOUNT = st.text(alphabet="abc:,/%1", min_size=1, max_size=12)  # ("*" is the ANY entry's name)
ENTRY = st.tuples(st.integers(0, 10**6), st.integers(0, 500), st.lists(st.integers(1, 20), max_size=12))


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(ACCOUNT, ENTRY, max_size=40),
    st.lists(st.integers(1, 30), max_size=80),
    st.integers(0, 4096),
)
def test_fit_and_every_step_down_say_less_never_more(
    entries: dict[str, tuple[int, int, list[int]]], map_cuts: list[int], max_bytes: int
) -> None:
    """Within the limit; every account still parked from at or below its position, skipping only what
    its map named done; the offset map names only what it named."""
    offset = 5_000
    named = {a: (pos, count, _runs(pos, cuts)) for a, (pos, count, cuts) in entries.items()}
    stored = [(a, p, c, 1.7e9, offsetmap.encode(p, runs, 400)[0]) for a, (p, c, runs) in named.items()]
    original_map = _runs(offset, map_cuts)
    metadata = parkbook.encode(stored) + offsetmap.encode(offset, original_map, 4096)[0]
    skips = {a: _offsets(offsetmap.decode(done, p)[0]) for a, p, _, _, done in stored}
    candidates = [parkbook.fit(offset, metadata, max_bytes)]
    while candidates[-1]:
        candidates.append(parkbook.shorter(offset, candidates[-1]))
        assert len(candidates[-1]) < len(candidates[-2])
    assert len(candidates[0]) <= max_bytes
    for text in [metadata, *candidates]:
        park, rest = parkbook.split(text)
        assert _offsets(offsetmap.decode(rest, offset)[0]) <= _offsets(original_map)
        book = ParkBook()
        book.assign(TP, offset, park)
        for account, (pos, _, _) in named.items():
            entry = book.get(TP, account)
            assert entry is not None and entry.position is not None and entry.position <= pos, (account, text)
            if entry.account != ANY:
                skipped = {o for o in range(entry.position, pos + 300) if entry.skips(o)}
                assert skipped <= skips[account], (account, text)
