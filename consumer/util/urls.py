"""URLs in settings and answers: whether one can serve as an API base, and its password masked."""

from __future__ import annotations

from urllib.parse import urlsplit


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
    """`url` with the password of its user-info (`user:password@`) replaced by `***`, for logs and errors."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = len(rest)
    for ch in "/?#":
        i = rest.find(ch)
        if 0 <= i < end:
            end = i
    userinfo, at, host = rest[:end].rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user}:***@{host}{rest[end:]}"
