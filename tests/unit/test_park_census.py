"""The census of a park partition (an ANY entry) and what it hands to the entries it makes.

The real `Unpark`, `ParkBook` and `OffsetTracker`, stubs only at the edges (tests/unit/park_stubs.py);
the clock is the test's. A census is what the next owner does when a commit names no park positions
(Tansu's dropped metadata, a commit it could not read, the CENSUS and PLAIN steps of the metadata
ladder), so whatever it leaves behind must keep expiry and the commit's park position right.
"""

from __future__ import annotations

import pytest
from park_stubs import MAX_AGE_S, NOW, TP, Rig, make_rig, message, offsets

from consumer.kafka import parkbook
from consumer.kafka.parkbook import ANY
from consumer.ops import metrics

pytestmark = pytest.mark.timeout(10)


@pytest.fixture
def park() -> Rig:
    return make_rig()


def oldest_named(park: Rig, account: str) -> float | None:
    """The oldest park time the next commit of TP carries for an account."""
    entries = parkbook.decode(park.book.metadata(TP))
    assert entries is not None
    got = [e for e in entries if e.account == account]
    assert got, f"the commit names no entry for {account}"
    return got[0].oldest_s


# ---- the oldest park time survives a census --------------------------------------------------------
def test_a_census_keeps_each_accounts_oldest_park_time_so_its_records_still_expire(park: Rig) -> None:
    """A held account found by a census has records past PARK_MAX_AGE_S: the entry made for it carries
    their oldest park time (from the `park.since` headers), in the commit too and in the age gauge,
    and the next tick reads it to dead-letter them; before, the entry had no oldest time and its
    records were never expired (the topic's retention could delete them)."""
    park.book.assign(TP, 50, None)  # a commit without park positions: census from 0
    park.hold("A")
    stale = NOW - 2 * MAX_AGE_S
    msgs = [message(o, "A", 100 + o, stale + o) for o in range(3)]
    park.unpark.tick()
    park.fetch(msgs, end=3)
    entry = park.book.get(TP, "A")
    assert entry is not None and entry.census is None and entry.count == 3
    assert entry.oldest_s == pytest.approx(stale, abs=0.001)
    assert oldest_named(park, "A") == pytest.approx(stale, abs=1), "a later owner inherits it"
    park.unpark.tick()
    age = metrics.REGISTRY.get_sample_value("engagement_park_oldest_seconds", {"account": ""})
    assert age == pytest.approx(2 * MAX_AGE_S, abs=0.01)
    assert park.reader.reads[-1] == (0, 0), "expired: read from its position to dead-letter them"
    park.fetch(msgs, end=3)
    assert offsets(park.expired) == [0, 1, 2] and park.submitted == []
    park.finish(park.expired)
    assert park.book.entries() == [], "all dead-lettered: it leaves the park"


def test_the_census_step_of_the_ladder_keeps_the_oldest_park_time() -> None:
    """Entries cut down to one ANY entry (the commit's metadata too long) still say how old the
    oldest parked record is: the gauge of the next owner reads it while its census runs."""
    text = parkbook.encode([(f"acct-{n}", 10 + n, 1, NOW - n, "") for n in range(200)])
    cut, kept = parkbook.cap(text, 200)
    assert kept is parkbook.Kept.CENSUS
    entries = parkbook.decode(cut)
    assert entries is not None and [(e.account, e.position) for e in entries] == [(ANY, 10)]
    assert entries[0].oldest_s == pytest.approx(NOW - 199, abs=1)


def test_an_entry_whose_oldest_time_is_unknown_is_read_while_held_to_learn_it(park: Rig) -> None:
    """A commit written before this fix names a census-found entry without an oldest time: held, it is
    read as if expired (only records past PARK_MAX_AGE_S by their own headers are dead-lettered), it
    stops at the first young one and keeps its time; before, it was never read while held."""
    park.book.assign(TP, 50, parkbook.encode([("A", 0, 3, None, "")]))
    park.hold("A")
    stale, young = NOW - 2 * MAX_AGE_S, NOW - MAX_AGE_S / 2
    msgs = [message(0, "A", 100, stale), message(1, "A", 101, young), message(2, "A", 102, young)]
    park.unpark.tick()
    assert park.reader.reads == [(0, 0)]
    park.fetch(msgs, end=3)
    assert offsets(park.expired) == [0] and park.submitted == []
    park.finish(park.expired)
    assert park.position("A") == 1 and oldest_named(park, "A") == pytest.approx(young, abs=1)
    park.unpark.tick()
    assert park.reader.reading == set(), "its oldest is young now: nothing to read while it is held"


# ---- a census never moves an entry back over records it holds ---------------------------------------
def census_with_a_named_entry(park: Rig, sinces: list[float]) -> list:
    """The previous owner committed during its census: ANY at 0 and A (parked meanwhile) at 3. A is
    held and its oldest record expired: it reads (expiring) while the census runs, from 3."""
    park.book.assign(TP, 50, parkbook.encode([(ANY, 0, 0, None, ""), ("A", 3, 2, NOW - 100, "")]))
    park.hold("A")
    msgs = [message(o, "A", 100 + o, s) for o, s in enumerate(sinces)]
    park.unpark.tick()
    park.fetch(msgs, end=len(msgs))
    return msgs


def test_records_a_census_finds_below_an_entry_are_read_without_taking_its_pending_ones_twice(
    park: Rig,
) -> None:
    """Expiry dead-letters A's 3 and 4 and stops at the young 5; the census then finds A from 0. A can
    send again while the two dead letters are unacknowledged: 0, 1, 2 and 5 come back, 3 and 4 are not
    taken again, and the commit names 0 with 3-4 done once their dead letters are acknowledged; before,
    3 and 4 were submitted too and the commit named 3 with 0-4 marked done (lost after a crash)."""
    old, young = NOW - 100, NOW - 1
    msgs = census_with_a_named_entry(park, [old] * 5 + [young])
    assert offsets(park.expired) == [3, 4]
    entry = park.book.get(TP, "A")
    assert entry is not None and entry.position == 0 and entry.count == 6
    park.release("A")
    park.unpark.tick()
    assert park.reader.reads[-1] == (0, 0)
    park.fetch(msgs, end=6)
    assert offsets(park.submitted) == [0, 1, 2, 5], "3 and 4 are being dead-lettered: not taken twice"
    assert park.position("A") == 0
    park.finish(park.expired)
    assert park.position("A") == 0
    named = parkbook.decode(park.book.metadata(TP))
    assert named is not None and named[0].skip is not None and list(named[0].skip) == [(3, 5)]
    park.finish(park.submitted[:3])
    assert park.position("A") == 5
    park.finish(park.submitted[3:])
    assert park.book.entries() == [], "every record done once: it leaves the park"
    assert park.reader.paused == set()


def test_an_entry_still_expiring_when_the_census_ends_reads_what_the_census_found_below_it(
    park: Rig,
) -> None:
    """All of A's records are old: its expiry read is still going when the census reaches the end and
    finds A from 0. The end must not carry A past 0-2: they are dead-lettered too, and A leaves only
    then; before, A's read position jumped to the end and it left the park with 0-2 never read."""
    msgs = census_with_a_named_entry(park, [NOW - 100] * 5)
    assert offsets(park.expired) == [3, 4]
    assert park.position("A") == 0, "0-2 are not done"
    park.finish(park.expired)
    assert park.book.get(TP, "A") is not None
    park.unpark.tick()
    assert park.reader.reads[-1] == (0, 0)
    park.fetch(msgs, end=5)
    assert offsets(park.expired) == [3, 4, 0, 1, 2]
    park.finish(park.expired[2:])
    assert park.book.entries() == []
