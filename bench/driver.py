"""Run one scenario: topics, stand-in API, daemon, produce, wait, sample, stop; return its figures."""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psutil

from bench import profiling
from bench.processes import APIServers, DaemonProcess, Sample, env_with_repo, peak_rss
from bench.scenarios import Scenario
from bench.workload import BenchProducer, Item, events
from consumer.config.credentials import write_folder
from consumer.sandbox.api import DEFAULT_CREDENTIALS
from consumer.sandbox.broker import LocalBroker, free_port
from consumer.sandbox.otlp import OtlpReceiver
from consumer.sandbox.registry import SandboxRegistry

POLL_S = 0.1
SECOND_ACCOUNT = "5678"


def daemon_env(
    s: Scenario, broker: LocalBroker, base_url: str, topics: tuple[str, str, str]
) -> dict[str, str]:
    """The daemon's environment: production defaults except the scenario's knobs and quick group joins."""
    creds = DEFAULT_CREDENTIALS
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "LP_", "OTEL_"))}
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "KAFKA_GROUP_ID": f"bench-{topics[0]}",
            "KAFKA_SESSION_TIMEOUT_MS": "3000",
            "KAFKA_HEARTBEAT_INTERVAL_MS": "500",
            # Tansu answers a fetch only after fetch.wait.max.ms even when data is waiting (Kafka
            # answers at fetch.min.bytes = 1): 500 ms would add ~250 ms to every produce->API time.
            "KAFKA_FETCH_WAIT_MAX_MS": "100",
            "LEAD_TOPICS": topics[0],
            "SERVICE_TOPICS": topics[1],
            "DLQ_TOPIC": topics[2],
            "LP_BASE_URL": base_url,
            "LP_CONSUMER_KEY": creds.consumer_key,
            "LP_CONSUMER_SECRET": creds.consumer_secret,
            "LP_ACCESS_TOKEN": creds.access_token,
            "LP_ACCESS_TOKEN_SECRET": creds.access_token_secret,
            "HTTP_PORT": str(free_port()),
            "MAX_IN_FLIGHT": str(s.max_in_flight),
            "ADAPTIVE_CONCURRENCY": "true" if s.adaptive else "false",
            "LOG_FORMAT": "json",
        }
    )
    env.update(s.env)
    return env


def write_accounts(s: Scenario, env: dict[str, str], directory: Path) -> None:
    """One folder per account in LP_CREDENTIALS_DIR (the stand-in default keys) instead of the single set."""
    for name in ("LP_CONSUMER_KEY", "LP_CONSUMER_SECRET", "LP_ACCESS_TOKEN", "LP_ACCESS_TOKEN_SECRET"):
        env.pop(name, None)
    for account in ("1234", "5678") if s.second_account_visits else ("1234",):
        write_folder(directory / account, DEFAULT_CREDENTIALS)
    env["LP_CREDENTIALS_DIR"] = str(directory)


def api_args(s: Scenario) -> list[str]:
    """Command-line flags of the stand-in API for this scenario."""
    args = ["--latency", str(s.latency_s)]
    if s.throttle_rps is not None:
        args += ["--throttle-rps", str(s.throttle_rps)]
    if s.verify:
        args.append("--verify")
    if s.second_account_rps is not None:
        args += ["--throttle-account", f"{SECOND_ACCOUNT}={s.second_account_rps}"]
    return args


def run_scenario(
    s: Scenario, broker: LocalBroker, out_dir: Path, run_id: str, daemon_command: list[str] | None = None
) -> dict[str, Any]:
    """Run one scenario end to end and return its raw figures (see `figures`).

    `daemon_command` runs another build of the daemon (an A/B comparison: bench/ab.py)."""
    logs = out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    topics = (f"leads-{run_id}-{s.name}", f"services-{run_id}-{s.name}", f"dlq-{run_id}-{s.name}")
    broker.create_topics({topics[0]: s.partitions, topics[1]: 1, topics[2]: 1})
    load_before = os.getloadavg()
    producer = BenchProducer(broker.bootstrap, linger_ms=5 if s.pace_rps else 20)
    registry = SandboxRegistry().start() if s.encoding == "avro" else None
    registry_url = registry.url if registry else None
    items = events(
        s.visits,
        s.per_visit,
        encoding=s.encoding,
        registry_url=registry_url,
        topic=topics[0],
        traceparent=s.traceparent,
    )
    if s.second_account_visits:  # both accounts' visits interleaved, so both flow from the start
        other = events(
            s.second_account_visits, s.per_visit, s.visits, topic=topics[0], account=SECOND_ACCOUNT
        )
        items = _interleave(items, other)
    if s.produce_first:
        producer.produce(topics[0], items)
    servers = APIServers(s.servers, api_args(s), logs)
    env = daemon_env(s, broker, servers.base_url, topics)
    if s.credentials_dir:
        write_accounts(s, env, out_dir / f"accounts-{run_id}")
    if registry_url:
        env["SCHEMA_REGISTRY_URL"] = registry_url
    receiver = OtlpReceiver().start() if s.otlp else None
    if receiver is not None:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
    command = daemon_command
    if command is None and s.daemon_module != "consumer":  # a bench probe wrapping the daemon
        command, env = [sys.executable, "-m", s.daemon_module], env_with_repo(env)
    daemon = DaemonProcess(env, logs / f"daemon-{s.name}-{run_id}.log", command)
    others = [psutil.Process(p.pid) for p in servers.procs]
    broker_ps = psutil.Process(broker._proc.pid) if broker._proc else None
    try:
        daemon.wait_ready()
        daemon.start_sampling()
        spy = profiling.start(daemon.proc.pid, out_dir / f"profile-{s.name}.txt") if s.profile else None
        cpu0, others0, threads0 = daemon.cpu_s(), [_cpu(p) for p in others], daemon.thread_cpu()
        broker0 = _cpu(broker_ps) if broker_ps else 0.0
        started = time.time()
        feeder = None
        if not s.produce_first:
            feeder = threading.Thread(target=producer.produce, args=(topics[0], items, s.pace_rps))
            feeder.start()
        deadline = time.monotonic() + s.time_limit_s
        complete = False
        while time.monotonic() < deadline:
            if servers.attributes_ok() >= s.events:
                complete = True
                break
            time.sleep(POLL_S)
        ended = time.time()
        cpu1, others1, threads1 = daemon.cpu_s(), [_cpu(p) for p in others], daemon.thread_cpu()
        broker1 = _cpu(broker_ps) if broker_ps else 0.0
        last = daemon.sample()
        rss_peak = peak_rss(daemon.proc.pid)
        profile = profiling.stop(spy) if spy else None
        stats = servers.stats()
        if feeder is not None:
            feeder.join()
    finally:
        code = daemon.stop()
        servers.stop()
        producer.close()
        if registry is not None:
            registry.stop()
        spans = len(receiver.spans()) if receiver is not None else None  # the daemon flushed on exit
        if receiver is not None:
            receiver.stop()
    return figures(
        s,
        stats=stats,
        samples=[*daemon.samples, last],
        started=started,
        ended=ended,
        complete=complete,
        daemon_cpu=cpu1 - cpu0,
        thread_cpu={k: threads1[k] - threads0.get(k, 0.0) for k in threads1},
        server_cpu=sum(b - a for a, b in zip(others0, others1, strict=True)),
        broker_cpu=broker1 - broker0,
        rss_peak=rss_peak,
        exit_code=code,
        summary=daemon.stopped_summary(),
        produced=asdict(producer.report),
        load=(load_before, os.getloadavg()),
        profile=profile,
    ) | {"spans_received": spans}


def _interleave(*streams: Iterator[Item]) -> Iterator[Item]:
    for group in itertools.zip_longest(*streams):
        yield from (item for item in group if item is not None)


def _cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.user + t.system)


def figures(s: Scenario, **raw: Any) -> dict[str, Any]:
    """The scenario's figures: throughput, Little's-law ratio, CPU per attribute, RSS, latencies, 429s."""
    stats: list[dict[str, Any]] = raw["stats"]
    samples: list[Sample] = raw["samples"]
    ok = sum(x["attributes_ok"] for x in stats)
    requests = sum(x["requests"] for x in stats)
    by_status: dict[str, int] = {}
    for x in stats:
        for k, v in x["by_status"].items():
            by_status[k] = by_status.get(k, 0) + v
    firsts = [x["first_ok"] for x in stats if x["first_ok"] is not None]
    lasts = [x["last_ok"] for x in stats if x["last_ok"] is not None]
    first_ok = min(firsts) if firsts else None
    # The measured window: first delivery (+ warm-up) to the last delivery, or to the time limit.
    w0 = (first_ok or raw["started"]) + s.warmup_s
    w1 = max(lasts) if raw["complete"] and lasts else raw["ended"]
    if raw["complete"] and not s.warmup_s:  # the whole run, exactly
        window_ok, window_req, window_429 = ok, requests, by_status.get("429", 0)
    else:
        window_ok, window_req, window_429 = _in_window(stats, w0, w1)
    span = max(w1 - w0, 1e-9)
    rate_req = window_req / span
    limit = s.max_in_flight / s.latency_s
    n429 = by_status.get("429", 0)
    not_2xx = sum(v for k, v in by_status.items() if not k.startswith("2"))
    lat_p50 = _merged(stats, "latency_p50")
    lat_p99 = _merged(stats, "latency_p99")
    return {
        "scenario": asdict(s),
        "name": s.name,
        "title": s.title,
        "events": s.events,
        "complete": raw["complete"],
        "attributes_ok": ok,
        "requests": requests,
        "by_status": by_status,
        "window_s": span,
        "attributes_per_s": window_ok / span,
        "requests_per_s": rate_req,
        "attributes_per_request": ok / max(1, by_status.get("200", 0)),
        "littles_limit": limit,
        "ratio_to_limit": rate_req / limit,
        "daemon_cpu_s": raw["daemon_cpu"],
        "daemon_thread_cpu_s": raw["thread_cpu"],
        "cpu_us_per_attribute": raw["daemon_cpu"] / ok * 1e6 if ok else None,
        "cpu_us_per_request": raw["daemon_cpu"] / requests * 1e6 if requests else None,
        "server_cpu_s": raw["server_cpu"],
        "broker_cpu_s": raw["broker_cpu"],
        "elapsed_s": raw["ended"] - raw["started"],
        "peak_rss_mb": raw["rss_peak"] / 1e6,
        "latency_p50_s": lat_p50,
        "latency_p99_s": lat_p99,
        "share_429": n429 / requests if requests else None,
        "share_not_2xx": not_2xx / requests if requests else None,
        "rate_over_throttle": (window_ok / span / s.throttle_rps) if s.throttle_rps else None,
        "window_429_share": window_429 / window_req if window_req else None,
        "exit_code": raw["exit_code"],
        "stopped": raw["summary"],
        "produced": raw["produced"],
        "loadavg": raw["load"],
        "cpus": os.cpu_count(),
        "samples": [
            {"t": x.t - raw["started"], "cpu_s": x.cpu_s, "rss": x.rss, **x.metrics} for x in samples
        ],
        "api_series": _series(stats, raw["started"]),
        "accounts": _accounts(stats, s, raw["ended"]),
        "profile": raw["profile"],
    }


def _in_window(stats: list[dict[str, Any]], w0: float, w1: float) -> tuple[int, int, int]:
    ok = req = n429 = 0
    for x in stats:
        width = x["bucket_s"]
        for key, (r, a, t) in x["series"].items():
            start = x["started_wall"] + int(key) * width
            if start + width / 2 >= w0 and start + width / 2 <= w1 + width:
                req, ok, n429 = req + r, ok + a, n429 + t
    return ok, req, n429


def _accounts(stats: list[dict[str, Any]], s: Scenario, ended: float) -> dict[str, dict[str, float]]:
    """Per account: its rates over its own window (first 2xx + warm-up to its last 2xx, or the end)."""
    out: dict[str, dict[str, float]] = {}
    for account in sorted({a for x in stats for a in x.get("accounts", {})}):
        buckets: list[tuple[float, float, list[int]]] = []
        for x in stats:
            width = x["bucket_s"]
            for key, vals in x.get("accounts", {}).get(account, {}).items():
                buckets.append((x["started_wall"] + int(key) * width, width, vals))
        delivered = [start for start, _, vals in buckets if vals[1]]
        if not delivered:
            continue
        done = (
            sum(vals[1] for _, _, vals in buckets)
            >= (s.visits if account == "1234" else s.second_account_visits) * s.per_visit
        )
        w0 = min(delivered) + (s.warmup_s if account == SECOND_ACCOUNT else 0.0)  # warm-up: the throttled one
        w1 = max(start + width for start, width, vals in buckets if vals[1]) if done else ended
        inside = [vals for start, width, vals in buckets if w0 <= start + width / 2 <= w1]
        req, ok, n429 = (sum(v[i] for v in inside) for i in range(3))
        span = max(w1 - w0, 1e-9)
        out[account] = {
            "window_s": span,
            "attributes_per_s": ok / span,
            "requests_per_s": req / span,
            "ok_requests_per_s": (req - n429) / span,
            "share_429": n429 / req if req else 0.0,
            "complete": float(done),
        }
    return out


def _series(stats: list[dict[str, Any]], started: float) -> list[tuple[float, int, int, int]]:
    merged: dict[float, list[int]] = {}
    for x in stats:
        width = x["bucket_s"]
        for key, vals in x["series"].items():
            t = round(x["started_wall"] + int(key) * width - started, 3)
            slot = merged.setdefault(t, [0, 0, 0])
            for i, v in enumerate(vals):
                slot[i] += v
    return [(t, *v) for t, v in sorted(merged.items())]  # type: ignore[misc]


def _merged(stats: list[dict[str, Any]], key: str) -> float | None:
    """A quantile over several servers: the sample-weighted mean of theirs (one server: exact)."""
    pairs = [(x[key], x["latency_samples"]) for x in stats if x[key] is not None]
    total = sum(n for _, n in pairs)
    return sum(v * n for v, n in pairs) / total if total else None
