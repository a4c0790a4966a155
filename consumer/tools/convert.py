"""`engagement-consumer convert`: what the daemon would send for one message, or why it would not.

Reads one message value (the raw bytes of FILE, or stdin) as if consumed from `--topic` with the
given headers, and runs it through the daemon's own decoding, typing, mapping and validation
(consumer.formats.reader). Prints the visit, the encoding found, the attribute and the request
body as JSON; or the invalid-event reason on stderr with exit code 1. A Schema Registry value is
decoded with SCHEMA_REGISTRY_URL (the schema is fetched as the daemon fetches it); an unreachable
registry exits 2 (the daemon would hold the event and retry). The integrator's test bench.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from consumer.errors import InvalidEvent
from consumer.formats.events import encode_attributes
from consumer.formats.message import Headers
from consumer.formats.reader import EventReader
from consumer.formats.registry import RegistryUnavailable, SchemaPending
from consumer.liveperson.url import events_url
from consumer.tools.common import settings_or_report


def add_parser(sub: Any) -> None:
    """Register `convert`."""
    p = sub.add_parser(
        "convert",
        help="print what the daemon would send for one message (or the invalid-event reason, exit 1)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        epilog="Input settings from the environment: LEAD_TOPICS, SERVICE_TOPICS, the other types' *_TOPICS "
        "(CART_TOPICS, PERSONAL_TOPICS, ...), EVENT_TOPICS, TYPE_FIELD, TYPE_MAP, FIELD_MAP, "
        "SCHEMA_REGISTRY_URL (Kafka and LivePerson settings are not needed).",
    )
    p.add_argument("file", nargs="?", default="-", help="file holding one message value ('-': stdin)")
    p.add_argument("--topic", required=True, help="the topic the message would be consumed from")
    p.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="K=V",
        help="a Kafka header of the message (repeatable), e.g. --header ce_specversion=1.0",
    )
    p.set_defaults(handler=main)


def parse_headers(items: list[str]) -> Headers:
    """`k=v` strings -> Kafka headers (values as UTF-8 bytes); ValueError on an item without `=`."""
    headers: Headers = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--header {item!r}: expected K=V")
        headers.append((key, value.encode()))
    return headers


def convert(reader: EventReader, topic: str, value: bytes, headers: Headers) -> dict[str, Any]:
    """One message -> the JSON-able description of what would be sent (InvalidEvent when invalid)."""
    kind = reader.kinds[topic]
    try:
        decoded = reader.decode(value, headers)
    except SchemaPending as pending:
        assert reader.registry is not None
        reader.registry.prepare(pending.schema_id, value)  # RegistryUnavailable propagates
        decoded = reader.decode(value, headers)
    event = reader.read_decoded(kind, decoded, headers)
    out: dict[str, Any] = {
        "topic": topic,
        "topic_type": kind,
        "encoding": decoded.encoding,
        "visit": event.visit._asdict(),
        "type": event.type,
        "request": "POST " + events_url("", *event.visit),
        "body": orjson.loads(encode_attributes([event.attribute])),
    }
    if decoded.ce is not None:
        out["cloudevents"] = decoded.ce
    if event.unknown_fields:
        out["ignored_fields"] = list(event.unknown_fields)
    return out


def main(args: argparse.Namespace) -> int:
    """Convert one message; exit 0 (printed), 1 (invalid event or bad input), 2 (registry unreachable)."""
    settings = settings_or_report(require_kafka=False, require_credentials=False)
    if settings is None:
        return 1
    if args.topic not in settings.topics:
        known = ", ".join(sorted(settings.topics)) or "none"
        print(f"error: {args.topic!r} is not a configured topic ({known})", file=sys.stderr)
        return 1
    try:
        headers = parse_headers(args.header)
        if args.file == "-":
            value = sys.stdin.buffer.read()
        else:
            with open(args.file, "rb") as stream:
                value = stream.read()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        out = convert(EventReader(settings), args.topic, value, headers)
    except InvalidEvent as exc:
        print(f"invalid_event ({exc.kind}): {exc}", file=sys.stderr)
        return 1
    except RegistryUnavailable as exc:
        print(
            f"schema registry unavailable (the daemon would hold this event and retry): {exc}",
            file=sys.stderr,
        )
        return 2
    sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0
