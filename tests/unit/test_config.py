"""Configuration: typed settings, `*_FILE` secrets, KAFKA_* pass-through, one line per problem."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from consumer.config import Settings, load_settings
from consumer.config.policy import DEFAULT_POLICY
from consumer.errors import ConfigError

pytestmark = pytest.mark.timeout(10)
ROOT = Path(__file__).resolve().parents[2]

BASE = {
    "KAFKA_BOOTSTRAP_SERVERS": "k:9092",
    "LP_CONSUMER_KEY": "ck-value",
    "LP_CONSUMER_SECRET": "cs-value-SECRET",
    "LP_ACCESS_TOKEN": "tok-value",
    "LP_ACCESS_TOKEN_SECRET": "ts-value-SECRET",
}


def test_defaults_and_kafka_pass_through() -> None:
    s = load_settings({**BASE, "KAFKA_SESSION_TIMEOUT_MS": "6000", "KAFKA_SASL_MECHANISM": "PLAIN"})
    assert s.kafka_group_id == "engagement-attributes"
    assert s.topics == {"engagement.leads": "lead", "engagement.services": "service"}
    conf = s.consumer_config()
    assert conf["session.timeout.ms"] == "6000" and conf["sasl.mechanism"] == "PLAIN"
    assert conf["enable.auto.offset.store"] is False
    assert conf["queued.max.messages.kbytes"] == 4096  # the prefetch bound, unless KAFKA_* says otherwise
    queued = load_settings({**BASE, "KAFKA_QUEUED_MAX_MESSAGES_KBYTES": "65536"}).consumer_config()
    assert queued["queued.max.messages.kbytes"] == "65536"
    assert conf["enable.auto.commit"] is False  # the daemon commits itself, with offset maps
    assert s.commit_interval_s == 1.0 and s.offset_map_max_bytes == 4096
    forced = load_settings({**BASE, "KAFKA_ENABLE_AUTO_COMMIT": "true"}).consumer_config()
    assert forced["enable.auto.commit"] is False
    producer = s.producer_config()
    assert "session.timeout.ms" not in producer and producer["sasl.mechanism"] == "PLAIN"
    assert "group.id" not in producer


def test_topics_are_comma_separated() -> None:
    s = load_settings({**BASE, "LEAD_TOPICS": "a, b", "SERVICE_TOPICS": "c"})
    assert s.topics == {"a": "lead", "b": "lead", "c": "service"}


def test_every_problem_is_one_line_and_secrets_are_never_shown(tmp_path: Path) -> None:
    env = {
        "LP_CONSUMER_SECRET": "cs-value-SECRET",
        "LP_ACCESS_TOKEN_SECRET_FILE": str(tmp_path / "missing"),
        "MAX_IN_FLIGHT": "lots",
        "LOG_FORMAT": "xml",
        "STATUS_POLICY": "404=explode",
        "LEAD_TOPICS": "x",
        "SERVICE_TOPICS": "x",
    }
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    problems = info.value.problems
    text = "\n".join(problems)
    for needle in (
        "MAX_IN_FLIGHT",
        "LOG_FORMAT",
        "KAFKA_BOOTSTRAP_SERVERS",
        "LP_CONSUMER_KEY",
        "LP_ACCESS_TOKEN_SECRET_FILE",
        "STATUS_POLICY",
        "a topic cannot be both",
    ):
        assert needle in text, needle
    assert all("\n" not in p for p in problems)
    assert "SECRET" not in text.replace("_SECRET", "")


def test_secret_files_are_read_and_reread_for_rotation(tmp_path: Path) -> None:
    files = {}
    for name in ("consumer-key", "consumer-secret", "access-token", "access-token-secret"):
        (tmp_path / name).write_text(f"{name}-v1\n")
        files[f"LP_{name.upper().replace('-', '_')}_FILE"] = str(tmp_path / name)
    s = load_settings({"KAFKA_BOOTSTRAP_SERVERS": "k:9092", **files})
    assert s.credentials().consumer_secret == "consumer-secret-v1"
    (tmp_path / "consumer-secret").write_text("consumer-secret-v2")
    assert s.credentials().consumer_secret == "consumer-secret-v2"
    assert "consumer-secret-v1" not in repr(s.credentials())


def test_masked_config_hides_every_secret() -> None:
    s = load_settings({**BASE, "KAFKA_SASL_PASSWORD": "kafka-SECRET"})
    text = repr(s.masked()) + repr(s)
    assert "SECRET" not in text.replace("_SECRET", "").replace("_secret", "")
    assert s.masked()["lp_consumer_key"] == "***"
    assert s.masked()["kafka_properties"]["sasl.password"] == "***"


def test_kafka_secret_from_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("pw-from-file\n")
    s = load_settings({**BASE, "KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "pw")})
    assert s.consumer_config()["sasl.password"] == "pw-from-file"


def test_run_without_kafka_is_allowed_for_tools() -> None:
    s = load_settings({k: v for k, v in BASE.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}, require_kafka=False)
    assert s.kafka_bootstrap_servers is None


def test_shipped_defaults_file_matches_the_code() -> None:
    documented: dict[str, str] = {}
    for line in (ROOT / "config" / "defaults.env").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            documented[key] = value
    for name, field in Settings.model_fields.items():
        # SSL_CERT_*: OpenSSL's variables (README); `SSL_CERT_FILE=` in an env file would blank the system's
        if name in ("kafka_properties", "credential_files", "ssl_cert_file", "ssl_cert_dir"):
            continue
        assert name.upper() in documented, f"{name.upper()} missing from config/defaults.env"
        default = field.default
        if isinstance(default, list):
            default = ",".join(default)
        elif isinstance(default, bool):
            default = str(default).lower()
        elif default is None:
            default = ""
        shown = documented[name.upper()]
        if isinstance(default, float):
            assert float(shown) == default, name
        else:
            assert shown == str(default), name


def test_shipped_status_policy_file_matches_the_code() -> None:
    text = (ROOT / "config" / "status-policy.env").read_text()
    assert f"STATUS_POLICY_DEFAULTS={DEFAULT_POLICY}" in text


@pytest.mark.parametrize(
    ("var", "value", "says"),
    [
        ("LP_BASE_URL", "https://api.example:notaport", "LP_BASE_URL: Port could not be cast"),
        ("LP_BASE_URL", "https://api.example:70000", "LP_BASE_URL: Port out of range"),
        ("LP_BASE_URL", "https://:443", "LP_BASE_URL: no usable host"),
        ("LP_DOMAIN", "va.example:x1", "LP_DOMAIN: Port could not be cast"),
    ],
)
def test_an_api_base_with_an_odd_host_or_port_is_refused_at_start(var: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({**BASE, var: value})
    assert [p for p in err.value.problems if p.startswith(says)], err.value.problems


@pytest.mark.parametrize(
    ("var", "value", "why"),
    [
        ("KAFKA_ENABLE_AUTO_OFFSET_STORE", "true", "polled offset"),
        ("KAFKA_ENABLE_AUTO_OFFSET_STORE", "T", "polled offset"),
        ("KAFKA_ENABLE_AUTO_OFFSET_STORE", "1", "polled offset"),
        ("KAFKA_ISOLATION_LEVEL", "read_uncommitted", "aborted transactions"),
        ("KAFKA_AUTO_OFFSET_RESET", "latest", "skips"),
        ("KAFKA_AUTO_OFFSET_RESET", "largest", "skips"),
        ("KAFKA_AUTO_OFFSET_RESET", "error", "stalls"),
        ("KAFKA_ACKS", "1", "dead letter"),
        ("KAFKA_ACKS", "0", "dead letter"),
    ],
)
def test_kafka_settings_that_break_at_least_once_are_refused_with_why(var: str, value: str, why: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({**BASE, var: value})
    lines = [p for p in err.value.problems if p.startswith(f"{var}: ")]
    assert len(lines) == 1 and why in lines[0], err.value.problems


def test_kafka_settings_that_keep_the_guarantee_are_accepted() -> None:
    s = load_settings(
        {
            **BASE,
            "KAFKA_ENABLE_AUTO_OFFSET_STORE": "false",
            "KAFKA_ENABLE_AUTO_COMMIT": "True",
            "KAFKA_ISOLATION_LEVEL": "read_committed",
            "KAFKA_AUTO_OFFSET_RESET": "smallest",
            "KAFKA_ACKS": "-1",
            "KAFKA_ENABLE_PARTITION_EOF": "true",  # EOF events are skipped; harmless
        }
    )
    assert s.consumer_config()["auto.offset.reset"] == "smallest"


def test_secrets_in_sasl_config_strings_and_url_passwords_are_masked() -> None:
    s = load_settings(
        {
            **BASE,
            "KAFKA_SASL_OAUTHBEARER_CONFIG": "principal=svc clientSecret=oauth-SECRET",
            "KAFKA_SASL_OAUTHBEARER_EXTENSIONS": "logicalCluster=lkc-1,identityPoolId=pool-SECRET",
            "KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL": "https://u:endpoint-SECRET@idp.example/token",
            "LP_BASE_URL": "https://user:url-SECRET@api.example",
            "LP_DOMAIN_API_URL": "https://user:domain-SECRET@domain.example",
        }
    )
    text = repr(s.masked()) + repr(s) + str(s)
    assert "SECRET" not in text.replace("_SECRET", "").replace("_secret", "")
    assert s.masked()["lp_base_url"] == "https://user:***@api.example"
    assert s.masked()["kafka_properties"]["sasl.oauthbearer.config"] == "***"


def test_a_config_problem_line_never_shows_a_url_password() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({**BASE, "LP_BASE_URL": "https://user:url-SECRET@api.example:notaport"})
    assert err.value.problems and not any("url-SECRET" in p for p in err.value.problems)
    assert any(p.startswith("LP_BASE_URL:") and "user:***@" in p for p in err.value.problems)


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"HTTP_TIMEOUT_S": "30", "REVOKE_DRAIN_S": "10"}, "REVOKE_DRAIN_S: must be at least HTTP_TIMEOUT_S"),
        ({"SHUTDOWN_DRAIN_S": "2"}, "SHUTDOWN_DRAIN_S: must be at least 3"),
    ],
)
def test_drain_deadlines_that_cannot_be_kept_are_refused_with_why(env: dict[str, str], says: str) -> None:
    """Issue 9 item 7: a revoke shorter than a request, a shutdown shorter than closing the consumer."""
    with pytest.raises(ConfigError) as err:
        load_settings({**BASE, **env})
    assert any(line.startswith(says) for line in err.value.problems), err.value.problems
    load_settings({**BASE, "HTTP_TIMEOUT_S": "30", "REVOKE_DRAIN_S": "30", "SHUTDOWN_DRAIN_S": "33"})
    aiohttp = {"HTTP_CLIENT": "aiohttp", "SHUTDOWN_DRAIN_S": "3"}
    load_settings({**BASE, "HTTP_TIMEOUT_S": "30", "REVOKE_DRAIN_S": "30", **aiohttp})


def test_with_pyreqwest_the_shutdown_drain_must_outlast_a_request() -> None:
    """Issue 27 item 13: pyreqwest goes on with a request the drain cancels, until HTTP_TIMEOUT_S."""
    env = {**BASE, "HTTP_TIMEOUT_S": "30", "REVOKE_DRAIN_S": "30", "SHUTDOWN_DRAIN_S": "20"}
    with pytest.raises(ConfigError) as err:
        load_settings(env)
    lines = [p for p in err.value.problems if p.startswith("SHUTDOWN_DRAIN_S:")]
    assert len(lines) == 1 and "HTTP_TIMEOUT_S" in lines[0] and "aiohttp" in lines[0], err.value.problems
    assert load_settings({**env, "HTTP_CLIENT": "aiohttp"}).shutdown_drain_s == 20


@pytest.mark.parametrize(
    ("env", "refused"),
    [
        ({"KAFKA_ACKS": "all", "KAFKA_REQUEST_REQUIRED_ACKS": "1"}, "KAFKA_REQUEST_REQUIRED_ACKS"),
        ({"KAFKA_REQUEST_REQUIRED_ACKS": "all", "KAFKA_ACKS": "0"}, "KAFKA_ACKS"),
        ({"KAFKA_REQUEST_REQUIRED_ACKS": "1"}, "KAFKA_REQUEST_REQUIRED_ACKS"),
    ],
)
def test_every_alias_of_a_guarded_property_is_checked_on_its_own(env: dict[str, str], refused: str) -> None:
    # librdkafka applies a property's names in the order they are set (tests/unit/test_rdkafka_aliases.py):
    # KAFKA_ACKS=all with KAFKA_REQUEST_REQUIRED_ACKS=1 is acks=1, so an `or` of the two passed it.
    with pytest.raises(ConfigError) as err:
        load_settings({**BASE, **env})
    lines = [p for p in err.value.problems if p.startswith(f"{refused}: ")]
    assert len(lines) == 1 and "dead letter" in lines[0], err.value.problems


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"LEAD_TOPICS": r"^crm\..*"}, "LEAD_TOPICS: '^crm\\\\..*' is a regex subscription"),
        ({"EVENT_TOPICS": "^events-.*", "LEAD_TOPICS": "a"}, "EVENT_TOPICS: '^events-.*' is a regex"),
        ({"SERVICE_TOPICS": "tickets*"}, "SERVICE_TOPICS: 'tickets*' is not a Kafka topic name"),
    ],
)
def test_regex_and_invalid_topic_names_are_refused_at_start(env: dict[str, str], says: str) -> None:
    # A regex passed the checks and raised KeyError for the topic it matched, in the middle of a batch.
    with pytest.raises(ConfigError) as err:
        load_settings({**BASE, **env})
    assert [p for p in err.value.problems if p.startswith(says)], err.value.problems


def test_http_client_is_one_of_two_and_the_ca_file_must_hold_a_certificate(tmp_path: Path) -> None:
    assert load_settings(BASE).http_client == "pyreqwest"
    assert load_settings({**BASE, "HTTP_CLIENT": "AioHTTP"}).http_client == "aiohttp"
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    with pytest.raises(ConfigError) as err:
        load_settings({**BASE, "HTTP_CLIENT": "curl", "HTTP_CA_FILE": str(not_pem)})
    lines = str(err.value).split("; ")
    assert any(line.startswith("HTTP_CLIENT:") and "'aiohttp' or 'pyreqwest'" in line for line in lines)
    assert any(line.startswith("HTTP_CA_FILE: no PEM certificate") for line in lines), lines
    with pytest.raises(ConfigError, match="HTTP_CA_FILE: no such file"):
        load_settings({**BASE, "HTTP_CA_FILE": str(tmp_path / "missing.pem")})


def test_the_standard_trust_variables_must_name_certificates_or_the_daemon_does_not_start(
    tmp_path: Path,
) -> None:
    # OpenSSL and rustls skip a missing SSL_CERT_FILE or SSL_CERT_DIR in silence: every request to a
    # private CA's server would then fail as untrusted. One line each at start instead.
    not_pem = tmp_path / "bundle.pem"
    not_pem.write_text("not a certificate\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError) as err:
        load_settings({**BASE, "SSL_CERT_FILE": str(not_pem), "SSL_CERT_DIR": f"{empty}:{tmp_path / 'gone'}"})
    lines = err.value.problems
    assert any(line.startswith("SSL_CERT_FILE: no PEM certificate") for line in lines), lines
    no_pem = [line for line in lines if line.startswith("SSL_CERT_DIR: no PEM certificate in")]
    assert len(no_pem) == 1 and str(empty) in no_pem[0], lines
    assert any(line.startswith("SSL_CERT_DIR: no such directory") and "gone" in line for line in lines), lines
    with pytest.raises(ConfigError, match="SSL_CERT_FILE: no such file"):
        load_settings({**BASE, "SSL_CERT_FILE": str(tmp_path / "missing.pem")})
    good = tmp_path / "certs"
    good.mkdir()
    (good / "ca.pem").write_bytes(trustme.CA().cert_pem.bytes())
    settings = load_settings({**BASE, "SSL_CERT_FILE": str(good / "ca.pem"), "SSL_CERT_DIR": str(good)})
    assert (settings.ssl_cert_file, settings.ssl_cert_dir) == (str(good / "ca.pem"), str(good))


TWO_REGISTRIES = "https://u1:reg1-SECRET@r1.example:8081,https://u2:reg2-SECRET@r2.example/sr"


def test_every_url_of_a_comma_separated_schema_registry_url_has_its_password_masked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 27 item 11: the second URL's password reached the `starting` line and check-config."""
    import argparse

    from consumer.tools import check_config

    s = load_settings({**BASE, "SCHEMA_REGISTRY_URL": TWO_REGISTRIES})
    assert s.masked()["schema_registry_url"] == "https://u1:***@r1.example:8081,https://u2:***@r2.example/sr"
    assert "reg2-SECRET" not in repr(s) and "reg1-SECRET" not in repr(s)  # what `starting` logs
    for name, value in {**BASE, "SCHEMA_REGISTRY_URL": TWO_REGISTRIES}.items():
        monkeypatch.setenv(name, value)
    assert check_config.main(argparse.Namespace()) == 0
    out = capsys.readouterr().out
    assert "u2:***@r2.example/sr" in out and "reg2-SECRET" not in out and "reg1-SECRET" not in out


def test_a_schema_registry_url_problem_line_masks_every_password() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({**BASE, "SCHEMA_REGISTRY_URL": "u1:reg1-SECRET@r1,https://u2:reg2-SECRET@r2"})
    lines = [p for p in err.value.problems if p.startswith("SCHEMA_REGISTRY_URL:")]
    assert lines and not any("SECRET" in p for p in lines), lines
