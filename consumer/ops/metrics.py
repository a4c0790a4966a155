"""Prometheus metrics: the names are an interface (dashboards and alerts use them)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS_CONSUMED = Counter(
    "engagement_events_consumed",
    "Kafka messages consumed from the lead and service topics.",
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
RETRIES = Counter(
    "engagement_retries",
    "Request retries by reason (http_429, http_5xx, timeout, connection_error, auth, dlq_produce ...).",
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
    "1 while an account's delivery is halted on an authentication failure (401/403, credentials).",
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
OFFSET_MAP_UNREAD = Counter(
    "engagement_offset_map_unread",
    "Commit metadata found at assignment but not read as an offset map, by reason "
    "(foreign, newer_version, corrupt, stale): plain behaviour, more duplicates, never a loss.",
    ["reason"],
    registry=REGISTRY,
)


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
