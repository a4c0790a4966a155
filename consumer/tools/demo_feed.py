"""The demo's events: a plan of events of every attribute type and a few malformed ones, and the thread
that produces it."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from consumer.tools.demo_accounts import ACCOUNTS, UNKNOWN_ACCOUNT
from consumer.tools.demo_types import MIX, TYPE_TOPICS, demo_event
from consumer.tools.produce import visitor_id

BAD_ACCOUNT = "99999"  # the sandbox answers 422 to it
# (type whose topic it goes to, value): each is dead-lettered as an invalid event
MALFORMED: tuple[tuple[str, bytes], ...] = (
    ("lead", b"{not json"),
    ("lead", b'{"account":"10001","visitor":"broken-visitor"}'),
    ("service", b'{"account":"10001","visitor":"broken-visitor","sid":"s","status":42}'),
    ("service", b'["an", "array"]'),
    ("cart", b'{"account":"10001","visitor":"broken-visitor","sid":"s","numItems":2}'),
    (
        "prodView",
        b'{"account":"10001","visitor":"broken-visitor","sid":"s","products":[{"product":{"price":"7"}}]}',
    ),
    ("personal", b'{"account":"10001","visitor":"broken-visitor","sid":"s","gender":"unknown"}'),
)
MALFORMED_VALUES = frozenset(value for _, value in MALFORMED)


@dataclass
class Plan:
    """The events to produce (topic, key, value) and what they are."""

    messages: list[tuple[Any, ...]] = field(default_factory=list)  # topic, key, value[, headers]
    kinds: Counter[str] = field(default_factory=Counter)
    gone_visitors: list[str] = field(default_factory=list)


def plan_events(n: int, seed: int) -> Plan:
    """N events of every type (`MIX`) over ~n/10 visits: 1.5% of visits are gone (404), ~1% on the 422
    account, a few malformed."""
    rng = random.Random(seed)
    visits = []
    for j in range(max(20, n // 10)):
        account = BAD_ACCOUNT if j % 97 == 5 else UNKNOWN_ACCOUNT if j % 89 == 7 else rng.choice(ACCOUNTS)
        visits.append((account, visitor_id(rng), f"sid-{j}.{rng.randrange(10**6)}"))
    plan = Plan(gone_visitors=[v for k, (_, v, _) in enumerate(visits) if k % 67 == 3])
    malformed = set(rng.sample(range(n), min(n, max(3, n // 500))))
    kinds, weights = list(MIX), list(MIX.values())
    for i in range(n):
        visit = rng.choice(visits)
        if i in malformed:
            kind, value = MALFORMED[i % len(MALFORMED)]
            plan.messages.append((TYPE_TOPICS[kind], visit[1].encode(), value))
            plan.kinds["malformed"] += 1
            continue
        kind, event = demo_event(rng.choices(kinds, weights)[0], i, rng, visit)
        plan.messages.append((TYPE_TOPICS[kind], visit[1].encode(), orjson.dumps(event)))
        plan.kinds[kind] += 1
    return plan


class Feed(threading.Thread):
    """Produces the plan at a steady rate in its own thread; counts acknowledgements and end offsets."""

    def __init__(self, bootstrap: str, messages: list[tuple[Any, ...]], rate: float) -> None:
        super().__init__(name="demo-producer", daemon=True)
        self.bootstrap, self.messages, self.rate = bootstrap, messages, rate
        self.acked = 0
        self.failed: list[str] = []
        self.ends: dict[tuple[str, int], int] = {}
        self.finished = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        """Produce everything (or until stopped), then flush."""
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5, "acks": "all"})
        started = time.monotonic()
        try:
            for i, (topic, key, value, *headers) in enumerate(self.messages):
                if self.stop.is_set():
                    break
                if self.rate > 0:
                    ahead = started + i / self.rate - time.monotonic()
                    if ahead > 0:
                        producer.poll(ahead)
                while True:
                    try:
                        producer.produce(
                            topic, value, key, on_delivery=self._report, headers=(headers or [None])[0]
                        )
                        break
                    except BufferError:
                        producer.poll(0.05)
                producer.poll(0)
            left = producer.flush(30)
            if left:
                self.failed.append(f"{left} events not acknowledged by the broker")
        finally:
            self.finished.set()

    def _report(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.failed.append(err.str())
            return
        self.acked += 1
        tp = (msg.topic(), msg.partition())
        self.ends[tp] = max(self.ends.get(tp, 0), msg.offset() + 1)
