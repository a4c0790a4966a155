"""The README's table of the ten attribute types and their examples, written from the schema.

``python -m consumer.tools.schema_doc`` rewrites the part of README.md between the markers below;
tests/unit/test_schema_doc.py fails when the README and the schema disagree. The examples are each
type's schema example, run through the daemon's own validation, so the attribute shown is the one
sent.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

from consumer.formats.events import build_event
from consumer.values.attributes import ATTRIBUTES
from consumer.values.schema import (
    ARRAY,
    BOOLEAN,
    ENUM,
    INT32_MAX,
    INT32_MIN,
    INTEGER,
    MAX_STRING_CHARS,
    NUMBER,
    OBJECT,
    STRING,
    AttributeType,
    Field,
)

BEGIN, END = "<!-- attributes:begin -->", "<!-- attributes:end -->"
ROUTING: dict[str, Any] = {"account": "1234", "visitor": "xyz", "sid": "rty.uio"}
BEHAVIOUR = {"append": "adds an item", "update": "updates the fields given", "replace": "replaces it"}


def describe(field: Field) -> str:
    """One field in the table's notation: name, kind and bounds, required, personal, members."""
    text = f"`{field.name}`"
    if field.personal and not field.fields and field.items is None:
        text += " ‡"
    if field.required:
        text += " **required**"
    kind = _kind(field)
    return f"{text} {kind}" if kind else text


def _kind(field: Field) -> str:
    if field.kind == STRING:
        hi = field.max_length or MAX_STRING_CHARS
        return f"string {field.min_length}..{hi}" if field.min_length or hi != MAX_STRING_CHARS else ""
    if field.kind == NUMBER:
        return "number"
    if field.kind == BOOLEAN:
        return "boolean"
    if field.kind == INTEGER:
        return _integer(field.minimum, field.maximum)
    if field.kind == ENUM:
        if all(type(c.value) is int for c in field.choices):
            return "(" + ", ".join(f"{c.value} {c.name}" for c in field.choices) + "; or the name)"
        return "(" + ", ".join(str(c.value) for c in field.choices) + ")"
    if field.kind == OBJECT:
        return "{" + ", ".join(describe(sub) for sub in field.fields) + "}"
    if field.kind == ARRAY and field.items is not None:
        inner = "strings" if field.items.kind == STRING else f"of {_kind(field.items)}"
        return f"[up to {field.max_length} {inner}]"
    return field.kind


def _integer(lo: int | None, hi: int | None) -> str:
    if (lo, hi) == (INT32_MIN, INT32_MAX):
        return "integer"
    if (lo, hi) == (0, INT32_MAX):
        return "integer ≥ 0"
    if lo is not None and lo < INT32_MIN:
        return "integer (64-bit)"
    return f"integer {lo}..{hi}"


def _sent_as(kind: AttributeType) -> str:
    if kind.nest is None:
        return f'`{{"type": "{kind.name}", …}}`'
    return f'`{{"type": "{kind.name}", "{kind.nest}": {{…}}}}`'


def table() -> str:
    """The markdown table: one row per type (its topic setting, its shape, its fields, how it adds up)."""
    rows = [
        "| type | topics | sent as | fields, flat in the message | sent again (chat · messaging) |",
        "|---|---|---|---|---|",
    ]
    for kind in ATTRIBUTES.values():
        fields = ", ".join(describe(f) for f in kind.fields)
        again = f"{BEHAVIOUR[kind.chat]} · {BEHAVIOUR[kind.messaging]}"
        auth = " (authenticated flow too)" if kind.authenticated else ""
        rows.append(
            f"| `{kind.name}` {kind.title}{auth} | `{kind.setting}` | {_sent_as(kind)} | {fields} | {again} |"
        )
    return "\n".join(rows)


def examples() -> str:
    """Each type's example message and the attribute the daemon sends for it."""
    lines = ["```text"]
    for kind in ATTRIBUTES.values():
        message = {**ROUTING, **kind.example}
        attribute = build_event(message, kind.name).attribute
        lines.append(f"{kind.setting}: " + orjson.dumps(message).decode())
        lines.append("  sent: " + orjson.dumps(attribute).decode())
    lines.append("```")
    return "\n".join(lines)


def block() -> str:
    """What belongs between the README's markers."""
    return f"{BEGIN}\n{table()}\n\n{examples()}\n{END}"


def render(readme: str) -> str:
    """The README with its attribute block rewritten; ValueError when the markers are missing."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README has no {BEGIN} ... {END} block")
    return readme[:start] + block() + readme[end + len(END) :]


def main(argv: list[str]) -> int:
    """Rewrite the attribute block of the README given (default ./README.md)."""
    path = Path(argv[0] if argv else "README.md")
    path.write_text(render(path.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
