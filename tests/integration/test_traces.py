"""Traces end to end: the daemon (a subprocess) over the real broker and the stand-in API exports its
spans over OTLP/HTTP to a stand-in receiver that decodes them with opentelemetry-proto."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import orjson
import pytest
from harness import Topics, event, produce, read_topic

from consumer.sandbox.otlp import OtlpReceiver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ACCOUNT = "4711"
CLIENT = 3  # opentelemetry.proto SpanKind


def producer_context() -> tuple[str, str, str]:
    """A producer's (trace id, span id, traceparent), as an OpenTelemetry Kafka instrumentation writes it."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    """A stand-in OTLP/HTTP receiver on loopback."""
    with OtlpReceiver() as r:
        yield r


def _tracing_env(receiver: OtlpReceiver) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_SERVICE_NAME": "engagement-consumer-test",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "1.0",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }


def test_spans_of_a_run_arrive_with_their_parents_links_and_attributes(
    broker, topics: Topics, api, daemon_env, start_daemon, receiver: OtlpReceiver
) -> None:
    """A lone lead's request continues its producer's trace; three coalesced leads (a traceparent
    header, ce_traceparent, a structured CloudEvent's traceparent) are linked from one request; a
    retried attempt is an event; a 400 leaves a dead_letter event and the dead letter carries the
    request's traceparent on; log lines carry the trace ids; the visit is hashed."""
    alone, coalesced = producer_context(), [producer_context() for _ in range(3)]
    retried, dead = producer_context(), producer_context()
    api.fail_visitor("v-retry", 503, times=1)
    api.reject_attribute(lambda a: a.get("lead", {}).get("topic") == "dead")
    structured = {
        "specversion": "1.0",
        "type": "lead",
        "source": "/crm",
        "id": "c3",
        "traceparent": coalesced[2][2],
        "data": orjson.loads(event(ACCOUNT, "v-coalesce", topic="c3", value=3)),
    }
    leads = topics.leads
    messages = [
        (leads, b"v-alone", event(ACCOUNT, "v-alone", topic="a"), [("traceparent", alone[2].encode())]),
        (leads, b"v-coalesce", event(ACCOUNT, "v-coalesce", topic="c1"), [("traceparent", coalesced[0][2])]),
        (
            leads,
            b"v-coalesce",
            event(ACCOUNT, "v-coalesce", topic="c2"),
            [("ce_traceparent", coalesced[1][2].encode()), ("ce_tracestate", b"vendor=x")],
        ),
        (leads, b"v-coalesce", orjson.dumps(structured)),
        (leads, b"v-retry", event(ACCOUNT, "v-retry", topic="r"), [("traceparent", retried[2].encode())]),
        (leads, b"v-dead", event(ACCOUNT, "v-dead", topic="dead"), [("traceparent", dead[2].encode())]),
        (leads, b"v-plain", event(ACCOUNT, "v-plain", topic="p")),
    ]
    produce(broker, messages)  # before the daemon starts: v-coalesce's three come in one fetch
    d = start_daemon(daemon_env(api.base_url, **_tracing_env(receiver)))
    api.wait_delivered(6)
    letters = read_topic(broker, topics.dlq, 1)
    assert d.stop() == 0
    spans = receiver.spans()
    requests = [s for s in spans if s.name == "POST" and not s.attributes.get("engagement.probe")]
    assert {s.kind for s in requests} == {CLIENT}
    by_link = {s.links[0][1]: s for s in requests if s.links}

    first = by_link[alone[1]]
    assert (first.trace_id, first.parent_span_id) == (alone[0], alone[1]), "continues its producer's trace"
    assert (
        first.attributes["engagement.account"] == ACCOUNT and first.attributes["engagement.attributes"] == 1
    )
    assert first.attributes["engagement.outcome"] == "delivered"
    assert (
        first.attributes["http.response.status_code"] == 200 and first.attributes["engagement.attempts"] == 1
    )
    assert first.events == [] and first.status != 2
    visit = first.attributes["engagement.visit"]
    assert len(visit) == 16 and "v-alone" not in visit, "the visit is hashed by default"

    batch = [s for s in requests if len(s.links) == 3]
    assert len(batch) == 1, [(s.attributes, s.links) for s in requests]
    assert set(batch[0].links) == {(t, s) for t, s, _ in coalesced}, "a link to every coalesced producer"
    assert batch[0].parent_span_id == "" and batch[0].attributes["engagement.attributes"] == 3

    again = by_link[retried[1]]
    assert (
        again.attributes["engagement.attempts"] == 2 and again.attributes["engagement.outcome"] == "delivered"
    )
    assert again.events == [
        (
            "attempt",
            {"http.response.status_code": 503, "engagement.outcome": "retry", "engagement.attempt": 1},
        )
    ], "the retried attempt is an event"
    assert again.attributes["http.response.status_code"] == 200

    lost = by_link[dead[1]]
    assert lost.attributes["engagement.outcome"] == "dead_lettered" and lost.status == 2
    assert [(n, a["engagement.reason"]) for n, a in lost.events] == [("dead_letter", "http_400")]
    carried = dict(letters[0].headers())
    assert carried["traceparent"] == f"00-{lost.trace_id}-{lost.span_id}-01".encode()
    assert carried["dlq.reason"] == b"http_400"

    plain = [s for s in requests if not s.links]
    assert len(plain) == 1 and plain[0].parent_span_id == "", "no producer context: a new trace"
    assert first.resource["service.name"] == "engagement-consumer-test"
    assert first.resource["deployment.environment"] == "test"

    logged = [e for e in d.log_events() if e.get("event") == "retry_scheduled"]
    assert [(e["trace_id"], e["span_id"]) for e in logged] == [(again.trace_id, again.span_id)]
    dead_line = next(e for e in d.log_events() if e.get("event") == "dead_lettered")
    assert (dead_line["trace_id"], dead_line["span_id"]) == (lost.trace_id, lost.span_id)


@pytest.mark.parametrize("off", ["no_endpoint", "exporter_none"])
def test_nothing_is_exported_without_the_variables(
    broker, topics: Topics, api, daemon_env, start_daemon, receiver: OtlpReceiver, off: str
) -> None:
    """Events with producer contexts, a receiver listening, traces not asked for: no span, no trace ids.

    `no_endpoint`: no OTEL_EXPORTER_* variable. Spans exported anyway would go to the SDK's default
    endpoint, not to this receiver, so what can fail here is the logs: the event's first attempt is
    answered 503, and its `retry_scheduled` line, logged inside the delivery, carries trace ids
    whenever tracing is on. `exporter_none`: the endpoint names this receiver but
    OTEL_TRACES_EXPORTER=none turns traces off, so an export would arrive here.
    """
    env = daemon_env(api.base_url, OTEL_SERVICE_NAME="engagement-consumer-test")
    for key in [k for k in env if k.startswith("OTEL_")]:
        env.pop(key)
    env["OTEL_SERVICE_NAME"] = "engagement-consumer-test"
    if off == "exporter_none":
        env.update(OTEL_TRACES_EXPORTER="none", **_tracing_env(receiver))
    api.fail_visitor("v1", 503, times=1)
    d = start_daemon(env)
    ctx = producer_context()
    produce(broker, [(topics.leads, b"v1", event(ACCOUNT, "v1"), [("traceparent", ctx[2].encode())])])
    api.wait_delivered(1)
    assert d.stop() == 0
    assert receiver.requests == 0 and receiver.spans() == []  # after a shutdown, which would have flushed
    logged = d.log_events()
    assert [e["event"] for e in logged if e.get("event") == "retry_scheduled"] == ["retry_scheduled"]
    assert not [e for e in logged if "trace_id" in e]
