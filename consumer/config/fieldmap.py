"""FIELD_MAP and TYPE_MAP parsed: where the contract's fields are in a producer's shape, its type names.

``FIELD_MAP`` is comma-separated ``target=path``. Targets: ``account``, ``visitor``, ``sid`` (every
type), ``topic`` (the types with a ``topic`` field: lead, service), or ``<type>.<field>`` for any
field of any of the ten types, written as in the flat message with dots all the way down and a
number for an array index: ``lead.value``, ``cart.total``, ``cart.products.0.product.price``,
``personal.contacts.0.email``, ``ctmrinfo.lastPaymentDate.day``, ``searchInfo.keywords.0``. The
type name is read case-insensitively (``prodview.products``), the field names exactly. Paths: dotted
keys into the decoded object (``customer.lp.vid``; a numeric segment indexes a list),
``ce.<attribute>`` (a CloudEvents attribute) or ``header.<name>`` (a Kafka header, as text).
Unmapped targets keep their flat names at the top level of the decoded object. ``TYPE_MAP`` is
comma-separated ``glob=<type>`` (fnmatch globs, first match wins); each type's own name always maps
to itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from consumer.values.attributes import ATTRIBUTES, TYPES
from consumer.values.schema import ARRAY, OBJECT, Field

LEAD_FIELDS = ATTRIBUTES["lead"].field_names
SERVICE_FIELDS = ATTRIBUTES["service"].field_names
ROUTING = ("account", "visitor", "sid")
_BY_LOWER = {name.lower(): name for name in TYPES}

DATA, CE, HEADER = "data", "ce", "header"


@dataclass(frozen=True, slots=True)
class Path:
    """Where a value is: in the decoded data (keys), a CloudEvents attribute, or a Kafka header."""

    source: str
    keys: tuple[str, ...]
    text: str


def parse_path(text: str) -> Path:
    """Parse one path (``a.b.c``, ``ce.<attribute>``, ``header.<name>``); ValueError when malformed."""
    text = text.strip()
    if not text:
        raise ValueError("empty path")
    head, _, rest = text.partition(".")
    if head == HEADER and rest:
        return Path(HEADER, (rest,), text)
    if head == CE and rest:
        return Path(CE, (rest.lower(),), text)
    keys = tuple(text.split("."))
    if any(not k for k in keys):
        raise ValueError(f"path {text!r} has an empty segment")
    return Path(DATA, keys, text)


@dataclass(frozen=True, slots=True)
class FieldMap:
    """Mapped targets per attribute type: flat field name -> Path (routing and topic in both)."""

    by_type: dict[str, dict[str, Path]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return any(self.by_type.values())

    def paths(self, kind: str) -> dict[str, Path]:
        """The mapped flat fields of one type."""
        return self.by_type.get(kind, {})


def parse_field_map(text: str) -> FieldMap:
    """Parse FIELD_MAP; ValueError naming the first bad item."""
    by_type: dict[str, dict[str, Path]] = {kind: {} for kind in TYPES}
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        target, sep, raw = item.partition("=")
        target = target.strip()
        if not sep:
            raise ValueError(f"{item!r} is not target=path")
        try:
            path = parse_path(raw)
        except ValueError as exc:
            raise ValueError(f"{target}: {exc}") from None
        if target in ROUTING:
            for kind in TYPES:
                by_type[kind][target] = path
            continue
        if target == "topic":
            for kind in TYPES:
                if ATTRIBUTES[kind].field("topic") is not None:
                    by_type[kind][target] = path
            continue
        head, _, name = target.partition(".")
        named = _BY_LOWER.get(head.lower())
        if named is None:
            raise ValueError(
                f"unknown target {target!r} (account, visitor, sid, topic or <type>.<field>, "
                f"a type one of {', '.join(TYPES)})"
            )
        problem = target_problem(named, name)
        if problem:
            raise ValueError(f"unknown target {target!r}: {problem}")
        by_type[named][name] = path
    return FieldMap({k: v for k, v in by_type.items() if v})


def target_problem(kind: str, name: str) -> str | None:
    """Why `name` (``total``, ``contacts.0.email``) is no field of type `kind`, None when it is one."""
    fields: tuple[Field, ...] = ATTRIBUTES[kind].fields
    where = kind
    steps = name.split(".") if name else [""]
    index = 0
    while index < len(steps):
        step = steps[index]
        found = next((f for f in fields if f.name == step), None)
        if found is None:
            return f"{where} has no field {step!r} (its fields: {', '.join(f.name for f in fields)})"
        where = f"{where}.{step}"
        index += 1
        if found.kind == ARRAY and found.items is not None and index < len(steps):
            if not steps[index].isdigit():
                return f"{where} is an array: the next step is an index (0, 1, ...), not {steps[index]!r}"
            limit = found.max_length
            if limit is not None and int(steps[index]) >= limit:
                return f"{where} holds at most {limit} items"
            where, index, found = f"{where}.{steps[index]}", index + 1, found.items
        if index < len(steps) and found.kind != OBJECT:
            return f"{where} is a {found.kind}, it has no field {steps[index]!r}"
        fields = found.fields
    return None


def parse_type_map(text: str) -> tuple[tuple[str, str], ...]:
    """Parse TYPE_MAP into (glob, type) pairs in order; ValueError naming the first bad item."""
    out: list[tuple[str, str]] = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        glob, sep, kind = item.rpartition("=")
        name = _BY_LOWER.get(kind.strip().lower())
        if not sep or not glob.strip() or name is None:
            raise ValueError(f"{item!r} is not glob=<type> (a type one of {', '.join(TYPES)})")
        out.append((glob.strip(), name))
    return tuple(out)
