"""Per-partition gauges: consumer lag from librdkafka's statistics, and forgetting a partition's series."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Container

import structlog

from consumer.kafka.offsets import TopicPartition
from consumer.ops import metrics

log = structlog.get_logger("consumer.kafka.source")


def record_lag(stats_json: str, assignment: Container[TopicPartition]) -> None:
    """Set engagement_consumer_lag from a statistics callback, for assigned partitions only."""
    try:
        stats = json.loads(stats_json)
        for topic, tstats in stats.get("topics", {}).items():
            for pid, pstats in tstats.get("partitions", {}).items():
                if pid == "-1" or (topic, int(pid)) not in assignment:
                    continue
                lag = pstats.get("consumer_lag", -1)
                if lag >= 0:
                    metrics.CONSUMER_LAG.labels(topic, pid).set(lag)
    except (ValueError, KeyError, TypeError) as exc:
        log.debug("stats_unreadable", error=str(exc))


def fmt(tps: list[TopicPartition]) -> list[str]:
    """Partitions as `topic[p]` for logs."""
    return [f"{t}[{p}]" for t, p in tps]


def forget_partition_metrics(topic: str, partition: int) -> None:
    """Remove a partition's lag and committed-offset series (it is no longer ours)."""
    for gauge in (metrics.CONSUMER_LAG, metrics.COMMITTED_OFFSET):
        with contextlib.suppress(KeyError):
            gauge.remove(topic, str(partition))
