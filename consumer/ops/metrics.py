"""Prometheus metrics: the names are an interface (dashboards and alerts use them).

Per-request updates on the event loop (requests by status, request durations, attributes per
request, attributes delivered) go through a `Tally` (`count`, `LoopHistogram.observe`): plain
Python numbers, about 0.15 us each instead of ~0.7 us for a prometheus-client child's locked
update. The tally is applied to the metrics at every collection (`/metrics`, `get_sample_value`):
its collector is registered first, so what is exported is exact at the moment of the scrape.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)


class Tally(Collector):
    """Counter increments and histogram observations made on the loop, applied when collected."""

    def __init__(self) -> None:
        self.counts: dict[Counter, float] = {}
        self.histograms: list[LoopHistogram] = []

    def flush(self) -> None:
        """Apply what was tallied to the metrics (on the loop thread, as every tally is)."""
        counts, self.counts = self.counts, {}
        for child, n in counts.items():
            child.inc(n)
        for histogram in self.histograms:
            histogram.flush()

    def collect(self) -> Iterable[Metric]:
        """Flush; this collector exports nothing itself."""
        self.flush()
        return []

    def describe(self) -> Iterable[Metric]:
        """No metrics of its own."""
        return []


TALLY = Tally()
REGISTRY.register(TALLY)  # first: flushed before any metric is collected


def count(child: Counter, n: float = 1) -> None:
    """`child.inc(n)`, tallied (applied at the next collection)."""
    counts = TALLY.counts
    counts[child] = counts.get(child, 0) + n


class LoopHistogram:
    """`histogram.observe`, tallied: bucket counts and the sum kept here until the next collection."""

    __slots__ = ("_bounds", "_counts", "_histogram", "_sum")

    def __init__(self, histogram: Histogram, tally: Tally | None = None) -> None:
        self._histogram = histogram
        self._bounds: list[float] = list(histogram._upper_bounds)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        (tally or TALLY).histograms.append(self)

    def observe(self, amount: float) -> None:
        """One observation (into the first bucket whose upper bound is >= amount, as prometheus does)."""
        self._counts[bisect.bisect_left(self._bounds, amount)] += 1
        self._sum += amount

    def flush(self) -> None:
        """Apply the tallied observations to the histogram."""
        h: MetricWrapperBase = self._histogram
        if self._sum or any(self._counts):
            for i, n in enumerate(self._counts):
                if n:
                    h._buckets[i].inc(n)  # type: ignore[attr-defined]
            h._sum.inc(self._sum)  # type: ignore[attr-defined]
            self._counts = [0] * len(self._bounds)
            self._sum = 0.0


EVENTS_CONSUMED = Counter(
    "engagement_events_consumed",
    "Kafka messages consumed, by topic and its attribute type (one of the ten, or event: EVENT_TOPICS).",
    ["topic", "type"],
    registry=REGISTRY,
)
INVALID_EVENTS = Counter(
    "engagement_invalid_events",
    "Messages that are not valid events, by reason (they are dead-lettered).",
    ["reason"],
    registry=REGISTRY,
)
ATTRIBUTES_DELIVERED = Counter(
    "engagement_attributes_delivered",
    "Engagement attributes accepted by the API (2xx).",
    ["type"],
    registry=REGISTRY,
)
REQUESTS = Counter(
    "engagement_requests",
    "HTTP requests to the Engagement Attributes API by status (or timeout/connection_error).",
    ["status"],
    registry=REGISTRY,
)
REQUEST_DURATION = Histogram(
    "engagement_request_duration_seconds",
    "Duration of one Engagement Attributes API request.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
CONNECTION_ERRORS = Counter(
    "engagement_connection_errors",
    "Requests to the Engagement Attributes API that got no answer (connection_error), by cause "
    "(certificate_not_trusted, certificate_name_mismatch, certificate_expired, certificate_rejected, "
    "tls, refused, reset, dns, other).",
    ["cause"],
    registry=REGISTRY,
)
RETRIES = Counter(
    "engagement_retries",
    "Request retries by reason (http_429, http_5xx, timeout, connection_error, auth, tls, dlq_produce ...).",
    ["reason"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "engagement_dead_letters",
    "Dead letters acknowledged by the broker, by reason.",
    ["reason"],
    registry=REGISTRY,
)
DEAD_LETTERS_BLOCKED = Gauge(
    "engagement_dead_letters_blocked",
    "Dead letters refused permanently by the broker (not too large, not transient): their commits are held.",
    registry=REGISTRY,
)
INFLIGHT = Gauge(
    "engagement_inflight_requests",
    "Requests to the API in flight now.",
    registry=REGISTRY,
)
BATCH_ATTRIBUTES = Histogram(
    "engagement_batch_attributes",
    "Attributes per request (coalescing of one visit's waiting events).",
    buckets=(1, 2, 3, 5, 10, 20, 50, 100),
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "engagement_consumer_lag",
    "Messages behind the partition's high watermark (librdkafka statistics).",
    ["topic", "partition"],
    registry=REGISTRY,
)
COMMITTED_OFFSET = Gauge(
    "engagement_committed_offset",
    "Last offset committed for the consumer group, per partition.",
    ["topic", "partition"],
    registry=REGISTRY,
)
# The `account` label is "" (the same series as no label, for Prometheus) when one set of
# credentials serves every account; else an account that has credentials (bounded cardinality).
HALTED = Gauge(
    "engagement_halted",
    "1 while an account's delivery is halted on an authentication failure (401/403, credentials) or on a "
    "certificate the client does not trust.",
    ["account"],
    registry=REGISTRY,
)
PAUSED = Gauge(
    "engagement_paused",
    "1 while the operator pauses an account (a `paused` file in its folder, or LP_PAUSE_FILE).",
    ["account"],
    registry=REGISTRY,
)
CONCURRENCY_LIMIT = Gauge(
    "engagement_concurrency_limit",
    "Current adaptive limit on an account's requests in flight.",
    ["account"],
    registry=REGISTRY,
)
ACCOUNT_REQUESTS = Counter(
    "engagement_account_requests",
    "HTTP requests to the Engagement Attributes API by account (with credentials) and status.",
    ["account", "status"],
    registry=REGISTRY,
)
LANE_ERRORS = Counter(
    "engagement_lane_errors",
    "Unexpected exceptions inside a visit's delivery (a bug): logged as lane_failed, the records retried.",
    registry=REGISTRY,
)

UNKNOWN_FIELDS = Counter(
    "engagement_unknown_fields",
    "Unknown event fields ignored (not sent), by attribute type.",
    ["type"],
    registry=REGISTRY,
)
SKIPPED_DONE = Counter(
    "engagement_skipped_done",
    "Consumed offsets skipped because the previous owner's offset map names them done.",
    registry=REGISTRY,
)
OFFSET_MAP_OVERSIZE = Counter(
    "engagement_offset_map_oversize",
    "Commits whose offset map did not fit OFFSET_MAP_MAX_BYTES (committed with the lowest part that "
    "fits, or plain).",
    registry=REGISTRY,
)
COMMITTED_UNKNOWN = Counter(
    "engagement_committed_unknown",
    "Partitions assigned whose commit could not be read (timed out, errored, after retries): their "
    "park is read through (a census) and no offset map is used; duplicates, never a loss.",
    registry=REGISTRY,
)
COMMIT_METADATA_DEGRADED = Counter(
    "engagement_commit_metadata_degraded",
    "Commits whose park part did not fit the partition's metadata limit, by what was kept "
    "(park_maps_shrunk, park_positions_only, park_census, plain); the log names the partition.",
    ["step"],
    registry=REGISTRY,
)
COMMIT_METADATA_REFUSED = Counter(
    "engagement_commit_metadata_refused",
    "Commits the broker refused as too large (offset.metadata.max.bytes): that partition's limit is halved.",
    registry=REGISTRY,
)
OFFSET_MAP_UNREAD = Counter(
    "engagement_offset_map_unread",
    "Commit metadata found at assignment but not read as an offset map, by reason "
    "(foreign, newer_version, corrupt, stale): plain behaviour, more duplicates, never a loss.",
    ["reason"],
    registry=REGISTRY,
)
PARKED_EVENTS = Gauge(
    "engagement_parked_events",
    "Records of an account waiting in the park topic (written, not yet brought back and done).",
    ["account"],
    registry=REGISTRY,
)
PARK_OLDEST = Gauge(
    "engagement_park_oldest_seconds",
    "Age of an account's oldest parked record (PARK_MAX_AGE_S dead-letters it as park_expired).",
    ["account"],
    registry=REGISTRY,
)
PARKED = Counter(
    "engagement_parked",
    "Records written to the park topic (acknowledged), by account; a record parked again counts again.",
    ["account"],
    registry=REGISTRY,
)
UNPARKED = Counter(
    "engagement_unparked",
    "Records read back from the park and done (delivered or dead-lettered), by account.",
    ["account"],
    registry=REGISTRY,
)
PARK_BLOCKED = Gauge(
    "engagement_park_blocked",
    "Park records the broker refuses permanently now (their partitions' commits are held).",
    registry=REGISTRY,
)


REQUEST_DURATION_TALLY = LoopHistogram(REQUEST_DURATION)
BATCH_ATTRIBUTES_TALLY = LoopHistogram(BATCH_ATTRIBUTES)


def exported_names() -> set[str]:
    """Return every sample name this daemon exports (for alert and dashboard checks)."""
    names: set[str] = set()
    for metric in REGISTRY.collect():
        names.add(metric.name)
        if metric.type == "counter":
            names.update({f"{metric.name}_total", f"{metric.name}_created"})
        elif metric.type == "histogram":
            names.update(f"{metric.name}_{s}" for s in ("bucket", "count", "sum", "created"))
    return names
