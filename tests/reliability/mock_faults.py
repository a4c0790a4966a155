"""librdkafka's mock cluster with its fault injection reached: the errors a real coordinator can answer.

`MockCluster` (kafka_io) hosts the mock cluster through a confluent_kafka Producer, which does not
expose librdkafka's mock API. This one makes the hosting client itself, through ctypes on the very
librdkafka confluent_kafka ships, so a test can push errors onto the cluster's answers to a request
kind (`rd_kafka_mock_push_request_errors_array`): the next `count` requests of that kind, from any
client, are answered with the error. The broker is still the mock cluster, reached over TCP by
the daemon; no client is mocked.
"""

from __future__ import annotations

import ctypes
import glob
import os
from pathlib import Path
from typing import Any

import confluent_kafka
from confluent_kafka import Consumer, TopicPartition
from harness import Topics
from kafka_io import QUIET

OFFSET_COMMIT, OFFSET_FETCH = 8, 9  # Kafka protocol ApiKeys
NOT_COORDINATOR = 16  # answered while the group's coordinator moves: librdkafka gives it up at once
_PRODUCER = 1  # rd_kafka_type_t


def _librdkafka() -> ctypes.CDLL:
    """The librdkafka confluent_kafka loads (bundled beside the package in its wheel)."""
    here = os.path.dirname(confluent_kafka.__file__)
    found = glob.glob(os.path.join(here, "..", "confluent_kafka.libs", "librdkafka*.so*"))
    assert found, "the confluent_kafka wheel's librdkafka was not found"
    lib = ctypes.CDLL(found[0])
    vp, cp = ctypes.c_void_p, ctypes.c_char_p
    lib.rd_kafka_conf_new.restype = vp
    lib.rd_kafka_conf_set.argtypes = [vp, cp, cp, cp, ctypes.c_size_t]
    lib.rd_kafka_new.restype = vp
    lib.rd_kafka_new.argtypes = [ctypes.c_int, vp, cp, ctypes.c_size_t]
    lib.rd_kafka_destroy.argtypes = [vp]
    lib.rd_kafka_handle_mock_cluster.restype = vp
    lib.rd_kafka_handle_mock_cluster.argtypes = [vp]
    lib.rd_kafka_mock_cluster_bootstraps.restype = cp
    lib.rd_kafka_mock_cluster_bootstraps.argtypes = [vp]
    lib.rd_kafka_mock_topic_create.argtypes = [vp, cp, ctypes.c_int, ctypes.c_int]
    lib.rd_kafka_mock_push_request_errors_array.argtypes = [
        vp,
        ctypes.c_int16,
        ctypes.c_size_t,
        ctypes.POINTER(ctypes.c_int),
    ]
    return lib


class FaultyMockCluster:
    """A librdkafka mock cluster hosted in this process whose answers can be made to fail."""

    PARTITIONS = 4

    def __init__(self) -> None:
        self._lib = lib = _librdkafka()
        err = ctypes.create_string_buffer(512)
        conf = lib.rd_kafka_conf_new()
        for key, value in {"test.mock.num.brokers": "1", "log_level": "2"}.items():
            assert lib.rd_kafka_conf_set(conf, key.encode(), value.encode(), err, 512) == 0, err.value
        self._rk = lib.rd_kafka_new(_PRODUCER, conf, err, 512)
        assert self._rk, err.value
        self._cluster = lib.rd_kafka_handle_mock_cluster(self._rk)
        self.bootstrap = lib.rd_kafka_mock_cluster_bootstraps(self._cluster).decode()

    def create(self, *topics: str) -> None:
        """Create topics with PARTITIONS partitions each."""
        for topic in topics:
            assert (
                self._lib.rd_kafka_mock_topic_create(self._cluster, topic.encode(), self.PARTITIONS, 1) == 0
            )

    def fail_requests(self, api_key: int, error: int, count: int) -> None:
        """Answer the next `count` requests of kind `api_key` (from any client) with `error`."""
        errors = (ctypes.c_int * count)(*([error] * count))
        self._lib.rd_kafka_mock_push_request_errors_array(self._cluster, api_key, count, errors)

    def close(self) -> None:
        """Stop hosting the cluster."""
        if self._rk:
            self._lib.rd_kafka_destroy(self._rk)
            self._rk = None


def park_env(daemon_env: Any, api: Any, cluster: Any, topics: Topics, creds_dir: Path) -> dict[str, str]:
    """The daemon's settings on a mock cluster, the park on, per-account credentials only (no single set)."""
    env: dict[str, str] = daemon_env(
        api.base_url,
        KAFKA_BOOTSTRAP_SERVERS=cluster.bootstrap,
        **topics.env(),
        LP_CREDENTIALS_DIR=str(creds_dir),
        KAFKA_SESSION_TIMEOUT_MS="3000",
        KAFKA_HEARTBEAT_INTERVAL_MS="300",
    )
    for key in ("LP_CONSUMER_KEY", "LP_CONSUMER_SECRET", "LP_ACCESS_TOKEN", "LP_ACCESS_TOKEN_SECRET"):
        env.pop(key)
    return env


def group_commits(cluster: Any, topics: Topics) -> dict[tuple[str, int], tuple[int, str]]:
    """The group's commits (offset, metadata) of every source partition."""
    tps = [TopicPartition(t, p) for t in (topics.leads, topics.services) for p in range(topics.partitions)]
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": topics.group, **QUIET})
    try:
        got = consumer.committed(tps, timeout=10)
    finally:
        consumer.close()
    return {(c.topic, c.partition): (c.offset, c.metadata or "") for c in got}
