"""`engagement-consumer demo`: the daemon's main job, end to end, on this machine alone.

Starts an embedded Kafka-protocol broker (Tansu, a child process), a local LivePerson sandbox
(signatures checked; 30 ms +/- 20 ms latency, ~2% 429 with Retry-After, ~1% 500, a few visitors
that are gone (404), one invalid account (422)), produces events of all ten engagement attribute
types, each type on its own topic (a few of them malformed), and runs the real daemon between them
in this process. Two accounts have their own
credentials (an OAuth 2.0 app, and OAuth 1.0 keys that were revoked: that account halts alone
until the demo rotates its files half way through; see `demo_accounts`). Shows live progress, then a
summary; exit 0 when every produced event was delivered or dead-lettered and its offset committed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import tempfile
import time
from collections import Counter, deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from consumer.tools.demo_accounts import DemoAccounts
from consumer.tools.demo_feed import BAD_ACCOUNT, Feed, Plan, plan_events
from consumer.tools.demo_formats import EVENTS_TOPIC, formats_note, start_mix
from consumer.tools.demo_record import write_record
from consumer.tools.demo_types import TYPE_TOPICS, attribute_uid
from consumer.values.attributes import ATTRIBUTES

if TYPE_CHECKING:
    from consumer.tools.progress import Summary

# lead and service topics 4 partitions, the other types 2, the CloudEvents topic 4, the DLQ 1
TOPICS = {topic: 4 if kind in ("lead", "service") else 2 for kind, topic in TYPE_TOPICS.items()}
TOPICS |= {EVENTS_TOPIC: 4, "demo.dlq": 1}
GROUP = "engagement-demo"


def add_parser(sub: Any) -> None:
    """Register `demo`."""
    p = sub.add_parser(
        "demo",
        help="run the daemon end to end on an embedded broker and a local LivePerson sandbox",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        epilog="Needs nothing but this package (with the [demo] extra): no Docker, no JVM, no network.",
    )
    p.add_argument("--events", type=int, default=5000, help="events to produce (default 5000)")
    p.add_argument(
        "--duration", type=float, default=60.0, help="give up after this many seconds (default 60)"
    )
    p.add_argument("--rate", type=float, default=2000.0, help="events produced per second (0: unlimited)")
    p.add_argument("--seed", type=int, default=1, help="random seed of events and sandbox faults")
    p.add_argument(
        "--log-file",
        type=Path,
        default=Path(tempfile.gettempdir()) / "engagement-consumer-demo.log",
        help="where the daemon's JSON logs go (default: %(default)s)",
    )
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    p.add_argument("--record", type=Path, help="write what the sandbox API accepted to this JSON file")
    p.set_defaults(handler=main)


def daemon_env(bootstrap: str, base_url: str, credentials: Any, log_level: str) -> dict[str, str]:
    """The daemon's configuration for the demo: fast retries, quick group joins."""
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_GROUP_ID": GROUP,
        "KAFKA_SESSION_TIMEOUT_MS": "6000",
        "KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "COMMIT_INTERVAL_S": "0.5",
        **{ATTRIBUTES[kind].setting: topic for kind, topic in TYPE_TOPICS.items()},  # LEAD_TOPICS, ...
        "EVENT_TOPICS": EVENTS_TOPIC,
        "DLQ_TOPIC": "demo.dlq",
        "LP_BASE_URL": base_url,
        "LP_CONSUMER_KEY": credentials.consumer_key,
        "LP_CONSUMER_SECRET": credentials.consumer_secret,
        "LP_ACCESS_TOKEN": credentials.access_token,
        "LP_ACCESS_TOKEN_SECRET": credentials.access_token_secret,
        "HTTP_PORT": "0",
        "RETRY_INITIAL_S": "0.2",
        "RETRY_MAX_BACKOFF_S": "2",
        "RETRY_MAX_ELAPSED_S": "20",
        "NOT_FOUND_BACKOFF_S": "0.1",
        "HTTP_TIMEOUT_S": "5",
        "SHUTDOWN_DRAIN_S": "10",
        "STATS_INTERVAL_MS": "1000",
        "LOG_LEVEL": log_level,
    }


def configure_logging(stream: TextIO, level: str) -> None:
    """The daemon's structlog JSON lines (and stdlib logging) to a file, not the demo's screen."""
    import structlog

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=level, stream=stream, format="%(levelname)s %(name)s %(message)s", force=True)


class Demo:
    """Broker, sandbox, feed and daemon together; watches until every event is accounted for."""

    def __init__(self, args: argparse.Namespace, console: Any) -> None:
        self.args, self.console = args, console
        self.started = time.monotonic()
        self.settled: deque[tuple[float, int]] = deque(maxlen=20)
        self.top_frame: Any = None
        self.first_consumed: float | None = None
        self.last_settled = (0.0, 0)  # (when, how many)

    async def run(self) -> int:
        """Set everything up, run, tear down in reverse order, print the summary."""
        from consumer.sandbox.api import DEFAULT_CREDENTIALS, SandboxAPI
        from consumer.sandbox.broker import LocalBroker
        from consumer.tools.progress import Display, summary_table

        args = self.args
        plan = plan_events(args.events, args.seed)
        self.registry, plan.messages, self.formats = start_mix(plan.messages, args.seed)
        broker = LocalBroker(log_path=args.log_file.with_suffix(".tansu.log"))
        api = SandboxAPI(DEFAULT_CREDENTIALS, seed=args.seed)
        self.accounts = DemoAccounts(BAD_ACCOUNT, DEFAULT_CREDENTIALS)
        title = f"engagement-consumer demo: {args.events} events, sandbox with faults, daemon in between"
        with Display(self.console, title) as display:
            try:
                display.note("starting the embedded Kafka broker (Tansu) ...")
                try:
                    await asyncio.to_thread(broker.start)
                    await asyncio.to_thread(broker.create_topics, TOPICS)
                except (RuntimeError, TimeoutError, OSError) as exc:
                    display.note(f"cannot start the embedded broker: {exc}")
                    return 1
                await api.start()
                self._script(api, plan)
                self.accounts.script(api)
                display.note(f"broker {broker.bootstrap}, sandbox API {api.base_url}; joining the group ...")
                summary = await self._run(broker, api, plan, display)
                if args.record:
                    write_record(args.record, api, args.seed, args.events)
            finally:
                await api.stop()
                await asyncio.to_thread(broker.stop)
                self.registry.stop()
                self.accounts.close()
        self.console.print("[bold]engagement-consumer top --once[/] at the end:", self.top_frame or "-")
        self.console.print(summary_table(summary))
        self.console.print(  # the last line: what an operator reads first
            "[bold green]OK[/]: every produced event was delivered or dead-lettered, and committed"
            if summary.ok
            else "[bold red]FAILED[/]: not every produced event is accounted for"
        )
        return 0 if summary.ok else 1

    @staticmethod
    def _script(api: Any, plan: Plan) -> None:
        api.latency, api.jitter = 0.010, 0.040  # 30 ms +/- 20 ms
        api.status_mix = {429: 0.02, 500: 0.01}  # 429 answers carry Retry-After: 1
        api.account_status(BAD_ACCOUNT, 422)
        for visitor in plan.gone_visitors:
            api.fail_visitor(visitor, 404)

    async def _run(self, broker: Any, api: Any, plan: Plan, display: Any) -> Summary:
        from consumer.app import App
        from consumer.config import load_settings
        from consumer.sandbox.api import DEFAULT_CREDENTIALS
        from consumer.tools.top import in_process_frame

        env = daemon_env(broker.bootstrap, api.base_url, DEFAULT_CREDENTIALS, self.args.log_level)
        env["SCHEMA_REGISTRY_URL"] = self.registry.url
        self.accounts.configure(env, api)
        app = App(load_settings(env))
        app_task = asyncio.create_task(app.run())
        feed = Feed(broker.bootstrap, plan.messages, self.args.rate)
        feed.start()
        deadline = self.started + self.args.duration
        stopped = f"--duration {self.args.duration:g}s reached before every event was settled"
        try:
            while not app_task.done() and time.monotonic() < deadline:
                await asyncio.sleep(0.25)
                snap = self._snapshot(app, feed)
                display.update(snap)
                self.accounts.tick(app, feed.acked, len(feed.messages), display.note)
                if feed.finished.is_set() and self._complete(snap, feed):
                    stopped = ""
                    break
            if app_task.done() or app.stopping.is_set():
                stopped = "interrupted (the daemon was asked to stop)"
        finally:
            self.top_frame = in_process_frame(app)  # one `top --once` frame while the daemon still runs
            feed.stop.set()
            app.stopping.set()
            code = await app_task
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await asyncio.to_thread(feed.join, 35)
        committed = await asyncio.to_thread(_committed, broker.bootstrap, list(feed.ends))
        snap = self._snapshot(app, feed)
        snap.committed = sum(max(0, c) for c in committed.values())  # the broker's, as the summary checks
        display.update(snap, final=True)
        return self._summarize(plan, api, feed, snap, committed, stopped, code)

    def _snapshot(self, app: Any, feed: Feed) -> Any:
        from consumer.tools.progress import Snapshot, samples

        now = time.monotonic()
        delivered = int(sum(samples("engagement_attributes_delivered_total").values()))
        dead = samples("engagement_dead_letters_total")
        settled = delivered + int(sum(dead.values()))
        self.settled.append((now, settled))
        if self.first_consumed is None and app.counts["consumed"]:
            self.first_consumed = now
        if settled > self.last_settled[1]:
            self.last_settled = (now, settled)
        then, before = self.settled[0]
        return Snapshot(
            elapsed=now - self.started,
            target=len(feed.messages),
            produced=feed.acked,
            consumed=app.counts["consumed"],
            delivered=delivered,
            dead=dead,
            retries=samples("engagement_retries_total"),
            requests=samples("engagement_requests_total"),
            in_flight=int(sum(samples("engagement_inflight_requests").values())),
            pending=app.tracker.pending_total,
            committed=int(sum(samples("engagement_committed_offset").values())),
            rate=(settled - before) / (now - then) if now > then else 0.0,
        )

    @staticmethod
    def _complete(snap: Any, feed: Feed) -> bool:
        return bool(snap.settled >= feed.acked and snap.pending == 0 and snap.committed >= feed.acked)

    def _summarize(
        self,
        plan: Plan,
        api: Any,
        feed: Feed,
        snap: Any,
        committed: dict[Any, int],
        stopped: str,
        code: int,
    ) -> Summary:
        from consumer.tools.progress import Summary, by_type, samples

        accepted = [attr for _, attr in api.delivered()]
        uids = Counter(attribute_uid(attr) for attr in accepted)
        missing = {
            tp: (committed.get(tp), end) for tp, end in sorted(feed.ends.items()) if committed.get(tp) != end
        }
        detail = f"{len(feed.ends)} partitions, committed offsets = end offsets"
        if missing:
            detail = "behind: " + ", ".join(
                f"{t}[{p}] {c if c is not None and c >= 0 else 'none'}/{e}"
                for (t, p), (c, e) in missing.items()
            )
        notes = [f"daemon logs: {self.args.log_file}", formats_note(self.formats)]
        notes += self.accounts.notes(api, self.started)
        if self.first_consumed is not None:
            notes.append(f"first event consumed {self.first_consumed - self.started:.1f}s after start")
        if stopped:
            notes.append(stopped)
        notes += [f"producer: {e}" for e in feed.failed[:3]]
        if code:
            notes.append(f"daemon exited with {code}")
        summary = Summary(
            snap=snap,
            produced_by_kind=dict(plan.kinds),
            sandbox_delivered=len(accepted),
            by_type=by_type(plan.kinds, samples("engagement_attributes_delivered_total"), accepted),
            duplicates=sum(n - 1 for n in uids.values() if n > 1),
            committed_ok=not missing and bool(feed.ends),
            clean=code == 0 and not feed.failed,
            committed_detail=detail,
            accounted_ok=snap.settled == feed.acked == len(plan.messages),
            elapsed=time.monotonic() - self.started,
            busy_s=self.last_settled[0] - (self.first_consumed or self.last_settled[0]),
            notes=notes,
        )
        return summary


def _committed(bootstrap: str, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """The demo group's committed offsets, asked of the broker."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP})
    try:
        got = consumer.committed([TopicPartition(t, p) for t, p in tps], timeout=10)
    finally:
        consumer.close()
    return {(tp.topic, tp.partition): tp.offset for tp in got}


def main(args: argparse.Namespace) -> int:
    """Run the demo; exit 0 when every produced event is accounted for."""
    from rich.console import Console

    from consumer.util.aio import run_async

    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 120))
    if args.events < 1 or args.duration <= 0:
        console.print("--events must be >= 1 and --duration > 0")
        return 2
    args.log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(args.log_file, "a", encoding="utf-8") as stream:
        configure_logging(stream, args.log_level)
        return run_async(Demo(args, console).run())
