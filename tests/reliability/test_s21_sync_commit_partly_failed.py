"""Scenario 21, its synchronous side: a revoke or final commit that the broker refuses for one partition.

On librdkafka's mock cluster (hosted here, reached over TCP by a real confluent_kafka Consumer): a
commit naming a partition the broker does not have is answered per partition, UNKNOWN_TOPIC_OR_PART
for that one, the others stored. What the pinned client does with that (it raises the last failed
partition's error, and does not say which partition), and what `commit_sync` makes of it: the
partitions stored are stored, the one refused is named in the log, and the commit is not reported done.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTP
from harness import next_id
from kafka_io import QUIET
from mock_faults import FaultyMockCluster
from structlog.testing import capture_logs

from consumer.kafka.commits import commit_sync
from consumer.kafka.offsets import CommitPoint

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(60)]


@pytest.fixture
def group_consumer(faulty_cluster: FaultyMockCluster) -> Iterator[tuple[Consumer, str]]:
    """A consumer of a fresh group (not subscribed: its commits are plain group commits) and its topic."""
    topic = f"leads-c{next_id()}"
    faulty_cluster.create(topic)
    consumer = Consumer({"bootstrap.servers": faulty_cluster.bootstrap, "group.id": f"g-{topic}", **QUIET})
    yield consumer, topic
    consumer.close()


def test_the_pinned_client_raises_when_any_partition_of_a_synchronous_commit_fails(
    group_consumer: tuple[Consumer, str],
) -> None:
    """The premise of `commit_sync`: one failed partition of three raises (librdkafka >= 2.4 reports
    the last failed partition's error as the commit's), and the others are stored all the same."""
    consumer, topic = group_consumer
    with pytest.raises(KafkaException) as raised:
        consumer.commit(
            offsets=[KafkaTP(topic, 0, 5, metadata="m"), KafkaTP(topic, 1, 6), KafkaTP(topic, 99, 7)],
            asynchronous=False,
        )
    assert raised.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    stored = consumer.committed([KafkaTP(topic, 0), KafkaTP(topic, 1)], timeout=10)
    assert [(p.offset, p.metadata) for p in stored] == [(5, "m"), (6, None)]


def test_a_synchronous_commit_refused_for_one_partition_names_it_and_stores_the_others(
    group_consumer: tuple[Consumer, str],
) -> None:
    consumer, topic = group_consumer
    offsets = {
        (topic, 0): CommitPoint(5, "ep1-map"),
        (topic, 1): CommitPoint(6, ""),
        (topic, 99): CommitPoint(7, ""),
    }
    with capture_logs() as logs:
        ok = commit_sync(consumer, offsets, "revoke_commit")
    assert not ok, "a partition was refused: the commit is not done"
    stored = consumer.committed([KafkaTP(topic, 0), KafkaTP(topic, 1)], timeout=10)
    assert [(p.offset, p.metadata) for p in stored] == [(5, "ep1-map"), (6, None)]
    failed = [e for e in logs if e["event"] == "commit_failed"]
    assert [(e.get("topic"), e.get("partition")) for e in failed] == [(topic, 99)], failed
