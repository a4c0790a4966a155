"""The guarded KAFKA_* properties against the bundled librdkafka itself: its aliases, and which name wins.

librdkafka is asked through its C API (ctypes on the library confluent-kafka ships): the property
table it prints (`rd_kafka_conf_properties_show`) and the effective value of a configuration
(`rd_kafka_conf_set`, `rd_kafka_conf_get`). No broker, no client.
"""

from __future__ import annotations

import ctypes
import os
import re
import tempfile
from functools import cache
from pathlib import Path

import confluent_kafka
import pytest

from consumer.config.checks import ALIASES

pytestmark = pytest.mark.timeout(10)


@cache
def _lib() -> ctypes.CDLL:
    libs = Path(os.path.dirname(confluent_kafka.__file__) + ".libs")
    found = sorted(libs.glob("librdkafka*")) if libs.is_dir() else []
    if not found:
        pytest.skip("confluent-kafka without a bundled librdkafka")
    lib = ctypes.CDLL(str(found[0]))
    lib.rd_kafka_conf_new.restype = ctypes.c_void_p
    return lib


def _properties_table() -> str:
    libc = ctypes.CDLL(None)
    libc.fopen.restype = ctypes.c_void_p
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "props.txt")
        f = libc.fopen(path.encode(), b"w")
        _lib().rd_kafka_conf_properties_show(ctypes.c_void_p(f))
        libc.fclose(ctypes.c_void_p(f))
        return Path(path).read_text()


def _effective(pairs: list[tuple[str, str]], name: str) -> str:
    lib = _lib()
    conf = ctypes.c_void_p(lib.rd_kafka_conf_new())
    err = ctypes.create_string_buffer(512)
    try:
        for key, value in pairs:
            assert lib.rd_kafka_conf_set(conf, key.encode(), value.encode(), err, 512) == 0, err.value
        buf = ctypes.create_string_buffer(256)
        size = ctypes.c_size_t(256)
        assert lib.rd_kafka_conf_get(conf, name.encode(), buf, ctypes.byref(size)) == 0
        return buf.value.decode()
    finally:
        lib.rd_kafka_conf_destroy(conf)


def test_the_guard_knows_every_alias_librdkafka_has_for_a_guarded_property() -> None:
    aliases: dict[str, set[str]] = {}
    for line in _properties_table().splitlines():
        found = re.match(r"^(\S+)\s+\|.*\|\s*(?:\*\*DEPRECATED\*\* )?Alias for `([^`]+)`", line)
        if found:
            aliases.setdefault(found.group(2), set()).add(found.group(1))
    assert aliases.get("request.required.acks") == {"acks"}  # the table was read
    for prop, names in ALIASES.items():
        assert set(names) == aliases.get(prop, set()), prop


def test_librdkafka_applies_the_last_name_set() -> None:
    assert _effective([("acks", "all"), ("request.required.acks", "1")], "acks") == "1"
    assert _effective([("request.required.acks", "1"), ("acks", "all")], "request.required.acks") == "-1"
