"""events_url encodes every part once (RFC 3986); signature_base_url is RFC 5849's base string URI."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from oauthlib.oauth1.rfc5849.signature import base_string_uri

from consumer.liveperson.url import events_url, signature_base_url

pytestmark = pytest.mark.timeout(30)

BASE = "https://va.liveperson.net"


def test_plain_values_are_left_as_they_are() -> None:
    assert events_url(BASE, "1234", "xyz", "rty.uio") == (
        "https://va.liveperson.net/api/account/1234/monitoring/visitors/xyz/visits/current/events?v=1&sid=rty.uio"
    )


def test_base64_characters_and_spaces_are_percent_encoded() -> None:
    url = events_url(BASE, "12 34", "ab+c/d==", "s+i/d= x")
    assert "/account/12%2034/" in url
    assert "/visitors/ab%2Bc%2Fd%3D%3D/" in url
    assert url.endswith("?v=1&sid=s%2Bi%2Fd%3D%20x")


def test_unreserved_characters_stay() -> None:
    assert "/visitors/a-b._~c/" in events_url(BASE, "1", "a-b._~c", "s")


def test_unicode_is_utf8_percent_encoded() -> None:
    url = events_url(BASE, "ü", "訪問者", "é")
    assert "/account/%C3%BC/" in url
    assert "/visitors/%E8%A8%AA%E5%95%8F%E8%80%85/" in url
    assert url.endswith("sid=%C3%A9")


def test_query_delimiters_in_values_cannot_escape_their_place() -> None:
    url = events_url(BASE, "1?x", "v&sid=evil", "a&v=2#f")
    assert url.count("?") == 1
    assert "#" not in url
    assert url.endswith("?v=1&sid=a%26v%3D2%23f")


def test_one_trailing_slash_of_the_base_is_dropped() -> None:
    assert events_url(BASE + "/", "1", "v", "s") == events_url(BASE, "1", "v", "s")
    assert events_url(BASE + "/", "1", "v", "s").startswith("https://va.liveperson.net/api/")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://va.liveperson.net/api/x?v=1&sid=s", "https://va.liveperson.net/api/x"),
        ("HTTPS://VA.LivePerson.NET/Api/X?v=1", "https://va.liveperson.net/Api/X"),
        ("https://host:443/p", "https://host/p"),
        ("http://host:80/p", "http://host/p"),
        ("http://host:443/p", "http://host:443/p"),
        ("https://host:8443/p", "https://host:8443/p"),
        ("http://127.0.0.1:39201/api/a%2Bb?v=1", "http://127.0.0.1:39201/api/a%2Bb"),
        ("https://host", "https://host/"),
        ("https://host?x=1", "https://host/"),
        ("https://user:pw@host/p#frag", "https://host/p"),
        ("http://[::1]:8080/p", "http://[::1]:8080/p"),
    ],
)
def test_signature_base_url(url: str, expected: str) -> None:
    assert signature_base_url(url) == expected
    assert signature_base_url(url) == base_string_uri(url)


@pytest.mark.parametrize("url", ["no-scheme/path", "://host/p", "https:///p"])
def test_signature_base_url_refuses_what_is_not_an_absolute_url(url: str) -> None:
    with pytest.raises(ValueError):
        signature_base_url(url)


@given(account=st.text(min_size=1), visitor=st.text(min_size=1), sid=st.text(min_size=1))
def test_events_url_base_string_matches_oauthlib(account: str, visitor: str, sid: str) -> None:
    url = events_url("https://Z1.LivePerson.net:443/", account, visitor, sid)
    assert signature_base_url(url) == base_string_uri(url)
