"""Unsigned LEB128 varints (protobuf's encoding): offset maps and Confluent protobuf message indexes."""

from __future__ import annotations


def read_varint(data: bytes, at: int, what: str = "varint") -> tuple[int, int]:
    """The unsigned varint at `at` and the position after it; ValueError naming `what` if truncated."""
    n = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError(f"truncated {what}")
        byte = data[at]
        at += 1
        n |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return n, at
        shift += 7


def write_varint(n: int) -> bytes:
    """The unsigned varint of `n` (>= 0)."""
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)
