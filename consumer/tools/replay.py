"""`engagement-consumer replay-dlq`: re-drive dead letters to the topics they came from.

Reads DLQ_TOPIC with its own consumer group (default `engagement-attributes-replay`) from that
group's committed position, up to the end offsets known at start (dead letters written while it
runs are left for the next run). Each dead letter that passes the filters (`--reason`, `--since`,
`--until` on `dlq.timestamp`) is produced to its origin topic (`dlq.topic`), to its original
partition when the topic still has it, with the original key and value; the `dlq.*` headers are
stripped and `dlq.replayed_from` = "topic/partition/offset" is added. Progress is committed only
after the copies are acknowledged, so a rerun does not duplicate them. Dead letters that do not
pass the filters are skipped and committed too: replay another reason later under another
`--group`. `--dry-run` prints what it would do and produces and commits nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from consumer.tools.common import settings_or_report

DEFAULT_GROUP = "engagement-attributes-replay"
BATCH = 500
POLL_S = 0.2

Headers = list[tuple[str, bytes | None]]


def parse_time(text: str) -> datetime:
    """An ISO-8601 time (`2024-05-01`, `2024-05-01T10:00:00Z`, offsets allowed); naive means UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def add_parser(sub: Any) -> None:
    """Register `replay-dlq`."""
    p = sub.add_parser(
        "replay-dlq",
        help="re-drive dead letters to their origin topics (filter by reason and time; --dry-run)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        epilog="Kafka settings from the environment: KAFKA_BOOTSTRAP_SERVERS, DLQ_TOPIC, KAFKA_* "
        "(LivePerson credentials are not needed). Exit 1 if a copy was not acknowledged.",
    )
    p.add_argument("--reason", action="append", default=[], help="only this dlq.reason (repeatable)")
    p.add_argument("--since", type=parse_time, help="only dead letters with dlq.timestamp >= this (ISO-8601)")
    p.add_argument("--until", type=parse_time, help="only dead letters with dlq.timestamp < this (ISO-8601)")
    p.add_argument(
        "--dry-run", action="store_true", help="print what would be replayed; produce/commit nothing"
    )
    p.add_argument(
        "--group", default=DEFAULT_GROUP, help=f"consumer group of the replay (default {DEFAULT_GROUP})"
    )
    p.add_argument("--dlq-topic", help="dead-letter topic (default: DLQ_TOPIC)")
    p.add_argument(
        "--idle-s", type=float, default=5.0, help="stop after this long without new dead letters (default 5)"
    )
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for acknowledgements")
    p.add_argument("-v", "--verbose", action="store_true", help="print a line per replayed dead letter")
    p.set_defaults(handler=main)


@dataclass(frozen=True)
class Filter:
    """Which dead letters to replay."""

    reasons: frozenset[str] = frozenset()
    since: datetime | None = None
    until: datetime | None = None

    def skip(self, headers: dict[str, str]) -> str | None:
        """Why a dead letter is skipped (`reason`, `time`, `no_origin`, `incomplete`), None to replay it."""
        if not headers.get("dlq.topic"):
            return "no_origin"
        if "dlq.truncated" in headers or headers.get("dlq.reason") == "consume_error":
            return "incomplete"  # the value was cut to fit, or could not be read: nothing whole to send
        if self.reasons and headers.get("dlq.reason") not in self.reasons:
            return "reason"
        if self.since or self.until:
            try:
                when = parse_time(headers.get("dlq.timestamp", ""))
            except argparse.ArgumentTypeError:
                return "time"
            if (self.since and when < self.since) or (self.until and when >= self.until):
                return "time"
        return None


def dlq_headers(raw: Headers | None) -> dict[str, str]:
    """The `dlq.*` headers of a dead letter, decoded."""
    return {k: (v or b"").decode("utf-8", "replace") for k, v in raw or [] if k.startswith("dlq.")}


def replay_headers(raw: Headers | None, source: str) -> Headers:
    """The original headers without `dlq.*`, plus `dlq.replayed_from`."""
    kept: Headers = [(k, v) for k, v in raw or [] if not k.startswith("dlq.")]
    kept.append(("dlq.replayed_from", source.encode()))
    return kept


@dataclass
class Outcome:
    """What a replay did."""

    scanned: int = 0
    replayed: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    failed: list[str] = field(default_factory=list)
    committed: dict[int, int] = field(default_factory=dict)


class Replayer:
    """One pass over the DLQ: consume a batch, produce the copies, wait for acks, commit, repeat."""

    def __init__(
        self, consumer: Any, producer: Any, topic: str, flt: Filter, args: argparse.Namespace, out: TextIO
    ) -> None:
        self.consumer, self.producer, self.topic, self.flt = consumer, producer, topic, flt
        self.dry_run: bool = args.dry_run
        self.verbose: bool = args.verbose
        self.idle_s: float = args.idle_s
        self.timeout: float = args.timeout
        self.out = out
        self.outcome = Outcome()
        self._origin_partitions: dict[str, int] = {}

    def run(self, partitions: list[int]) -> Outcome:
        """Replay from the group's position up to the end offsets known at start (or until idle)."""
        from confluent_kafka import KafkaError, KafkaException, TopicPartition

        tps = [TopicPartition(self.topic, p) for p in partitions]
        # ListOffsets may under-report (Tansu); the first fetch's high watermark refines it.
        end: dict[int, int] = {}
        for tp in tps:
            try:
                _, high = self.consumer.get_watermark_offsets(tp, timeout=10)
            except KafkaException:
                high = 0  # unknown: the first fetch tells
            end[tp.partition] = high
        refined: set[int] = set()
        reached: set[int] = set()
        self.consumer.assign(tps)
        last_seen = time.monotonic()
        while len(reached) < len(partitions) and not self.outcome.failed:
            messages = self.consumer.consume(BATCH, POLL_S)
            for p in set(partitions) - refined:
                _, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), cached=True)
                if high >= 0:
                    end[p] = max(end[p], high)
                    refined.add(p)
            batch = []
            for m in messages:
                p, offset, err = m.partition(), m.offset(), m.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        print(f"warning: consume error: {err.str()}", file=sys.stderr)
                    else:
                        reached.add(p)  # at the high watermark
                    continue
                if p in refined and offset >= end[p]:
                    reached.add(p)  # written after we started: left for the next run
                    continue
                batch.append(m)
                if p in refined and offset + 1 >= end[p]:
                    reached.add(p)
            if batch:
                last_seen = time.monotonic()
                self._handle(batch)
            elif time.monotonic() - last_seen > self.idle_s:
                break
        return self.outcome

    def _handle(self, batch: list[Any]) -> None:
        acks: dict[tuple[int, int], str | None] = {}
        for m in batch:
            self.outcome.scanned += 1
            headers = m.headers()
            meta = dlq_headers(headers)
            source = f"{self.topic}/{m.partition()}/{m.offset()}"
            why = self.flt.skip(meta)
            if why is not None:
                self.outcome.skipped[why] += 1
                if why == "no_origin":
                    print(f"warning: {source} has no dlq.topic header; skipped", file=sys.stderr)
                elif why == "incomplete":
                    print(
                        f"warning: {source} holds only part of its original value; skipped", file=sys.stderr
                    )
                continue
            origin = meta["dlq.topic"]
            line = (
                f"{source} -> {origin} key={_show(m.key())} reason={meta.get('dlq.reason', '?')} "
                f"at={meta.get('dlq.timestamp', '?')}"
            )
            if self.dry_run:
                print(f"would replay {line}", file=self.out)
                self.outcome.replayed[origin] += 1
                continue
            if self.verbose:
                print(f"replay {line}", file=self.out)
            self._produce(m, origin, meta, headers, source, acks)
        if self.dry_run:
            return
        self.producer.flush(self.timeout)
        commit: dict[int, int] = {}
        blocked: set[int] = set()  # a partition's commit stops at its first copy not acknowledged
        for m in batch:
            p, offset = m.partition(), m.offset()
            status = acks.get((p, offset), "ok")  # skipped ones count as done
            if status != "ok":
                why = "not acknowledged in time" if status == "pending" else status
                self.outcome.failed.append(f"{self.topic}/{p}/{offset}: {why}")
                if p not in blocked:
                    commit[p] = offset
                    blocked.add(p)
            elif p not in blocked:
                commit[p] = offset + 1
        self._commit(commit)

    def _produce(
        self,
        m: Any,
        origin: str,
        meta: dict[str, str],
        headers: Headers | None,
        source: str,
        acks: dict[Any, Any],
    ) -> None:
        from confluent_kafka import KafkaException

        key = (m.partition(), m.offset())
        partitions = self._partitions_of(origin)
        if not partitions:
            acks[key] = f"error: origin topic {origin!r} does not exist"
            return
        acks[key] = "pending"

        def report(err: Any, msg: Any) -> None:
            acks[key] = f"error: {err.str()}" if err is not None else "ok"
            if err is None:
                self.outcome.replayed[origin] += 1

        kwargs: dict[str, Any] = {}
        partition = _int(meta.get("dlq.partition"))
        if partition is not None and 0 <= partition < partitions:
            kwargs["partition"] = partition
        while True:
            try:
                self.producer.produce(
                    origin,
                    value=m.value(),
                    key=m.key(),
                    headers=replay_headers(headers, source),
                    on_delivery=report,
                    **kwargs,
                )
                break
            except BufferError:
                self.producer.poll(0.1)
            except KafkaException as exc:  # refused up front, e.g. too large
                acks[key] = f"error: {exc}"
                return
        self.producer.poll(0)

    def _partitions_of(self, topic: str) -> int:
        if topic not in self._origin_partitions:
            meta = self.producer.list_topics(topic, timeout=10).topics.get(topic)
            count = len(meta.partitions) if meta is not None and meta.error is None else 0
            self._origin_partitions[topic] = count
        return self._origin_partitions[topic]

    def _commit(self, commit: dict[int, int]) -> None:
        from confluent_kafka import TopicPartition

        advanced = {p: o for p, o in commit.items() if o > self.outcome.committed.get(p, -1)}
        if not advanced:
            return
        self.consumer.commit(
            offsets=[TopicPartition(self.topic, p, o) for p, o in advanced.items()], asynchronous=False
        )
        self.outcome.committed.update(advanced)


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _show(key: bytes | None) -> str:
    return "-" if key is None else key.decode("utf-8", "replace")


def main(args: argparse.Namespace) -> int:
    """Replay the selected dead letters; print a summary; exit 1 if any copy was not acknowledged."""
    from confluent_kafka import Consumer, Producer

    settings = settings_or_report(require_credentials=False)
    if settings is None:
        return 1
    topic = args.dlq_topic or settings.dlq_topic
    conf = settings.consumer_config()
    conf.update(
        {
            "group.id": args.group,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "statistics.interval.ms": 0,
        }
    )
    conf.setdefault("fetch.wait.max.ms", 100)  # reach the end of each partition quickly
    consumer = Consumer(conf)
    producer = Producer(settings.producer_config())
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            print(f"error: dead-letter topic {topic!r} not found", file=sys.stderr)
            return 1
        flt = Filter(frozenset(args.reason), args.since, args.until)
        outcome = Replayer(consumer, producer, topic, flt, args, sys.stdout).run(sorted(meta.partitions))
    finally:
        producer.flush(args.timeout)
        consumer.close()
    _print_summary(outcome, topic, args)
    return 1 if outcome.failed else 0


def _print_summary(outcome: Outcome, topic: str, args: argparse.Namespace) -> None:
    for failure in outcome.failed:
        print(f"error: {failure}", file=sys.stderr)
    verb = "would replay" if args.dry_run else "replayed"
    where = ", ".join(f"{t} {n}" for t, n in sorted(outcome.replayed.items())) or "nothing"
    skipped = ", ".join(f"{why} {n}" for why, n in sorted(outcome.skipped.items())) or "none"
    total = sum(outcome.replayed.values())
    print(f"scanned {outcome.scanned} dead letters on {topic}; {verb} {total} ({where})")
    print(f"skipped {sum(outcome.skipped.values())} (by {skipped})")
    if args.dry_run:
        print("dry run: nothing produced, nothing committed")
    else:
        positions = (
            ", ".join(f"{topic}[{p}]={o}" for p, o in sorted(outcome.committed.items())) or "nothing new"
        )
        print(f"committed for group {args.group}: {positions}")
