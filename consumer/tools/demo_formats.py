"""The demo's production mix of encodings: most events flat JSON, the rest as other producers write them.

CloudEvents (binary and structured mode) go to a mixed topic (`EVENT_TOPICS`), typed by their
CloudEvents `type` (the attribute type's name); Kafka Connect envelopes and Avro (through the Schema
Registry stand-in) go to the topic of their type. Malformed demo messages stay as they are.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import orjson

from consumer.sandbox.registry import SandboxRegistry
from consumer.tools.demo_feed import MALFORMED_VALUES
from consumer.tools.demo_types import TOPIC_TYPES
from consumer.tools.encode import Encoder

EVENTS_TOPIC = "demo.events"
MIX = (
    ("json", 0.6),
    ("cloudevents-binary", 0.1),
    ("cloudevents-structured", 0.1),
    ("connect", 0.1),
    ("avro", 0.1),
)
Message = tuple[str, bytes | None, bytes, Any]


def mix_formats(messages: list[Any], registry_url: str, seed: int) -> tuple[list[Message], Counter[str]]:
    """Re-encode the plan's (topic, key, value) messages in the mix; counts per encoding."""
    rng = random.Random(seed)
    encoders = {fmt: Encoder(fmt, registry_url) for fmt, _ in MIX}
    names, weights = [f for f, _ in MIX], [w for _, w in MIX]
    out: list[Message] = []
    counts: Counter[str] = Counter()
    for topic, key, value, *_ in messages:
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError:
            obj = None
        if value in MALFORMED_VALUES or not isinstance(obj, dict):
            out.append((topic, key, value, None))  # malformed on purpose: keep its bytes
            continue
        fmt = rng.choices(names, weights)[0]
        kind = TOPIC_TYPES[topic]
        target = EVENTS_TOPIC if fmt.startswith("cloudevents") else topic
        encoded, headers = encoders[fmt].encode(obj, kind, target)
        out.append((target, key, encoded, headers))
        counts[fmt] += 1
    return out, counts


def start_mix(messages: list[Any], seed: int) -> tuple[SandboxRegistry, list[Message], Counter[str]]:
    """Start the Schema Registry stand-in (stop it after the demo) and encode the plan's messages."""
    registry = SandboxRegistry().start()
    mixed, counts = mix_formats(messages, registry.url, seed)
    return registry, mixed, counts


def formats_note(counts: Counter[str]) -> str:
    """One summary line: how many events went out in each encoding."""
    return "encodings: " + ", ".join(f"{fmt} {n}" for fmt, n in counts.most_common())
