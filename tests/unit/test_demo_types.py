"""The demo's plan: every type, realistic fields of the documented shape, obviously fake personal data."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest

from consumer.tools.demo_feed import MALFORMED_VALUES, plan_events
from consumer.tools.demo_types import MIX, TOPIC_TYPES, TYPE_TOPICS, UID_PATHS, event_uid
from consumer.values.attributes import ATTRIBUTES, TYPES

pytestmark = pytest.mark.timeout(30)
ROUTING = {"account", "visitor", "sid"}


@pytest.fixture(scope="module")
def planned() -> list[tuple[str, dict[str, object]]]:
    """(type, flat event) of every valid event the demo's default plan produces."""
    plan = plan_events(5000, 1)
    return [
        (TOPIC_TYPES[topic], orjson.loads(value))
        for topic, _, value in plan.messages
        if value not in MALFORMED_VALUES
    ]


def test_the_demo_covers_every_type_each_on_its_own_topic() -> None:
    assert set(TYPE_TOPICS) == set(MIX) == set(UID_PATHS) == set(TYPES)
    assert len(set(TYPE_TOPICS.values())) == len(TYPES)
    assert sum(MIX.values()) == pytest.approx(1.0)


def test_every_type_is_produced_with_only_its_documented_fields(
    planned: list[tuple[str, dict[str, object]]],
) -> None:
    counts = Counter(kind for kind, _ in planned)
    assert set(counts) == set(TYPES) and min(counts.values()) >= 100, counts
    for kind, event in planned:
        assert ROUTING <= set(event) <= ROUTING | set(ATTRIBUTES[kind].field_names), (kind, event)


def test_each_event_has_a_unique_mark(planned: list[tuple[str, dict[str, object]]]) -> None:
    uids = Counter((kind, event_uid(kind, event)) for kind, event in planned)
    assert all(uid is not None for _, uid in uids)
    assert max(uids.values()) == 1


def test_personal_and_customer_data_is_obviously_fake(planned: list[tuple[str, dict[str, object]]]) -> None:
    people = [e["contacts"] for kind, e in planned if kind == "personal"]
    assert people
    for contacts in people:
        for contact in contacts:  # type: ignore[attr-defined]
            assert contact["email"].endswith("@example.com")
            assert "-555-01" in contact["phone"]
    customers = [e for kind, e in planned if kind == "ctmrinfo"]
    assert customers and all(str(c["customerId"]).startswith("CUST-") for c in customers)
