"""Checks of settings beyond their types: what would break a guarantee, deadlines, folders, topics.

Each check returns one line per problem, saying why; `load_settings` gathers them all so a bad
configuration is reported in one go.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping
from pathlib import Path

from consumer.config.credentials import scan
from consumer.config.fieldmap import parse_field_map, parse_path, parse_type_map
from consumer.config.policy import parse_status_policy
from consumer.config.settings import CLOSE_RESERVE_S, MIN_SHUTDOWN_DRAIN_S, SECRET_FIELDS, Settings
from consumer.util.urls import base_url_problem, mask_url
from consumer.values.attributes import ATTRIBUTES

_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
_TRUE = {"true", "t", "1"}  # librdkafka's spellings of true

# librdkafka's other names for the properties guarded below (rd_kafka_conf_properties_show lists
# them as "Alias for `x`"). librdkafka applies the names of one property in the order they are set,
# the last one winning, so every name present is checked, each on its own: KAFKA_ACKS=all beside
# KAFKA_REQUEST_REQUIRED_ACKS=1 means acks=1. enable.auto.offset.store, isolation.level and
# auto.offset.reset have no alias (librdkafka 2.16).
ALIASES: dict[str, tuple[str, ...]] = {
    "request.required.acks": ("acks",),
    "enable.auto.offset.store": (),
    "isolation.level": (),
    "auto.offset.reset": (),
}


def _names(prop: str) -> tuple[str, ...]:
    """A guarded property's name and its librdkafka aliases."""
    return (prop, *ALIASES[prop])


def _guarantee_problems(props: Mapping[str, str]) -> list[str]:
    """`KAFKA_*` pass-through settings that would break at-least-once, one line each with why."""
    problems: list[str] = []

    def value(prop: str) -> str | None:
        raw = props.get(prop)
        return None if raw is None else str(raw).strip().lower()

    def refuse(prop: str, why: str) -> None:
        problems.append(f"KAFKA_{prop.upper().replace('.', '_')}: {why} (got {props[prop]!r})")

    for prop in _names("enable.auto.offset.store"):
        if value(prop) in _TRUE:
            refuse(
                prop,
                "must stay false: librdkafka would store every polled offset before its event is "
                "delivered or dead-lettered, and any commit of stored offsets would pass those events",
            )
    for prop in _names("isolation.level"):
        isolation = value(prop)
        if isolation is not None and isolation != "read_committed":
            refuse(
                prop,
                "must stay read_committed: otherwise events of aborted transactions, which their "
                "producer took back, are delivered",
            )
    for prop in _names("auto.offset.reset"):
        reset = value(prop)
        if reset in ("latest", "largest", "end"):
            refuse(
                prop,
                "must be earliest: with no committed offset, or one the retention already removed, "
                "latest skips every retained event; to skip a backlog on purpose reset the group's "
                "offsets with kafka-consumer-groups",
            )
        elif reset is not None and reset not in ("earliest", "smallest", "beginning"):
            refuse(
                prop, "must be earliest: the daemon does not handle the reset error, so the partition stalls"
            )
    for prop in _names("request.required.acks"):
        acks = value(prop)
        if acks is not None and acks not in ("all", "-1"):
            refuse(
                prop,
                "must be all (-1): an event counts as done, and is committed, once its dead letter is "
                "acknowledged; with fewer acks a broker failure can lose that dead letter",
            )
    return problems


def _directory_problems(s: Settings) -> list[str]:
    """Every unusable account folder, by file; and the single set's place beside the directory."""
    assert s.lp_credentials_dir is not None
    found, problems = scan(Path(s.lp_credentials_dir))
    if s.has_single_set and not s.lp_account:
        problems.append(
            "LP_ACCOUNT: required when LP_CREDENTIALS_DIR and the single-set LP_* credentials are both "
            "set (which account do they belong to?)"
        )
    if s.lp_account and s.lp_account in found:
        problems.append(
            f"LP_ACCOUNT: account {s.lp_account} also has a folder in LP_CREDENTIALS_DIR: keep one"
        )
    if not found and not problems and not s.lp_account:
        problems.append(f"LP_CREDENTIALS_DIR: no account folders in {s.lp_credentials_dir}")
    return problems


def _deadline_problems(s: Settings) -> list[str]:
    """Drain deadlines that cannot be kept: each says what would go wrong."""
    problems = []
    if s.http_timeout_s > s.revoke_drain_s:
        problems.append(
            f"REVOKE_DRAIN_S: must be at least HTTP_TIMEOUT_S ({s.http_timeout_s:g} s; got "
            f"{s.revoke_drain_s:g}): a request still on the wire when a revoke stops waiting can land "
            "after the new owner's newer one for the same visit (out of order)"
        )
    if s.http_client == "pyreqwest" and s.shutdown_drain_s < s.http_timeout_s + CLOSE_RESERVE_S:
        problems.append(
            f"SHUTDOWN_DRAIN_S: must be at least HTTP_TIMEOUT_S + {CLOSE_RESERVE_S:g} s with HTTP_CLIENT="
            f"pyreqwest (got {s.shutdown_drain_s:g}; HTTP_TIMEOUT_S {s.http_timeout_s:g}): pyreqwest goes on "
            "with a request the drain cancels until HTTP_TIMEOUT_S, so it can land after the next owner's "
            "newer one for the same visit; raise it (and the pod's grace period) or use HTTP_CLIENT=aiohttp"
        )
    if s.shutdown_drain_s < MIN_SHUTDOWN_DRAIN_S:
        problems.append(
            f"SHUTDOWN_DRAIN_S: must be at least {MIN_SHUTDOWN_DRAIN_S:g} s (got {s.shutdown_drain_s:g}): "
            f"its last {CLOSE_RESERVE_S:g} s are kept for the final commit and leaving the group; "
            "shorter, the pod may be killed before the member left (its partitions then wait for "
            "session.timeout.ms)"
        )
    return problems


def semantic_problems(s: Settings, require_kafka: bool, require_credentials: bool) -> list[str]:
    """Every problem of a typed Settings, one line each (the typed fields are already valid)."""
    problems: list[str] = _guarantee_problems(s.kafka_properties)
    problems.extend(_deadline_problems(s))
    if require_kafka and not s.kafka_bootstrap_servers:
        problems.append("KAFKA_BOOTSTRAP_SERVERS: required (comma-separated host:port list)")
    single_set_required = require_credentials and (not s.lp_credentials_dir or s.lp_account is not None)
    if require_credentials and s.lp_credentials_dir:
        problems.extend(_directory_problems(s))
    for name in SECRET_FIELDS if single_set_required else ():
        if name in s.credential_files:
            continue  # an unreadable file is reported where it is read
        if getattr(s, name) is None or not getattr(s, name).get_secret_value():
            problems.append(f"{name.upper()}: required (set it or {name.upper()}_FILE)")
    problems.extend(_topic_list_problems(s))
    problems.extend(_topic_name_problems(s))
    problems.extend(input_format_problems(s))
    if s.dlq_topic in s.topics:
        problems.append("DLQ_TOPIC: must differ from the lead, service and event topics")
    if s.park_topic and (s.park_topic in s.topics or s.park_topic == s.dlq_topic):
        problems.append("PARK_TOPIC: must differ from the lead, service, event and dead-letter topics")
    if s.lp_base_url and s.lp_domain:
        problems.append("LP_BASE_URL/LP_DOMAIN: set one of them, not both")
    if s.lp_base_url and not s.lp_base_url.startswith(("http://", "https://")):
        problems.append(f"LP_BASE_URL: must start with https:// (got {mask_url(s.lp_base_url)!r})")
    elif s.lp_base_url and (problem := base_url_problem(s.lp_base_url)):
        problems.append(f"LP_BASE_URL: {problem} (got {mask_url(s.lp_base_url)!r})")
    if s.lp_domain and (problem := base_url_problem(f"{s.lp_scheme}://{s.lp_domain}")):
        problems.append(f"LP_DOMAIN: {problem} (got {s.lp_domain!r})")
    if s.http_ca_file and (problem := _ca_file_problem(s.http_ca_file)):
        problems.append(f"HTTP_CA_FILE: {problem} (got {s.http_ca_file!r})")
    if s.ssl_cert_file and (problem := _ca_file_problem(s.ssl_cert_file)):
        problems.append(f"SSL_CERT_FILE: {problem} (got {s.ssl_cert_file!r})")
    problems.extend(_ca_dir_problems(s.ssl_cert_dir or ""))
    if s.retry_max_backoff_s < s.retry_initial_s:
        problems.append("RETRY_MAX_BACKOFF_S: must be >= RETRY_INITIAL_S")
    try:
        parse_status_policy(s.status_policy)
    except ValueError as exc:
        problems.append(f"STATUS_POLICY: {exc}")
    return problems


def _topic_lists(s: Settings) -> dict[str, list[str]]:
    """Each topic setting (LEAD_TOPICS, ..., the eight other types', EVENT_TOPICS) and its topics."""
    named = {ATTRIBUTES[kind].setting: topics for kind, topics in s.typed_topics.items()}
    return {**named, "EVENT_TOPICS": s.event_topics}


def _topic_list_problems(s: Settings) -> list[str]:
    """At least one topic; no topic in two lists (the list a topic is in decides its type)."""
    lists = _topic_lists(s)
    if not any(lists.values()):
        return ["LEAD_TOPICS/SERVICE_TOPICS/.../EVENT_TOPICS: at least one topic is required"]
    problems: list[str] = []
    seen: dict[str, str] = {}
    for var, topics in lists.items():
        for topic in topics:
            first = seen.setdefault(topic, var)
            if first != var and var == "EVENT_TOPICS":
                problems.append(f"EVENT_TOPICS: a topic cannot also be in {first}: {topic}")
            elif first != var:
                problems.append(f"{first}/{var}: a topic cannot be both: {topic}")
    return problems


def _topic_name_problems(s: Settings) -> list[str]:
    """Topics that are not plain Kafka topic names: a `^` pattern would subscribe by regex."""
    problems: list[str] = []
    named = _topic_lists(s)
    for var, topics in {**named, "DLQ_TOPIC": [s.dlq_topic]}.items():
        for topic in topics:
            if topic.startswith("^"):
                problems.append(
                    f"{var}: {topic!r} is a regex subscription, which is not supported: each topic's "
                    "attribute type comes from the list it is in, so name every topic"
                )
            elif not _TOPIC_NAME.fullmatch(topic):
                problems.append(f"{var}: {topic!r} is not a Kafka topic name (1-249 of a-z A-Z 0-9 . _ -)")
    return problems


def _ca_file_problem(path: str) -> str | None:
    """Why the PEM bundle at `path` cannot be trusted as CAs (unreadable, no certificate), or None."""
    try:
        ssl.create_default_context().load_verify_locations(cafile=path)
    except FileNotFoundError:
        return "no such file"
    except ssl.SSLError:  # an OSError too: first
        return "no PEM certificate in it"
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    return None


def _ca_dir_problems(dirs: str) -> list[str]:
    """SSL_CERT_DIR's directories that are missing or hold no PEM certificate (OpenSSL and rustls
    would skip them in silence, and every request to a private CA's server fail as untrusted)."""
    problems = []
    for name in filter(None, dirs.split(os.pathsep)):
        folder = Path(name)
        if not folder.is_dir():
            problems.append(f"SSL_CERT_DIR: no such directory (got {name!r})")
        elif not any(_holds_certificate(f) for f in sorted(folder.iterdir())):
            problems.append(f"SSL_CERT_DIR: no PEM certificate in it (got {name!r})")
    return problems


def _holds_certificate(path: Path) -> bool:
    """True when the file at `path` begins a PEM certificate in its first 64 KiB."""
    try:
        with path.open("rb") as f:
            return b"-----BEGIN CERTIFICATE-----" in f.read(65536)
    except OSError:  # a directory, unreadable, a dangling link: not a certificate
        return False


def input_format_problems(s: Settings) -> list[str]:
    """One line per unusable input-format setting (FIELD_MAP, TYPE_MAP, TYPE_FIELD, the registry URL)."""
    problems: list[str] = []
    try:
        parse_field_map(s.field_map)
    except ValueError as exc:
        problems.append(f"FIELD_MAP: {exc}")
    try:
        parse_type_map(s.type_map)
    except ValueError as exc:
        problems.append(f"TYPE_MAP: {exc}")
    if s.type_field:
        try:
            parse_path(s.type_field)
        except ValueError as exc:
            problems.append(f"TYPE_FIELD: {exc}")
    if (s.type_field or s.type_map) and not s.event_topics:
        problems.append("TYPE_FIELD/TYPE_MAP: only used with EVENT_TOPICS, which is not set")
    url = s.schema_registry_url
    if url and not all(u.strip().startswith(("http://", "https://")) for u in url.split(",")):
        shown = mask_url(url) if "://" in url else url.rpartition("@")[2]  # never echo a user-info
        problems.append(f"SCHEMA_REGISTRY_URL: must start with http:// or https:// (got {shown!r})")
    return problems
