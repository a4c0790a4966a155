"""The Grafana dashboard's queries as Grafana sends them to Prometheus: variables substituted."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "base" / "grafana-dashboard.json"
_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]")


@dataclass(frozen=True)
class Target:
    """One query of a panel."""

    panel: str  # the panel's title
    ref: str  # its refId
    expr: str  # as written, variables unsubstituted
    legend: str  # legendFormat ("" when none)

    @property
    def where(self) -> str:
        """`title [refId]`, for messages."""
        return f"{self.panel} [{self.ref}]"


def dashboard() -> dict[str, Any]:
    """The dashboard JSON."""
    dash: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dash


def panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, the ones inside collapsed rows included."""
    out = []
    for panel in dash["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def targets(dash: dict[str, Any]) -> list[Target]:
    """Every panel query."""
    return [
        Target(panel["title"], t["refId"], t["expr"], t.get("legendFormat", ""))
        for panel in panels(dash)
        for t in panel.get("targets", [])
    ]


def label_values_queries(dash: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(variable, series selector, label) of every `label_values(selector, label)` query variable."""
    out = []
    for var in dash["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
        assert m, f"variable {var['name']}: only label_values(selector, label) queries are run"
        out.append((var["name"], m.group(1), m.group(2)))
    return out


def duration(seconds: float) -> str:
    """A Prometheus duration for a number of seconds ("4s", "1500ms")."""
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{int(seconds * 1000)}ms"


def interpolate(expr: str, variables: dict[str, str], scrape_s: float = 15, interval_s: float = 15) -> str:
    """`expr` as Grafana sends it: dashboard variables from `variables`, `$__interval` and
    `$__rate_interval` (max(interval + scrape interval, 4 x scrape interval)) from the data source's
    scrape interval and the panel's interval; an unknown variable fails."""
    builtins = {
        "__interval": duration(interval_s),
        "__interval_ms": str(int(interval_s * 1000)),
        "__rate_interval": duration(max(interval_s + scrape_s, 4 * scrape_s)),
    }

    def value(m: re.Match[str]) -> str:
        name = next(g for g in m.groups() if g)
        known = {**builtins, **variables}
        assert name in known, f"${name}: a variable the dashboard does not define, in {expr!r}"
        return known[name]

    return _VARIABLE.sub(value, expr)
