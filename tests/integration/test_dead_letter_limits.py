"""Dead letters at the broker's limits: an oversized one is cut to fit, never retried forever."""

from __future__ import annotations

import pytest
from harness import Topics, committed, event, produce, read_topic, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

ACCOUNT = "1234"
NEAR_LIMIT = 999_900  # under the producer's message.max.bytes (1 000 000), over it with dlq.* headers


def test_an_oversized_dead_letter_is_written_cut_to_fit_and_its_partition_commits(
    broker, topics: Topics, api, daemon_env, start_daemon
) -> None:
    big = b"not json " + b"x" * (NEAR_LIMIT - 9)
    produced = produce(
        broker,
        [
            (topics.leads, b"k", event(ACCOUNT, "v", topic="before")),
            (topics.leads, b"k", big),
            (topics.leads, b"k", event(ACCOUNT, "v", topic="after")),
        ],
    )
    daemon = start_daemon(daemon_env(api.base_url))
    api.wait_delivered(2, timeout=30)
    (letter,) = read_topic(broker, topics.dlq, 1, timeout=30)
    headers = {k: (v or b"").decode() for k, v in letter.headers() or []}
    assert headers["dlq.reason"] == "invalid_event" and headers["dlq.truncated"] == str(len(big))
    assert headers["dlq.offset"] == "1" and letter.key() == b"k"
    value = letter.value()
    assert 0 < len(value) < len(big) and big.startswith(value)
    ends = produced.end_offsets()
    wait_until(lambda: committed(broker, topics.group, list(ends)) == ends, 20, "committed to the end")
    assert daemon.metric_sum("engagement_dead_letters_total") == 1
