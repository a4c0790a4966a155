"""The `park` scenario: a one-hour-equivalent halt beside a healthy account (issue #19).

Account 1's key is revoked and HELD of its events are in the backlog (an hour of a busy account);
account 3's HEALTHY events are interleaved with them on the same partitions. Measured: the daemon's
peak RSS and account 3's delivery rate, against the same run without account 1 (no halt); and how
many of the backlog's offsets are committed when account 3 is done (the park let them pass).

    python -m bench.park [--held 500000] [--healthy 20000]   # writes out/park.json, splices RESULTS.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as KafkaTP

from bench import formats
from bench.processes import http_get, peak_rss
from consumer.config.credentials import Credentials, write_folder
from consumer.sandbox.api import SandboxAPI
from consumer.sandbox.broker import LocalBroker, free_port

BEGIN, END = "<!-- park:begin -->", "<!-- park:end -->"
OUT = Path(__file__).parent / "out" / "park.json"
RESULTS = Path(__file__).parent / "RESULTS.md"
PARTITIONS = 3
REVOKED = Credentials("ck-old", "cs-old", "at-old", "ats-old")
CREDS = {"1": Credentials("ck-1", "cs-1", "at-1", "ats-1"), "3": Credentials("ck-3", "cs-3", "at-3", "ats-3")}


def _produce(bootstrap: str, topic: str, held: int, healthy: int) -> dict[int, int]:
    """Account 1's `held` and account 3's `healthy` events, interleaved evenly; end offset per partition."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10000})
    ends: dict[int, int] = {}

    def report(err: Any, msg: Any) -> None:
        if err is None:
            ends[msg.partition()] = max(ends.get(msg.partition(), 0), msg.offset() + 1)

    total = held + healthy
    every = total // healthy if healthy else 0
    h = 0
    for i in range(total):
        if every and i % every == 0 and h < healthy:
            account, n = "3", h
            h += 1
        else:
            account, n = "1", i
        visitor = f"{account}-v{n % 500}"
        body = {"account": account, "visitor": visitor, "sid": "s", "topic": f"e{n}", "value": n}
        while True:
            try:
                producer.produce(
                    topic, key=visitor.encode(), value=json.dumps(body).encode(), on_delivery=report
                )
                break
            except BufferError:
                producer.poll(0.1)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(120) == 0
    return ends


def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        got = consumer.committed([KafkaTP(topic, p) for p in range(PARTITIONS)], timeout=10)
    finally:
        consumer.close()
    return {c.partition: c.offset for c in got}


def run_once(broker: LocalBroker, api: SandboxAPI, held: int, healthy: int) -> dict[str, Any]:
    """One run: produce, start the daemon, wait for account 3's events, measure, stop."""
    n = time.monotonic_ns()
    topic, dlq, park, group = f"leads-{n}", f"dlq-{n}", f"park-{n}", f"group-{n}"
    broker.create_topics({topic: PARTITIONS, dlq: 1, park: PARTITIONS})
    began_produce = time.monotonic()
    ends = _produce(broker.bootstrap, topic, held, healthy)
    produce_s = time.monotonic() - began_produce
    creds = Path(tempfile.mkdtemp(prefix="bench-park-"))
    write_folder(creds / "1", REVOKED)
    write_folder(creds / "3", CREDS["3"])
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "LP_"))}
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap,
        KAFKA_GROUP_ID=group,
        KAFKA_SESSION_TIMEOUT_MS="6000",
        LEAD_TOPICS=topic,
        SERVICE_TOPICS=f"unused-{n}",
        DLQ_TOPIC=dlq,
        PARK_TOPIC=park,
        LP_BASE_URL=api.base_url,
        LP_CREDENTIALS_DIR=str(creds),
        HTTP_PORT=str(port),
        LOG_LEVEL="WARNING",
        HALT_BACKOFF_MAX_S="5",
    )
    import subprocess

    proc = subprocess.Popen(
        [sys.executable, "-m", "consumer", "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started = time.monotonic()
    first: float | None = None
    rss_seen = 0
    try:
        while True:
            time.sleep(0.25)
            rss_seen = max(rss_seen, peak_rss(proc.pid))
            got = sum(1 for v, _ in api.delivered() if v.account == "3")
            if got and first is None:
                first = time.monotonic()
            if got >= healthy:
                break
            assert proc.poll() is None, "daemon exited"
            assert time.monotonic() - started < 1800, f"only {got} of {healthy} delivered"
        done = time.monotonic()
        status, body = http_get(f"http://127.0.0.1:{port}/metrics")
        parked_total = sum(
            float(line.rpartition(" ")[2])
            for line in (body.decode() if status == 200 else "").splitlines()
            if line.startswith("engagement_parked_total")
        )
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:  # until the backlog is committed past (parked) or 10 min
            committed = _committed(broker.bootstrap, group, topic)
            left = sum(end - max(0, committed.get(p, 0)) for p, end in ends.items())
            if left == 0:
                break
            rss_seen = max(rss_seen, peak_rss(proc.pid))
            time.sleep(1.0)
        all_committed = time.monotonic()
        rss_seen = max(rss_seen, peak_rss(proc.pid))
    finally:
        proc.terminate()
        proc.wait(60)
    span = done - started  # from the daemon's start: it includes joining the group (~3 s on Tansu)
    return {
        "held": held,
        "healthy": healthy,
        "produce_s": round(produce_s, 1),
        "healthy_done_s": round(done - started, 1),
        "healthy_per_s": round(healthy / span, 1) if span > 0 else 0.0,
        "peak_rss_mb": round(rss_seen / 2**20, 1),
        "uncommitted_at_end": left,
        "all_committed_s": round(all_committed - started, 1),
        "parked_when_healthy_done": parked_total,
        "loadavg": os.getloadavg(),
    }


def section(results: list[dict[str, Any]]) -> list[str]:
    """The markdown section of the park scenario."""
    lines = [
        BEGIN,
        "## A one-hour-equivalent halt beside a healthy account (`park`)",
        "",
        "Account 1's key revoked with its backlog in the topic, account 3's events interleaved with it",
        "on the same 3 partitions; stand-in API without latency, shipped defaults, one daemon on Tansu.",
        "`held 0` is the same run without account 1. Peak RSS is the daemon's VmHWM over the whole run",
        "(parking included); the healthy rate counts from the daemon's start (joining included).",
        "",
        "| held events | healthy events | healthy done after (s) | healthy rate (/s) | peak RSS (MB) "
        "| backlog committed after (s) | uncommitted at the end |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['held']:,} | {r['healthy']:,} | {r['healthy_done_s']} | {r['healthy_per_s']:,} | "
            f"{r['peak_rss_mb']} | {r['all_committed_s']} | {r['uncommitted_at_end']} |"
        )
    lines += ["", f"Load average during the runs: {results[-1]['loadavg'][0]:.1f} (2 shared cores).", END, ""]
    return lines


def main(argv: list[str] | None = None) -> None:
    """Run without and with the halt; write out/park.json and splice RESULTS.md."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--held", type=int, default=500_000)
    p.add_argument("--healthy", type=int, default=20_000)
    args = p.parse_args(argv)
    api = SandboxAPI(REVOKED)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(api.start(), loop).result(10)
    for account, creds in CREDS.items():
        api.set_account(account, creds)
    results = []
    with LocalBroker() as broker:
        for held in (0, args.held):
            api.received.clear()
            results.append(run_once(broker, api, held, args.healthy))
            print(json.dumps(results[-1]))
    asyncio.run_coroutine_threadsafe(api.stop(), loop).result(10)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    formats.splice(RESULTS, section(results), BEGIN, END)


if __name__ == "__main__":
    main()
