"""`rebalance`: throughput dip and time to full reassignment when a replica joins and when one leaves.

Two daemons of one group consume a steady paced load; a third joins (scale up), later the first
gets SIGTERM (scale down). From the stand-in API's 0.25 s delivery series: the rate before each
change (median of 1 s windows), the lowest 1 s rate from the change until 2 s after the group owns
every partition again, and the attributes delivered late because of it (the shortfall against the
rate before). Times to full reassignment come from the daemons' `partitions_assigned/revoked` logs.

python -m bench.run --only rebalance   # runs it and splices its section into RESULTS.md
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench import formats
from bench.driver import api_args, daemon_env
from bench.processes import APIServers, DaemonProcess
from bench.scenarios import Scenario
from bench.workload import BenchProducer, events
from consumer.sandbox.broker import LocalBroker, free_port

BEGIN, END = "<!-- rebalance:begin -->", "<!-- rebalance:end -->"
RATE = 300.0  # events/s, steady: well below what two daemons can deliver on this machine
STEADY_S = 15.0  # load before the join, between the join's end and the leave, and after the leave
PARTITIONS = 6
SCENARIO = Scenario(
    "rebalance",
    f"3 replicas, steady {RATE:.0f} events/s, 20 ms API latency: a replica joins, then one leaves (SIGTERM)",
    visits=int(RATE * STEADY_S * 4),
    latency_s=0.02,
    max_in_flight=64,
    partitions=PARTITIONS,
)


def owned(log_path: Path) -> set[str]:
    """The partitions a daemon owns now, from its `partitions_assigned/revoked/lost` log lines."""
    have: set[str] = set()
    for line in log_path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("event") == "partitions_assigned":
            have |= set(e["partitions"])
        elif e.get("event") in ("partitions_revoked", "partitions_lost"):
            have -= set(e["partitions"])
    return have


def _all_owned(members: list[DaemonProcess], everything: set[str]) -> bool:
    """Every partition owned by exactly one of `members`, and each of them owns some."""
    shares = [owned(d.log_path) for d in members]
    return set().union(*shares) == everything and sum(map(len, shares)) == len(everything) and all(shares)


def _until_owned(members: list[DaemonProcess], everything: set[str], limit_s: float = 60.0) -> float:
    """Seconds until every partition is owned by exactly one of `members` (each owning some)."""
    began = time.monotonic()
    while not _all_owned(members, everything):
        if time.monotonic() - began > limit_s:
            raise TimeoutError(f"partitions not all owned within {limit_s}s")
        time.sleep(0.05)
    return time.monotonic() - began


def run(broker: LocalBroker, out_dir: Path, run_id: str) -> dict[str, Any]:
    """Run the scenario once; return its figures (see `section`)."""
    logs = out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    s = SCENARIO
    topics = (f"leads-{run_id}-rb", f"services-{run_id}-rb", f"dlq-{run_id}-rb")
    broker.create_topics({topics[0]: PARTITIONS, topics[1]: 1, topics[2]: 1})
    everything = {f"{topics[0]}[{p}]" for p in range(PARTITIONS)} | {f"{topics[1]}[0]"}
    servers = APIServers(1, api_args(s), logs)
    env = daemon_env(s, broker, servers.base_url, topics)
    producer = BenchProducer(broker.bootstrap, linger_ms=5)
    members: list[DaemonProcess] = []

    def replica(n: int) -> DaemonProcess:
        d = DaemonProcess({**env, "HTTP_PORT": str(free_port())}, logs / f"daemon-rebalance-{n}.log")
        members.append(d)
        return d

    load = os.getloadavg()
    marks: dict[str, float] = {}
    try:
        first, second = replica(1), replica(2)
        first.wait_ready()
        second.wait_ready()
        _until_owned([first, second], everything)
        feeder = threading.Thread(
            target=producer.produce, args=(topics[0], events(s.visits, 1), RATE), daemon=True
        )
        started = time.time()
        feeder.start()
        time.sleep(STEADY_S)  # pacing the scenario: steady load before the change, not a synchronisation
        marks["join"] = time.time()
        third = replica(3)
        join_s = _until_owned([first, second, third], everything)
        time.sleep(STEADY_S)
        marks["leave"] = time.time()
        first.proc.send_signal(signal.SIGTERM)
        leave_s = _until_owned([second, third], everything)
        exit_code = first.proc.wait(60)
        feeder.join(STEADY_S * 4)
        deadline = time.monotonic() + 60
        while servers.attributes_ok() < s.visits and time.monotonic() < deadline:
            time.sleep(0.1)
        ended = time.time()
        stats = servers.stats()
    finally:
        for d in members:
            d.stop()
        servers.stop()
        producer.close()
    series = _per_second(stats, started)
    return {
        "name": "rebalance",
        "title": s.title,
        "rate": RATE,
        "events": s.visits,
        "delivered": sum(x["attributes_ok"] for x in stats),
        "join": {"reassigned_s": join_s, **_dip(series, marks["join"] - started, join_s)},
        "leave": {
            "reassigned_s": leave_s,
            "exit_code": exit_code,
            **_dip(series, marks["leave"] - started, leave_s),
        },
        "elapsed_s": ended - started,
        "loadavg": [load, os.getloadavg()],
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "series": series,
    }


def _per_second(stats: list[dict[str, Any]], started: float) -> list[tuple[float, int]]:
    """Attributes delivered per 1 s window since `started` (from the 0.25 s buckets of every server)."""
    per: dict[int, int] = {}
    for x in stats:
        for key, (_, ok, _) in x["series"].items():
            second = int(x["started_wall"] + int(key) * x["bucket_s"] - started)
            per[second] = per.get(second, 0) + ok
    return [(float(t), per.get(t, 0)) for t in range(0, max(per, default=0) + 1)]


def _dip(series: list[tuple[float, int]], at: float, reassigned_s: float) -> dict[str, float]:
    """The rate before `at`, the lowest 1 s rate until 2 s after the reassignment, the shortfall."""
    before = [n for t, n in series if at - 10 <= t < at - 1]
    base = statistics.median(before) if before else 0.0
    window = [n for t, n in series if at <= t <= at + reassigned_s + 2]
    low = min(window) if window else 0.0
    short = sum(max(0.0, base - n) for n in window)
    return {
        "rate_before": base,
        "lowest_rate": float(low),
        "dip": 1 - low / base if base else 0.0,
        "late": short,
    }


def section(r: dict[str, Any]) -> list[str]:
    """The markdown section for RESULTS.md."""
    load = r["loadavg"]
    lines = [
        BEGIN,
        "## Rebalance: a replica joins, then one leaves, under steady load",
        "",
        f"{r['title']}; {r['events']:,} events, {r['delivered']:,} delivered. Measured {r['date']} on "
        f"{r['cpus']} CPUs shared with other work (load {load[0][0]:.2f} -> {load[1][0]:.2f}): "
        "the rates are noisy. Rates in attributes/s over 1 s windows; *late*: attributes delivered "
        "later than the rate before would have (the shortfall until 2 s after the reassignment).",
        "",
        "| change | time to full reassignment | rate before | lowest rate | dip | late |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, label in (("join", "replica joins (2 -> 3)"), ("leave", "replica leaves, SIGTERM (3 -> 2)")):
        x = r[key]
        lines.append(
            f"| {label} | {x['reassigned_s']:.1f} s | {x['rate_before']:.0f} | {x['lowest_rate']:.0f} | "
            f"{x['dip']:.0%} | {x['late']:.0f} |"
        )
    lines += ["", END, ""]
    return lines


def main(out_dir: Path, results: Path, quick: bool = False) -> int:
    """Run the scenario (shorter with `quick`), write out/rebalance.json, splice RESULTS.md."""
    global STEADY_S, SCENARIO
    if quick:
        STEADY_S = 6.0
        SCENARIO = replace(SCENARIO, visits=int(RATE * STEADY_S * 4))
    out_dir.mkdir(parents=True, exist_ok=True)
    with LocalBroker(log_path=out_dir / "tansu-rebalance.log") as broker:
        result = run(broker, out_dir, time.strftime("%H%M%S"))
    (out_dir / "rebalance.json").write_text(json.dumps(result, indent=1))
    formats.splice(results, section(result), BEGIN, END)
    print(f"[bench] rebalance: join {result['join']}, leave {result['leave']}", flush=True)
    return 0
