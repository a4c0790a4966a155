"""The words the attribute schema is written in: field kinds, a field, an attribute type.

`consumer.values.attributes` describes LivePerson's ten types with these; this module holds only
the vocabulary (and imports nothing of ours).

A field's ``kind`` is one of STRING, NUMBER (a finite double, or an integer within 64 bits),
INTEGER (``minimum``..``maximum``), BOOLEAN, ENUM (one of ``choices``, given by its value or,
case-insensitively, its name), OBJECT (``fields``) and ARRAY (of ``items``; ``max_length`` bounds
the count). A STRING's ``min_length``/``max_length`` bound its characters (``max_length`` None:
MAX_STRING_CHARS). ``personal`` marks a field that carries personal data: its value never
appears in a log line, a trace, a metric or an error detail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "ARRAY",
    "BOOLEAN",
    "ENUM",
    "INT32_MAX",
    "INT32_MIN",
    "INT64_MAX",
    "INT64_MIN",
    "INTEGER",
    "KINDS",
    "MAX_CURRENCY_CHARS",
    "MAX_STRING_CHARS",
    "NUMBER",
    "OBJECT",
    "STRING",
    "AttributeType",
    "Choice",
    "Field",
    "normalise_name",
    "walk",
]

STRING, NUMBER, INTEGER, BOOLEAN, ENUM, OBJECT, ARRAY = (
    "string",
    "number",
    "integer",
    "boolean",
    "enum",
    "object",
    "array",
)
KINDS = (STRING, NUMBER, INTEGER, BOOLEAN, ENUM, OBJECT, ARRAY)

MAX_STRING_CHARS = 4096
MAX_CURRENCY_CHARS = 16
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1  # LivePerson's "integer"
INT64_MIN, INT64_MAX = -(2**63), 2**64 - 1  # what the request's JSON encoder (orjson) writes


@dataclass(frozen=True, slots=True)
class Choice:
    """One documented value of an enumeration and its name (``0`` "Complete", ``"MALE"`` "MALE")."""

    value: int | str
    name: str


@dataclass(frozen=True, slots=True)
class Field:
    """One field of an attribute, or of an object or array item nested in one."""

    name: str
    kind: str
    required: bool = False
    personal: bool = False
    minimum: int | None = None
    maximum: int | None = None
    min_length: int = 0
    max_length: int | None = None
    choices: tuple[Choice, ...] = ()
    fields: tuple[Field, ...] = ()
    items: Field | None = None
    doc: str = ""

    def member(self, name: str) -> Field | None:
        """The object field called `name`, None when there is none."""
        for sub in self.fields:
            if sub.name == name:
                return sub
        return None


@dataclass(frozen=True, slots=True)
class AttributeType:
    """One engagement attribute type: its fields and what LivePerson says about sending it.

    ``nest``: the key the fields sit under in the attribute sent, None for beside ``type``.
    ``setting``: its topic setting (``CART_TOPICS``). ``chat``/``messaging``: what sending it
    again does (``append`` an item, ``update`` the properties given, ``replace`` the previous
    value). ``authenticated``: supported in LivePerson's authenticated flow. ``example``: the
    type's fields of one flat message (no routing fields; enumerations may be given by name).
    """

    name: str
    title: str
    family: str
    nest: str | None
    fields: tuple[Field, ...]
    setting: str
    chat: str
    messaging: str
    authenticated: bool
    example: dict[str, Any]

    def field(self, name: str) -> Field | None:
        """The top-level field called `name` (a key of the flat message), None when there is none."""
        for sub in self.fields:
            if sub.name == name:
                return sub
        return None

    @property
    def field_names(self) -> tuple[str, ...]:
        """The top-level field names, in documented order."""
        return tuple(f.name for f in self.fields)


def walk(fields: tuple[Field, ...], prefix: str = "") -> list[tuple[str, Field]]:
    """Every field under `fields` with its dotted path, depth first; an array's item as ``name[]``."""
    out: list[tuple[str, Field]] = []
    for f in fields:
        path = f"{prefix}{f.name}"
        out.append((path, f))
        if f.kind == OBJECT:
            out += walk(f.fields, path + ".")
        elif f.kind == ARRAY and f.items is not None:
            item = f.items
            if item.kind == OBJECT:
                out += walk(item.fields, path + "[].")
    return out


def normalise_name(name: str) -> str:
    """An enumeration name as compared: casefolded, runs of spaces, ``_`` and ``-`` as one space."""
    return " ".join(name.replace("_", " ").replace("-", " ").split()).casefold()
