"""Offset maps: which offsets above a committed one are already done, in a commit's metadata string.

In the manner of Confluent's Parallel Consumer, but our own small versioned text format:

    "ec" VERSION KIND base85( varint(base) BODY crc32 )

- VERSION is one character, "1" today. A map of another version, of another format (anything not
  starting with "ec"), or one that fails any check (base85, varints, lengths, CRC-32, its base not
  equal to the committed offset) is not read: the next owner then behaves as with a plain commit.
- KIND "r": run-length BODY, varint pairs (gap, length) of done runs: the first gap counts from
  `base` (it may be 0), each later gap from the end of the previous run (at least 1).
  KIND "b": bitset BODY, varint(bits) then the bits, little-endian: bit i set = offset base+i done.
  Upper-case "R"/"B": the same BODY compressed with zlib.
- Every commit picks the shortest candidate. When none fits `max_bytes` (the broker's
  offset.metadata.max.bytes), the lowest done runs that fit are kept (a map may always say less
  than is done, never more); when not even one fits, the commit carries no map.

A map only ever names offsets that were done when it was written, and done is final (delivered, or
dead letter acknowledged), so a reader that skips exactly what a readable map names skips nothing
that is not done.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Iterable, Iterator
from enum import Enum
from itertools import islice

from consumer.util.varint import read_varint, write_varint

PREFIX = "ec"
VERSION = "1"
HEAD = PREFIX + VERSION
_RLE, _BITS = "r", "b"
_KINDS = {_RLE: (False, _RLE), _BITS: (False, _BITS), "R": (True, _RLE), "B": (True, _BITS)}
_CRC_BYTES = 4
_MAX_INFLATED = 1 << 20  # a map never inflates beyond this (zlib bombs, corrupt lengths)
_MIN_COMPRESS = 64  # bodies shorter than this do not shrink under zlib

Run = tuple[int, int]  # [start, end) of done offsets


class Outcome(Enum):
    """How much of the done set a commit's metadata carries."""

    EMPTY = "empty"  # nothing done above the committed offset: no map needed
    FULL = "full"
    TRUNCATED = "truncated"  # did not fit: the lowest runs that fit
    PLAIN = "plain"  # did not fit at all: no map


class Unread(Enum):
    """Why the metadata of a commit gave no map (plain behaviour follows)."""

    NONE = "none"  # empty metadata
    FOREIGN = "foreign"  # not ours (another tool's metadata)
    NEWER = "newer_version"
    CORRUPT = "corrupt"
    STALE = "stale"  # a map for another offset than the committed one


def raw_budget(max_bytes: int) -> int:
    """How many payload bytes (base, body, CRC) a map of at most `max_bytes` characters can carry."""
    return max(0, (max_bytes - len(HEAD) - 1) * 4 // 5)


def encode(base: int, runs: Iterable[Run], max_bytes: int) -> tuple[str, Outcome]:
    """The metadata for a commit at `base` naming the done `runs` (sorted, disjoint, all >= base)."""
    budget = raw_budget(max_bytes)
    head = _varint(base)
    room = budget - len(head) - _CRC_BYTES
    if room < 2:
        return "", Outcome.PLAIN
    # Bounded work: a body beyond 16x the room cannot fit even compressed; runs past that are dropped.
    cap = 8 * room
    taken = list(islice(joined(runs), cap + 1))
    if not taken:
        return "", Outcome.EMPTY
    capped = len(taken) > cap
    if capped:
        taken = taken[:cap]
    values = _rle_values(base, taken)
    kind, body = _RLE, _varints(values)
    span = taken[-1][1] - base
    if (span + 7) // 8 < len(body):  # short runs, densely mixed: a bit per offset is shorter
        kind, body = _BITS, _bitset(base, taken, span)
    if len(body) >= _MIN_COMPRESS:
        packed = zlib.compress(body, 6)
        if len(packed) < len(body):
            kind, body = kind.upper(), packed
    if len(body) <= room:
        return _text(kind, head + body), Outcome.TRUNCATED if capped else Outcome.FULL
    body = _rle_within(values, room)
    if not body:
        return "", Outcome.PLAIN
    return _text(_RLE, head + body), Outcome.TRUNCATED


def decode(text: str | None, committed: int) -> tuple[list[Run] | None, Unread | None]:
    """The done runs a commit's metadata names above `committed`; (None, why) when it names none."""
    if not text:
        return None, Unread.NONE
    if not text.startswith(PREFIX) or len(text) < len(HEAD) + 1:
        return None, Unread.FOREIGN
    if text[len(PREFIX)] != VERSION:
        return None, Unread.NEWER if text[len(PREFIX)].isdigit() else Unread.FOREIGN
    kind = _KINDS.get(text[len(HEAD)])
    if kind is None:
        return None, Unread.CORRUPT
    try:
        raw = base64.b85decode(text[len(HEAD) + 1 :])
    except ValueError:
        return None, Unread.CORRUPT
    if len(raw) <= _CRC_BYTES:
        return None, Unread.CORRUPT
    payload, crc = raw[:-_CRC_BYTES], raw[-_CRC_BYTES:]
    if zlib.crc32(text[: len(HEAD) + 1].encode() + payload).to_bytes(_CRC_BYTES, "little") != crc:
        return None, Unread.CORRUPT
    try:
        base, at = read_varint(payload, 0)
        body = payload[at:]
        compressed, layout = kind
        if compressed:
            inflater = zlib.decompressobj()
            body = inflater.decompress(body, _MAX_INFLATED)
            if inflater.unconsumed_tail or not inflater.eof or inflater.unused_data:
                return None, Unread.CORRUPT
        runs = _read_rle(base, body) if layout == _RLE else _read_bitset(base, body)
    except (ValueError, zlib.error):
        return None, Unread.CORRUPT
    if base != committed:
        return None, Unread.STALE
    return runs, None


def _text(kind: str, payload: bytes) -> str:
    crc = zlib.crc32((HEAD + kind).encode() + payload).to_bytes(_CRC_BYTES, "little")
    return HEAD + kind + base64.b85encode(payload + crc).decode("ascii")


def _varint(n: int) -> bytes:
    if n < 0:
        raise ValueError(f"negative value in an offset map: {n}")
    return write_varint(n)


def joined(runs: Iterable[Run]) -> Iterator[Run]:
    """The runs in order, those that touch or overlap joined into one (so each gap after is at least 1)."""
    held: Run | None = None
    for start, end in runs:
        if held is not None and start <= held[1]:
            held = (held[0], max(held[1], end))
            continue
        if held is not None:
            yield held
        held = (start, end)
    if held is not None:
        yield held


def _rle_values(base: int, runs: list[Run]) -> list[int]:
    """(gap, length) of each run, flat: the gap from the previous run's end (the first from base)."""
    values: list[int] = []
    prev = base
    for start, end in runs:
        values.append(start - prev)
        values.append(end - start)
        prev = end
    return values


def _varints(values: list[int]) -> bytes:
    if max(values) < 0x80:  # the common case: one byte each
        return bytes(values)
    out = bytearray()
    for v in values:
        if v < 0x80:
            out.append(v)
        elif v < 0x4000:
            out += bytes(((v & 0x7F) | 0x80, v >> 7))
        else:
            out += _varint(v)
    return bytes(out)


def _rle_within(values: list[int], room: int) -> bytes:
    """The run-length body of the lowest runs that fit in `room` bytes."""
    size = pairs = 0
    for i in range(0, len(values), 2):
        size += len(_varint(values[i])) if values[i] >= 0x80 else 1
        size += len(_varint(values[i + 1])) if values[i + 1] >= 0x80 else 1
        if size > room:
            break
        pairs += 1
    return _varints(values[: 2 * pairs]) if pairs else b""


def _read_rle(base: int, body: bytes) -> list[Run]:
    runs: list[Run] = []
    at, prev = 0, base
    while at < len(body):
        gap, at = read_varint(body, at)
        length, at = read_varint(body, at)
        if length < 1 or (runs and gap < 1):
            raise ValueError("empty run or touching runs")
        start = prev + gap
        runs.append((start, start + length))
        prev = start + length
    if not runs:
        raise ValueError("no runs")
    return runs


def _bitset(base: int, runs: list[Run], span: int) -> bytes:
    parts: list[str] = []  # bit i is character i: O(span), unlike OR-ing each run into an int
    prev = base
    for start, end in runs:
        parts.append("0" * (start - prev))
        parts.append("1" * (end - start))
        prev = end
    bits = int("".join(parts)[::-1], 2)
    return _varint(span) + bits.to_bytes((span + 7) // 8, "little")


def _read_bitset(base: int, body: bytes) -> list[Run]:
    span, at = read_varint(body, 0)
    data = body[at:]
    if span < 1 or len(data) != (span + 7) // 8:
        raise ValueError("bitset length")
    bits = int.from_bytes(data, "little")
    if bits >> (span - 1) != 1:
        raise ValueError("bits beyond the span, or the last bit clear")
    runs: list[Run] = []
    at = 0
    while bits:
        zeros = (bits & -bits).bit_length() - 1  # clear bits below the next run
        bits >>= zeros
        at += zeros
        ones = (~bits & (bits + 1)).bit_length() - 1  # length of the run of set bits
        runs.append((base + at, base + at + ones))
        bits >>= ones
        at += ones
    return runs
