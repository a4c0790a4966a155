"""Accounts against the stand-in API over HTTP: each account's own keys, Sentinel tokens, Domain entries."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from consumer.accounts.registry import AccountRegistry
from consumer.config import load_settings
from consumer.config.credentials import ClientCredentials, Credentials, write_folder
from consumer.liveperson.client import EngagementClient
from consumer.liveperson.domain import DomainResolver
from consumer.sandbox.api import SandboxAPI
from consumer.values.event import Visit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

BODY = b'[{"type":"lead","lead":{"topic":"t"}}]'
KEYS_A = Credentials("ck-a", "cs-a", "at-a", "ats-a")
APP_B = ClientCredentials("client-b", "secret-b")


async def client_and_accounts(
    sandbox: SandboxAPI, directory: Path, **env: str
) -> tuple[EngagementClient, AccountRegistry]:
    settings = load_settings(
        {"LP_CREDENTIALS_DIR": str(directory), "LP_BASE_URL": sandbox.base_url, **env}, require_kafka=False
    )
    client = EngagementClient(settings)
    await client.start()
    return client, AccountRegistry(settings, client.fetch_token)


async def test_each_account_is_signed_with_its_own_keys_or_tokens(
    sandbox: SandboxAPI, tmp_path: Path
) -> None:
    sandbox.set_account("A", KEYS_A)
    sandbox.set_account("B", APP_B)
    sandbox.token_lifetime_s = 0.5
    write_folder(tmp_path / "A", KEYS_A)
    write_folder(tmp_path / "B", APP_B)
    client, accounts = await client_and_accounts(sandbox, tmp_path, LP_SENTINEL_URL=sandbox.base_url)
    a, b = accounts.get("A"), accounts.get("B")
    assert a is not None and b is not None
    try:
        assert (await client.send(Visit("A", "v", "s"), BODY, a)).status == 200
        assert (await client.send(Visit("B", "v", "s"), BODY, b)).status == 200
        assert sandbox.token_requests == [("B", 200)]
        # A's keys do not open B's door, nor B's token A's
        assert (await client.send(Visit("B", "v", "s"), BODY, a)).status == 401
        assert (await client.send(Visit("A", "v", "s"), BODY, b)).status == 401
        sandbox.expire_tokens("B")  # expired at the API before our refresh-ahead: 401, then a new one
        refused = await client.send(Visit("B", "v", "s"), BODY, b)
        assert refused.status == 401 and refused.authorization.startswith("Bearer ")
        b.token_refused(refused.authorization)
        assert (await client.send(Visit("B", "v", "s"), BODY, b)).status == 200
        assert [s for _, s in sandbox.token_requests] == [200, 200]
        sandbox.set_account("B", ClientCredentials("client-b", "rotated"))  # the app secret was rotated
        b.token_refused((await client.send(Visit("B", "v", "s"), BODY, b)).authorization)
        rejected = await client.send(Visit("B", "v", "s"), BODY, b)
        assert rejected.status is None and rejected.error == "token_rejected", (
            "token 4xx: halt, no dead letter"
        )
        sandbox.token_fail_status = 503
        write_folder(tmp_path / "B", ClientCredentials("client-b", "rotated"))
        assert b.reload()
        unavailable = await client.send(Visit("B", "v", "s"), BODY, b)
        assert unavailable.status is None and unavailable.error == "token_unavailable", "token 5xx: retry"
        for throttled in (429, 408):  # Sentinel throttling or timing out says nothing about the secret
            sandbox.token_fail_status = throttled
            reply = await client.send(Visit("B", "v", "s"), BODY, b)
            assert reply.error == "token_unavailable", f"token {throttled}: retry with backoff, not a halt"
        sandbox.token_fail_status = None
        assert (await client.send(Visit("B", "v", "s"), BODY, b)).status == 200
    finally:
        await client.close()


async def test_the_sentinel_base_comes_from_the_domain_api_when_not_configured(
    sandbox: SandboxAPI, tmp_path: Path
) -> None:
    sandbox.set_account("B", APP_B)
    write_folder(tmp_path / "B", APP_B)
    client, accounts = await client_and_accounts(
        sandbox, tmp_path, LP_DOMAIN_API_URL=sandbox.base_url, LP_SCHEME="http"
    )
    b = accounts.get("B")
    assert b is not None
    try:
        assert (await client.send(Visit("B", "v", "s"), BODY, b)).status == 200
        assert sandbox.domain_lookups == ["B"] and sandbox.token_requests == [("B", 200)]
    finally:
        await client.close()


async def test_a_failing_domain_api_keeps_the_last_good_base_and_is_not_asked_per_visit(
    sandbox: SandboxAPI, session: aiohttp.ClientSession
) -> None:
    clock = {"now": 0.0}
    resolver = DomainResolver(sandbox.base_url, ttl_s=60, scheme="http", failure_ttl_s=5)
    for cache in (resolver._cache, resolver._last_good, resolver._failed):
        cache._clock = lambda: clock["now"]
    assert await resolver.base_url(session, "A") == sandbox.base_url
    clock["now"] = 61  # expired; the Domain API now fails
    sandbox.domain_fail_times = 100
    for _ in range(20):
        assert await resolver.base_url(session, "A") == sandbox.base_url, "the last good base stands in"
    assert sandbox.domain_lookups == ["A", "A"], "one failed lookup, then remembered"
    with pytest.raises(Exception, match="Domain API answered 503"):
        await resolver.base_url(session, "C")  # no last good base: fails, and is remembered too
    with pytest.raises(Exception, match="remembered"):
        await resolver.base_url(session, "C")
    assert sandbox.domain_lookups.count("C") == 1
    clock["now"] = 67
    sandbox.domain_fail_times = 0
    assert await resolver.base_url(session, "C") == sandbox.base_url
