"""`engagement-consumer produce`: send events (JSON lines, or generated samples) to the topics.

For smoke tests in a real cluster. Each line is one event object. A `"type"` key naming one of the
ten attribute types (lead, service, error, searchInfo, cart, purchase, prodView, ctmrinfo, mrktInfo,
personal) routes it to the first topic of that type (and is removed from the message); without one,
the type whose fields the event carries most of (ties: the first in that order; a type whose
required fields are missing is not chosen) does: an event
carrying `status` goes to the service topic, one with only `topic` to the lead topic. `--sample N`
generates events of every type that has a topic. The key is the visitor, so one visit stays in one
partition. `--format` encodes each event as producers other than ours do: CloudEvents binary or
structured mode (CloudEvents `type` is the attribute type), a Kafka Connect JsonConverter envelope, or
Avro via SCHEMA_REGISTRY_URL (schema inferred, registered under `{topic}-value`). Prints the count
per topic; exit 1 when a line is not a JSON object or a delivery failed (the other lines are still
sent).
"""

from __future__ import annotations

import argparse
import base64
import copy
import random
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from consumer.tools.common import settings_or_report
from consumer.tools.encode import FORMATS, Encoder
from consumer.values.attributes import ATTRIBUTES, TYPES

SERVICE_FIELDS = ATTRIBUTES["service"].field_names
SERVICE_TOPICS = ("add user", "password reset", "plan change", "billing question")
LEAD_TOPICS = ("upgrade inquiry", "new plan", "add-on", "renewal")


def add_parser(sub: Any) -> None:
    """Register `produce`."""
    p = sub.add_parser(
        "produce",
        help="send events from a JSON-lines file/stdin (or generated samples) to the topics of their types",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        epilog="Kafka settings from the environment: KAFKA_BOOTSTRAP_SERVERS, LEAD_TOPICS, SERVICE_TOPICS, "
        "CART_TOPICS and the other types' *_TOPICS, KAFKA_* (LivePerson credentials are not needed).",
    )
    p.add_argument("file", nargs="?", default="-", help="JSON-lines file of events ('-': stdin, the default)")
    p.add_argument("--sample", type=int, metavar="N", help="send N generated events instead of reading input")
    p.add_argument("--account", default="1234", help="account of generated events (default 1234)")
    p.add_argument("--seed", type=int, default=None, help="random seed of generated events")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for delivery (default 30)")
    p.add_argument(
        "--format", default="json", choices=FORMATS, help="how each event is encoded (default: json, flat)"
    )
    p.set_defaults(handler=main)


@dataclass
class Outgoing:
    """One message to send: its routing type, key and value; or why it cannot be sent."""

    line: int
    kind: str = ""
    key: bytes | None = None
    value: bytes = b""
    error: str = ""
    headers: list[tuple[str, str | bytes | None]] | None = None


@dataclass
class Report:
    """What was sent where, and what failed."""

    per_topic: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


def route(obj: dict[str, Any]) -> str:
    """The attribute type of an event object: its `type` hint, else the type it has most fields of."""
    hint = obj.get("type")
    if hint in ATTRIBUTES:
        return str(hint)
    scores = [_score(obj, kind) for kind in TYPES]
    return TYPES[scores.index(max(scores))]


def _score(obj: dict[str, Any], kind: str) -> int:
    """How many of the type's fields the object has; -1 when it lacks one the type requires."""
    fields = ATTRIBUTES[kind].fields
    if any(f.required and obj.get(f.name) is None for f in fields):
        return -1
    return sum(1 for f in fields if f.name in obj)


def parse_line(number: int, raw: bytes) -> Outgoing:
    """One input line -> an Outgoing message (the original bytes unless a `type` hint is removed)."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Outgoing(number, error=f"line {number}: not JSON ({exc})")
    if not isinstance(obj, dict):
        return Outgoing(number, error=f"line {number}: not a JSON object")
    hint = obj.get("type")
    if hint is not None and hint not in ATTRIBUTES:
        return Outgoing(number, error=f"line {number}: type must be one of {', '.join(TYPES)}, not {hint!r}")
    kind = route(obj)
    value = raw
    if hint is not None:
        del obj["type"]
        value = orjson.dumps(obj)
    visitor = obj.get("visitor")
    key = visitor.encode() if isinstance(visitor, str) and visitor else None
    return Outgoing(number, kind, key, value)


def read_lines(stream: IO[bytes]) -> Iterator[Outgoing]:
    """Parse every non-blank line of a binary stream."""
    for number, raw in enumerate(stream, 1):
        stripped = raw.strip()
        if stripped:
            yield parse_line(number, stripped)


def sample_event(
    i: int, rng: random.Random, account: str, visitor: str, sid: str, kind: str | None = None
) -> tuple[str, dict[str, Any]]:
    """A plausible event of `kind` (None: lead or service, even odds), named uniquely by `e{i}`."""
    routing = {"account": account, "visitor": visitor, "sid": sid}
    if kind is None:
        kind = "lead" if rng.random() < 0.5 else "service"
    if kind == "lead":
        return "lead", {
            **routing,
            "topic": f"{rng.choice(LEAD_TOPICS)} e{i}",
            "value": rng.choice((50, 99.5, 200, 1200)),
            "currency": rng.choice(("USD", "EUR", "GBP")),
            "leadId": f"lead-{i}",
        }
    if kind == "service":
        return "service", {
            **routing,
            "topic": f"{rng.choice(SERVICE_TOPICS)} e{i}",
            "status": rng.choice((0, 1, 9, 12, "Waiting for Customer Response", "resolved")),
            "category": rng.choice(("account maintenance", "billing", "support")),
            "serviceId": f"svc-{i}",
        }
    fields = copy.deepcopy(ATTRIBUTES[kind].example)  # the schema's example, named by e{i}
    if "products" in fields:
        fields["products"][0]["product"]["sku"] = f"sku e{i}"
    if kind == "cart":
        fields["total"] = rng.choice((11.7, 49.0, 250.5))
    elif kind == "searchInfo":
        fields["keywords"] = [f"{rng.choice(('reset password', 'roaming', 'refund'))} e{i}"]
    elif kind in _NAMED_BY:
        fields[_NAMED_BY[kind]] = f"{fields[_NAMED_BY[kind]]} e{i}"
    return kind, {**routing, **fields}


_NAMED_BY = {"error": "contextId", "purchase": "orderId", "ctmrinfo": "storeNumber", "mrktInfo": "campaignId"}
_NAMED_BY |= {"personal": "company"}


def visitor_id(rng: random.Random) -> str:
    """A base64-looking visitor id (with the `+`, `/`, `=` real ones have)."""
    raw = bytes(rng.randrange(256) for _ in range(rng.randrange(9, 12)))
    return base64.b64encode(raw).decode()


def samples(n: int, account: str, seed: int | None, kinds: tuple[str, ...] = ()) -> Iterator[Outgoing]:
    """N generated events spread over about n/5 visits, of `kinds` in turn (none: lead or service)."""
    rng = random.Random(seed)
    visits = [(visitor_id(rng), f"sid-{j}") for j in range(max(1, n // 5))]
    for i in range(n):
        visitor, sid = rng.choice(visits)
        kind, obj = sample_event(i, rng, account, visitor, sid, kinds[i % len(kinds)] if kinds else None)
        yield Outgoing(i + 1, kind, visitor.encode(), orjson.dumps(obj))


def send(
    messages: Iterable[Outgoing], topics: dict[str, str], config: dict[str, Any], timeout: float
) -> Report:
    """Produce every sendable message to the topic of its type; wait for every delivery report."""
    from confluent_kafka import KafkaError, Message, Producer

    report = Report()
    producer = Producer(config)
    outstanding = 0

    def delivered(err: KafkaError | None, msg: Message) -> None:
        nonlocal outstanding
        outstanding -= 1
        if err is not None:
            report.errors.append(f"delivery to {msg.topic()} failed: {err.str()}")
        else:
            report.per_topic[str(msg.topic())] += 1

    for out in messages:
        if out.error:
            report.errors.append(out.error)
            continue
        topic = topics.get(out.kind)
        if topic is None:
            report.errors.append(f"line {out.line}: no {out.kind} topic configured")
            continue
        while True:
            try:
                producer.produce(
                    topic, value=out.value, key=out.key, headers=out.headers, on_delivery=delivered
                )
                outstanding += 1
                break
            except BufferError:  # local queue full: let deliveries drain it
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(timeout)
    if left:
        report.errors.append(f"{left} messages not delivered within {timeout}s")
    return report


def encoded(messages: Iterable[Outgoing], encoder: Encoder, topics: dict[str, str]) -> Iterator[Outgoing]:
    """Re-encode each sendable flat event in the encoder's format."""
    for out in messages:
        if not out.error and encoder.fmt != "json":
            try:
                out.value, out.headers = encoder.encode(
                    orjson.loads(out.value), out.kind, topics.get(out.kind, "")
                )
            except Exception as exc:  # a serializer error, an unreachable registry: that line fails
                out.error = f"line {out.line}: cannot encode as {encoder.fmt}: {exc}"
        yield out


def main(args: argparse.Namespace) -> int:
    """Read or generate events, send them, print counts per topic; exit 1 on any failure."""

    if args.sample is not None and args.file != "-":
        print("error: give a FILE or --sample N, not both", file=sys.stderr)
        return 2
    settings = settings_or_report(require_credentials=False)
    if settings is None:
        return 1
    topics = {kind: listed[0] for kind, listed in settings.typed_topics.items() if listed}
    try:
        secret = settings.schema_registry_basic_auth_user_info
        encoder = Encoder(
            args.format, settings.schema_registry_url, secret.get_secret_value() if secret else None
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    config = settings.producer_config()
    if args.sample is not None:
        report = send(
            encoded(samples(args.sample, args.account, args.seed, tuple(topics)), encoder, topics),
            topics,
            config,
            args.timeout,
        )
    elif args.file == "-":
        report = send(encoded(read_lines(sys.stdin.buffer), encoder, topics), topics, config, args.timeout)
    else:
        try:
            with open(args.file, "rb") as stream:
                report = send(encoded(read_lines(stream), encoder, topics), topics, config, args.timeout)
        except OSError as exc:
            print(f"cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    for error in report.errors:
        print(f"error: {error}", file=sys.stderr)
    for topic, count in sorted(report.per_topic.items()):
        print(f"produced {count} to {topic}")
    total = sum(report.per_topic.values())
    print(f"total {total} produced, {len(report.errors)} errors, {time.monotonic() - started:.1f}s")
    return 1 if report.errors else 0
