"""The stand-in API's authentication: OAuth 1.0 signatures (oauthlib, no nonce twice) and bearer tokens."""

from __future__ import annotations

import base64
import hashlib
import time
from collections import deque
from typing import Any

from oauthlib.oauth1 import RequestValidator, SignatureOnlyEndpoint

from consumer.config.credentials import Credentials

NONCE_MEMORY = 200_000  # replays are detected among this many most recent accepted requests


class _Validator(RequestValidator):  # type: ignore[misc]
    """Knows the sandbox's current credentials; any nonce/timestamp format, no nonce twice."""

    def __init__(self, verifier: OAuth1Verifier) -> None:
        super().__init__()
        self._verifier = verifier

    enforce_ssl = False
    timestamp_lifetime = 10**10  # accept any timestamp
    allowed_signature_methods = ("HMAC-SHA1",)
    dummy_client = "sandbox-dummy-client"
    dummy_access_token = "sandbox-dummy-token"

    def check_client_key(self, client_key: str) -> bool:
        return bool(client_key)

    def check_nonce(self, nonce: str) -> bool:
        return bool(nonce)

    def validate_client_key(self, client_key: str, request: Any) -> bool:
        return client_key == self._verifier.checking.consumer_key

    def get_client_secret(self, client_key: str, request: Any) -> str:
        creds = self._verifier.checking
        return creds.consumer_secret if client_key == creds.consumer_key else "dummy-secret"

    def get_access_token_secret(self, client_key: str, token: str, request: Any) -> str:
        creds = self._verifier.checking
        return creds.access_token_secret if token == creds.access_token else "dummy-secret"

    def validate_timestamp_and_nonce(
        self, client_key: str, timestamp: str, nonce: str, request: Any, **_: Any
    ) -> bool:
        return (client_key, nonce) not in self._verifier.nonces


class OAuth1Verifier:
    """Checks an OAuth 1.0 request over the URL exactly as received, against one account's keys."""

    def __init__(self) -> None:
        self.checking = Credentials("", "", "", "")  # the keys the request being verified must be signed with
        self.nonces: set[tuple[str, str]] = set()
        self._order: deque[tuple[str, str]] = deque()
        self._endpoint = SignatureOnlyEndpoint(_Validator(self))

    def problem(
        self, raw_url: str, body: bytes, authorization: str, content_type: str, creds: Credentials
    ) -> str:
        """Why the request's signature is refused ("" if it is accepted, and its nonce is remembered)."""
        self.checking = creds
        try:
            valid, oauth_request = self._endpoint.validate_request(
                raw_url,
                http_method="POST",
                body=body.decode("utf-8", "replace"),
                headers={"Authorization": authorization, "Content-Type": content_type},
            )
        except ValueError as exc:
            return f"unverifiable request: {exc}"
        if oauth_request is None:
            return "malformed OAuth parameters"
        nonce = (oauth_request.client_key, oauth_request.nonce)
        if not valid:
            if nonce in self.nonces:
                return "nonce already used"
            if oauth_request.client_key != creds.consumer_key:
                return "unknown consumer key"
            return "invalid OAuth signature"
        if oauth_request.resource_owner_key != creds.access_token:
            return "unknown access token"
        sent_hash = oauth_request.oauth_params.get("oauth_body_hash")
        if sent_hash is not None and sent_hash != base64.b64encode(hashlib.sha1(body).digest()).decode():
            return "oauth_body_hash does not match the body"
        self.nonces.add(nonce)
        self._order.append(nonce)
        if len(self._order) > NONCE_MEMORY:
            self.nonces.discard(self._order.popleft())
        return ""


class BearerTokens:
    """The OAuth 2.0 tokens the stand-in Sentinel issued: which account, until when."""

    def __init__(self) -> None:
        self._issued: dict[str, tuple[str, float]] = {}  # token -> (account, expires at, monotonic)
        self._serial = 0

    def issue(self, account: str, lifetime_s: float, salt: int) -> str:
        """A new token for the account, valid `lifetime_s`."""
        self._serial += 1
        token = f"sandbox-token-{self._serial}-{salt:012x}"
        self._issued[token] = (account, time.monotonic() + lifetime_s)
        return token

    def forget(self, account: str) -> None:
        """Every token of the account stops being valid."""
        self._issued = {t: v for t, v in self._issued.items() if v[0] != account}

    def forget_all(self) -> None:
        """Every token stops being valid."""
        self._issued.clear()

    def problem(self, account: str, authorization: str) -> str:
        """Why a bearer authorization is refused for the account ("" if it is accepted)."""
        if not authorization.startswith("Bearer "):
            return "account uses OAuth 2.0: Bearer token required"
        issued = self._issued.get(authorization[7:])
        if issued is None or issued[0] != account:
            return "unknown bearer token"
        if issued[1] <= time.monotonic():
            return "bearer token expired"
        return ""
