"""TLS to the API as an operator sets it up, with both transports (HTTP_CLIENT=aiohttp|pyreqwest).

A private CA given the standard way (`SSL_CERT_FILE`, `SSL_CERT_DIR`) is trusted; a certificate
the client does not trust is named by its cause (not trusted, name mismatch, expired, refused by
the TLS library), logged once per account and cause and counted; and in the daemon it holds the
account like an auth halt (`/readyz` and `engagement_halted` say so, its probe goes on), so nothing
is dead-lettered and everything is delivered once the certificate is one the daemon trusts.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from harness import ThreadedAPI, Topics, committed, event, produce, read_topic, wait_until
from structlog.testing import capture_logs
from test_transport import TRANSPORTS, send_each, settings_for

from consumer.ops.metrics import REGISTRY
from consumer.sandbox.api import SandboxAPI

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ACCOUNT = "1234"
LOOPBACK = ipaddress.ip_address("127.0.0.1")
PAST = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """Each test runs once per transport."""
    return str(request.param)


def serving(cert: trustme.LeafCert) -> ssl.SSLContext:
    """A server TLS context presenting `cert`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context


@asynccontextmanager
async def https_standin(context: ssl.SSLContext) -> AsyncIterator[SandboxAPI]:
    """The stand-in API over HTTPS with `context`, stopped afterwards."""
    api = SandboxAPI()
    await api.start(ssl_context=context)
    try:
        yield api
    finally:
        await api.stop()


def pem_file(path: Path, blob: trustme.Blob) -> Path:
    """Write a PEM blob to `path`."""
    blob.write_to_path(str(path))
    return path


# ---- the trust variables ---------------------------------------------------------------------
@pytest.mark.parametrize("variable", ["SSL_CERT_FILE", "SSL_CERT_DIR"])
async def test_a_private_ca_given_by_the_standard_variables_is_trusted(
    transport: str, variable: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = trustme.CA()
    ca_file = pem_file(tmp_path / "private-ca.pem", ca.cert_pem)
    trusted = str(ca_file)
    if variable == "SSL_CERT_DIR":  # OpenSSL looks a CA up in a directory by its subject hash
        if shutil.which("openssl") is None:
            pytest.skip("the openssl command is needed to name the CA by its subject hash (`openssl rehash`)")
        rehash = ["openssl", "rehash", str(tmp_path)]
        await asyncio.to_thread(subprocess.run, rehash, check=True, capture_output=True)
        trusted = str(tmp_path)
    monkeypatch.setenv(variable, trusted)  # the process's environment, as the daemon's is
    async with https_standin(serving(ca.issue_cert("127.0.0.1"))) as api:
        replies = await send_each(settings_for(api.base_url, transport, **{variable: trusted}), ["v0", "v1"])
        assert [(r.status, r.error) for r in replies] == [(200, None), (200, None)]
        assert all(r.auth_valid for r in api.received)


# ---- a certificate the client does not trust: its cause ---------------------------------------
@pytest.mark.parametrize(
    ("cause", "identity", "valid", "trust"),
    [
        ("certificate_not_trusted", "127.0.0.1", None, False),
        ("certificate_name_mismatch", "example.org", None, True),
        ("certificate_expired", "127.0.0.1", (PAST, PAST + datetime.timedelta(days=1)), True),
    ],
)
async def test_a_certificate_that_is_not_trusted_is_named_by_its_cause(
    transport: str,
    cause: str,
    identity: str,
    valid: tuple[datetime.datetime, datetime.datetime] | None,
    trust: bool,
    tmp_path: Path,
) -> None:
    ca = trustme.CA()
    not_before, not_after = valid or (None, None)
    cert = ca.issue_cert(identity, not_before=not_before, not_after=not_after)
    extra = {"HTTP_CA_FILE": str(pem_file(tmp_path / "ca.pem", ca.cert_pem))} if trust else {}
    async with https_standin(serving(cert)) as api:
        reply = (await send_each(settings_for(api.base_url, transport, **extra), ["v"]))[0]
        assert (reply.status, reply.error, reply.cause) == (None, "connection_error", cause), reply.detail
        assert "/visitors/" not in reply.detail  # the stack's words, not the visit's URL
        assert not api.received


def own_ca_certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A server certificate that is its own CA (CA:TRUE, subjectAltName 127.0.0.1), as `openssl req
    -x509 -addext subjectAltName=IP:127.0.0.1` makes it for nginx: (certificate, key) PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(LOOPBACK)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "server.pem", tmp_path / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


async def test_a_server_certificate_that_is_its_own_ca_is_trusted_by_openssl_and_refused_by_rustls(
    transport: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The two stacks differ here: OpenSSL (aiohttp) accepts it; webpki (pyreqwest) refuses a CA
    # certificate as a server's (as it refuses an X.509 v1 one): the cause must say so.
    cert_path, key_path = own_ca_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_path))
    async with https_standin(context) as api:
        settings = settings_for(api.base_url, transport, SSL_CERT_FILE=str(cert_path))
        reply = (await send_each(settings, ["v"]))[0]
    if transport == "aiohttp":
        assert (reply.status, reply.cause) == (200, "")
    else:
        assert (reply.error, reply.cause) == ("connection_error", "certificate_rejected")
        assert "CaUsedAsEndEntity" in reply.detail, reply.detail


async def test_the_first_failure_of_a_cause_per_account_is_logged_and_every_one_is_counted(
    transport: str,
) -> None:
    def counted() -> float | None:
        return REGISTRY.get_sample_value(
            "engagement_connection_errors_total", {"cause": "certificate_not_trusted"}
        )

    before = counted() or 0.0  # the series may not exist yet; after the sends it must
    async with https_standin(serving(trustme.CA().issue_cert("127.0.0.1"))) as api:
        with capture_logs() as logs:
            replies = await send_each(settings_for(api.base_url, transport), ["v0", "v1", "v2"])
    assert {r.cause for r in replies} == {"certificate_not_trusted"}
    said = [e for e in logs if e["event"] == "connection_failed"]
    assert len(said) == 1, said
    assert (said[0]["account"], said[0]["cause"], said[0]["log_level"]) == (
        ACCOUNT,
        "certificate_not_trusted",
        "warning",
    )
    assert said[0]["error"] == replies[0].detail
    assert counted() == before + 3


# ---- the daemon: held, said, then resumed --------------------------------------------------------
@pytest.mark.timeout(120)
def test_an_untrusted_certificate_holds_the_account_says_why_and_a_trusted_one_resumes(
    broker, topics: Topics, daemon_env, start_daemon, transport: str, tmp_path: Path
) -> None:
    private, stranger = trustme.CA(), trustme.CA()
    ca_file = pem_file(tmp_path / "private-ca.pem", private.cert_pem)
    context = serving(stranger.issue_cert("127.0.0.1"))  # a CA the daemon was not given
    api = ThreadedAPI().start(ssl_context=context)
    try:
        visitors = [f"v{i % 10}" for i in range(40)]
        msgs = [(topics.leads, v.encode(), event(ACCOUNT, v, topic=f"e{i}")) for i, v in enumerate(visitors)]
        produced = produce(broker, msgs)
        # RETRY_MAX_ELAPSED_S=2: retried as a transient fault, the records would be dead-lettered
        # within the four probe steps waited for below.
        env = daemon_env(
            api.base_url, HTTP_CLIENT=transport, SSL_CERT_FILE=str(ca_file), RETRY_MAX_ELAPSED_S="2"
        )
        d = start_daemon(env, wait_ready=False)

        def held_why() -> bool:
            status, body = d.get("/readyz")
            return status == 503 and "certificate_not_trusted" in body

        wait_until(held_why, 40, "/readyz naming the untrusted certificate")
        wait_until(lambda: d.logs().count('"tls_still_failing"') >= 4, 20, "four probe steps")
        assert d.metric("engagement_halted") == 1
        assert d.metric("engagement_connection_errors_total", cause="certificate_not_trusted") >= 1
        events = d.log_events()
        failed = [e for e in events if e["event"] == "connection_failed"]
        assert [(e["account"], e["cause"]) for e in failed] == [(ACCOUNT, "certificate_not_trusted")]
        halted = [e for e in events if e["event"] == "halted_on_tls"]
        assert [e["reason"] for e in halted] == ["certificate_not_trusted"]
        assert not api.received

        # The operator fixes the server: a certificate of the CA the daemon trusts (SSL_CERT_FILE).
        api.on_loop(lambda: private.issue_cert("127.0.0.1").configure_cert(context))
        api.wait_delivered(40, timeout=30)
        wait_until(lambda: d.get("/readyz")[0] == 200, 10, "ready again")
        assert d.metric("engagement_halted") == 0
        assert sorted(a["lead"]["topic"] for _, a in api.delivered()) == sorted(f"e{i}" for i in range(40))
        assert '"tls_recovered"' in d.logs()
        assert d.stop() == 0
        ends = produced.end_offsets()
        assert committed(broker, topics.group, list(ends)) == ends
        read_topic(broker, topics.dlq, 0)  # nothing dead-lettered
    finally:
        api.stop()
