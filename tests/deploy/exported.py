"""What the alerts and the dashboard may read: the daemon's registry, plus four documented others.

Sample names, types and label names come from the daemon's own registry
(consumer.ops.metrics.REGISTRY), never from a copied list.
"""

from __future__ import annotations

from dataclasses import dataclass

from consumer.ops.metrics import REGISTRY, exported_names


@dataclass(frozen=True)
class Sample:
    """One exported sample name: how it may be read, and its labels (None: unknown)."""

    kind: str  # "counter" (only inside rate/irate/increase) or "gauge"
    labels: frozenset[str] | None


# Metrics that are not the daemon's, each with its source and the reason it is used.
OTHER_METRICS = {
    # Prometheus' own per-target health: the only way to see that no pod is scraped at all.
    "up": Sample("gauge", frozenset({"job"})),
    # kube-state-metrics: restarts are invisible from inside the restarted process.
    "kube_pod_container_status_restarts_total": Sample("counter", frozenset({"container"})),
    # kube-state-metrics: how many replicas KEDA asked for and how many are ready (dashboard only).
    "kube_deployment_status_replicas": Sample("gauge", frozenset({"deployment"})),
    "kube_deployment_status_replicas_ready": Sample("gauge", frozenset({"deployment"})),
}
# Labels Prometheus attaches to every series scraped through the ServiceMonitor.
TARGET_LABELS = frozenset({"namespace", "pod", "job", "instance", "service", "endpoint", "container"})
# Functions that read a counter's range the way counters must be read.
COUNTER_FUNCTIONS = frozenset({"rate", "irate", "increase"})


def _label_names() -> dict[str, frozenset[str]]:
    # prometheus_client keeps the label names on the collector; the public collect() only shows
    # them on samples, and a labelled metric has no sample before its first use.
    out: dict[str, frozenset[str]] = {}
    for collector in list(getattr(REGISTRY, "_collector_to_names", {})):
        names, family = getattr(collector, "_labelnames", None), getattr(collector, "_name", None)
        if names is not None and family:
            out[family] = frozenset(names)
    assert out, "no label names found on the registry's collectors (prometheus_client changed?)"
    return out


def daemon_samples() -> dict[str, Sample]:
    """Sample name -> Sample for everything the daemon exports (`_total`, `_bucket`, `_sum`, `_count`)."""
    labels_by_family = _label_names()
    out: dict[str, Sample] = {}
    for family in REGISTRY.collect():
        labels = labels_by_family.get(family.name)
        if family.type == "counter":
            out[f"{family.name}_total"] = Sample("counter", labels)
        elif family.type == "histogram":
            out[f"{family.name}_bucket"] = Sample("counter", None if labels is None else labels | {"le"})
            out[f"{family.name}_sum"] = Sample("counter", labels)
            out[f"{family.name}_count"] = Sample("counter", labels)
        else:
            out[family.name] = Sample(family.type, labels)
    exported = exported_names()
    assert set(out) <= exported, f"the registry and exported_names() disagree: {set(out) - exported}"
    return out


DAEMON = daemon_samples()
KNOWN = {**DAEMON, **OTHER_METRICS}
