"""The stand-in API's check of one received attribute against the documented shape of its type.

It reads the same schema the daemon validates its input with (`consumer.values.attributes`), but
checks the *output*: the JSON LivePerson receives, strictly. That makes it an independent check of
what the daemon sends: the daemon may take an enumeration by name, a missing optional as ``null``,
unknown input keys; the API side takes none of that.

- ``type`` is one of the ten documented types, spelled exactly.
- A type with a ``nest`` (lead, service, error, ctmrinfo, mrktInfo, personal) carries exactly
  ``type`` and that object (always: the daemon sends it, possibly empty); the others carry their
  fields beside ``type``.
- Every object (the attribute, nested objects, array items) has only documented keys; a required
  field is present; a field's value has its kind: a string (within its bounds), a finite number
  (not a boolean), an integer in its range, a boolean, an array of its items (within its bound),
  an object; an enumeration is one of its documented *values* (``0``, ``"MALE"``), never a name.
  ``null`` is no value of any kind.

The first problem found (fields in documented order, then unknown keys) is named by its path,
never echoing the value (it may be personal data):
``products[1].product.price: expected a number, got string``.
"""

from __future__ import annotations

import math
from typing import Any

from consumer.formats.fields import json_type
from consumer.values.attributes import ATTRIBUTES, TYPES
from consumer.values.schema import (
    ARRAY,
    BOOLEAN,
    ENUM,
    INTEGER,
    MAX_STRING_CHARS,
    NUMBER,
    OBJECT,
    STRING,
    Field,
)

__all__ = ["attribute_problem"]

_WHAT = {STRING: "a string", NUMBER: "a number", INTEGER: "an integer", BOOLEAN: "a boolean"}
_WHAT |= {OBJECT: "an object", ARRAY: "an array"}


def attribute_problem(attribute: object) -> str:
    """What is wrong with one received attribute ("" if it has exactly a documented shape)."""
    if type(attribute) is not dict:
        return f"expected an object, got {json_type(attribute)}"
    kind = attribute.get("type")
    schema = ATTRIBUTES.get(kind) if type(kind) is str else None
    if schema is None:
        return f"type: expected one of {', '.join(TYPES)}, got {_shown(kind)}"
    if schema.nest is None:
        return _object_problem(attribute, schema.fields, "", allowed=("type",))
    nested = attribute.get(schema.nest)
    if schema.nest not in attribute:
        return f"{schema.nest}: missing (a {kind} attribute carries its fields in it)"
    if type(nested) is not dict:
        return f"{schema.nest}: expected an object, got {json_type(nested)}"
    extra = [key for key in attribute if key not in ("type", schema.nest)]
    if extra:
        return f"{extra[0]}: not a field of {kind}"
    return _object_problem(nested, schema.fields, f"{schema.nest}.")


def _object_problem(
    obj: dict[str, Any], fields: tuple[Field, ...], prefix: str, allowed: tuple[str, ...] = ()
) -> str:
    """The first problem of an object's fields, then of its undocumented keys."""
    for field in fields:
        path = f"{prefix}{field.name}"
        if field.name not in obj:
            if field.required:
                return f"{path}: required, missing"
            continue
        problem = _value_problem(obj[field.name], field, path)
        if problem:
            return problem
    names = {field.name for field in fields}
    for key in obj:
        if key not in names and key not in allowed:
            return f"{prefix}{key}: not a documented field"
    return ""


def _value_problem(value: object, field: Field, path: str) -> str:
    """What is wrong with one field's value ("" if nothing); the value itself is never echoed."""
    if field.kind == ENUM:
        if any(type(value) is type(c.value) and value == c.value for c in field.choices):
            return ""
        documented = ", ".join(repr(c.value) for c in field.choices)
        undocumented = "an undocumented " if any(type(value) is type(c.value) for c in field.choices) else ""
        return f"{path}: expected one of {documented}, got {undocumented}{json_type(value)}"
    if not _is_kind(value, field.kind):
        return f"{path}: expected {_WHAT[field.kind]}, got {json_type(value)}"
    if isinstance(value, str):
        return _bounds(len(value), field.min_length, field.max_length or MAX_STRING_CHARS, path, "characters")
    if isinstance(value, bool):
        return ""
    if isinstance(value, int) and field.kind == INTEGER:
        lo, hi = field.minimum, field.maximum
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            return f"{path}: outside {lo}..{hi}"
        return ""
    if isinstance(value, dict):
        return _object_problem(value, field.fields, f"{path}.")
    if isinstance(value, list):
        return _array_problem(value, field, path)
    return ""


def _array_problem(items: list[Any], field: Field, path: str) -> str:
    """The array's count within its bounds, then the first problem of an item."""
    problem = _bounds(len(items), field.min_length, field.max_length, path, "items")
    if problem or field.items is None:
        return problem
    for i, item in enumerate(items):
        problem = _value_problem(item, field.items, f"{path}[{i}]")
        if problem:
            return problem
    return ""


def _is_kind(value: object, kind: str) -> bool:
    """Whether a decoded JSON value is of a (non-enumeration) field kind."""
    if kind == NUMBER:
        return type(value) is int or (type(value) is float and math.isfinite(value))
    expected = {STRING: str, INTEGER: int, BOOLEAN: bool, OBJECT: dict, ARRAY: list}[kind]
    return type(value) is expected


def _bounds(count: int, least: int, most: int | None, path: str, unit: str) -> str:
    if count < least or (most is not None and count > most):
        return f"{path}: {count} {unit}, expected {least}..{most if most is not None else ''}"
    return ""


def _shown(value: object) -> str:
    """A short repr of an unknown type name (never a field's value: that may be personal data)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."
