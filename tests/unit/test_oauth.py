"""Signer makes exactly oauthlib's header, verifiable by oauthlib's provider side, much cheaper."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from oauthlib.oauth1 import Client, RequestValidator, SignatureOnlyEndpoint
from oauthlib.oauth1.rfc5849 import utils

from consumer.config.credentials import Credentials
from consumer.liveperson.oauth import Signer, escape
from consumer.liveperson.url import events_url

pytestmark = pytest.mark.timeout(30)

CREDS = Credentials("consumer-key", "consumer/secret+=", "access-token", "token secret&é")
NONCE = "0123456789abcdef01234567"
TS = "1700000000"
BODY = json.dumps(
    [
        {
            "type": "lead",
            "lead": {"topic": "upgrade inquiry", "value": 200, "currency": "USD", "leadId": "x1"},
        },
        {"type": "service", "service": {"topic": "add user", "status": 0, "category": "a=b&c+d"}},
    ]
).encode()


def oauthlib_header(url: str, body: bytes | None, creds: Credentials = CREDS, method: str = "POST") -> str:
    client = Client(
        creds.consumer_key,
        client_secret=creds.consumer_secret,
        resource_owner_key=creds.access_token,
        resource_owner_secret=creds.access_token_secret,
        nonce=NONCE,
        timestamp=TS,
    )
    _, headers, _ = client.sign(
        url,
        http_method=method,
        body=None if body is None else body.decode(),
        headers={"Content-Type": "application/json"},
    )
    return str(headers["Authorization"])


URLS = [
    events_url("https://va.liveperson.net", "1234", "xyz", "rty.uio"),
    events_url("https://va.liveperson.net/", "1234", "aGVsbG8+d29ybGQ/Pw==", "c2lk+/="),
    events_url("http://127.0.0.1:8089", "12 34", "visitor with spaces", "sid with ü"),
    events_url("HTTPS://VA.LivePerson.net:443", "1234", "訪問者", "s~i.d-_"),
    "https://host/path?b=2&a=1&a=0&empty=&flag",
    "https://host/p?x=a+b&y=%7e%2b",
]


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("body", [BODY, b"[]", None])  # oauthlib refuses b"" (form-decodable)
def test_header_is_byte_for_byte_oauthlibs(url: str, body: bytes | None) -> None:
    mine = Signer(CREDS).authorization("POST", url, body, nonce=NONCE, timestamp=TS)
    assert mine == oauthlib_header(url, body)


def test_header_carries_the_body_hash_only_when_there_is_a_body() -> None:
    signer = Signer(CREDS)
    assert 'oauth_body_hash="' in signer.authorization("POST", URLS[0], BODY)
    assert "oauth_body_hash" not in signer.authorization("GET", URLS[0], None)


def test_lower_case_method_is_signed_upper_case() -> None:
    signer = Signer(CREDS)
    lower = signer.authorization("post", URLS[1], BODY, nonce=NONCE, timestamp=TS)
    assert lower == signer.authorization("POST", URLS[1], BODY, nonce=NONCE, timestamp=TS)


def test_long_secrets_sign_as_oauthlib_does() -> None:
    creds = Credentials("k", "s" * 80, "t", "u" * 40)
    mine = Signer(creds).authorization("POST", URLS[1], BODY, nonce=NONCE, timestamp=TS)
    assert mine == oauthlib_header(URLS[1], BODY, creds)


def test_overridable_nonce_and_timestamp() -> None:
    class Fixed(Signer):
        def nonce(self) -> str:
            return NONCE

        def timestamp(self) -> str:
            return TS

    assert Fixed(CREDS).authorization("POST", URLS[1], BODY) == oauthlib_header(URLS[1], BODY)


def test_every_call_has_a_fresh_nonce_and_a_current_timestamp() -> None:
    signer = Signer(CREDS)
    first = dict(utils.parse_authorization_header(signer.authorization("POST", URLS[0], BODY)))
    second = dict(utils.parse_authorization_header(signer.authorization("POST", URLS[0], BODY)))
    assert first["oauth_nonce"] != second["oauth_nonce"]
    assert 20 <= len(first["oauth_nonce"]) <= 30  # oauthlib's default provider-side nonce length
    assert abs(int(first["oauth_timestamp"]) - time.time()) < 5


class Validator(RequestValidator):  # type: ignore[misc]
    """oauthlib's provider side, knowing CREDS."""

    enforce_ssl = False
    dummy_client = "dummy-client"
    dummy_access_token = "dummy-token"

    def __init__(self) -> None:
        super().__init__()
        self.nonces: set[str] = set()

    def check_client_key(self, client_key: str) -> bool:
        return True

    def validate_client_key(self, client_key: str, request: object) -> bool:
        return client_key == CREDS.consumer_key

    def get_client_secret(self, client_key: str, request: object) -> str:
        return CREDS.consumer_secret if client_key == CREDS.consumer_key else "dummy"

    def get_access_token_secret(self, client_key: str, token: str, request: object) -> str:
        return CREDS.access_token_secret if token == CREDS.access_token else "dummy"

    def validate_timestamp_and_nonce(
        self, client_key: str, ts: str, nonce: str, request: object, **kw: object
    ) -> bool:
        if nonce in self.nonces:
            return False
        self.nonces.add(nonce)
        return True


def verify(url: str, header: str, body: bytes = BODY) -> bool:
    endpoint = SignatureOnlyEndpoint(Validator())
    valid, _ = endpoint.validate_request(
        url, "POST", body.decode(), {"Authorization": header, "Content-Type": "application/json"}
    )
    return bool(valid)


@pytest.mark.parametrize("url", URLS[:4])
def test_oauthlib_provider_accepts_the_header(url: str) -> None:
    assert verify(url, Signer(CREDS).authorization("POST", url, BODY))


def test_wrong_secret_fails_verification() -> None:
    wrong = Credentials(CREDS.consumer_key, "not the secret", CREDS.access_token, CREDS.access_token_secret)
    assert not verify(URLS[1], Signer(wrong).authorization("POST", URLS[1], BODY))


def test_signature_covers_the_encoded_url() -> None:
    header = Signer(CREDS).authorization("POST", URLS[1], BODY)
    other = events_url("https://va.liveperson.net", "1234", "aGVsbG8 d29ybGQ/Pw==", "c2lk+/=")
    assert not verify(other, header)


def test_credentials_repr_hides_every_value() -> None:
    """The consumer key and access token identify and (with the secrets) use the API key: masked too."""
    for text in (repr(CREDS), str(CREDS), f"{CREDS}"):
        assert "***" in text
        for value in (CREDS.consumer_key, CREDS.consumer_secret, CREDS.access_token):
            assert value not in text
        assert CREDS.access_token_secret not in text


@given(st.text())
def test_escape_is_oauthlibs(value: str) -> None:
    assert escape(value) == utils.escape(value)


@given(visitor=st.text(min_size=1), sid=st.text(min_size=1), body=st.binary())
def test_any_visit_signs_as_oauthlib(visitor: str, sid: str, body: bytes) -> None:
    url = events_url("https://va.liveperson.net", "1234", visitor, sid)
    payload = b"[" + body.hex().encode() + b"]"  # JSON-like: never form-decodable, as oauthlib needs
    mine = Signer(CREDS).authorization("POST", url, payload, nonce=NONCE, timestamp=TS)
    assert mine == oauthlib_header(url, payload)


@given(query=st.lists(st.tuples(st.text(), st.text()), max_size=4))
def test_raw_query_parameters_sign_as_oauthlib(query: list[tuple[str, str]]) -> None:
    # Hand-written queries: raw +, lower-case and non-ASCII escapes, repeated names, blank values.
    raw = "&".join(f"{escape(k).replace('%20', '+').lower()}={escape(v)}" for k, v in query)
    url = f"https://host/p?{raw}"
    assert Signer(CREDS).authorization("POST", url, BODY, nonce=NONCE, timestamp=TS) == oauthlib_header(
        url, BODY
    )


class _FixedSigner(Signer):
    def nonce(self) -> str:
        return NONCE

    def timestamp(self) -> str:
        return TS


_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


@given(
    base=st.sampled_from(
        ["https://lo.liveperson.net", "http://127.0.0.1:8080/", "https://Example.COM:443", "https://h.x:8443/p"]
    ),
    account=_TEXT.filter(bool),
    visitor=_TEXT,
    sid=_TEXT,
    body=_TEXT.map(lambda t: json.dumps([{"topic": t}]).encode()),
    creds=st.sampled_from(
        [CREDS, Credentials("k é+/", "s&=", "", "x"), Credentials("kk", "ss", "t+ /%", "x")]
    ),
)
def test_the_events_entry_point_makes_the_url_and_header_the_generic_path_makes(
    base: str, account: str, visitor: str, sid: str, body: bytes, creds: Credentials
) -> None:
    signer = _FixedSigner(creds)
    url = events_url(base, account, visitor, sid)
    assert signer.events(base, account, visitor, sid, body) == (url, signer.authorization("POST", url, body))
    if creds.access_token:  # and as oauthlib signs it
        assert signer.events(base, account, visitor, sid, body)[1] == oauthlib_header(url, body, creds)


def test_nonces_are_24_hex_characters_and_never_repeat_across_refills() -> None:
    signer = Signer(CREDS)
    nonces = [signer.nonce() for _ in range(3 * 512 + 7)]  # past three refills of the pool
    assert all(len(n) == 24 and int(n, 16) >= 0 for n in nonces)
    assert len(set(nonces)) == len(nonces)
