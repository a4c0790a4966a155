"""Why a request got no answer, from what the TLS and TCP stacks say: one cause of a fixed few."""

from __future__ import annotations

import pytest

from consumer.liveperson.causes import CAUSES, CERTIFICATE_CAUSES, reqwest_cause, reqwest_detail

pytestmark = pytest.mark.timeout(10)

SENDING = "error sending request for url (https://127.0.0.1:1/api/account/1234/monitoring/visitors/v/visits/current/events?v=1&sid=s)"


def chain(*messages: str) -> list[dict[str, str]]:
    """pyreqwest's `details['causes']`: the request, the client error, then the stack's own words."""
    return [{"message": SENDING}, {"message": "client error (Connect)"}, *({"message": m} for m in messages)]


# What pyreqwest 0.15 (reqwest 0.13, hyper, rustls 0.23) said in tests/integration/test_transport.py.
@pytest.mark.parametrize(
    ("messages", "cause"),
    [
        (["invalid peer certificate: UnknownIssuer"], "certificate_not_trusted"),
        (
            [
                'invalid peer certificate: certificate not valid for name "127.0.0.1"; certificate is only '
                'valid for DnsName("example.org")'
            ],
            "certificate_name_mismatch",
        ),
        (
            [
                "invalid peer certificate: certificate expired: verification time 1796606945 (UNIX), but "
                "certificate is not valid after 1577923200 (218683745 seconds ago)"
            ],
            "certificate_expired",
        ),
        (["invalid peer certificate: certificate not valid yet: verification time 1"], "certificate_expired"),
        (["invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))"], "certificate_rejected"),
        (["invalid peer certificate: Other(OtherError(UnsupportedCertVersion))"], "certificate_rejected"),
        (["tcp connect error", "Connection refused (os error 111)"], "refused"),
        (["connection closed before message completed"], "reset"),
        (["connection error", "Connection reset by peer (os error 104)"], "reset"),
        (
            ["dns error", "failed to lookup address information: Name or service not known"],
            "dns",
        ),
        (["received corrupt message of type InvalidContentType"], "tls"),
        (["something new"], "other"),
    ],
)
def test_each_cause_is_named_from_the_words_of_the_stack(messages: list[str], cause: str) -> None:
    assert reqwest_cause(chain(*messages)) == cause
    assert cause in CAUSES
    assert (cause in CERTIFICATE_CAUSES) is cause.startswith("certificate_")


def test_the_detail_names_the_cause_without_the_url_of_the_visit() -> None:
    # The URL carries the visitor and the session ids: it stays out of logs and dead letters.
    detail = reqwest_detail("ConnectError", chain("invalid peer certificate: UnknownIssuer"))
    assert detail == "ConnectError: client error (Connect): invalid peer certificate: UnknownIssuer"
    assert reqwest_detail("ReadError", []) == "ReadError"
