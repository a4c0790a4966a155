"""FIELD_MAP and TYPE_MAP parsed: where the contract's fields are in a producer's shape, its type names.

``FIELD_MAP`` is comma-separated ``target=path``. Targets: ``account``, ``visitor``, ``sid``,
``topic`` (either type), ``lead.<field>``, ``service.<field>``. Paths: dotted keys into the decoded
object (``customer.lp.vid``; a numeric segment indexes a list), ``ce.<attribute>`` (a CloudEvents
attribute) or ``header.<name>`` (a Kafka header, as text). Unmapped targets keep their flat names
at the top level of the decoded object. ``TYPE_MAP`` is comma-separated ``glob=lead|service``
(fnmatch globs, first match wins); the names ``lead`` and ``service`` always map to themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LEAD_FIELDS = ("topic", "value", "currency", "leadId")
SERVICE_FIELDS = ("topic", "status", "category", "serviceId")
ROUTING = ("account", "visitor", "sid")
TYPES = ("lead", "service")

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
        if target in ROUTING or target == "topic":
            for kind in TYPES:
                by_type[kind][target] = path
            continue
        kind, _, name = target.partition(".")
        allowed = LEAD_FIELDS if kind == "lead" else SERVICE_FIELDS if kind == "service" else ()
        if name not in allowed:
            raise ValueError(
                f"unknown target {target!r} (account, visitor, sid, topic, "
                f"lead.{{{'|'.join(LEAD_FIELDS)}}}, service.{{{'|'.join(SERVICE_FIELDS)}}})"
            )
        by_type[kind][name] = path
    return FieldMap({k: v for k, v in by_type.items() if v})


def parse_type_map(text: str) -> tuple[tuple[str, str], ...]:
    """Parse TYPE_MAP into (glob, type) pairs in order; ValueError naming the first bad item."""
    out: list[tuple[str, str]] = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        glob, sep, kind = item.rpartition("=")
        if not sep or not glob.strip() or kind.strip() not in TYPES:
            raise ValueError(f"{item!r} is not glob=lead|service")
        out.append((glob.strip(), kind.strip()))
    return tuple(out)
