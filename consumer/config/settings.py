"""Typed settings from the environment: `*_FILE` secrets, `KAFKA_*` pass-through, one line per problem."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from consumer.config.credentials import Credentials
from consumer.config.policy import StatusPolicy, parse_status_policy
from consumer.util.urls import mask_url
from consumer.values.attributes import ATTRIBUTES

CommaList = Annotated[list[str], NoDecode]

# Secrets of the input side (read from `*_FILE` too, masked when printed; not OAuth credentials).
# Of SHUTDOWN_DRAIN_S, what is kept for the final commit, leaving the group and closing the consumer
# (the drain gets the rest, at least 0.5 s): a shorter SHUTDOWN_DRAIN_S cannot be kept.
CLOSE_RESERVE_S = 3.0
MIN_SHUTDOWN_DRAIN_S = CLOSE_RESERVE_S
# The single set of OAuth 1.0 credentials (LP_*), as Settings fields.
SECRET_FIELDS = ("lp_consumer_key", "lp_consumer_secret", "lp_access_token", "lp_access_token_secret")
INPUT_SECRETS = ("schema_registry_basic_auth_user_info",)
DEFAULT_TOKEN_PATH = "/sentinel/api/v2/account/{account}/app/token?v=2.0"  # LP_SENTINEL_TOKEN_PATH
EVENT = "event"  # the kind of an EVENT_TOPICS topic: each event's type comes from the event itself

# KAFKA_* variables that are ours, not librdkafka properties.
_OWN_KAFKA = {"KAFKA_BOOTSTRAP_SERVERS", "KAFKA_GROUP_ID"}
# librdkafka properties whose values are secrets (masked when printed).
_SECRET_HINTS = ("password", "secret", "key", "token", "credential")
# sasl.* properties that carry no secret; every other sasl.* value is masked (free-form ones such
# as sasl.oauthbearer.config or .extensions may hold a client secret).
_SASL_PLAIN = frozenset(
    {
        "sasl.mechanism",
        "sasl.mechanisms",
        "sasl.username",
        "sasl.kerberos.service.name",
        "sasl.kerberos.principal",
        "sasl.oauthbearer.method",
        "sasl.oauthbearer.scope",
        "sasl.oauthbearer.client.id",
    }
)
# Consumer-only librdkafka properties not passed to the dead-letter producer.
_CONSUMER_ONLY = (
    "group.",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "auto.offset.reset",
    "enable.auto.commit",
    "auto.commit.interval.ms",
    "enable.auto.offset.store",
    "partition.assignment.strategy",
    "fetch.",
    "queued.",
    "isolation.level",
    "check.crcs",
    "enable.partition.eof",
)


QUEUED_MAX_MESSAGES_KBYTES = 4096  # the consumer's prefetch bound (librdkafka's default: 65536)


class Settings(BaseSettings):
    """Everything the daemon reads at start; names are the environment variables, lower-cased."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, frozen=True)

    kafka_bootstrap_servers: str | None = None
    kafka_group_id: str = "engagement-attributes"
    kafka_properties: dict[str, str] = Field(default_factory=dict)
    lead_topics: CommaList = ["engagement.leads"]
    service_topics: CommaList = ["engagement.services"]
    # The other eight types LivePerson documents: one topic list each (consumer.values.attributes).
    error_topics: CommaList = []
    searchinfo_topics: CommaList = []
    cart_topics: CommaList = []
    purchase_topics: CommaList = []
    prodview_topics: CommaList = []
    ctmrinfo_topics: CommaList = []
    mrktinfo_topics: CommaList = []
    personal_topics: CommaList = []
    dlq_topic: str = "engagement.dlq"
    park_topic: str = "engagement.park"
    park_max_age_s: float = Field(259200.0, gt=0)
    event_topics: CommaList = []
    type_field: str = ""
    type_map: str = ""
    field_map: str = ""
    schema_registry_url: str | None = None
    schema_registry_basic_auth_user_info: SecretStr | None = None
    schema_registry_timeout_s: float = Field(5.0, gt=0)

    lp_base_url: str | None = None
    lp_domain: str | None = None
    lp_domain_api_url: str = "https://api.liveperson.net"
    lp_scheme: Literal["https", "http"] = "https"
    lp_domain_cache_ttl_s: float = Field(3600.0, gt=0)
    lp_consumer_key: SecretStr | None = None
    lp_consumer_secret: SecretStr | None = None
    lp_access_token: SecretStr | None = None
    lp_access_token_secret: SecretStr | None = None
    credential_files: dict[str, str] = Field(default_factory=dict)
    lp_account: str | None = None
    lp_credentials_dir: str | None = None
    lp_any_account_ids_max: int = Field(1000, ge=1)  # account ids the single set keeps apart at once
    lp_pause_file: str | None = None  # while this file exists, the single-set LP_* account(s) are paused
    lp_sentinel_url: str | None = None
    lp_sentinel_token_path: str = DEFAULT_TOKEN_PATH
    credentials_recheck_s: float = Field(1.0, gt=0)
    domain_failure_ttl_s: float = Field(5.0, ge=0)

    max_in_flight: int = Field(64, ge=1, le=4096)
    max_in_flight_per_account: int | None = Field(None, ge=1, le=4096)
    rate_limit_per_account: float | None = Field(None, gt=0)
    adaptive_concurrency: bool = True
    max_batch_attributes: int = Field(50, ge=1, le=1000)
    max_pending_events: int = Field(20000, ge=10)
    max_pending_per_partition: int = Field(5000, ge=1)
    http_timeout_s: float = Field(10.0, gt=0)
    http_client: Literal["aiohttp", "pyreqwest"] = "pyreqwest"
    http_ca_file: str | None = None
    # The standard trust variables (OpenSSL's): each TLS stack reads them itself; checked at start.
    ssl_cert_file: str | None = None
    ssl_cert_dir: str | None = None  # directories, `:`-separated
    retry_initial_s: float = Field(5.0, gt=0)
    retry_max_backoff_s: float = Field(60.0, gt=0)
    retry_max_elapsed_s: float = Field(900.0, gt=0)
    not_found_retries: int = Field(2, ge=0)
    not_found_backoff_s: float = Field(2.0, ge=0)
    halt_backoff_initial_s: float = Field(5.0, gt=0)
    halt_backoff_max_s: float = Field(300.0, gt=0)
    invalid_account_ttl_s: float = Field(600.0, ge=0)
    status_policy: str = ""
    shutdown_drain_s: float = Field(20.0, gt=0)
    revoke_drain_s: float = Field(10.0, gt=0)
    commit_interval_s: float = Field(1.0, gt=0, le=60)
    offset_map_max_bytes: int = Field(4096, ge=0)
    stats_interval_ms: int = Field(5000, ge=0)

    http_port: int = Field(9102, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"
    # How a visit shows in trace spans (tracing is on with OTEL_EXPORTER_OTLP_ENDPOINT): hash, plain, none.
    trace_visit: Literal["hash", "plain", "none"] = "hash"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Read only what `load_settings` hands over, so a given mapping is the whole truth."""
        return (init_settings,)

    @field_validator(*(t.setting.lower() for t in ATTRIBUTES.values()), "event_topics", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [t.strip() for t in value.split(",") if t.strip()]
        return value

    @field_validator("log_level", "log_format", "trace_visit", "http_client", mode="before")
    @classmethod
    def _case(cls, value: Any, info: Any) -> Any:
        if isinstance(value, str):
            return value.upper() if info.field_name == "log_level" else value.lower()
        return value

    @property
    def topics(self) -> dict[str, str]:
        """Map each subscribed topic to the attribute type it carries (`event`: the event says)."""
        out: dict[str, str] = {}
        for kind, topics in self.typed_topics.items():
            out.update(dict.fromkeys(topics, kind))
        out.update(dict.fromkeys(self.event_topics, EVENT))
        return out

    @property
    def typed_topics(self) -> dict[str, list[str]]:
        """Each attribute type's topic list (LEAD_TOPICS, CART_TOPICS, ...), by type name."""
        return {name: getattr(self, kind.setting.lower()) for name, kind in ATTRIBUTES.items()}

    @property
    def per_account_limit(self) -> int:
        """The ceiling of one account's adaptive limit (MAX_IN_FLIGHT_PER_ACCOUNT, at most MAX_IN_FLIGHT)."""
        return min(self.max_in_flight, self.max_in_flight_per_account or self.max_in_flight)

    @property
    def has_single_set(self) -> bool:
        """True when any of the single-set LP_* OAuth 1.0 credentials is given (value or file)."""
        return bool(self.credential_files) or any(getattr(self, n) is not None for n in SECRET_FIELDS)

    @property
    def policy(self) -> StatusPolicy:
        """The status -> action table (defaults overridden by STATUS_POLICY)."""
        return parse_status_policy(self.status_policy)

    def credentials(self) -> Credentials:
        """Current OAuth credentials, re-read from their `*_FILE`s when those are set (rotation)."""
        values: dict[str, str] = {}
        for name in SECRET_FIELDS:
            path = self.credential_files.get(name)
            if path:
                try:
                    values[name] = Path(path).read_text(encoding="utf-8").strip()
                except UnicodeDecodeError as exc:
                    raise ValueError(f"{name.upper()}_FILE: {path} is not UTF-8 text") from exc
            else:
                secret = getattr(self, name)
                values[name] = secret.get_secret_value() if secret else ""
        return Credentials(
            consumer_key=values["lp_consumer_key"],
            consumer_secret=values["lp_consumer_secret"],
            access_token=values["lp_access_token"],
            access_token_secret=values["lp_access_token_secret"],
        )

    def consumer_config(self) -> dict[str, Any]:
        """librdkafka configuration of the source consumer."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.kafka_bootstrap_servers,
            "group.id": self.kafka_group_id,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            "statistics.interval.ms": self.stats_interval_ms,
            # librdkafka prefetches up to 64 MB by default; the daemon holds at most MAX_PENDING_EVENTS
            # records anyway, so 4 MB ahead keeps it busy (backlog: peak RSS 204 -> 165 MB, the
            # same rate) and pays for pyreqwest's ~20 MB. KAFKA_QUEUED_MAX_MESSAGES_KBYTES overrides it.
            "queued.max.messages.kbytes": QUEUED_MAX_MESSAGES_KBYTES,
        }
        conf.update(self.kafka_properties)
        # The daemon commits itself, every COMMIT_INTERVAL_S, with offset maps in the metadata; it
        # stores nothing, so librdkafka's auto-commit would have nothing to send anyway.
        conf["enable.auto.commit"] = False
        return conf

    def park_reader_config(self) -> dict[str, Any]:
        """librdkafka configuration of the park reader (assign only: no group membership, no commits)."""
        conf = {
            k: v for k, v in self.consumer_config().items() if not k.startswith(("partition.", "statistics."))
        }
        conf["group.id"] = f"{self.kafka_group_id}.park-reader"
        return conf

    def producer_config(self) -> dict[str, Any]:
        """librdkafka configuration of the dead-letter producer (connection settings shared)."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.kafka_bootstrap_servers,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": 30000,
        }
        conf.update({k: v for k, v in self.kafka_properties.items() if not k.startswith(_CONSUMER_ONLY)})
        return conf

    def __repr__(self) -> str:
        return f"Settings({self.masked()!r})"

    __str__ = __repr__

    def masked(self) -> dict[str, Any]:
        """The effective configuration with every secret replaced by `***` (for logs and check-config)."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name in SECRET_FIELDS or name in INPUT_SECRETS:
                value = "***" if (value or name in self.credential_files) else None
            elif name == "kafka_properties":
                value = {k: ("***" if _is_secret(k) else mask_url(v)) for k, v in value.items()}
            elif name.endswith("_url") and isinstance(value, str):
                value = mask_url(value)
            out[name] = value
        return out


def _is_secret(prop: str) -> bool:
    if prop.endswith(".url"):
        return False  # an endpoint: shown, with a user-info password masked
    if prop.startswith("sasl.") and prop not in _SASL_PLAIN:
        return True
    return any(h in prop for h in _SECRET_HINTS) and not prop.endswith((".location", ".mechanism"))
