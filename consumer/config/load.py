"""Loading Settings from the environment: `*_FILE` secrets, `KAFKA_*` pass-through, one line per problem."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from consumer.config.checks import semantic_problems
from consumer.config.settings import _OWN_KAFKA, INPUT_SECRETS, SECRET_FIELDS, Settings
from consumer.errors import ConfigError


def _read_file(var: str, path: str, problems: list[str], *, secret: bool = False) -> str | None:
    try:
        content = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        problems.append(f"{var}: cannot read {path}: {exc.strerror or exc}")
        return None
    except UnicodeDecodeError as exc:
        problems.append(f"{var}: {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at {exc.start})")
        return None
    if secret and not content:
        problems.append(f"{var}: {path} is empty")
        return None
    return content


def load_settings(
    environ: Mapping[str, str] | None = None, *, require_kafka: bool = True, require_credentials: bool = True
) -> Settings:
    """Build Settings from an environment mapping; raise ConfigError with one line per problem."""
    env = dict(os.environ if environ is None else environ)
    problems: list[str] = []
    values: dict[str, Any] = {}
    files: dict[str, str] = {}
    kafka: dict[str, str] = {}
    fields = Settings.model_fields
    for var, raw in env.items():
        upper = var.upper()
        if upper.startswith("KAFKA_") and upper not in _OWN_KAFKA and not upper.endswith("_FILE"):
            kafka[upper[6:].lower().replace("_", ".")] = raw
            continue
        if upper.endswith("_FILE") and upper.startswith(("LP_", "KAFKA_", "SCHEMA_REGISTRY_")):
            base = upper[:-5]
            if base.lower() in SECRET_FIELDS or base.lower() in INPUT_SECRETS:
                files[base.lower()] = raw
                content = _read_file(var, raw, problems, secret=True)
            elif base.startswith("KAFKA_") and base not in _OWN_KAFKA:
                content = _read_file(var, raw, problems)
                if content is not None:
                    kafka[base[6:].lower().replace("_", ".")] = content
                continue
            else:
                continue
            if content is not None:
                values[base.lower()] = content
            continue
        name = var.lower()
        if name in fields and name not in ("kafka_properties", "credential_files"):
            values.setdefault(name, raw)
    values["kafka_properties"] = kafka
    values["credential_files"] = files
    settings: Settings | None = None
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        for err in exc.errors():
            loc = str(err["loc"][0]) if err["loc"] else "?"
            shown = "" if loc in SECRET_FIELDS or loc in INPUT_SECRETS else f" (got {err.get('input')!r})"
            problems.append(f"{loc.upper()}: {err['msg']}{shown}")
            values.pop(loc, None)
        # Check the rest too, so every problem is reported in one go, not one per restart.
        try:
            rest = Settings(**values)
        except ValidationError:
            rest = None
        if rest is not None:
            problems.extend(semantic_problems(rest, require_kafka, require_credentials))
        raise ConfigError(problems) from None
    problems.extend(semantic_problems(settings, require_kafka, require_credentials))
    if problems:
        raise ConfigError(problems)
    return settings
