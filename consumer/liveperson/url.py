"""Engagement Attributes request URLs, percent-encoded once, and their OAuth signature base URI.

The URL returned by `events_url` is final: every path segment and the `sid` query value are
percent-encoded per RFC 3986 (`quote(..., safe="")`: `+` -> `%2B`, `=` -> `%3D`, `/` -> `%2F`,
space -> `%20`, non-ASCII as UTF-8 bytes; only the unreserved `-._~` stay as they are).

The OAuth 1.0 signature covers exactly this string, so it must reach the wire unchanged.
aiohttp (through yarl) re-quotes URLs given as `str`, which may normalise escapes; always send
it as ``yarl.URL(url, encoded=True)`` so that the URL sent is byte-for-byte the URL signed.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}
_NEXT_URL = re.compile(r",(?=\s*[A-Za-z][A-Za-z0-9+.-]*://)")  # a comma that starts another URL of a list


def quote_segment(value: str) -> str:
    """A path segment or query value, percent-encoded (`quote(value, safe="")`)."""
    return quote(value, safe="")


_seg = quote_segment


def events_path_prefix(base_url: str, account: str) -> str:
    """`<base>/api/account/<account>/monitoring/visitors/`: the start of an account's visit URLs."""
    base = base_url[:-1] if base_url.endswith("/") else base_url
    return f"{base}/api/account/{_seg(account)}/monitoring/visitors/"


def events_url(base_url: str, account: str, visitor: str, sid: str) -> str:
    """The encoded `.../visits/current/events?v=1&sid=...` URL of one visit under `base_url`."""
    return f"{events_path_prefix(base_url, account)}{_seg(visitor)}/visits/current/events?v=1&sid={_seg(sid)}"


def signature_base_url(url: str) -> str:
    """`scheme://host[:port]/path` of `url` as RFC 5849 3.4.1.2 signs it (no query, default port dropped)."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        raise ValueError(f"not an absolute URL: {url!r}")
    scheme = scheme.lower()
    cut = len(rest)
    for ch in "?#":
        i = rest.find(ch, 0, cut)
        if i >= 0:
            cut = i
    rest = rest[:cut]
    slash = rest.find("/")
    if slash < 0:
        netloc, path = rest, "/"
    else:
        netloc, path = rest[:slash], rest[slash:]
    netloc = netloc.rpartition("@")[2].lower()  # userinfo never signs
    if not netloc:
        raise ValueError(f"missing host: {url!r}")
    host, colon, port = netloc.rpartition(":")
    if colon and "]" not in port:  # a port, not the inside of an IPv6 literal
        number = int(port) if port else None
        netloc = host if number is None or number == _DEFAULT_PORTS.get(scheme) else f"{host}:{number}"
    return f"{scheme}://{netloc}{path}".replace(" ", "%20")


def base_url_problem(base: str) -> str | None:
    """Why `base` cannot serve as the API base URL (scheme, host, port), or None if it can."""
    try:
        parts = urlsplit(base)
        port = parts.port  # raises ValueError unless a number in 0..65535
    except ValueError as exc:
        return str(exc)
    if parts.scheme not in ("http", "https"):
        return "the scheme must be http or https"
    host = parts.hostname or ""
    if not host or any(c.isspace() for c in host):
        return "no usable host"
    if port == 0:
        return "port 0"
    if parts.query or parts.fragment:
        return "a query or fragment is not allowed"
    return None


def mask_url(url: str) -> str:
    """`url`, or each URL of a comma-separated list, with its user-info password (`user:password@`)
    replaced by `***`, for logs and errors."""
    if "@" not in url:
        return url
    return ",".join(_mask_one(part) for part in _NEXT_URL.split(url))


def _mask_one(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    prefix = f"{scheme}://" if sep else ""
    rest = rest if sep else url  # no scheme (`user:password@host`): masked all the same
    end = len(rest)
    for ch in "/?#":
        i = rest.find(ch)
        if 0 <= i < end:
            end = i
    userinfo, at, host = rest[:end].rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return f"{prefix}{user}:***@{host}{rest[end:]}"
