"""Configuration: typed settings (secrets masked), the checks beyond types, loading from the environment."""

from consumer.config.load import load_settings
from consumer.config.settings import (
    CLOSE_RESERVE_S,
    EVENT,
    INPUT_SECRETS,
    MIN_SHUTDOWN_DRAIN_S,
    SECRET_FIELDS,
    Settings,
)

__all__ = [
    "CLOSE_RESERVE_S",
    "EVENT",
    "INPUT_SECRETS",
    "MIN_SHUTDOWN_DRAIN_S",
    "SECRET_FIELDS",
    "Settings",
    "load_settings",
]
