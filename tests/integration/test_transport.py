"""Both events transports (HTTP_CLIENT=aiohttp|pyreqwest) against the stand-in API over real HTTP.

The client is the daemon's `EngagementClient`: the URL it signs is the URL that arrives (the
stand-in checks every OAuth signature), and every failure maps to the same outcome whichever
transport sent it. TLS: a loopback HTTPS stand-in with a certificate from a CA made in the test.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest
import trustme

from consumer.accounts.account import Account
from consumer.accounts.registry import AccountRegistry
from consumer.config import Settings, load_settings
from consumer.delivery.backoff import parse_retry_after
from consumer.liveperson.client import EngagementClient
from consumer.sandbox.api import DEFAULT_CREDENTIALS, SandboxAPI
from consumer.sandbox.broker import free_port
from consumer.values.event import Visit
from consumer.values.reply import Reply

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TRANSPORTS = ("aiohttp", "pyreqwest")
BODY = orjson.dumps([{"type": "lead", "lead": {"topic": "t", "value": 1, "currency": "USD"}}])


def settings_for(base_url: str, transport: str, **extra: str) -> Settings:
    """The daemon's settings for one stand-in and transport (OAuth 1.0, the stand-in's keys)."""
    c = DEFAULT_CREDENTIALS
    env = {
        "LP_BASE_URL": base_url,
        "LP_CONSUMER_KEY": c.consumer_key,
        "LP_CONSUMER_SECRET": c.consumer_secret,
        "LP_ACCESS_TOKEN": c.access_token,
        "LP_ACCESS_TOKEN_SECRET": c.access_token_secret,
        "HTTP_CLIENT": transport,
        "HTTP_TIMEOUT_S": "1",
        **extra,
    }
    return load_settings(env, require_kafka=False)


async def _no_tokens(account: str, creds: object) -> tuple[str, float]:
    raise AssertionError("OAuth 1.0 only")


def account_of(settings: Settings) -> Account:
    """The account the visits of these tests belong to."""
    account = AccountRegistry(settings, _no_tokens).get("1234")  # type: ignore[arg-type]
    assert account is not None
    return account


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """Each test runs once per transport."""
    return str(request.param)


@pytest.fixture
async def client(sandbox: SandboxAPI, transport: str) -> AsyncIterator[tuple[EngagementClient, Account]]:
    """A started client of the stand-in, and the account to send for."""
    settings = settings_for(sandbox.base_url, transport)
    c = EngagementClient(settings)
    await c.start()
    assert type(c._transport).__name__.lower().startswith(transport)  # the transport asked for
    try:
        yield c, account_of(settings)
    finally:
        await c.close()


async def send_each(settings: Settings, visitors: list[str]) -> list[Reply]:
    """A client of its own sends one request per visitor, in turn, then closes."""
    c = EngagementClient(settings)
    await c.start()
    try:
        return [await c.send(Visit("1234", v, "s"), BODY, account_of(settings)) for v in visitors]
    finally:
        await c.close()


async def test_signed_url_arrives_as_signed_and_is_accepted(
    sandbox: SandboxAPI, client: tuple[EngagementClient, Account]
) -> None:
    c, account = client
    visits = [
        Visit("1234", "Vk0+a/b==", "sid.1 x"),
        Visit("1234", "ü é/?#%", "s&t=1"),
        Visit("1234", "v", "s"),
    ]
    replies = [await c.send(v, BODY, account) for v in visits]
    assert [r.status for r in replies] == [200, 200, 200]
    assert all(r.auth_valid for r in sandbox.received)
    assert [(r.visitor, r.sid) for r in sandbox.received] == [(v.visitor, v.sid) for v in visits]
    assert "%2Ba%2Fb%3D%3D/visits/" in sandbox.received[0].raw_url


async def test_statuses_details_and_retry_after_are_the_same(
    sandbox: SandboxAPI, client: tuple[EngagementClient, Account]
) -> None:
    c, account = client
    sandbox.fail_visitor("slow", [503, 429], retry_after="7", times=2)
    replies = [await c.send(Visit("1234", "slow", "s"), BODY, account) for _ in range(3)]
    assert [(r.status, r.error, r.retry_after) for r in replies] == [
        (503, None, "7"),
        (429, None, "7"),
        (200, None, None),
    ]
    assert replies[0].detail and not replies[2].detail  # the body of an error answer, up to 300 bytes


async def test_a_retry_after_that_is_not_ascii_is_a_429_whose_retry_after_is_unusable(
    sandbox: SandboxAPI, client: tuple[EngagementClient, Account]
) -> None:
    c, account = client
    sandbox.fail_visitor("odd", [429], retry_after="\u00b2", times=1)
    reply = await c.send(Visit("1234", "odd", "s"), BODY, account)
    assert (reply.status, reply.error) == (429, None)
    assert parse_retry_after(reply.retry_after, 0.0) is None  # ignored: the normal backoff follows


async def test_an_unanswered_request_times_out(
    sandbox: SandboxAPI, client: tuple[EngagementClient, Account]
) -> None:
    c, account = client
    sandbox.hang_visitor("stuck")
    reply = await c.send(Visit("1234", "stuck", "s"), BODY, account)
    assert (reply.status, reply.error, reply.label) == (None, "timeout", "timeout")
    assert 0.9 < reply.duration < 5.0  # HTTP_TIMEOUT_S=1
    ok = await c.send(Visit("1234", "other", "s"), BODY, account)
    assert ok.status == 200


async def test_a_reset_connection_is_a_connection_error_and_the_next_request_succeeds(
    sandbox: SandboxAPI, client: tuple[EngagementClient, Account]
) -> None:
    c, account = client
    sandbox.reset_connection_visitor("flaky")
    reply = await c.send(Visit("1234", "flaky", "s"), BODY, account)
    assert (reply.status, reply.error, reply.cause) == (None, "connection_error", "reset")
    assert reply.detail
    sandbox.heal_visitor("flaky")
    assert (await c.send(Visit("1234", "flaky", "s"), BODY, account)).status == 200


async def test_nobody_listening_is_a_connection_error(transport: str) -> None:
    settings = settings_for(f"http://127.0.0.1:{free_port()}", transport)
    reply = (await send_each(settings, ["v"]))[0]
    assert (reply.status, reply.error, reply.cause) == (None, "connection_error", "refused")


async def test_connections_are_kept_alive_and_bounded(sandbox: SandboxAPI, transport: str) -> None:
    settings = settings_for(sandbox.base_url, transport, MAX_IN_FLIGHT="4")
    c = EngagementClient(settings)
    await c.start()
    account = account_of(settings)
    try:
        for _ in range(3):
            sends = (c.send(Visit("1234", f"v{i}", "s"), BODY, account) for i in range(32))
            replies = await asyncio.gather(*sends)
            assert {r.status for r in replies} == {200}
    finally:
        await c.close()
    # At most MAX_IN_FLIGHT + 4 connections at once (one request each: HTTP/1.1), kept alive over the
    # 96 requests: a few connections in all (on a loaded machine pyreqwest was seen replacing one, 9).
    assert 1 <= sandbox.max_in_flight <= 4 + 4
    assert 1 <= len(sandbox.peers) <= 2 * (4 + 4)


async def test_proxy_variables_of_the_environment_are_not_used(
    sandbox: SandboxAPI, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, nowhere)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    settings = settings_for(sandbox.base_url, transport)
    reply = (await send_each(settings, ["v"]))[0]
    assert reply.status == 200 and sandbox.received[0].auth_valid


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A certificate authority made for these tests."""
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The CA's certificate as a PEM file (for HTTP_CA_FILE)."""
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    yield path


@pytest.fixture
async def tls_sandbox(ca: trustme.CA) -> AsyncIterator[SandboxAPI]:
    """The stand-in over HTTPS, its certificate (for 127.0.0.1) issued by `ca`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    api = SandboxAPI()
    await api.start(ssl_context=context)
    try:
        yield api
    finally:
        await api.stop()


async def test_tls_with_the_ca_trusted_is_accepted_and_signed_over_https(
    tls_sandbox: SandboxAPI, transport: str, ca_file: Path
) -> None:
    assert tls_sandbox.base_url.startswith("https://")
    settings = settings_for(tls_sandbox.base_url, transport, HTTP_CA_FILE=str(ca_file))
    replies = await send_each(settings, ["v0", "v1", "v2"])
    assert [r.status for r in replies] == [200, 200, 200]
    assert all(r.auth_valid for r in tls_sandbox.received)


async def test_tls_with_an_untrusted_certificate_is_a_connection_error(
    tls_sandbox: SandboxAPI, transport: str
) -> None:
    settings = settings_for(tls_sandbox.base_url, transport)
    reply = (await send_each(settings, ["v"]))[0]
    assert (reply.status, reply.error, reply.cause) == (None, "connection_error", "certificate_not_trusted")
    assert "certificate" in reply.detail.lower() or "cert" in reply.detail.lower(), reply.detail
    assert not tls_sandbox.received  # verification failed before any request was sent


async def test_a_cancelled_request_ends_at_once_and_is_gone_from_the_wire_by_the_timeout(
    sandbox: SandboxAPI, transport: str
) -> None:
    # HTTP_TIMEOUT_S long enough that "at once" (half of it) and "by the timeout" stay apart on a
    # loaded machine: the bounds are the timeout's, not a guess at how fast a cancellation runs.
    timeout_s = 4.0
    settings = settings_for(sandbox.base_url, transport, HTTP_TIMEOUT_S=str(timeout_s))
    c = EngagementClient(settings)
    await c.start()
    try:
        account = account_of(settings)
        sandbox.hang_visitor("stuck")
        task = asyncio.create_task(c.send(Visit("1234", "stuck", "s"), BODY, account))
        await sandbox.wait_for(lambda api: bool(api.in_flight), timeout=5)
        cancelled = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):  # the caller does not wait for the request
            await asyncio.wait_for(task, timeout_s / 2)
        # aiohttp closes the connection under the request; pyreqwest (0.15) lets it run on in Rust
        # until HTTP_TIMEOUT_S and drops the answer. Either way nobody acts on that answer.
        await sandbox.wait_for(lambda api: not api.in_flight, timeout=timeout_s + 5)
        took = time.monotonic() - cancelled
        if transport == "aiohttp":
            assert took < timeout_s / 2, f"{took:.2f} s: the connection was not closed, the timeout ended it"
        assert (await c.send(Visit("1234", "other", "s"), BODY, account)).status == 200
    finally:
        await c.close()


@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    """A TCP listener that accepts and never says a word (a TLS handshake to it never ends)."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_connect_or_pool_wait_that_outlasts_the_timeout_is_a_timeout(
    silent_server: str, transport: str
) -> None:
    """Issue 27 item 13: a TLS handshake, or a wait for a pooled connection, that outlasts
    HTTP_TIMEOUT_S is a `timeout` with either transport (the adaptive limit's back-pressure signal)."""
    settings = settings_for(silent_server, transport, MAX_IN_FLIGHT="1")  # 5 connections at most
    c = EngagementClient(settings)
    await c.start()
    account = account_of(settings)
    try:  # 5 requests stuck in their TLS handshake hold every connection; the 6th waits for one
        sends = (c.send(Visit("1234", f"v{i}", "s"), BODY, account) for i in range(6))
        replies = await asyncio.gather(*sends)
    finally:
        await c.close()
    assert [(r.status, r.error) for r in replies] == [(None, "timeout")] * 6, [r.detail for r in replies]


async def test_a_request_that_waited_for_a_pooled_connection_still_ends_within_the_timeout(
    sandbox: SandboxAPI, transport: str
) -> None:
    """The shutdown drain and the revoke wait outlast HTTP_TIMEOUT_S, counted from when a request
    starts: a request that first waits for a connection (the pool is full) must end within that too,
    its wait included, never be written and answered up to twice as late. Five requests hold every
    connection of the pool (MAX_IN_FLIGHT 1 + 4) until their timeout; a sixth starts then, waits for a
    connection, gets one when they time out, and would be answered 0.9 x HTTP_TIMEOUT_S later.
    pyreqwest (0.15) takes the wait for a connection off the request's timeout (its `timeout` is a total
    deadline from `send()`): measured, the sixth written 1.99 s after it started, timed out at 2.00 s."""
    timeout_s = 2.0
    settings = settings_for(sandbox.base_url, transport, MAX_IN_FLIGHT="1", HTTP_TIMEOUT_S=str(timeout_s))
    sandbox.latency = 0.9 * timeout_s
    c = EngagementClient(settings)
    await c.start()
    account = account_of(settings)
    try:
        for i in range(5):
            sandbox.hang_visitor(f"held{i}")
        holders = [
            asyncio.create_task(c.send(Visit("1234", f"held{i}", "s"), BODY, account)) for i in range(5)
        ]
        await sandbox.wait_for(lambda api: sum(api.in_flight.values()) == 5, timeout=timeout_s / 2)
        started = time.monotonic()
        late = await c.send(Visit("1234", "late", "s"), BODY, account)
        ended = time.monotonic() - started
        await asyncio.gather(*holders)
    finally:
        await c.close()
    arrived = [r.time - started for r in sandbox.received if r.visitor == "late"]
    assert (late.status, late.error) == (None, "timeout"), (late.status, ended, arrived, late.detail)
    assert ended < timeout_s * 1.25, f"{ended:.2f} s: the wait for a connection came on top of the timeout"
    assert all(a < timeout_s for a in arrived), f"written {arrived} s after it started"
