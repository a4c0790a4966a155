"""Stand-in for LivePerson's Engagement Attributes API (and its Domain API) on a loopback port.

Used by the integration tests, the reliability suite, the benchmark and the `demo` command.
`POST /api/account/{account}/monitoring/visitors/{visitor}/visits/current/events?v=1&sid=...`
is checked like the real service would: OAuth 1.0 (oauthlib's `SignatureOnlyEndpoint`, over the
URL exactly as received; a reused nonce is refused; `oauth_body_hash`, when sent, must match the
body) -> 401; query (exactly `v=1` and a non-empty `sid`), headers (`Content-Type:
application/json`, `x-http-method-override: PUT`) and body (a JSON array of 1+ attributes, each
exactly in a documented shape of one of the ten types: `consumer.sandbox.shape`, which reads the
daemon's own schema) -> 400 naming the attribute and the path; then the scripted outcome (see
`consumer.sandbox.script`), 200 `{}` by default.

`GET /api/account/{account}/service/{smt|sentinel}/baseURI.json?version=1.0` answers
`{"baseURI": "127.0.0.1:PORT"}`: this same server, as a bare domain like LivePerson's.

Accounts: `set_account(account, creds)` gives an account its own OAuth 1.0 keys or OAuth 2.0
client credentials; its requests are then checked against those (an account without its own
uses `.credentials`). `POST /sentinel/api[/v2]/account/{account}/app/token` (form
`grant_type=client_credentials&client_id&client_secret`) issues bearer tokens living
`token_lifetime_s`; a request of an OAuth 2.0 account needs `Authorization: Bearer` with an
unexpired token issued for that account, else 401. `token_fail_status` scripts the token endpoint. The daemon
builds `https://{domain}`, so a test that uses the Domain API must also override the scheme to
`http` in the daemon's configuration; `.domain` is that host:port, `.base_url` the full base.

Run by hand: ``python -m consumer.sandbox.api --port 8089`` (default sandbox credentials).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import ssl
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import replace
from types import TracebackType
from urllib.parse import parse_qsl, unquote

from aiohttp import web

from consumer.config.credentials import ClientCredentials, Credentials
from consumer.sandbox.auth import BearerTokens, OAuth1Verifier
from consumer.sandbox.script import Attribute, Received, Reply, Scripting, VisitKey
from consumer.sandbox.shape import attribute_problem

DEFAULT_CREDENTIALS = Credentials(
    consumer_key="sandbox-consumer-key",
    consumer_secret="sandbox-consumer-secret",
    access_token="sandbox-access-token",
    access_token_secret="sandbox-token-secret",
)


def _json(status: int, payload: object, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(payload).encode(), headers=headers, content_type="application/json"
    )


def _parse_attributes(body: bytes) -> tuple[list[Attribute], str]:
    """The attribute array of a request body, and what is wrong with it ("" if nothing)."""
    try:
        value = json.loads(body)
    except ValueError as exc:
        return [], f"body is not JSON: {exc}"
    if not isinstance(value, list) or not value:
        return [], "body must be a non-empty JSON array"
    attrs = [a for a in value if isinstance(a, dict)]
    for i, attr in enumerate(value):
        problem = attribute_problem(attr)
        if problem:
            return attrs, f"attribute {i}: {problem}"
    return attrs, ""


def _request_problem(query: list[tuple[str, str]], headers: Mapping[str, str]) -> str:
    """What is wrong with the query or headers of an events request ("" if nothing)."""
    names = [name for name, _ in query]
    params = dict(query)
    if sorted(names) != ["sid", "v"] or params["v"] != "1" or not params["sid"]:
        return f"query must be exactly v=1&sid=<non-empty>, got {query!r}"
    if headers.get("Content-Type", "").split(";")[0].strip().lower() != "application/json":
        return "Content-Type must be application/json"
    if headers.get("x-http-method-override", "").upper() != "PUT":
        return "x-http-method-override: PUT is required"
    return ""


class SandboxAPI(Scripting):
    """An aiohttp server imitating the Engagement Attributes API; scriptable and recording."""

    def __init__(
        self, credentials: Credentials = DEFAULT_CREDENTIALS, *, seed: int = 0, verify_signatures: bool = True
    ) -> None:
        super().__init__(seed)
        self.credentials = credentials
        self.accounts: dict[str, Credentials | ClientCredentials] = {}
        self.token_lifetime_s = 3600.0
        self.token_fail_status: int | None = None
        self.token_requests: list[tuple[str, int]] = []  # (account, status) of every token request
        self.token_asked: list[str] = []  # the account of every token request, on arrival
        self._tokens = BearerTokens()
        self.verify_signatures = verify_signatures
        self.received: list[Received] = []
        self.domain_lookups: list[str] = []
        self.domain_fail_times = 0
        self.domain_fail_status = 503
        self.domain_fail_only: str | None = None  # fail only this account's lookups (None: any)
        self.lookup_gate: asyncio.Event | None = None  # Domain API and token answers wait until it is set
        self.lookup_delay_s = 0.0  # and then this long (a slow Domain API / Sentinel)
        self.in_flight: Counter[VisitKey] = Counter()
        self.max_in_flight_per_visit = 0
        self.max_in_flight = 0
        self.peers: set[tuple[str, int]] = set()  # client (address, port) of every connection seen
        self.base_url = ""
        self.domain = ""
        self._oauth1 = OAuth1Verifier()
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()

    def set_credentials(self, credentials: Credentials) -> None:
        """Accept these credentials from now on (and no longer the previous ones)."""
        self.credentials = credentials

    def set_account(self, account: str, credentials: Credentials | ClientCredentials | None) -> None:
        """Check this account's requests against its own credentials (None: the shared ones again).

        New OAuth 2.0 client credentials revoke the tokens issued for the account before."""
        if credentials is None:
            self.accounts.pop(account, None)
        else:
            self.accounts[account] = credentials
        self._tokens.forget(account)

    def expire_tokens(self, account: str | None = None) -> None:
        """Make every token issued (for one account, or all) expire now."""
        if account is None:
            self._tokens.forget_all()
        else:
            self._tokens.forget(account)

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        """Bind and serve (HTTPS with `ssl_context`); `.base_url` and `.domain` name the bound address."""
        self._closing = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a request the client gave up on (timeout) stops being in flight.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port, ssl_context=ssl_context).start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.domain = f"{bound_host}:{bound_port}"
        self.base_url = f"{'https' if ssl_context else 'http'}://{self.domain}"

    async def stop(self) -> None:
        """Release hanging requests (their connections are closed) and stop serving."""
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SandboxAPI:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- what was received ------------------------------------------------------------------

    def delivered(self) -> list[tuple[VisitKey, Attribute]]:
        """(visit, attribute) of every attribute answered 2xx, in arrival order."""
        return [(r.visit, a) for r in self.received if 200 <= r.status < 300 for a in r.attributes]

    def requests_by_status(self) -> Counter[int]:
        """How many events requests got each status (0: no answer)."""
        return Counter(r.status for r in self.received)

    async def wait_for(
        self,
        predicate: Callable[[SandboxAPI], bool],
        timeout: float = 10.0,  # noqa: ASYNC109 - a polling deadline, reported with a summary
    ) -> None:
        """Poll every 10 ms until `predicate(self)` holds; TimeoutError (with a summary) after `timeout`."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() >= deadline:
                last = [(r.visit, r.status, r.detail) for r in self.received[-5:]]
                raise TimeoutError(
                    f"sandbox: condition not met within {timeout}s; {len(self.received)} requests, "
                    f"by status {dict(self.requests_by_status())}, {len(self.delivered())} attributes "
                    f"delivered, last: {last}"
                )
            await asyncio.sleep(0.01)

    # -- serving ----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.transport is not None:
            self.peers.add(request.transport.get_extra_info("peername")[:2])
        raw_path, _, raw_query = request.raw_path.partition("?")
        seg = raw_path.split("/")
        if (
            len(seg) == 10
            and seg[1:3] == ["api", "account"]
            and seg[4:6] == ["monitoring", "visitors"]
            and seg[7:] == ["visits", "current", "events"]
            and seg[3]
            and seg[6]
        ):
            if request.method != "POST":
                return _json(405, {"error": "method not allowed"}, {"Allow": "POST"})
            return await self._events(request, unquote(seg[3]), unquote(seg[6]), raw_query)
        if (
            len(seg) == 7
            and seg[1:3] == ["api", "account"]
            and seg[4] == "service"
            and seg[6] == "baseURI.json"
        ):
            return await self._domain_api(unquote(seg[3]), unquote(seg[5]), raw_query)
        tail = seg[3:] if seg[1:3] == ["sentinel", "api"] else []
        if tail[:1] == ["v2"]:
            tail = tail[1:]
        if len(tail) == 4 and tail[0] == "account" and tail[2:] == ["app", "token"]:
            return await self._token(request, unquote(tail[1]))
        return _json(404, {"error": "not found"})

    async def _domain_api(self, account: str, service: str, raw_query: str) -> web.Response:
        self.domain_lookups.append(account)
        await _slowly(self.lookup_gate, self.lookup_delay_s)
        if dict(parse_qsl(raw_query)).get("version") != "1.0":
            return _json(400, {"error": "version=1.0 is required"})
        if self.domain_fail_times > 0 and self.domain_fail_only in (None, account):
            self.domain_fail_times -= 1
            return _json(self.domain_fail_status, {"error": "scripted domain API failure"})
        if service not in ("smt", "sentinel"):
            return _json(404, {"error": f"unknown service {service}"})
        return _json(200, {"service": service, "account": account, "baseURI": self.domain})

    async def _events(
        self, request: web.Request, account: str, visitor: str, raw_query: str
    ) -> web.StreamResponse:
        arrived = time.monotonic()
        body = await request.read()
        raw_url = f"{request.scheme}://{request.host}{request.raw_path}"
        query = parse_qsl(raw_query, keep_blank_values=True)
        attributes, body_problem = _parse_attributes(body)
        auth_problem = self._verify(raw_url, body, request.headers, account) if self.verify_signatures else ""
        received = Received(
            account, visitor, dict(query).get("sid", ""), attributes, 0, arrived, raw_url, not auth_problem
        )
        if auth_problem:
            return self._answer(received, Reply(401, body=json.dumps({"error": auth_problem}).encode()))
        problem = _request_problem(query, request.headers) or body_problem
        if problem:
            return self._answer(received, Reply(400, body=json.dumps({"error": problem}).encode()))
        visit = received.visit
        self.in_flight[visit] += 1
        self.max_in_flight_per_visit = max(self.max_in_flight_per_visit, self.in_flight[visit])
        self.max_in_flight = max(self.max_in_flight, sum(self.in_flight.values()))
        try:
            reply = self.decide(received)
            if reply.action != "answer":
                self.received.append(replace(received, detail=reply.action))
                if reply.action == "hang":
                    await self._closing.wait()  # or cancelled when the client gives up
                if request.transport is not None:
                    request.transport.abort()
                return web.Response()
            pause = self.delay()
            if pause > 0:
                try:
                    await asyncio.sleep(pause)
                except asyncio.CancelledError:
                    self.received.append(replace(received, detail="client disconnected before the answer"))
                    raise
            return self._answer(received, reply)
        finally:
            self.in_flight[visit] -= 1
            if not self.in_flight[visit]:
                del self.in_flight[visit]

    def _answer(self, received: Received, reply: Reply) -> web.Response:
        detail = ""
        body = reply.body
        if body is None:
            body = b"{}" if 200 <= reply.status < 300 else b'{"error":"scripted"}'
        if reply.status >= 300:
            detail = body.decode("utf-8", "replace")
        self.received.append(replace(received, status=reply.status, detail=detail))
        return web.Response(
            status=reply.status, body=body, headers=reply.headers, content_type="application/json"
        )

    async def _token(self, request: web.Request, account: str) -> web.Response:
        """Sentinel's client-credentials grant: a bearer token for the account's OAuth 2.0 app."""
        form = await request.post() if request.method == "POST" else {}
        self.token_asked.append(account)
        await _slowly(self.lookup_gate, self.lookup_delay_s)
        creds = self.accounts.get(account)
        status = 200
        payload: dict[str, object] = {}
        if request.method != "POST" or form.get("grant_type") != "client_credentials":
            status, payload = 400, {"error": "unsupported_grant_type"}
        elif self.token_fail_status is not None:
            status, payload = self.token_fail_status, {"error": "scripted token endpoint failure"}
        elif (
            not isinstance(creds, ClientCredentials)
            or form.get("client_id") != creds.client_id
            or form.get("client_secret") != creds.client_secret
        ):
            status, payload = 401, {"error": "invalid_client"}
        else:
            token = self._tokens.issue(account, self.token_lifetime_s, self.random.getrandbits(48))
            payload = {"access_token": token, "token_type": "Bearer", "expires_in": self.token_lifetime_s}
        self.token_requests.append((account, status))
        return _json(status, payload)

    def _verify(self, raw_url: str, body: bytes, headers: Mapping[str, str], account: str = "") -> str:
        """Why the authentication of this request is refused ("" if it is accepted)."""
        authorization = headers.get("Authorization")
        if not authorization:
            return "missing Authorization header"
        own = self.accounts.get(account)
        if isinstance(own, ClientCredentials):
            return self._tokens.problem(account, authorization)
        return self._oauth1.problem(
            raw_url, body, authorization, headers.get("Content-Type", ""), own or self.credentials
        )


async def _slowly(gate: asyncio.Event | None, delay_s: float) -> None:
    """A slow Domain API or Sentinel: wait for the gate (when set up), then the delay."""
    if gate is not None:
        await gate.wait()
    if delay_s > 0:
        await asyncio.sleep(delay_s)


async def _serve(args: argparse.Namespace) -> None:
    creds = Credentials(args.consumer_key, args.consumer_secret, args.access_token, args.access_token_secret)
    api = SandboxAPI(creds, seed=args.seed)
    api.latency = args.latency
    await api.start(args.host, args.port)
    print(f"sandbox LivePerson API on {api.base_url} (consumer key {creds.consumer_key})", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await api.stop()


def main(argv: list[str] | None = None) -> None:
    """`python -m consumer.sandbox.api`: serve the sandbox until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--consumer-key", default=DEFAULT_CREDENTIALS.consumer_key)
    parser.add_argument("--consumer-secret", default=DEFAULT_CREDENTIALS.consumer_secret)
    parser.add_argument("--access-token", default=DEFAULT_CREDENTIALS.access_token)
    parser.add_argument("--access-token-secret", default=DEFAULT_CREDENTIALS.access_token_secret)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
