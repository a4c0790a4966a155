"""The loop's tally of per-request metric updates exports what direct prometheus-client updates would."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from consumer.ops import metrics
from consumer.ops.metrics import LoopHistogram, Tally

pytestmark = pytest.mark.timeout(30)
BUCKETS = (0.005, 0.01, 0.05, 0.1, 1.0, 10.0)


def _pair() -> tuple[CollectorRegistry, Counter, Histogram, CollectorRegistry, Counter, Histogram, Tally]:
    direct, tallied = CollectorRegistry(), CollectorRegistry()
    tally = Tally()
    tallied.register(tally)
    return (
        direct,
        Counter("c", "c", ["status"], registry=direct),
        Histogram("h", "h", buckets=BUCKETS, registry=direct),
        tallied,
        Counter("c", "c", ["status"], registry=tallied),
        Histogram("h", "h", buckets=BUCKETS, registry=tallied),
        tally,
    )


def _samples(registry: CollectorRegistry) -> list[tuple[str, list[tuple[str, str]], float]]:
    return sorted(
        (s.name, sorted(s.labels.items()), s.value)
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    )


@given(
    st.lists(
        st.tuples(st.sampled_from(["200", "429", "timeout"]), st.floats(0, 100, allow_nan=False)),
        max_size=50,
    ),
    st.integers(1, 3),
)
def test_tallied_updates_export_what_direct_updates_export(
    updates: list[tuple[str, float]], scrapes: int
) -> None:
    direct, c1, h1, tallied, c2, h2, tally = _pair()
    loop_histogram = LoopHistogram(h2, tally)
    chunk = max(1, len(updates) // scrapes)
    for i in range(0, max(1, len(updates)), chunk):  # scrapes in between change nothing either
        for status, duration in updates[i : i + chunk]:
            c1.labels(status).inc()
            h1.observe(duration)
            tally.counts[c2.labels(status)] = tally.counts.get(c2.labels(status), 0) + 1
            loop_histogram.observe(duration)
        got, want = _samples(tallied), _samples(direct)
        assert [(n, labels) for n, labels, _ in got] == [(n, labels) for n, labels, _ in want]
        assert [v for *_, v in got] == pytest.approx([v for *_, v in want])  # a sum adds in another order
    assert generate_latest(tallied).count(b"h_bucket") == len(BUCKETS) + 1


def test_the_daemons_tally_is_applied_when_metrics_are_read() -> None:
    child = metrics.REQUESTS.labels("299")
    before = metrics.REGISTRY.get_sample_value("engagement_requests_total", {"status": "299"}) or 0.0
    count_before = metrics.REGISTRY.get_sample_value("engagement_request_duration_seconds_count") or 0.0
    metrics.count(child)
    metrics.count(child, 2)
    metrics.REQUEST_DURATION_TALLY.observe(0.02)
    assert metrics.REGISTRY.get_sample_value("engagement_requests_total", {"status": "299"}) == before + 3
    assert metrics.REGISTRY.get_sample_value("engagement_request_duration_seconds_count") == count_before + 1
    assert "engagement_requests_total" in generate_latest(metrics.REGISTRY).decode()
