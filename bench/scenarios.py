"""The benchmark's scenarios and their targets (the issue's numbers), full and `--quick` sizes."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Target:
    """A figure of a scenario's result compared with a threshold."""

    key: str
    op: str  # ">=" or "<="
    threshold: float
    label: str

    def met(self, value: float | None) -> bool | None:
        """True/False, or None when the figure is missing."""
        if value is None:
            return None
        compare: Callable[[float, float], bool] = operator.ge if self.op == ">=" else operator.le
        return compare(value, self.threshold)


@dataclass(frozen=True)
class Scenario:
    """One run of the daemon: what is produced, how the API behaves, how the daemon is set up."""

    name: str
    title: str
    visits: int
    per_visit: int = 1
    latency_s: float = 0.05
    max_in_flight: int = 128
    adaptive: bool = True
    throttle_rps: float | None = None
    verify: bool = False
    produce_first: bool = False  # the backlog is in the topic before the daemon starts
    pace_rps: float | None = None  # produce at this rate instead of as fast as possible
    time_limit_s: float = 60.0  # stop measuring here even if not everything was delivered
    warmup_s: float = 0.0  # rates are measured from the first delivery + warmup_s
    partitions: int = 6
    servers: int = 1
    profile: bool = False  # py-spy on the first run
    repeat: int = 1  # runs; the one with the median CPU per attribute is reported
    daemon_module: str = "consumer"  # `python -m <this> run`; a bench probe may wrap the daemon
    env: dict[str, str] = field(default_factory=dict)
    targets: tuple[Target, ...] = ()
    encoding: str = "json"  # how events are encoded (bench/workload.py); avro starts a registry stand-in
    group: str = ""  # `--only <group>` runs the group; its runs are interleaved round by round
    # Accounts (bench/accounts.py): the events above are account 1234's; with `second_account_visits`
    # account 5678 has that many more, throttled by the API at `second_account_rps`; both accounts
    # then have their own folder in LP_CREDENTIALS_DIR (with `credentials_dir`).
    credentials_dir: bool = False
    second_account_visits: int = 0
    second_account_rps: float | None = None
    traceparent: bool = False  # each event carries a producer's W3C traceparent header
    otlp: bool = False  # tracing on: spans exported to a stand-in OTLP/HTTP receiver in the bench process

    @property
    def events(self) -> int:
        """Events produced."""
        return (self.visits + self.second_account_visits) * self.per_visit


THROTTLE_RPS = 400.0

FULL: list[Scenario] = [
    Scenario(
        "single",
        "20,000 single-attribute visits, 50 ms latency, MAX_IN_FLIGHT 128",
        visits=20_000,
        profile=True,
        repeat=5,
        targets=(
            Target("ratio_to_limit", ">=", 0.9, "requests/s >= 0.9 x Little's-law limit"),
            # issue 21: 0.6 of the build before it (8270ad0: 187 us median on the bench machine, A/B)
            Target("cpu_us_per_attribute", "<=", 112, "daemon CPU <= 0.6 x 187 us per attribute"),
        ),
    ),
    Scenario(
        "single-rawhttp",
        "what-if: `single` with the events POST sent by a minimal HTTP/1.1 client instead of aiohttp "
        "(bench/rawhttp_probe.py, measurement only)",
        visits=20_000,
        daemon_module="bench.rawhttp_probe",
    ),
    Scenario(
        "coalesce",
        "10,000 visits of 10 attributes (coalesced), 50 ms latency, MAX_IN_FLIGHT 128",
        visits=10_000,
        per_visit=10,
        repeat=3,
        targets=(Target("cpu_us_per_attribute", "<=", 40, "daemon CPU <= 40 us per attribute"),),
    ),
    Scenario(
        "coalesce-rawhttp",
        "what-if: `coalesce` with the minimal HTTP/1.1 sender of bench/rawhttp_probe.py (measurement only)",
        visits=10_000,
        per_visit=10,
        daemon_module="bench.rawhttp_probe",
    ),
    Scenario(
        "paced",
        "1,000 events/s for 10 s (below capacity): produce-to-API latency, 50 ms API latency",
        visits=10_000,
        pace_rps=1000.0,
    ),
    Scenario(
        "verified",
        "5,000 single-attribute visits with OAuth signatures verified by the API (sanity)",
        visits=5_000,
        verify=True,
        targets=(Target("share_not_2xx", "<=", 0.0, "every request accepted (signatures valid)"),),
    ),
    Scenario(
        "throttled",
        f"API throttles at R = {THROTTLE_RPS:.0f} requests/s (429 + Retry-After: 1), adaptive concurrency",
        visits=12_000,
        time_limit_s=20.0,
        warmup_s=3.0,
        throttle_rps=THROTTLE_RPS,
        targets=(
            Target("rate_over_throttle", ">=", 0.9, "delivered >= 0.9 R"),
            Target("share_429", "<=", 0.05, "<= 5% of requests answered 429"),
        ),
    ),
    Scenario(
        "throttled-fixed",
        f"same API (R = {THROTTLE_RPS:.0f}/s), adaptive concurrency off (fixed limit 128), for comparison",
        visits=12_000,
        time_limit_s=20.0,
        warmup_s=3.0,
        throttle_rps=THROTTLE_RPS,
        adaptive=False,
    ),
    Scenario(
        "backlog",
        "1,000,000-event backlog (visits of 10), 5 ms latency, MAX_IN_FLIGHT 128: memory",
        visits=100_000,
        per_visit=10,
        latency_s=0.005,
        produce_first=True,
        time_limit_s=150.0,
        targets=(Target("peak_rss_mb", "<=", 200, "daemon peak RSS <= 200 MB"),),
    ),
]


# `formats`: the `single` set-up with the events as other producers write them; CPU per event of each
# encoding against plain JSON. Interleaved rounds, because this shared VM's load drifts for minutes.
FORMAT_ENCODINGS = ("json", "cloudevents-binary", "connect", "avro")
FULL += [
    Scenario(
        f"formats-{encoding}",
        f"`single` set-up (20,000 single-attribute visits, 50 ms, MAX_IN_FLIGHT 128), events as {encoding}",
        visits=20_000,
        repeat=3,
        encoding=encoding,
        group="formats",
    )
    for encoding in FORMAT_ENCODINGS
]


# `accounts`: two accounts behind one daemon, one throttled by the API at 50 requests/s (429 +
# Retry-After: 1); the other's throughput against its own run alone (bench/accounts.py).
ACCOUNT_THROTTLE_RPS = 50.0
FULL += [
    Scenario(
        "accounts-alone",
        "account 1234 alone: 20,000 single-attribute visits, 50 ms, MAX_IN_FLIGHT 128, credentials directory",
        visits=20_000,
        credentials_dir=True,
        repeat=5,
        group="accounts",
    ),
    Scenario(
        "accounts-shared",
        f"account 1234 (20,000 visits) beside 5678, throttled at {ACCOUNT_THROTTLE_RPS:.0f} requests/s",
        visits=20_000,
        credentials_dir=True,
        second_account_visits=1_500,
        second_account_rps=ACCOUNT_THROTTLE_RPS,
        time_limit_s=25.0,
        warmup_s=3.0,
        repeat=5,
        group="accounts",
    ),
]


# `traces`: the `single` set-up, every event with a producer's traceparent header; tracing off, and
# on with a 1.0 sampler exporting to a local OTLP/HTTP receiver (bench/traces.py). Interleaved rounds.
TRACE_SAMPLERS = {"off": None, "on": "1.0", "sampled": "0.1"}
FULL += [
    Scenario(
        f"traces-{mode}",
        "`single` set-up (20,000 single-attribute visits, 50 ms, MAX_IN_FLIGHT 128), traceparent headers, "
        + (f"tracing on (sampler {ratio}, OTLP/HTTP to a local receiver)" if ratio else "tracing off"),
        visits=20_000,
        repeat=3,
        traceparent=True,
        otlp=ratio is not None,
        env={"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": ratio} if ratio else {},
        group="traces",
    )
    for mode, ratio in TRACE_SAMPLERS.items()
]


def quick() -> list[Scenario]:
    """The scenarios with targets (and the latency one), small: a smoke run in under a minute."""
    sizes: dict[str, dict[str, Any]] = {
        "single": {"visits": 3_000, "profile": False, "repeat": 1},
        "coalesce": {"visits": 1_000, "repeat": 1},
        "paced": {"visits": 2_000},
        "verified": {"visits": 500},
        "throttled": {"visits": 2_500, "time_limit_s": 5.0, "warmup_s": 2.0},
        "backlog": {"visits": 5_000, "time_limit_s": 20.0},
    }
    return [replace(s, **sizes[s.name]) for s in FULL if s.name in sizes]
