"""The park's bookkeeping: which accounts are parked for which source partition, and how far read back.

Pure state, no Kafka and no loop (DESIGN.md *Park*). One `Entry` per (source partition, account)
parked: the park records it wrote (in flight, acknowledged), the park records read back and not yet
done, and its read position in the park partition of its source partition. Its position is the first
park offset of its records not yet done; it travels in the source partition's commit metadata beside
the offset map (`encode`/`split`), so the next owner of the source partition reads the same parked
records back, in order, and treats the same accounts as parked.

An entry for the account `ANY` stands for "every account": the next owner found no park position in
the commit (a broker that drops commit metadata, a commit written before the park existed), or could
not read the commit at all, so it reads the whole retained park partition back for that source
partition (from its position: 0, or the lowest position of a park part cut down to fit), and until it
has reached its end every account counts as parked for it (order first; duplicates, never a loss).
Its position stays where the census began: a commit during the census names that, not how far it read.
The census keeps, per account, its first park offset, a count and the oldest park time (`Seen`): the
entries it makes expire like any other.

The park part must fit the broker's `offset.metadata.max.bytes` beside the offset map; `cap` cuts it
down saying less, never more (`fit` does the same for a whole commit's metadata).
"""

from __future__ import annotations

import bisect
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from urllib.parse import quote, unquote

from consumer.kafka import offsetmap
from consumer.kafka.offsetmap import Run

TopicPartition = tuple[str, int]

ANY = "*"  # the entry of a source partition whose parked records are not known: every account
PREFIX = "ep1"  # park positions, then "/" and the offset map (consumer.kafka.offsetmap) if any
SEP = "/"  # in neither a percent-encoded account nor base85
MAP_MAX_BYTES = 400  # an entry's own map: which park offsets above its position are done already


@dataclass(slots=True)
class Seen:
    """What a census found of one account: its first park offset, how many records, the oldest park time."""

    first: int
    count: int = 0
    oldest_s: float | None = None


@dataclass(slots=True)
class Entry:
    """One account parked for one source partition."""

    account: str
    position: int | None = None  # first park offset not done (None: no acknowledged write yet)
    upto: int = 0  # the reader has looked at every park offset below this, for this entry
    reading: bool = False  # being read back now (the account can send, or records expire)
    expiring: bool = False  # read while held, to dead-letter records older than PARK_MAX_AGE_S
    pending: dict[int, None] = field(default_factory=dict)  # park offsets read back, not done
    writes: int = 0  # park records produced for it, not yet acknowledged
    last_written: int = -1  # highest acknowledged park offset of its records
    count: int = 0  # parked records not done (a gauge: after a takeover, what the commit said)
    oldest_s: float | None = None  # park time of the oldest parked record (epoch seconds)
    census: dict[str, Seen] | None = None  # ANY: what it found per account
    skip: deque[Run] | None = None  # done or not its own above `upto` (the previous owner's map, a census)

    def skips(self, offset: int) -> bool:
        """True if the previous owner's map names this park offset done (then it is passed over)."""
        runs = self.skip
        if not runs:
            return False
        while runs and runs[0][1] <= offset:
            runs.popleft()
        return bool(runs) and runs[0][0] <= offset

    def done_runs(self, base: int) -> Iterator[Run]:
        """Park offsets from `base` (the position) done or not this entry's, as runs: those below `upto`
        and those `skip` names, except the ones read back and not done (in any order: a census can
        move `upto` back below them)."""
        known = [(base, self.upto)] if self.upto > base else []
        known += [(max(start, base), end) for start, end in self.skip or () if end > base]
        prev = base
        holes = iter(sorted(self.pending))
        hole = next(holes, None)
        for start, end in _merged(known):
            start = max(start, prev)
            while hole is not None and hole < end:
                if hole >= start:
                    if hole > start:
                        yield (start, hole)
                    start = hole + 1
                hole = next(holes, None)
            if end > start:
                yield (start, end)
            prev = end

    def committed(self) -> int | None:
        """The park position to store with the source partition's commit: its first record not done."""
        if self.census is not None:
            return self.position  # where the census began: a next owner must count from there too
        if self.position is None:
            return None
        low = max(self.position, self.upto)
        return min(low, min(self.pending)) if self.pending else low

    def counted(self, account: str, offset: int, since_s: float) -> None:
        """The census (of an ANY entry) found a park record of `account` at `offset`, parked at `since_s`."""
        assert self.census is not None
        seen = self.census.setdefault(account, Seen(offset))
        seen.count += 1
        seen.oldest_s = since_s if seen.oldest_s is None else min(seen.oldest_s, since_s)
        self.oldest_s = since_s if self.oldest_s is None else min(self.oldest_s, since_s)

    def settled(self) -> bool:
        """Nothing of it in flight: every record written is acknowledged and every one read is done."""
        return not self.pending and self.writes == 0 and self.upto > self.last_written


class ParkBook:
    """Every entry, by source partition; answers what the commit carries and who may leave."""

    def __init__(self) -> None:
        self._entries: dict[TopicPartition, dict[str, Entry]] = {}
        self.version: dict[TopicPartition, int] = {}  # bumped on every change a commit should carry

    # ---- look-up ---------------------------------------------------------------------------
    def get(self, tp: TopicPartition, account: str) -> Entry | None:
        """The entry of this account for this source partition (or the ANY entry), None if not parked."""
        entries = self._entries.get(tp)
        if not entries:
            return None
        return entries.get(ANY) or entries.get(account)

    def parked(self, tp: TopicPartition, account: str) -> bool:
        """True while this account is parked for this source partition (then its records go on parking)."""
        return self.get(tp, account) is not None

    def entries(self, tp: TopicPartition | None = None) -> list[tuple[TopicPartition, Entry]]:
        """The entries (of one source partition, or all)."""
        tps = [tp] if tp is not None else list(self._entries)
        return [(t, e) for t in tps for e in self._entries.get(t, {}).values()]

    def partitions(self) -> list[TopicPartition]:
        """The source partitions with parked accounts."""
        return [tp for tp, entries in self._entries.items() if entries]

    # ---- changes ---------------------------------------------------------------------------
    def enter(self, tp: TopicPartition, account: str) -> Entry:
        """The entry for this account (made if needed; an ANY entry stands for every account)."""
        entries = self._entries.setdefault(tp, {})
        entry = entries.get(account)
        if entry is None:
            entry = entries[account] = Entry(account)
            self._bump(tp)
        return entry

    def written(self, tp: TopicPartition, entry: Entry, park_offset: int, parked_s: float) -> None:
        """A park record of this entry was acknowledged at `park_offset`."""
        entry.writes -= 1
        entry.count += 1
        if entry.position is None:
            entry.position = entry.upto = park_offset
        entry.last_written = max(entry.last_written, park_offset)
        if entry.oldest_s is None or parked_s < entry.oldest_s:
            entry.oldest_s = parked_s
        self._bump(tp)

    def passed(self, tp: TopicPartition, entry: Entry, park_offset: int) -> None:
        """A park copy of this entry's that landed out of order: never read back, named done in commits."""
        runs = entry.skip if entry.skip is not None else deque()
        at = bisect.bisect(runs, (park_offset, park_offset + 1))
        runs.insert(at, (park_offset, park_offset + 1))
        entry.skip = runs
        self._bump(tp)

    def done(self, tp: TopicPartition, entry: Entry, park_offset: int) -> None:
        """A record read back from the park is done (delivered, dead-lettered, or parked again)."""
        if entry.pending.pop(park_offset, 0) is None:
            entry.count = max(0, entry.count - 1)
            self._bump(tp)

    def leave(self, tp: TopicPartition, entry: Entry) -> None:
        """The account leaves the park for this source partition (its parked records are all done)."""
        entries = self._entries.get(tp, {})
        if entries.get(entry.account) is entry:
            del entries[entry.account]
            if not entries:
                del self._entries[tp]
            self._bump(tp)

    def resolve(self, tp: TopicPartition, any_entry: Entry) -> list[Entry]:
        """The census of an ANY entry is complete: one entry per account it found; ANY leaves.

        An entry found lower than its position is moved back to read from there, what it has read
        already named done (`skip`): its records read back and not done are never taken again.
        """
        made = []
        for account, seen in (any_entry.census or {}).items():
            entry = self.enter(tp, account)
            if entry.position is None:
                entry.position = entry.upto = seen.first
            elif seen.first < entry.position:
                read = (entry.position, max(entry.position, entry.upto))
                entry.skip = deque(_merged([read, *(entry.skip or ())]))
                entry.position = entry.upto = seen.first
                entry.reading = entry.expiring = False  # it starts again from its new position
            entry.count = max(entry.count, seen.count)  # the census also saw what we parked since
            if seen.oldest_s is not None and (entry.oldest_s is None or seen.oldest_s < entry.oldest_s):
                entry.oldest_s = seen.oldest_s
            made.append(entry)
        self.leave(tp, any_entry)
        return made

    def drop(self, tp: TopicPartition) -> None:
        """Forget a source partition (revoked or lost): its next owner reads its commit."""
        self._entries.pop(tp, None)
        self.version.pop(tp, None)

    def assign(self, tp: TopicPartition, committed: int | None, text: str | None) -> None:
        """Take over the parked accounts a source partition's commit names (ANY when it names none).

        `committed`: the group's committed offset; negative: never committed (nothing was parked);
        None: not known (the read of the commits failed), so every account is parked until the census.
        """
        self.drop(tp)
        if committed is not None and committed < 0:
            return  # never committed: nothing of it was ever parked
        entries = decode(text) if committed is not None else None
        if entries is None:
            entries = [Entry(ANY, position=0, upto=0, census={})]
        if entries:
            self._entries[tp] = {e.account: e for e in entries}

    def _bump(self, tp: TopicPartition) -> None:
        self.version[tp] = self.version.get(tp, 0) + 1

    def metadata(self, tp: TopicPartition) -> str:
        """The park part of the source partition's commit metadata (always present: "ep1...")."""
        stored = []
        for e in self._entries.get(tp, {}).values():
            pos = e.committed()
            if pos is not None:
                done = offsetmap.encode(pos, e.done_runs(pos), MAP_MAX_BYTES)[0] if e.census is None else ""
                stored.append((e.account, pos, e.count, e.oldest_s, done))
        return encode(stored)


Stored = tuple[str, int, int, float | None, str]  # account, park position, count, oldest, done map


def encode(entries: list[Stored]) -> str:
    """`ep1` + CRC-32 (8 hex) + `account:position:count:oldest:map` comma-separated, then `/`."""
    body = ",".join(
        f"{quote(a, safe='')}:{pos}:{count}:{'' if oldest is None else int(oldest)}:{done}"
        for a, pos, count, oldest, done in sorted(entries, key=lambda e: e[0])
    )
    return f"{PREFIX}{zlib.crc32(body.encode()):08x}{body}{SEP}"


def split(metadata: str | None) -> tuple[str | None, str | None]:
    """(park part, offset-map part) of a commit's metadata; (None, metadata) when it has no park part."""
    if not metadata or not metadata.startswith(PREFIX):
        return None, metadata
    at = metadata.find(SEP)
    if at < 0:
        return metadata, None
    return metadata[: at + 1], metadata[at + 1 :] or None


def decode(text: str | None) -> list[Entry] | None:
    """The entries a park part names; None when there is none or it cannot be read (then: ANY)."""
    if not text or not text.startswith(PREFIX) or not text.endswith(SEP):
        return None
    crc, body = text[len(PREFIX) : len(PREFIX) + 8], text[len(PREFIX) + 8 : -1]
    try:
        if int(crc, 16) != zlib.crc32(body.encode()):
            return None
        out = []
        for item in body.split(",") if body else []:
            account, pos, count, oldest, done = item.split(":")
            p, name = int(pos), unquote(account)
            entry = Entry(name, p, p, count=int(count), oldest_s=float(oldest) if oldest else None)
            entry.census = {} if name == ANY else None
            runs, _ = offsetmap.decode(done, p)
            entry.skip = deque(runs) if runs else None
            out.append(entry)
        return out
    except ValueError:
        return None


class Kept(Enum):
    """How much of the park part a commit carries, down the ladder `cap` follows."""

    FULL = "full"
    MAPS_SHRUNK = "park_maps_shrunk"  # every entry's done map cut to an equal share of the room
    POSITIONS = "park_positions_only"  # a takeover resends what was done above each position
    CENSUS = "park_census"  # one ANY entry at the lowest position: the next owner counts from there
    PLAIN = "plain"  # no park part: the next owner counts from the park partition's start


def cap(text: str, max_bytes: int) -> tuple[str, Kept]:
    """The park part within `max_bytes`, saying less, never more; and how much of it that kept.

    Every step keeps every parked record within what the next owner reads back: done maps only
    spare resends, positions only move down, and an ANY entry reads everything from its position.
    """
    if len(text) <= max_bytes:
        return text, Kept.FULL
    entries = decode(text)
    if not entries:
        return "", Kept.PLAIN
    bare = _positions(entries)
    spare = max_bytes - len(bare)
    if spare >= 0:
        share = spare // len(entries)
        if share > len(offsetmap.HEAD) + 1:
            shrunk = encode([_stored(e, _done_within(e, share)) for e in entries])
            if len(shrunk) <= max_bytes:
                return shrunk, Kept.MAPS_SHRUNK
        return bare, Kept.POSITIONS
    for census in (_census(entries), _census(entries, oldest=False)):
        if len(census) <= max_bytes:
            return census, Kept.CENSUS
    return "", Kept.PLAIN


def fit(offset: int, metadata: str, max_bytes: int) -> str:
    """A commit's whole metadata (park part, then offset map) within `max_bytes`, saying less, never more.

    The park part goes first (`cap`), the offset map (its lowest done runs) in what room is left.
    """
    if len(metadata) <= max_bytes:
        return metadata
    park, rest = split(metadata)
    kept = cap(park, max_bytes)[0] if park is not None else ""
    runs, _ = offsetmap.decode(rest, offset)
    room = max_bytes - len(kept)
    return kept + (offsetmap.encode(offset, runs, room)[0] if runs and room > 0 else "")


def shorter(offset: int, metadata: str) -> str:
    """The next step down from a commit's metadata the broker refused: strictly shorter, saying less.

    Half the offset map, then none; then the park part's positions only (no done maps), then one
    ANY entry at the lowest position (a census), then nothing ("").
    """
    park, rest = split(metadata)
    if rest:
        return fit(offset, metadata, len(park or "") + len(rest) // 2)
    entries = decode(park)
    steps = (_positions(entries), _census(entries), _census(entries, oldest=False)) if entries else ()
    for step in steps:
        if len(step) < len(metadata):
            return step
    return ""


def _positions(entries: list[Entry]) -> str:
    """The park part naming every entry's position, count and oldest time, without done maps."""
    return encode([_stored(e, "") for e in entries])


def _census(entries: list[Entry], oldest: bool = True) -> str:
    """The park part naming one ANY entry at the lowest position of `entries` (the next owner's census).

    No count (the census counts again); the oldest park time of them all unless `oldest` is False
    (then shorter than any entry that has one): the census finds it again, the gauge shows it meanwhile.
    """
    low = min(e.position for e in entries if e.position is not None)
    times = [e.oldest_s for e in entries if e.oldest_s is not None]
    return encode([(ANY, low, 0, min(times) if oldest and times else None, "")])


def _merged(runs: list[Run]) -> list[Run]:
    """Runs sorted and joined where they touch or overlap (empty ones dropped)."""
    return [(start, end) for start, end in offsetmap.joined(sorted(runs)) if end > start]


def _stored(entry: Entry, done: str) -> Stored:
    assert entry.position is not None  # every decoded entry has one
    return (entry.account, entry.position, entry.count, entry.oldest_s, done)


def _done_within(entry: Entry, max_bytes: int) -> str:
    """The entry's done map (as read) again, its lowest runs within `max_bytes`."""
    assert entry.position is not None
    return offsetmap.encode(entry.position, list(entry.skip or ()), max_bytes)[0]
