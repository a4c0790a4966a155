"""All ten engagement attribute types end to end: real broker, the daemon (DEBUG logs), the stand-in API.

Each type has its own topic, through its topic setting (`CART_TOPICS`, ...). A valid flat event of
each type (enumerations partly by name) must reach the API in exactly the documented shape, written
out by hand in tests/attribute_examples.py; an invalid one of each type must be dead-lettered as
`invalid_event` with a `dlq.error` naming the path. The personal data of a `personal` and a
`ctmrinfo` event, valid and invalid, must appear nowhere in the daemon's whole DEBUG output nor in
a dead letter's `dlq.error`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from attribute_examples import DOCUMENTED
from harness import Topics, next_id, produce, read_topic, wait_until

from consumer.values.attributes import ATTRIBUTES, TYPES

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ACCOUNT = "1234"
# The personal data of DOCUMENTED's personal and ctmrinfo attributes, and of the invalid ones below.
SECRETS = (
    "Janet",
    "Fakename",
    "janet.fakename@example.com",
    "212-555-0147",
    "CUST-FAKE-138766",
    "user000",
    "3543546543545688",
)
# Enumerations given by name in the flat events (the API must receive the documented value).
BY_NAME: dict[str, dict[str, Any]] = {
    "service": {"status": "complete"},
    "mrktInfo": {"channel": "Search"},
    "personal": {"gender": "female"},
}
# Per type: the invalid flat fields (beside valid ones of DOCUMENTED) and the path dlq.error names.
INVALID: dict[str, tuple[dict[str, Any], str]] = {
    "lead": ({"value": "a lot"}, "value"),
    "service": ({"status": 14}, "status"),
    "error": ({"resolved": "no"}, "resolved"),
    "searchInfo": ({"keywords": ["reset password", 7]}, "keywords[1]"),
    "cart": (
        {"products": [DOCUMENTED["cart"]["products"][0], {"product": {"name": "x", "price": "7.8"}}]},
        "products[1].product.price",
    ),
    "purchase": ({"cart": {"numItems": 1}}, "cart.products"),
    "prodView": (
        {"products": [{"product": {"sku": "s", "quantityInStock": 1.5}}]},
        "products[0].product.quantityInStock",
    ),
    "ctmrinfo": ({"lastPaymentDate": {"day": 15, "month": 13, "year": 2014}}, "lastPaymentDate.month"),
    "mrktInfo": ({"channel": "television"}, "channel"),
    "personal": (
        {"contacts": [{"email": "janet.fakename@example.com", "phoneType": "Janet Fakename"}]},
        "contacts[0].phoneType",
    ),
}  # fmt: skip


def flat(kind: str) -> dict[str, Any]:
    """The type's fields of a flat message whose attribute is DOCUMENTED[kind]."""
    attribute = DOCUMENTED[kind]
    nest = ATTRIBUTES[kind].nest
    fields = dict(attribute[nest]) if nest else {k: v for k, v in attribute.items() if k != "type"}
    return {**fields, **BY_NAME.get(kind, {})}


def message(kind: str, visitor: str, fields: dict[str, Any]) -> bytes:
    """A flat event message: routing fields plus the type's fields."""
    return json.dumps({"account": ACCOUNT, "visitor": visitor, "sid": f"s.{visitor}", **fields}).encode()


def canonical(value: Any) -> str:
    """JSON with sorted keys: tells 1 from 1.0 from true, unlike ==."""
    return json.dumps(value, sort_keys=True)


@pytest.fixture
def type_topics(broker: Any, topics: Topics) -> dict[str, str]:
    """A topic per attribute type: the fixture's lead and service topics, new ones for the other eight."""
    n = next_id()
    names = {kind: f"{kind.lower()}-{n}" for kind in TYPES if kind not in ("lead", "service")}
    broker.create_topics({name: 2 for name in names.values()})
    return {"lead": topics.leads, "service": topics.services, **names}


def test_every_type_arrives_in_its_documented_shape_and_invalid_ones_are_dead_lettered_by_path(
    broker: Any,
    topics: Topics,
    type_topics: dict[str, str],
    api: Any,
    daemon_env: Any,
    start_daemon: Any,
) -> None:
    settings = {ATTRIBUTES[kind].setting: topic for kind, topic in type_topics.items()}
    daemon = start_daemon(daemon_env(api.base_url, LOG_LEVEL="DEBUG", **settings))
    valid = [(type_topics[k], f"ok-{k}".encode(), message(k, f"ok-{k}", flat(k))) for k in TYPES]
    invalid = [
        (type_topics[k], f"bad-{k}".encode(), message(k, f"bad-{k}", {**flat(k), **INVALID[k][0]}))
        for k in TYPES
    ]
    produced = produce(broker, valid + invalid)

    api.wait_delivered(len(TYPES))
    letters = read_topic(broker, topics.dlq, len(TYPES))
    wait_until(
        lambda: all(
            daemon.metric_or_zero("engagement_attributes_delivered_total", type=k) == 1 for k in TYPES
        ),
        20,
        "engagement_attributes_delivered_total{type} at 1 for each of the ten types",
    )

    # Exactly the documented shape, one request per visit, nothing else delivered.
    received = {visit.visitor: attr for visit, attr in api.delivered()}
    assert sorted(received) == sorted(f"ok-{k}" for k in TYPES)
    for kind in TYPES:
        assert canonical(received[f"ok-{kind}"]) == canonical(DOCUMENTED[kind]), kind
    assert all(r.status == 200 for r in api.received), [(r.visit, r.status, r.detail) for r in api.received]

    check_dead_letters(letters, {key.decode(): (topic, value) for topic, key, value in invalid})

    # The `type` label takes the ten values (and no other, for delivered attributes).
    samples = daemon.scrape()[1]
    consumed = {
        dict(labels).get("type") for name, labels in samples if name == "engagement_events_consumed_total"
    }
    assert set(TYPES) <= consumed, consumed
    delivered = {
        dict(labels).get("type")
        for name, labels in samples
        if name == "engagement_attributes_delivered_total"
    }
    assert delivered == set(TYPES), delivered

    assert daemon.stop() == 0
    logs = daemon.logs()
    assert any(e.get("level") == "debug" for e in daemon.log_events()), "the run logged at DEBUG"
    assert len(produced.records) == 2 * len(TYPES)
    for secret in SECRETS:
        assert secret not in logs, f"{secret!r} in the daemon's DEBUG output"


def check_dead_letters(letters: list[Any], origin: dict[str, tuple[str, bytes]]) -> None:
    """Each invalid event dead-lettered as invalid_event from its topic, its original bytes kept, its
    path named in dlq.error and no personal value there."""
    by_key = {m.key().decode(): m for m in letters}
    assert sorted(by_key) == sorted(origin)
    for kind in TYPES:
        letter = by_key[f"bad-{kind}"]
        headers = {k: (v or b"").decode() for k, v in letter.headers()}
        assert headers["dlq.reason"] == "invalid_event", (kind, headers)
        assert (headers["dlq.topic"], letter.value()) == origin[f"bad-{kind}"]
        assert f"'{INVALID[kind][1]}'" in headers["dlq.error"], (kind, headers["dlq.error"])
        for secret in SECRETS:
            assert secret not in headers["dlq.error"], (kind, secret, headers["dlq.error"])
