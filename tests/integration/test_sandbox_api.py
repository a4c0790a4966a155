"""The sandbox API accepts exactly what a correctly signed client sends, and answers as scripted."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from attribute_examples import DOCUMENTED, WRONG
from yarl import URL

from consumer.config.credentials import Credentials
from consumer.liveperson.oauth import Signer
from consumer.liveperson.url import events_url
from consumer.sandbox.api import DEFAULT_CREDENTIALS, SandboxAPI
from consumer.sandbox.script import Received, Reply, VisitKey
from consumer.values.attributes import TYPES

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

LEAD = {"type": "lead", "lead": {"topic": "upgrade inquiry", "value": 200, "currency": "USD", "leadId": "x1"}}
SERVICE = {"type": "service", "service": {"topic": "add user", "status": 0, "serviceId": "s12"}}


async def send(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    *,
    signer: Signer | None = None,
    authorization: str | None = None,
    headers: dict[str, str] | None = None,
    client_timeout: float = 10.0,
) -> tuple[int, dict[str, str], Any]:
    """POST as the daemon does: the signed URL sent unchanged (encoded=True)."""
    auth = authorization or (signer or Signer(DEFAULT_CREDENTIALS)).authorization("POST", url, body)
    all_headers = {"Content-Type": "application/json", "x-http-method-override": "PUT", "Authorization": auth}
    all_headers.update(headers or {})
    async with session.post(
        URL(url, encoded=True),
        data=body,
        headers=all_headers,
        timeout=aiohttp.ClientTimeout(total=client_timeout),
    ) as resp:
        return resp.status, dict(resp.headers), await resp.json(content_type=None)


def body_of(*attrs: dict[str, Any]) -> bytes:
    return json.dumps(list(attrs)).encode()


async def test_signed_request_is_accepted_and_recorded(
    sandbox: SandboxAPI, session: aiohttp.ClientSession
) -> None:
    url = events_url(sandbox.base_url, "1234", "xyz", "rty.uio")
    status, _, payload = await send(session, url, body_of(LEAD, SERVICE))
    assert (status, payload) == (200, {})
    [received] = sandbox.received
    assert received.auth_valid
    assert received.raw_url == url
    assert sandbox.delivered() == [
        (VisitKey("1234", "xyz", "rty.uio"), LEAD),
        (("1234", "xyz", "rty.uio"), SERVICE),
    ]
    assert sandbox.requests_by_status() == {200: 1}


async def test_encoded_visitor_and_sid_round_trip_decoded(
    sandbox: SandboxAPI, session: aiohttp.ClientSession
) -> None:
    url = events_url(sandbox.base_url, "12 34", "aGk+d/8=", "s+d=é")
    assert "aGk%2Bd%2F8%3D" in url
    status, _, _ = await send(session, url, body_of(LEAD))
    assert status == 200
    assert sandbox.received[0].visit == ("12 34", "aGk+d/8=", "s+d=é")
    assert sandbox.received[0].raw_url == url


async def test_tampered_signature_is_401(sandbox: SandboxAPI, session: aiohttp.ClientSession) -> None:
    url = events_url(sandbox.base_url, "1234", "xyz", "s")
    header = Signer(DEFAULT_CREDENTIALS).authorization("POST", url, body_of(LEAD))
    cut = header.index('oauth_signature="') + len('oauth_signature="')
    tampered = header[:cut] + ("B" if header[cut] == "A" else "A") + header[cut + 1 :]
    status, _, payload = await send(session, url, body_of(LEAD), authorization=tampered)
    assert status == 401
    assert "signature" in payload["error"]
    assert not sandbox.received[0].auth_valid
    assert sandbox.delivered() == []


async def test_url_changed_after_signing_is_401(sandbox: SandboxAPI, session: aiohttp.ClientSession) -> None:
    signed = events_url(sandbox.base_url, "1234", "a+b", "s")
    header = Signer(DEFAULT_CREDENTIALS).authorization("POST", signed, body_of(LEAD))
    sent = events_url(sandbox.base_url, "1234", "a b", "s")
    status, _, _ = await send(session, sent, body_of(LEAD), authorization=header)
    assert status == 401


async def test_body_changed_after_signing_is_401(sandbox: SandboxAPI, session: aiohttp.ClientSession) -> None:
    url = events_url(sandbox.base_url, "1234", "xyz", "s")
    header = Signer(DEFAULT_CREDENTIALS).authorization("POST", url, body_of(LEAD))
    status, _, payload = await send(session, url, body_of(SERVICE), authorization=header)
    assert status == 401
    assert "body_hash" in payload["error"]


async def test_reused_nonce_is_401(sandbox: SandboxAPI, session: aiohttp.ClientSession) -> None:
    url = events_url(sandbox.base_url, "1234", "xyz", "s")
    header = Signer(DEFAULT_CREDENTIALS).authorization("POST", url, body_of(LEAD))
    first, _, _ = await send(session, url, body_of(LEAD), authorization=header)
    second, _, payload = await send(session, url, body_of(LEAD), authorization=header)
    assert (first, second) == (200, 401)
    assert "nonce" in payload["error"]


@pytest.mark.parametrize(
    ("body", "headers", "url_suffix"),
    [
        (b"[{not json", {}, ""),
        (b"[]", {}, ""),
        (b'{"type": "lead", "lead": {}}', {}, ""),
        (json.dumps([{"type": "visit", "visit": {}}]).encode(), {}, ""),
        (json.dumps([{"type": "lead"}]).encode(), {}, ""),
        (body_of(LEAD), {"x-http-method-override": "POST"}, ""),
        (body_of(LEAD), {"Content-Type": "text/plain"}, ""),
        (body_of(LEAD), {}, "&extra=1"),
    ],
)
async def test_bad_request_is_400(
    sandbox: SandboxAPI, session: aiohttp.ClientSession, body: bytes, headers: dict[str, str], url_suffix: str
) -> None:
    url = events_url(sandbox.base_url, "1234", "xyz", "s") + url_suffix
    status, _, payload = await send(session, url, body, headers=headers)
    assert status == 400
    assert payload["error"]
    assert sandbox.received[0].auth_valid


async def test_missing_sid_is_400(sandbox: SandboxAPI, session: aiohttp.ClientSession) -> None:
    url = events_url(sandbox.base_url, "1234", "xyz", "s").replace("&sid=s", "&sid=")
    status, _, _ = await send(session, url, body_of(LEAD))
    assert status == 400


async def test_scripted_visitor_gets_its_status_then_recovers(
    sandbox: SandboxAPI, session: aiohttp.ClientSession
) -> None:
    sandbox.fail_visitor("slow", [503, 429], retry_after="7", times=2)
    url = events_url(sandbox.base_url, "1234", "slow", "s")
    answers = [await send(session, url, body_of(LEAD)) for _ in range(3)]
    assert [a[0] for a in answers] == [503, 429, 200]
    assert answers[0][1]["Retry-After"] == "7"
    assert "Retry-After" not in answers[2][1]
    other, _, _ = await send(session, events_url(sandbox.base_url, "1234", "other", "s"), body_of(LEAD))
    assert other == 200


async def test_credential_rotation(sandbox: SandboxAPI, session: aiohttp.ClientSession) -> None:
    rotated = Credentials("key-2", "secret-2", "token-2", "token-secret-2")
    sandbox.set_credentials(rotated)
    url = events_url(sandbox.base_url, "1234", "xyz", "s")
    old, _, _ = await send(session, url, body_of(LEAD))
    new, _, _ = await send(session, url, body_of(LEAD), signer=Signer(rotated))
    assert (old, new) == (401, 200)
    wrong_token = Credentials("key-2", "secret-2", "token-1", "token-secret-2")
    status, _, _ = await send(session, url, body_of(LEAD), signer=Signer(wrong_token))
    assert status == 401


async def test_account_status_and_rejected_attribute(
    sandbox: SandboxAPI, session: aiohttp.ClientSession
) -> None:
    sandbox.account_status("bad-account", 422)
    sandbox.reject_attribute(lambda attr: attr["type"] == "service")
    status, _, _ = await send(session, events_url(sandbox.base_url, "bad-account", "v", "s"), body_of(LEAD))
    assert status == 422
    mixed, _, _ = await send(session, events_url(sandbox.base_url, "1", "v", "s"), body_of(LEAD, SERVICE))
    alone, _, _ = await send(session, events_url(sandbox.base_url, "1", "v", "s"), body_of(LEAD))
    assert (mixed, alone) == (400, 200)
    assert [a for _, a in sandbox.delivered()] == [LEAD]


async def test_script_hook_decides_first(sandbox: SandboxAPI, session: aiohttp.ClientSession) -> None:
    seen: list[Received] = []

    def script(received: Received) -> Reply | None:
        seen.append(received)
        return Reply(404, body=b'{"error":"no current visit"}') if received.sid == "gone" else None

    sandbox.script = script
    gone, _, payload = await send(session, events_url(sandbox.base_url, "1", "v", "gone"), body_of(LEAD))
    fine, _, _ = await send(session, events_url(sandbox.base_url, "1", "v", "here"), body_of(LEAD))
    assert (gone, fine) == (404, 200)
    assert payload == {"error": "no current visit"}
    assert [r.sid for r in seen] == ["gone", "here"]


async def test_hanging_visitor_times_the_client_out(
    sandbox: SandboxAPI, session: aiohttp.ClientSession
) -> None:
    sandbox.hang_visitor("stuck")
    url = events_url(sandbox.base_url, "1", "stuck", "s")
    with pytest.raises(asyncio.TimeoutError):
        await send(session, url, body_of(LEAD), client_timeout=0.3)
    assert sandbox.requests_by_status() == {0: 1}
    assert sandbox.received[0].detail == "hang"
    await sandbox.wait_for(lambda api: not api.in_flight, timeout=5)  # the abandoned request is over


async def test_reset_visitor_loses_the_connection(
    sandbox: SandboxAPI, session: aiohttp.ClientSession
) -> None:
    sandbox.reset_connection_visitor("flaky")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await send(session, events_url(sandbox.base_url, "1", "flaky", "s"), body_of(LEAD))
    sandbox.heal_visitor("flaky")
    status, _, _ = await send(session, events_url(sandbox.base_url, "1", "flaky", "s"), body_of(LEAD))
    assert status == 200
    assert [r.detail for r in sandbox.received] == ["reset", ""]


async def test_throttle_answers_429_over_the_rate(
    sandbox: SandboxAPI, session: aiohttp.ClientSession
) -> None:
    sandbox.throttle_rps = 2
    url = events_url(sandbox.base_url, "1", "v", "s")
    answers = [await send(session, url, body_of(LEAD)) for _ in range(4)]
    assert [a[0] for a in answers][:2] == [200, 200]
    throttled = [a for a in answers if a[0] == 429]
    assert throttled
    assert throttled[0][1]["Retry-After"] == "1"


async def test_status_mix_is_seeded(session: aiohttp.ClientSession) -> None:
    results = []
    for _ in range(2):
        async with SandboxAPI(seed=7) as api:
            api.status_mix = {500: 0.3, 404: 0.2}
            url = events_url(api.base_url, "1", "v", "s")
            results.append([(await send(session, url, body_of(LEAD)))[0] for _ in range(20)])
    assert results[0] == results[1]
    assert {500, 404, 200} <= set(results[0])


async def test_latency_delays_the_answer(sandbox: SandboxAPI, session: aiohttp.ClientSession) -> None:
    sandbox.latency = 0.2
    loop = asyncio.get_running_loop()
    start = loop.time()
    status, _, _ = await send(session, events_url(sandbox.base_url, "1", "v", "s"), body_of(LEAD))
    assert status == 200
    assert loop.time() - start >= 0.2


async def test_in_flight_per_visit_is_tracked(sandbox: SandboxAPI, session: aiohttp.ClientSession) -> None:
    sandbox.latency = 0.2
    same = events_url(sandbox.base_url, "1", "v", "s")
    other = events_url(sandbox.base_url, "1", "w", "s")
    statuses = await asyncio.gather(*(send(session, u, body_of(LEAD)) for u in (same, same, other)))
    assert [s for s, _, _ in statuses] == [200, 200, 200]
    assert sandbox.max_in_flight_per_visit == 2
    assert sandbox.max_in_flight == 3


async def test_wait_for_reports_what_it_saw(sandbox: SandboxAPI, session: aiohttp.ClientSession) -> None:
    await send(session, events_url(sandbox.base_url, "1", "v", "s"), body_of(LEAD))
    await sandbox.wait_for(lambda api: len(api.delivered()) == 1, timeout=1)
    with pytest.raises(TimeoutError, match=r"1 requests, by status \{200: 1\}"):
        await sandbox.wait_for(lambda api: len(api.delivered()) == 2, timeout=0.05)


async def test_domain_api(sandbox: SandboxAPI, session: aiohttp.ClientSession) -> None:
    url = f"{sandbox.base_url}/api/account/1234/service/smt/baseURI.json?version=1.0"
    sandbox.domain_fail_times = 1
    async with session.get(url) as resp:
        assert resp.status == 503
    async with session.get(url) as resp:
        assert resp.status == 200
        assert await resp.json() == {"service": "smt", "account": "1234", "baseURI": sandbox.domain}
    assert sandbox.base_url == f"http://{sandbox.domain}"
    assert sandbox.domain_lookups == ["1234", "1234"]


async def test_unknown_path_is_404(sandbox: SandboxAPI, session: aiohttp.ClientSession) -> None:
    async with session.post(f"{sandbox.base_url}/api/account/1/monitoring/visitors/v/visits/events") as resp:
        assert resp.status == 404
    assert sandbox.received == []


async def test_stop_releases_hanging_requests(sandbox: SandboxAPI, session: aiohttp.ClientSession) -> None:
    sandbox.hang_visitor("stuck")
    pending = asyncio.ensure_future(
        send(session, events_url(sandbox.base_url, "1", "stuck", "s"), body_of(LEAD))
    )
    await sandbox.wait_for(lambda api: len(api.received) == 1, timeout=5)
    await asyncio.wait_for(sandbox.stop(), timeout=5)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await pending


@pytest.mark.parametrize("base_uri", ["127.0.0.1:notaport", "127.0.0.1:99999", "127.0.0.1:-1", ":80", "a b"])
async def test_an_unusable_domain_api_base_uri_is_a_failed_lookup_not_an_exception(
    sandbox: SandboxAPI, base_uri: str
) -> None:
    """An odd `baseURI` from the Domain API is retried like any failed lookup, never raised."""
    from consumer.accounts.registry import AccountRegistry
    from consumer.config import load_settings
    from consumer.liveperson.client import EngagementClient
    from consumer.values.event import Visit

    sandbox.domain = base_uri  # what the stand-in Domain API answers
    settings = load_settings(
        {
            "LP_CONSUMER_KEY": "k",
            "LP_CONSUMER_SECRET": "s",
            "LP_ACCESS_TOKEN": "t",
            "LP_ACCESS_TOKEN_SECRET": "ts",
            "LP_DOMAIN_API_URL": sandbox.base_url,
            "LP_SCHEME": "http",
        },
        require_kafka=False,
    )
    client = EngagementClient(settings)
    account = AccountRegistry(settings, client.fetch_token).get("1234")
    assert account is not None
    await client.start()
    try:
        reply = await client.send(Visit("1234", "v", "s"), body_of(LEAD), account)
    finally:
        await client.close()
    assert reply.status is None and reply.error == "domain_lookup"
    assert "baseURI" in reply.detail and sandbox.domain_lookups == ["1234"]


async def test_the_domain_cache_is_bounded_in_entries(
    sandbox: SandboxAPI, session: aiohttp.ClientSession
) -> None:
    """Accounts come from input: the Domain API cache keeps at most `max_entries` of them."""
    from consumer.liveperson.domain import DomainResolver

    resolver = DomainResolver(sandbox.base_url, ttl_s=3600, scheme="http", max_entries=5)
    for i in range(12):
        assert await resolver.base_url(session, f"acct-{i}") == sandbox.base_url
    assert len(resolver._cache) == 5
    await resolver.base_url(session, "acct-11")  # cached: no new lookup
    assert len(sandbox.domain_lookups) == 12


# -- every documented attribute type, strictly ---------------------------------------------------


@pytest.mark.parametrize("kind", sorted(DOCUMENTED))
async def test_the_documented_shape_of_each_type_is_accepted(
    sandbox: SandboxAPI, session: aiohttp.ClientSession, kind: str
) -> None:
    status, _, payload = await send(
        session, events_url(sandbox.base_url, "1", "v", "s"), body_of(DOCUMENTED[kind])
    )
    assert (status, payload) == (200, {})
    assert [a for _, a in sandbox.delivered()] == [DOCUMENTED[kind]]


@pytest.mark.parametrize(
    ("attribute", "path"), [pytest.param(a, p, id=f"{k}: {what}") for k, what, a, p in WRONG]
)
async def test_a_wrong_shape_of_each_type_is_400_naming_the_path(
    sandbox: SandboxAPI, session: aiohttp.ClientSession, attribute: dict[str, Any], path: str
) -> None:
    url = events_url(sandbox.base_url, "1", "v", "s")
    status, _, payload = await send(session, url, body_of(LEAD, attribute))
    assert status == 400
    assert payload["error"].startswith(f"attribute 1: {path}: "), payload
    assert sandbox.delivered() == []


async def test_every_type_is_wrong_somewhere_in_the_wrong_shapes() -> None:
    assert {kind for kind, *_ in WRONG} == set(DOCUMENTED) == set(TYPES)


@pytest.mark.parametrize("kind", ["section", "Lead", "visit", None])
async def test_an_undocumented_type_is_400(
    sandbox: SandboxAPI, session: aiohttp.ClientSession, kind: str | None
) -> None:
    attribute = {"type": kind, "section": ["electronics"]}
    status, _, payload = await send(session, events_url(sandbox.base_url, "1", "v", "s"), body_of(attribute))
    assert status == 400
    assert payload["error"].startswith("attribute 0: type: "), payload
