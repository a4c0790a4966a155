"""`engagement-consumer convert`: the daemon's decoding on one message, for every format, in process."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumer.cli import main
from consumer.sandbox.registry import SandboxRegistry
from consumer.tools.encode import FORMATS, Encoder

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def registry() -> Any:
    with SandboxRegistry() as reg:
        yield reg


EVENT = {"account": "1234", "visitor": "v+1=", "sid": "s.1", "topic": "add user", "status": "resolved"}


def run(
    monkeypatch: pytest.MonkeyPatch, capsys: Any, args: list[str], value: bytes, **env: str
) -> tuple[int, Any, str]:
    for var in ("EVENT_TOPICS", "FIELD_MAP", "TYPE_MAP", "TYPE_FIELD", "SCHEMA_REGISTRY_URL"):
        monkeypatch.delenv(var, raising=False)
    for var, val in env.items():
        monkeypatch.setenv(var, val)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(value)))
    code = main(["convert", *args])
    out, err = capsys.readouterr()
    return code, orjson.loads(out) if code == 0 else None, err


@pytest.mark.parametrize("fmt", FORMATS)
def test_convert_shows_the_same_request_for_every_format(
    monkeypatch: pytest.MonkeyPatch, capsys: Any, fmt: str
) -> None:
    with SandboxRegistry() as registry:
        value, headers = Encoder(fmt, registry.url).encode(EVENT, "service", "engagement.services")
        flags = [f"--header={k}={v.decode()}" for k, v in headers or []]
        code, out, err = run(
            monkeypatch,
            capsys,
            ["--topic", "engagement.services", *flags, "-"],
            value,
            SCHEMA_REGISTRY_URL=registry.url,
        )
    assert code == 0, err
    assert out["encoding"] == ("json" if fmt == "json" else fmt)
    assert out["visit"] == {"account": "1234", "visitor": "v+1=", "sid": "s.1"}
    assert (
        out["request"]
        == "POST /api/account/1234/monitoring/visitors/v%2B1%3D/visits/current/events?v=1&sid=s.1"
    )
    assert out["body"] == [{"type": "service", "service": {"topic": "add user", "status": 13}}]


def test_convert_reports_an_invalid_event_with_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: Any, tmp_path: Path
) -> None:
    (tmp_path / "m.json").write_bytes(orjson.dumps({"deal": {"amount": "lots"}, "v": "x", "s": "y"}))
    code, _, err = run(
        monkeypatch,
        capsys,
        ["--topic", "engagement.leads", str(tmp_path / "m.json")],
        b"",
        FIELD_MAP="account=header.acct,visitor=v,sid=s,lead.value=deal.amount",
    )
    assert code == 1
    assert (
        err.strip() == "invalid_event (missing_field): field 'account' is missing (mapped from header.acct)"
    )
    code, _, err = run(monkeypatch, capsys, ["--topic", "nope", "-"], b"{}")
    assert code == 1 and "'nope' is not a configured topic" in err


def test_convert_exits_2_when_the_registry_is_unreachable(
    monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    with SandboxRegistry() as registry:
        value, _ = Encoder("avro", registry.url).encode(EVENT, "service", "engagement.services")
        registry.available = False
        code, _, err = run(
            monkeypatch, capsys, ["--topic", "engagement.services"], value, SCHEMA_REGISTRY_URL=registry.url
        )
    assert code == 2 and "HTTP 503" in err and "hold" in err
