"""Offset maps in commit metadata: round trips, the size limit, and metadata that must not be read."""

from __future__ import annotations

import base64
import random
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.kafka.offsetmap import HEAD, Outcome, Run, Unread, decode, encode

pytestmark = pytest.mark.timeout(60)
FAST = settings(max_examples=300, deadline=None)


@st.composite
def done_sets(draw: st.DrawFn, max_runs: int = 400) -> tuple[int, list[Run]]:
    """A committed offset and sorted, disjoint, non-touching done runs above it."""
    base = draw(st.integers(0, 2**62))
    pairs = draw(
        st.lists(st.tuples(st.integers(1, 3000), st.integers(1, 3000)), max_size=max_runs)
        | st.lists(st.tuples(st.integers(1, 3), st.integers(1, 3)), max_size=max_runs * 8)
    )
    runs: list[Run] = []
    at = base + draw(st.integers(0, 5))  # the first run may start at the committed offset
    for i, (gap, length) in enumerate(pairs):
        start = at if i == 0 else at + gap
        runs.append((start, start + length))
        at = start + length
    return base, runs


def offsets(runs: list[Run]) -> set[int]:
    return {o for s, e in runs for o in range(s, e)}


@FAST
@given(done_sets(), st.sampled_from([64, 256, 1024, 4096]))
def test_a_map_names_only_done_offsets_and_fits(case: tuple[int, list[Run]], limit: int) -> None:
    base, runs = case
    text, outcome = encode(base, runs, limit)
    assert len(text.encode()) <= limit
    got, why = decode(text, base)
    if not runs:
        assert (text, outcome, got, why) == ("", Outcome.EMPTY, None, Unread.NONE)
    elif outcome is Outcome.FULL:
        assert got == runs, "a full map gives back exactly the done runs"
    elif outcome is Outcome.TRUNCATED:
        assert got and got == runs[: len(got)], "a truncated map is the lowest runs, whole"
    else:
        assert outcome is Outcome.PLAIN and text == "" and got is None


@FAST
@given(done_sets(max_runs=40))
def test_small_maps_fit_whole_in_the_default_limit(case: tuple[int, list[Run]]) -> None:
    base, runs = case
    text, outcome = encode(base, runs, 4096)
    assert outcome is (Outcome.FULL if runs else Outcome.EMPTY)
    assert decode(text, base)[0] == (runs or None)


def test_the_shorter_encoding_is_picked() -> None:
    sparse = [(1000 * i + 1, 1000 * i + 900) for i in range(10)]  # long runs: run-length wins
    dense = [(2 * i + 1, 2 * i + 2) for i in range(1500)]  # every other offset: bitset (compressed) wins
    assert encode(0, sparse, 4096)[0][len(HEAD)] == "r"
    assert encode(0, dense, 4096)[0][len(HEAD)] in "bB"
    assert len(encode(0, dense, 4096)[0]) < 100


def test_a_map_that_does_not_fit_keeps_its_lowest_runs() -> None:
    rng = random.Random(11)
    runs, at = [], 0
    for _ in range(20_000):  # random gaps and lengths: neither encoding nor zlib gets it into 4 KiB
        start = at + rng.randint(1, 300)
        at = start + rng.randint(1, 300)
        runs.append((start, at))
    text, outcome = encode(0, runs, 4096)
    assert outcome is Outcome.TRUNCATED and len(text) <= 4096
    got, _ = decode(text, 0)
    assert got is not None and len(got) > 100 and got == runs[: len(got)]


def test_too_small_a_limit_commits_plain() -> None:
    assert encode(10**15, [(10**15 + 1, 10**15 + 2)], 12) == ("", Outcome.PLAIN)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", Unread.NONE),
        (None, Unread.NONE),
        ("some other tool's note", Unread.FOREIGN),
        ('{"offset": 5}', Unread.FOREIGN),
        ("e", Unread.FOREIGN),
        ("ec2r" + base64.b85encode(b"\x05\x01\x01").decode(), Unread.NEWER),
        ("ec1x" + base64.b85encode(b"\x05\x01\x01").decode(), Unread.CORRUPT),
        ("ec1r~~~~", Unread.CORRUPT),
        ("ec1r", Unread.CORRUPT),
    ],
)
def test_metadata_that_is_not_a_readable_map_is_ignored(text: str | None, why: Unread) -> None:
    assert decode(text, 5) == (None, why)


def test_any_damage_to_a_map_is_caught() -> None:
    text, _ = encode(100, [(101, 150), (160, 170), (200, 201)], 4096)
    assert decode(text, 100)[0] == [(101, 150), (160, 170), (200, 201)]
    for i in range(len(HEAD), len(text)):
        for c in "0A~z":
            if c != text[i]:
                damaged = text[:i] + c + text[i + 1 :]
                assert decode(damaged, 100)[0] is None, f"damage at {i} went unnoticed: {damaged}"
    assert decode(text[:-1], 100)[0] is None
    assert decode(text + "0", 100)[0] is None


def test_a_map_for_another_offset_is_stale() -> None:
    text, _ = encode(100, [(101, 150)], 4096)
    assert decode(text, 99) == (None, Unread.STALE)
    assert decode(text, 101) == (None, Unread.STALE)


def _forge(kind: str, payload: bytes) -> str:
    crc = zlib.crc32((HEAD + kind).encode() + payload).to_bytes(4, "little")
    return HEAD + kind + base64.b85encode(payload + crc).decode()


@pytest.mark.parametrize(
    ("kind", "payload"),
    [
        ("r", b"\x05"),  # no runs
        ("r", b"\x05\x00\x00"),  # an empty run
        ("r", b"\x05\x01\x02\x00\x02"),  # touching runs
        ("r", b"\x05\x01"),  # half a pair
        ("r", b"\x05\xff"),  # truncated varint
        ("b", b"\x05\x09\x01"),  # bitset shorter than its span
        ("b", b"\x05\x03\x03"),  # last bit of the span clear
        ("b", b"\x05\x02\x07"),  # bits beyond the span
        ("R", b"\x05not zlib"),
        ("R", b"\x05" + zlib.compress(b"\x00" * (2 << 20))),  # inflates beyond the cap
    ],
)
def test_well_sealed_but_malformed_maps_are_corrupt(kind: str, payload: bytes) -> None:
    assert decode(_forge(kind, payload), 5) == (None, Unread.CORRUPT)


def test_encoding_is_bounded_for_huge_done_sets() -> None:
    runs = ((2 * i + 1, 2 * i + 2) for i in range(10**7))  # a generator: only what can fit is read
    text, outcome = encode(0, runs, 4096)
    assert outcome is Outcome.TRUNCATED and 0 < len(text) <= 4096


def test_runs_that_touch_are_encoded_as_one() -> None:
    """Runs handed to `encode` can touch (a park entry's read run, then a park copy passed over next to
    it): sparse enough for run-length encoding, the map must still read back, not be thrown away as
    corrupt (a takeover would read the copies passed over back, out of order)."""
    runs = [(5, 1000), (1000, 1001), (5000, 5001)]
    text, outcome = encode(5, runs, 400)
    assert outcome is Outcome.FULL
    assert decode(text, 5) == ([(5, 1001), (5000, 5001)], None)
