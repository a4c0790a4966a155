"""URLs in settings and answers: whether one can serve as an API base, and its password masked."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_NEXT_URL = re.compile(r",(?=\s*[A-Za-z][A-Za-z0-9+.-]*://)")  # a comma that starts another URL of a list


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
