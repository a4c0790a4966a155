"""`engagement-consumer produce`: send events (JSON lines, or generated samples) to the topics.

For smoke tests in a real cluster. Each line is one event object. A `"type": "lead"|"service"`
key routes it (and is removed from the message); without one, an event carrying `status`,
`category` or `serviceId` goes to the first service topic, anything else to the first lead topic.
The key is the visitor, so one visit stays in one partition. `--format` encodes each event as
producers other than ours do: CloudEvents binary or structured mode (CloudEvents `type` is `lead` or
`service`), a Kafka Connect JsonConverter envelope, or Avro via SCHEMA_REGISTRY_URL (schema inferred,
registered under `{topic}-value`). Prints the count per topic; exit 1 when a line is not a JSON
object or a delivery failed (the other lines are still sent).
"""

from __future__ import annotations

import argparse
import base64
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

SERVICE_FIELDS = ("status", "category", "serviceId")
SERVICE_TOPICS = ("add user", "password reset", "plan change", "billing question")
LEAD_TOPICS = ("upgrade inquiry", "new plan", "add-on", "renewal")


def add_parser(sub: Any) -> None:
    """Register `produce`."""
    p = sub.add_parser(
        "produce",
        help="send events from a JSON-lines file/stdin (or generated samples) to the lead/service topics",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        epilog="Kafka settings from the environment: KAFKA_BOOTSTRAP_SERVERS, LEAD_TOPICS, SERVICE_TOPICS, "
        "KAFKA_* (LivePerson credentials are not needed).",
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
    """The attribute type of an event object: its `type` hint, else service if it has service fields."""
    hint = obj.get("type")
    if hint in ("lead", "service"):
        return str(hint)
    return "service" if any(k in obj for k in SERVICE_FIELDS) else "lead"


def parse_line(number: int, raw: bytes) -> Outgoing:
    """One input line -> an Outgoing message (the original bytes unless a `type` hint is removed)."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Outgoing(number, error=f"line {number}: not JSON ({exc})")
    if not isinstance(obj, dict):
        return Outgoing(number, error=f"line {number}: not a JSON object")
    hint = obj.get("type")
    if hint is not None and hint not in ("lead", "service"):
        return Outgoing(number, error=f"line {number}: type must be lead or service, not {hint!r}")
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
    i: int, rng: random.Random, account: str, visitor: str, sid: str
) -> tuple[str, dict[str, Any]]:
    """A plausible lead or service event (its `topic` names it uniquely: `e{i}`)."""
    if rng.random() < 0.5:
        return "lead", {
            "account": account,
            "visitor": visitor,
            "sid": sid,
            "topic": f"{rng.choice(LEAD_TOPICS)} e{i}",
            "value": rng.choice((50, 99.5, 200, 1200)),
            "currency": rng.choice(("USD", "EUR", "GBP")),
            "leadId": f"lead-{i}",
        }
    return "service", {
        "account": account,
        "visitor": visitor,
        "sid": sid,
        "topic": f"{rng.choice(SERVICE_TOPICS)} e{i}",
        "status": rng.choice((0, 1, 9, 12, "Waiting for Customer Response", "resolved")),
        "category": rng.choice(("account maintenance", "billing", "support")),
        "serviceId": f"svc-{i}",
    }


def visitor_id(rng: random.Random) -> str:
    """A base64-looking visitor id (with the `+`, `/`, `=` real ones have)."""
    raw = bytes(rng.randrange(256) for _ in range(rng.randrange(9, 12)))
    return base64.b64encode(raw).decode()


def samples(n: int, account: str, seed: int | None) -> Iterator[Outgoing]:
    """N generated events spread over about n/5 visits."""
    rng = random.Random(seed)
    visits = [(visitor_id(rng), f"sid-{j}") for j in range(max(1, n // 5))]
    for i in range(n):
        visitor, sid = rng.choice(visits)
        kind, obj = sample_event(i, rng, account, visitor, sid)
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
    topics = {}
    if settings.lead_topics:
        topics["lead"] = settings.lead_topics[0]
    if settings.service_topics:
        topics["service"] = settings.service_topics[0]
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
            encoded(samples(args.sample, args.account, args.seed), encoder, topics),
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
