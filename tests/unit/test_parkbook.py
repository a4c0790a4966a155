"""The park's book: entries per (source partition, account), their positions and the commit metadata."""

import pytest

from consumer.kafka import offsetmap, parkbook
from consumer.kafka.offsets import OffsetTracker
from consumer.kafka.parkbook import ANY, ParkBook, Seen

pytestmark = pytest.mark.timeout(10)
TP = ("leads", 1)


def test_an_entry_is_positioned_at_its_first_acknowledged_write_and_moves_as_its_records_are_done() -> None:
    book = ParkBook()
    entry = book.enter(TP, "1")
    entry.writes = 2
    assert entry.committed() is None, "nothing acknowledged: nothing to store"
    book.written(TP, entry, 40, 1000.0)
    book.written(TP, entry, 41, 1001.0)
    assert entry.committed() == 40 and entry.count == 2 and entry.oldest_s == 1000.0
    entry.pending = {40: None, 41: None}
    entry.upto = 42
    book.done(TP, entry, 41)
    assert entry.committed() == 40, "the lowest record not done holds the position"
    book.done(TP, entry, 40)
    assert entry.committed() == 42 and entry.count == 0 and entry.settled()


def test_not_settled_while_a_write_is_in_flight_or_the_reader_has_not_passed_the_last_write() -> None:
    book = ParkBook()
    entry = book.enter(TP, "1")
    entry.writes = 1
    assert not entry.settled()
    book.written(TP, entry, 7, 0.0)
    assert not entry.settled(), "the record at 7 is not read back yet"
    entry.upto = 8
    assert entry.settled()


def test_metadata_carries_the_positions_and_the_next_owner_takes_them_over() -> None:
    book = ParkBook()
    entry = book.enter(TP, "acme:1,x")  # any account name survives the format
    entry.writes = 1
    book.written(TP, entry, 12, 1700000000.0)
    text = book.metadata(TP)
    park, rest = parkbook.split(text + "ec1r|XYZ")
    assert park == text and rest == "ec1r|XYZ"
    other = ParkBook()
    other.assign(TP, 100, park)
    got = other.get(TP, "acme:1,x")
    assert got is not None and got.position == 12 and got.upto == 12 and got.count == 1
    assert not other.parked(TP, "2")


def test_a_commit_without_park_positions_makes_every_account_parked_until_the_census() -> None:
    book = ParkBook()
    book.assign(TP, 100, None)  # a broker that drops metadata, or a commit from before the park
    assert book.parked(TP, "anyone")
    entry = book.get(TP, "anyone")
    assert entry is not None and entry.account == ANY and entry.census == {}
    entry.census = {"1": Seen(5, 3), "2": Seen(9, 1)}
    made = {e.account: e for e in book.resolve(TP, entry)}
    assert made["1"].position == 5 and made["1"].count == 3 and made["2"].position == 9
    assert book.parked(TP, "1") and not book.parked(TP, "3")


def test_never_committed_means_nothing_parked_and_an_empty_park_part_means_none() -> None:
    book = ParkBook()
    book.assign(TP, -1001, None)  # what the broker answers for a partition never committed
    assert not book.parked(TP, "1")
    book.assign(TP, 5, parkbook.encode([]))
    assert not book.parked(TP, "1")


@pytest.mark.parametrize(
    "damage", [lambda t: t[:-2] + "/", lambda t: t.replace("12", "13"), lambda t: "ep1zz"]
)
def test_a_damaged_park_part_is_read_as_unknown_every_account_parked(damage) -> None:
    text = parkbook.encode([("1", 12, 1, None, "")])
    book = ParkBook()
    book.assign(TP, 50, damage(text))
    entry = book.get(TP, "2")
    assert entry is not None and entry.account == ANY


def test_the_tracker_puts_the_park_part_before_the_offset_map_within_the_size_limit() -> None:
    tracker = OffsetTracker(map_max_bytes=200)
    annex = parkbook.encode([("1", 12, 1, None, "")])
    tracker.annex = lambda tp: (1, annex)
    gen = tracker.assign(TP)
    for o in range(10):
        tracker.add(TP, o)
    for o in (1, 2, 5):
        tracker.done(TP, o, gen)
    point = tracker.to_commit()[TP]
    park, rest = parkbook.split(point.metadata)
    assert park == annex and len(point.metadata) <= 200
    runs, _ = offsetmap.decode(rest, 0)
    assert runs == [(1, 3), (5, 6)]
    assert tracker.to_commit() == {}
    tracker.annex = lambda tp: (2, annex)  # the park moved on: commit again though the offsets did not
    assert TP in tracker.to_commit()


def test_the_next_owner_skips_the_park_offsets_done_above_the_position() -> None:
    """Records read back finish out of order (visits in parallel): the map spares their resend."""
    book = ParkBook()
    entry = book.enter(TP, "1")
    entry.writes = 1
    book.written(TP, entry, 10, 0.0)
    entry.pending = {12: None, 15: None}  # 10, 11, 13, 14 done; 12 and 15 not
    entry.upto = 17
    other = ParkBook()
    other.assign(TP, 1, book.metadata(TP))
    taken = other.get(TP, "1")
    assert taken is not None and taken.position == 12
    assert [o for o in range(12, 20) if taken.skips(o)] == [13, 14, 16]


def test_a_commit_that_could_not_be_read_makes_every_account_parked_until_the_census() -> None:
    """None: the read of the group's commits failed (timed out, errored): unknown, never "nothing"."""
    book = ParkBook()
    book.assign(TP, None, None)
    entry = book.get(TP, "1")
    assert entry is not None and entry.account == ANY and entry.position == 0 and entry.census == {}
    named = parkbook.decode(book.metadata(TP))
    assert named is not None and [(e.account, e.position) for e in named] == [(ANY, 0)]


def test_a_commit_during_a_census_names_where_the_census_began_not_how_far_it_read() -> None:
    """A crash mid-census: the next owner must count from the same start, or it misses accounts."""
    book = ParkBook()
    book.assign(TP, 100, parkbook.encode([(ANY, 30, 0, None, "")]))
    entry = book.get(TP, "1")
    assert entry is not None and entry.account == ANY and entry.position == 30
    entry.upto = 75  # the census read 30..74 and found account 1 at 40
    entry.census = {"1": Seen(40, 3)}
    other = ParkBook()
    other.assign(TP, 100, book.metadata(TP))
    taken = other.get(TP, "2")
    assert taken is not None and taken.account == ANY and taken.position == 30 and taken.upto == 30
