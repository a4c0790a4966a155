"""Alerts and dashboard use only what the daemon exports, the way its metric types allow.

The metric names come from the daemon's own registry (consumer.ops.metrics.REGISTRY), never from a
copied list. PromQL is not parsed by a real engine here (no promtool in CI): a small scanner
strips strings, label matchers, ranges and grouping clauses, and what is left that is not a
function, keyword or number is a metric name. That is enough to catch a renamed or misspelt
metric, a label a metric does not have, a counter used without rate(), and a gauge inside rate().
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumer.ops.metrics import REGISTRY, exported_names

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "base" / "prometheusrule.yaml"
DASHBOARD = ROOT / "deploy" / "base" / "grafana-dashboard.json"
README = ROOT / "deploy" / "README.md"

# Metrics that are not the daemon's, each with its source and the reason it is used. Nothing else
# may appear in an alert or a panel.
OTHER_METRICS: dict[str, dict[str, Any]] = {
    # Prometheus' own per-target health: the only way to see that no pod is scraped at all.
    "up": {"type": "gauge", "labels": {"job", "namespace", "pod", "instance", "service", "endpoint"}},
    # kube-state-metrics: restarts are invisible from inside the restarted process.
    "kube_pod_container_status_restarts_total": {
        "type": "counter",
        "labels": {"namespace", "pod", "container"},
    },
    # kube-state-metrics: how many replicas KEDA asked for and how many are ready (dashboard only).
    "kube_deployment_status_replicas": {"type": "gauge", "labels": {"namespace", "deployment"}},
    "kube_deployment_status_replicas_ready": {"type": "gauge", "labels": {"namespace", "deployment"}},
}
# Labels Prometheus attaches to every series scraped through the ServiceMonitor.
TARGET_LABELS = {"namespace", "pod", "job", "instance", "service", "endpoint", "container"}

REQUIRED_ALERTS = {
    "EngagementDeadLettersRising",  # dead letters rising
    "EngagementHaltedOnAuth",  # halted on auth
    "EngagementLagGrowing",  # lag growing
    "EngagementErrorRatioHigh",  # error ratio by status
    "EngagementNoProgress",  # no progress
    "EngagementPodRestarting",  # pod restarts
}
# Dashboard content the issue asks for, as the metric each needs.
REQUIRED_PANELS = {
    "throughput by type": "engagement_events_consumed_total",
    "delivered by type": "engagement_attributes_delivered_total",
    "requests by status": "engagement_requests_total",
    "latency percentiles": "engagement_request_duration_seconds_bucket",
    "in-flight": "engagement_inflight_requests",
    "retries": "engagement_retries_total",
    "dead letters by reason": "engagement_dead_letters_total",
    "lag per partition": "engagement_consumer_lag",
    "halted": "engagement_halted",
}

FUNCTIONS_OVER_RANGES_OF_COUNTERS = {"rate", "irate", "increase"}
KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}
AGGREGATIONS = {
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "stddev",
    "stdvar",
    "group",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
}


# --------------------------------------------------------------------------------------------
# What the daemon exports.


def _daemon_metrics() -> dict[str, dict[str, Any]]:
    """Sample name -> {type, labels} from the daemon's registry."""
    labels_by_family: dict[str, set[str]] = {}
    # prometheus_client keeps the label names on the collector; the public collect() only shows
    # them on samples, and a labelled metric has no sample before its first use.
    for collector in list(getattr(REGISTRY, "_collector_to_names", {})):
        names = getattr(collector, "_labelnames", None)
        family = getattr(collector, "_name", None)
        if names is not None and family:
            labels_by_family[family] = set(names)
    out: dict[str, dict[str, Any]] = {}
    for family in REGISTRY.collect():
        labels = labels_by_family.get(family.name)
        if family.type == "counter":
            out[f"{family.name}_total"] = {"type": "counter", "labels": labels}
        elif family.type == "histogram":
            bucket_labels = None if labels is None else labels | {"le"}
            out[f"{family.name}_bucket"] = {"type": "counter", "labels": bucket_labels}
            out[f"{family.name}_sum"] = {"type": "counter", "labels": labels}
            out[f"{family.name}_count"] = {"type": "counter", "labels": labels}
        elif family.type == "gauge":
            out[family.name] = {"type": "gauge", "labels": labels}
        else:  # summaries, info, enums: not used by deploy/ so far
            out[family.name] = {"type": family.type, "labels": labels}
    exported = exported_names()
    assert set(out) <= exported, f"the registry and exported_names() disagree: {set(out) - exported}"
    return out


DAEMON = _daemon_metrics()
KNOWN = {**DAEMON, **OTHER_METRICS}


# --------------------------------------------------------------------------------------------
# A PromQL scanner, just enough for the checks.


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENT = re.compile(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)")


def _strip(expr: str) -> str:
    """Expression with strings emptied, selectors' matchers and ranges removed (offsets kept)."""
    out = _STRING.sub('""', expr)
    out = re.sub(r"\{[^}]*\}", "", out)
    return re.sub(r"\[[^\]]*\]", "", out)


def metric_names(expr: str) -> list[tuple[str, int]]:
    """(metric name, offset in the stripped expression) for every metric the expression reads."""
    stripped = _strip(expr)
    blanked = _GROUPING.sub(lambda m: " " * len(m.group(0)), stripped)
    out = []
    for m in _IDENT.finditer(blanked):
        name = m.group(1)
        if name in KEYWORDS or re.match(r"\s*\(", blanked[m.end() :]):
            continue
        out.append((name, m.start()))
    return out


def enclosing_function(blanked: str, pos: int) -> str | None:
    """The function or aggregation whose parentheses contain `pos` (grouping clauses blanked)."""
    depth = 0
    for i in range(pos - 1, -1, -1):
        ch = blanked[i]
        if ch == ")":
            depth += 1
        elif ch == "(":
            if depth == 0:
                m = re.search(r"([a-zA-Z_]\w*)\s*$", blanked[:i])
                return m.group(1) if m else None
            depth -= 1
    return None


def aggregations(expr: str) -> Iterator[tuple[str, set[str], str]]:
    """(operator, `by` labels, argument) for every `agg by (labels) (argument)`."""
    stripped = _STRING.sub('""', expr)
    for m in re.finditer(r"\b(\w+)\s+(by|without)\s*\(([^)]*)\)\s*\(", stripped):
        assert m.group(1) in AGGREGATIONS, f"{m.group(1)} {m.group(2)}(...) is not an aggregation"
        start = m.end()
        depth = 1
        i = start
        while depth:
            depth += {"(": 1, ")": -1}.get(stripped[i], 0)
            i += 1
        labels = {label.strip() for label in m.group(3).split(",") if label.strip()}
        yield m.group(1), labels, stripped[start : i - 1]


def check_expression(expr: str) -> list[str]:
    """Problems with one PromQL expression (empty when fine)."""
    problems = []
    for opening, closing in ("()", "[]", "{}"):
        if _STRING.sub("", expr).count(opening) != _STRING.sub("", expr).count(closing):
            problems.append(f"unbalanced {opening}{closing}")
    if re.search(r"\)\s*(by|without)\s*\(", _STRING.sub("", expr)):
        problems.append("write aggregations as `sum by (...) (...)` (prefix form)")
    stripped = _strip(expr)
    blanked = _GROUPING.sub(lambda m: " " * len(m.group(0)), stripped)
    for name, pos in metric_names(expr):
        if name not in KNOWN:
            problems.append(f"{name}: not exported by the daemon nor in OTHER_METRICS")
            continue
        function = enclosing_function(blanked, pos)
        kind = KNOWN[name]["type"]
        if kind == "counter" and function not in FUNCTIONS_OVER_RANGES_OF_COUNTERS:
            problems.append(f"{name} is a counter: use it inside rate()/increase(), not {function}()")
        if kind == "gauge" and function in FUNCTIONS_OVER_RANGES_OF_COUNTERS:
            problems.append(f"{name} is a gauge: {function}() is for counters (deriv/delta/changes)")
    # Label matchers name labels the metric has.
    for m in _SELECTOR.finditer(expr):
        name, matchers = m.group(1), m.group(2)
        labels = KNOWN.get(name, {}).get("labels")
        if labels is None:
            continue
        for label, _op in _MATCHER.findall(matchers):
            if label not in labels | TARGET_LABELS:
                problems.append(f"{name} has no label {label!r} (has {sorted(labels)})")
    # `sum by (x)` only groups by labels every metric in the argument has.
    for op, by, argument in aggregations(expr):
        for name, _ in metric_names(argument):
            labels = KNOWN.get(name, {}).get("labels")
            if labels is None:
                continue
            missing = by - labels - TARGET_LABELS
            if missing:
                problems.append(f"{op} by {sorted(by)} over {name}, which has no {sorted(missing)}")
    return problems


# --------------------------------------------------------------------------------------------
# The rules.


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["spec"]["groups"] for rule in group["rules"]]


def test_the_scanner_catches_mistakes() -> None:
    """The checks below are only as good as this scanner: show it failing on purpose."""
    assert check_expression("sum by (type) (rate(engagement_events_consumed_total[5m]))") == []
    assert any("not exported" in p for p in check_expression("rate(engagement_event_consumed_total[5m])"))
    assert any("counter" in p for p in check_expression("sum(engagement_requests_total)"))
    assert any("gauge" in p for p in check_expression("rate(engagement_consumer_lag[5m])"))
    assert any("no label" in p for p in check_expression('engagement_halted{reason="x"}'))
    assert any(
        "has no" in p for p in check_expression("sum by (status) (rate(engagement_retries_total[5m]))")
    )
    assert any("unbalanced" in p for p in check_expression("sum(rate(engagement_retries_total[5m])"))
    assert any("prefix" in p for p in check_expression("sum(rate(engagement_retries_total[5m])) by (reason)"))
    assert {n for n, _ in metric_names('absent(up{job="x"} == 1) or vector(0)')} == {"up"}
    if all(v["labels"] is None for v in DAEMON.values()):
        pytest.fail("no label names found on the registry's collectors (prometheus_client changed?)")


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_expression_uses_exported_metrics(rule: dict[str, Any]) -> None:
    assert check_expression(rule["expr"]) == []


def test_required_alerts_with_runbooks() -> None:
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), "duplicate alert names"
    assert set(names) >= REQUIRED_ALERTS, f"missing alerts: {REQUIRED_ALERTS - set(names)}"
    readme = README.read_text()
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        for key in ("summary", "description", "runbook"):
            assert len(rule["annotations"].get(key, "").strip()) > 20, f"{rule['alert']}: {key} too thin"
        assert re.search(rf"^#+ .*`?{rule['alert']}`?", readme, re.M), (
            f"no runbook section for {rule['alert']} in README"
        )
        assert re.fullmatch(r"\d+[smh]", rule["for"]), f"{rule['alert']}: for {rule['for']!r}"


# --------------------------------------------------------------------------------------------
# The dashboard.


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dash["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def dashboard_expressions() -> list[tuple[str, str]]:
    dash = dashboard()
    out = []
    for panel in panels(dash):
        for target in panel.get("targets", []):
            out.append((f"{panel['title']} [{target['refId']}]", target["expr"]))
    for var in dash["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
        assert m, f"variable {var['name']}: only label_values(metric, label) queries are checked"
        out.append((f"${var['name']}", m.group(1)))
        assert not check_expression(f"sum by ({m.group(2)}) ({m.group(1)})")
    return out


@pytest.mark.parametrize(("where", "expr"), dashboard_expressions(), ids=lambda v: v if "(" not in v else "")
def test_dashboard_expression_uses_exported_metrics(where: str, expr: str) -> None:
    assert check_expression(expr) == [], where


def test_dashboard_shape() -> None:
    dash = dashboard()
    assert dash["uid"] == "engagement-consumer" and dash["title"]
    every = panels(dash)
    ids = [p["id"] for p in every]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource", "no hard-wired data source"
    used = set()
    for panel in every:
        if panel["type"] == "row":
            continue
        assert panel.get("description"), f"{panel['title']}: say what the panel shows"
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= set(grid) and grid["x"] + grid["w"] <= 24, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            names = {n for n, _ in metric_names(target["expr"])}
            used |= names
            if names & set(DAEMON):
                assert 'namespace=~"$namespace"' in target["expr"], f"{panel['title']}: filter by $namespace"
    for what, metric in REQUIRED_PANELS.items():
        assert metric in used, f"no panel shows {what} ({metric})"


def test_every_daemon_metric_is_on_the_dashboard() -> None:
    used = {n for _, e in dashboard_expressions() for n, _ in metric_names(e)}
    families = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in used}
    missing = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in DAEMON} - families
    assert not missing, f"daemon metrics nobody looks at: {missing}"
