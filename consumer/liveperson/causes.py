"""Why a request got no answer: one cause of a fixed few, from what the TLS or TCP stack said.

A connection error is a transient fault, retried with backoff, unless its cause is a certificate
the client does not trust (`CERTIFICATE_CAUSES`): retrying that in silence would only end in
dead letters, so the account is held like an auth halt until a probe gets an answer. aiohttp's
causes come from its exception types and OpenSSL's verification code; pyreqwest's from the words
of its cause chain (rustls, hyper). The causes are the values of the `cause` label of
engagement_connection_errors_total: a fixed set, whatever a stack says.
"""

from __future__ import annotations

import errno
import ssl

import aiohttp

CERTIFICATE_CAUSES = frozenset(
    {
        "certificate_not_trusted",  # issued by a CA the client was not given (or self-signed)
        "certificate_name_mismatch",  # not issued for the host name (or IP address) of the URL
        "certificate_expired",  # expired, or not valid yet
        "certificate_rejected",  # any other verification failure (e.g. rustls refuses a CA as a server's)
    }
)
CAUSES = CERTIFICATE_CAUSES | {"tls", "refused", "reset", "dns", "other"}

# OpenSSL's X509_V_ERR_* codes (ssl.SSLCertVerificationError.verify_code) that have a cause of their own.
_OPENSSL_CODES = {
    2: "certificate_not_trusted",  # unable to get issuer certificate
    18: "certificate_not_trusted",  # self-signed certificate
    19: "certificate_not_trusted",  # self-signed certificate in the chain
    20: "certificate_not_trusted",  # unable to get local issuer certificate
    21: "certificate_not_trusted",  # unable to verify the first certificate
    27: "certificate_not_trusted",  # certificate not trusted
    9: "certificate_expired",  # not yet valid
    10: "certificate_expired",  # has expired
    62: "certificate_name_mismatch",  # hostname mismatch
    64: "certificate_name_mismatch",  # IP address mismatch
}
_REFUSED = {errno.ECONNREFUSED}
_RESET = {errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE}

# pyreqwest (reqwest 0.13, hyper, rustls 0.23): the first of these found in its words names the cause.
_WORDS = (
    ("unknownissuer", "certificate_not_trusted"),
    ("not valid for name", "certificate_name_mismatch"),
    ("notvalidforname", "certificate_name_mismatch"),
    ("certificate expired", "certificate_expired"),
    ("certificate not valid yet", "certificate_expired"),
    ("invalid peer certificate", "certificate_rejected"),
    ("connection refused", "refused"),
    ("connection reset", "reset"),
    ("connection closed", "reset"),
    ("broken pipe", "reset"),
    ("dns error", "dns"),
    ("failed to lookup address", "dns"),
    ("alert", "tls"),
    ("corrupt message", "tls"),
    ("handshake", "tls"),
    ("peer is incompatible", "tls"),
    ("tls", "tls"),
)
_SENDING = "error sending request for url"  # pyreqwest's first line: it names the URL (the visit's ids)


def aiohttp_cause(exc: aiohttp.ClientError) -> str:
    """The cause of an aiohttp failure to get an answer."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        verify = exc.certificate_error
        code = verify.verify_code if isinstance(verify, ssl.SSLCertVerificationError) else None
        return _OPENSSL_CODES.get(code or 0, "certificate_rejected")
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "dns"
    if isinstance(exc, aiohttp.ClientSSLError):
        return "tls"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "reset"
    if isinstance(exc, aiohttp.ClientOSError):
        if exc.errno in _REFUSED:
            return "refused"
        if exc.errno in _RESET:
            return "reset"
    return "other"


def reqwest_words(chain: list[dict[str, object]]) -> list[str]:
    """The messages of pyreqwest's cause chain (`details['causes']`), but the one naming the URL."""
    words = (str(link.get("message", "")) for link in chain)
    return [w for w in words if w and not w.startswith(_SENDING)]


def reqwest_cause(chain: list[dict[str, object]]) -> str:
    """The cause of a pyreqwest failure to get an answer, from its cause chain."""
    said = " | ".join(reqwest_words(chain)).lower()
    return next((cause for words, cause in _WORDS if words in said), "other")


def reqwest_detail(name: str, chain: list[dict[str, object]]) -> str:
    """A pyreqwest failure as one line: its type, then its cause chain (without the URL)."""
    return ": ".join([name, *reqwest_words(chain)])
