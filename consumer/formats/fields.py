"""One walker over the attribute schema: a field's value checked and made ready to send, or refused.

:func:`compile_field` turns a schema :class:`~consumer.values.schema.Field` into a check, once per
field at import, by its kind (one builder per kind, none per field). A check takes the decoded
value and a list that collects the names of unknown keys met in nested objects, and returns the
value to send (an enumeration's documented value for its name) or raises :class:`Refusal`. A
refusal knows the problem but not where it is: each enclosing object or array adds its step on
the way out, so a valid event pays for no path, and a refused one is named in full
(``products[1].product.price``).

A refusal of a ``personal`` field never carries its value: no number, no name, no preview.
``null`` in an object counts as absent (as at the top level of a message); in an array it is
refused. Decimals (what a registry decoder gives for Avro decimals nested in a record) are read
as the number they are, or refused when no request could carry them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from consumer.values.schema import (
    ARRAY,
    BOOLEAN,
    ENUM,
    INT64_MAX,
    INT64_MIN,
    INTEGER,
    MAX_STRING_CHARS,
    NUMBER,
    OBJECT,
    STRING,
    Field,
    normalise_name,
)

Check = Callable[[Any, list[str]], Any]

MAX_INT_DIGITS = 40  # a Decimal with more integer digits is not made an int (int() of 1E+999999 is costly)
_ENUM_KIND = {"status": "bad_status"}  # the service status keeps its own metric label


class Refusal(Exception):
    """A value the schema refuses: the metric `kind`, the `problem` (no path), the path in reverse."""

    def __init__(self, kind: str, problem: str) -> None:
        super().__init__(problem)
        self.kind = kind
        self.problem = problem
        self.steps: list[str] = []

    def path(self, top: str) -> str:
        """The full path of the refused value below the top-level field `top`."""
        return top + "".join(reversed(self.steps))


def json_type(value: object) -> str:
    """Name a decoded JSON value's type the way a producer would (no repr: it may nest deeply)."""
    if value is None:
        return "null"
    if type(value) is bool:
        return "boolean"
    if type(value) is int or type(value) is float:
        return "number"
    if type(value) is str:
        return "string"
    if type(value) is list:
        return "array"
    if type(value) is dict:
        return "object"
    return type(value).__name__


def preview(text: str, limit: int = 48) -> str:
    """A one-line, bounded repr of a string for an error detail."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def int_text(raw: int) -> str:
    """An integer for an error detail: its digits when short, else its size (str() of a huge int raises)."""
    return str(raw) if raw.bit_length() <= 128 else f"a {raw.bit_length()}-bit integer"


def plain_decimal(value: Decimal) -> int | float | Decimal:
    """A finite Decimal as an int (integral) or a float, else itself (not finite, too big)."""
    if not value.is_finite() or value.adjusted() >= MAX_INT_DIGITS:
        return value
    if value == value.to_integral_value():
        return int(value)
    as_float = float(value)
    return as_float if math.isfinite(as_float) else value


def wrong_type(expected: str, raw: object) -> Refusal:
    """The refusal of a value of the wrong JSON type."""
    return Refusal("wrong_type", f"expected {expected}, got {json_type(raw)}")


def _too_long(count: int, limit: int, what: str = "characters") -> Refusal:
    return Refusal("too_large", f"{count} {what}, above the {limit} limit")


def _string(field: Field) -> Check:
    lo, hi = field.min_length, field.max_length or MAX_STRING_CHARS

    def check(raw: Any, unknown: list[str]) -> Any:
        if type(raw) is not str:
            raise wrong_type("a string", raw)
        if not lo <= len(raw) <= hi:
            if lo == 0:
                raise _too_long(len(raw), hi)
            raise Refusal("bad_value", f"must be {lo}..{hi} characters, got {len(raw)}")
        return raw

    return check


def _number(field: Field) -> Check:
    secret = field.personal

    def check(raw: Any, unknown: list[str]) -> Any:
        if type(raw) is int:
            if INT64_MIN <= raw <= INT64_MAX:
                return raw
            raise Refusal("bad_value", f"{_subject(secret, raw)} is outside the 64-bit integer range")
        if type(raw) is float:
            if math.isfinite(raw):
                return raw
            raise Refusal("bad_value", f"{'the value' if secret else raw} is not a finite number")
        if type(raw) is Decimal:
            plain = plain_decimal(raw)
            if type(plain) is not Decimal:
                return check(plain, unknown)
            shown = "the value" if secret else f"decimal {preview(str(raw))}"
            raise Refusal("bad_value", f"{shown} is not a finite 64-bit number")
        raise wrong_type("a number", raw)

    return check


def _subject(secret: bool, raw: int) -> str:
    """How an error detail names an integer: its digits, or "the value" for personal data."""
    return "the value" if secret else int_text(raw)


def _integer(field: Field) -> Check:
    secret = field.personal
    lo = INT64_MIN if field.minimum is None else field.minimum
    hi = INT64_MAX if field.maximum is None else field.maximum

    def check(raw: Any, unknown: list[str]) -> Any:
        if type(raw) is not int:
            if type(raw) is Decimal and type(plain := plain_decimal(raw)) is int:
                return check(plain, unknown)
            raise wrong_type("an integer", raw)
        if lo <= raw <= hi:
            return raw
        raise Refusal("bad_value", f"{_subject(secret, raw)} is out of range {lo}..{hi}")

    return check


def _boolean(field: Field) -> Check:
    def check(raw: Any, unknown: list[str]) -> Any:
        if type(raw) is not bool:
            raise wrong_type("a boolean", raw)
        return raw

    return check


def _enum(field: Field) -> Check:
    """An enumeration by documented value or by name (case-insensitive, spaces, _ and - alike)."""
    secret, label = field.personal, field.name
    bad = _ENUM_KIND.get(field.name, "bad_value")
    codes = [c.value for c in field.choices if type(c.value) is int]
    by_value = {c.value: c.value for c in field.choices}
    by_name = {normalise_name(c.name): c.value for c in field.choices}
    # spellings producers commonly send, looked up before the (slower) normalisation
    exact = {
        s: c.value
        for c in field.choices
        for s in (c.name, c.name.lower(), c.name.upper(), c.name.upper().replace(" ", "_"))
    }
    if codes:
        lo, hi = min(codes), max(codes)
        expected = f"an integer {lo}..{hi} or a {label} name"
    else:
        expected = f"a {label} name ({', '.join(str(c.name) for c in field.choices)})"

    def check(raw: Any, unknown: list[str]) -> Any:
        if type(raw) is str:
            if len(raw) > MAX_STRING_CHARS:
                raise _too_long(len(raw), MAX_STRING_CHARS)
            value = exact.get(raw)
            if value is None:
                value = by_name.get(normalise_name(raw))
            if value is None:
                shown = "" if secret else f" {preview(raw)}"
                raise Refusal(bad, f"unknown {label} name{shown}")
            return value
        if codes and type(raw) is int:
            if raw in by_value:
                return raw
            raise Refusal(bad, f"{_subject(secret, raw)} is out of range {lo}..{hi}")
        raise wrong_type(expected, raw)

    return check


def _object(field: Field, where: str) -> Check:
    members = {f.name: compile_field(f, f"{where}.{f.name}") for f in field.fields}
    required = tuple(f.name for f in field.fields if f.required)

    def check(raw: Any, unknown: list[str]) -> Any:
        if type(raw) is not dict:
            raise wrong_type("an object", raw)
        out: dict[str, Any] = {}
        for key, value in raw.items():
            member = members.get(key)
            if member is None:
                unknown.append(f"{where}.{key}")
            elif value is not None:
                try:
                    out[key] = member(value, unknown)
                except Refusal as refusal:
                    refusal.steps.append(f".{key}")
                    raise
        for name in required:
            if name not in out:
                missing = Refusal("missing_field", "is missing")
                missing.steps.append(f".{name}")
                raise missing
        return out

    return check


def _array(field: Field, where: str) -> Check:
    assert field.items is not None
    item = compile_field(field.items, f"{where}[]")
    limit = field.max_length if field.max_length is not None else MAX_STRING_CHARS

    def check(raw: Any, unknown: list[str]) -> Any:
        if type(raw) is not list:
            raise wrong_type("an array", raw)
        if len(raw) > limit:
            raise _too_long(len(raw), limit, "items")
        out = []
        for index, value in enumerate(raw):
            try:
                out.append(item(value, unknown))
            except Refusal as refusal:
                refusal.steps.append(f"[{index}]")
                raise
        return out

    return check


_SCALARS: dict[str, Callable[[Field], Check]] = {
    STRING: _string,
    NUMBER: _number,
    INTEGER: _integer,
    BOOLEAN: _boolean,
    ENUM: _enum,
}


def compile_field(field: Field, where: str | None = None) -> Check:
    """The check of one schema field (its nested fields included); `where` names it in unknown keys."""
    where = field.name if where is None else where
    if field.kind == OBJECT:
        return _object(field, where)
    if field.kind == ARRAY:
        return _array(field, where)
    return _SCALARS[field.kind](field)
