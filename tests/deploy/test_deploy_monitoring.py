"""Alerts and dashboard read only what the daemon exports, the way its metric types allow.

Every alert expression and every dashboard query (variables substituted as Grafana would) is sent
to a real Prometheus server, which must accept it; what it reads comes back through a remote-read
endpoint (promql_reads.py): each selector's metric name, label matchers, the function around it
and the labels of an aggregation directly over it, as Prometheus's own parser saw them. The names,
types and labels they are checked against come from the daemon's registry (exported.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from dashboard import dashboard, interpolate, label_values_queries, panels, targets
from exported import COUNTER_FUNCTIONS, DAEMON, KNOWN, TARGET_LABELS
from promql_reads import ReadRecorder, Selector
from promserver import RULES, PromServer

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(60)]

README = RULES.parents[2] / "deploy" / "README.md"
NAMESPACE = "ns-under-test"  # what $namespace stands for in the dashboard's queries here
VARIABLES = {"namespace": NAMESPACE, "pod": ".*"}  # $pod: "All" (allValue .*)

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


class Reader:
    """A Prometheus server with nothing stored that reports what each query reads."""

    def __init__(self, server: PromServer, recorder: ReadRecorder) -> None:
        self.server, self.recorder = server, recorder

    def query(self, expr: str) -> list[Selector]:
        """What evaluating `expr` reads; fails with Prometheus's error when it refuses the expression."""
        status, answer = self.server.call("query", query=expr)
        assert status == 200 and answer["status"] == "success", f"Prometheus refuses {expr!r}: {answer}"
        return self.recorder.take()

    def series(self, selector: str) -> list[Selector]:
        """What the series API reads for one selector (Grafana's label_values(selector, label))."""
        self.server.data("series", **{"match[]": selector})
        return self.recorder.take()


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reader]:
    """One server for the module, its remote read pointed at a recorder; both stopped after it."""
    recorder = ReadRecorder()
    config = {"remote_read": [{"url": recorder.url, "read_recent": True}]}
    server = PromServer(config, tmp_path_factory.mktemp("prometheus"))
    try:
        yield Reader(server.wait_ready(), recorder)
    finally:
        server.stop()
        recorder.close()


def problems(selectors: list[Selector]) -> list[str]:
    """What is wrong with the selectors an expression reads (empty when fine)."""
    out = []
    if not selectors:
        out.append("reads nothing (is the remote read recorder reached?)")
    for s in selectors:
        sample = KNOWN.get(s.name)
        if sample is None:
            out.append(f"{s.name or s.matchers}: not exported by the daemon nor in OTHER_METRICS")
            continue
        allowed = (sample.labels or frozenset()) | TARGET_LABELS
        for label, _op, _value in s.matchers:
            if label not in allowed:
                out.append(f"{s.name} has no label {label!r} (has {sorted(allowed)})")
        if set(s.grouping) - allowed:
            out.append(f"{s.name} grouped by {sorted(set(s.grouping) - allowed)}, labels it does not have")
        if sample.kind == "counter" and s.function not in COUNTER_FUNCTIONS:
            out.append(f"{s.name} is a counter read by {s.function or 'an operator'}: use rate()/increase()")
        if sample.kind == "gauge" and s.function in COUNTER_FUNCTIONS:
            out.append(f"{s.name} is a gauge: {s.function}() is for counters (deriv/delta/changes)")
    return out


# A mistake of each kind, and what the checks must say about it.
MISTAKES = {
    "rate(engagement_event_consumed_total[5m])": "not exported",
    "sum(engagement_requests_total)": "is a counter",
    "engagement_requests_total > 0": "is a counter",
    "rate(engagement_consumer_lag[5m])": "is a gauge",
    'engagement_halted{reason="x"}': "has no label",
    "max by (status) (engagement_halted)": "grouped by",
}


def test_the_checks_catch_mistakes(reader: Reader) -> None:
    """The checks below are only as good as what comes back: show each one failing on purpose."""
    assert problems(reader.query("sum by (type) (rate(engagement_events_consumed_total[5m]))")) == []
    assert problems(reader.query('absent(up{job="x"} == 1) or vector(0)')) == []
    for expr, complaint in MISTAKES.items():
        found = problems(reader.query(expr))
        assert any(complaint in p for p in found), (expr, found)
    status, answer = reader.server.call("query", query="sum(rate(engagement_retries_total[5m])")
    assert status == 400 and answer["errorType"] == "bad_data", answer


# --------------------------------------------------------------------------------------------
# The rules.


def alert_rules() -> list[dict[str, Any]]:
    """The alerting rules of the shipped PrometheusRule."""
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["spec"]["groups"] for rule in group["rules"]]


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_expression_reads_only_what_the_daemon_exports(rule: dict[str, Any], reader: Reader) -> None:
    assert problems(reader.query(rule["expr"])) == []


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


@pytest.fixture(scope="module")
def dashboard_reads(reader: Reader) -> dict[str, list[Selector]]:
    """`title [refId]` (or `$variable`) -> what the query reads, its variables substituted."""
    dash = dashboard()
    out = {t.where: reader.query(interpolate(t.expr, VARIABLES)) for t in targets(dash)}
    for name, selector, _label in label_values_queries(dash):
        out[f"${name}"] = reader.series(interpolate(selector, VARIABLES))
    return out


@pytest.mark.parametrize("where", [t.where for t in targets(dashboard())])
def test_dashboard_query_reads_only_what_the_daemon_exports(
    where: str, dashboard_reads: dict[str, list[Selector]]
) -> None:
    """Each query reads exported metrics the way their types allow, the daemon's filtered by $namespace."""
    assert problems(dashboard_reads[where]) == [], where
    for s in dashboard_reads[where]:
        if s.name in DAEMON:
            assert ("namespace", "=~", NAMESPACE) in s.matchers, f"{where}: {s.name} unfiltered by $namespace"


def test_dashboard_variables(dashboard_reads: dict[str, list[Selector]]) -> None:
    """label_values(selector, label): the selector reads a daemon metric that has the label."""
    for name, _selector, label in label_values_queries(dashboard()):
        assert problems(dashboard_reads[f"${name}"]) == [], name
        for s in dashboard_reads[f"${name}"]:
            assert s.name in DAEMON and label in (DAEMON[s.name].labels or set()) | TARGET_LABELS, name


def test_dashboard_shape(dashboard_reads: dict[str, list[Selector]]) -> None:
    dash = dashboard()
    every = panels(dash)
    assert dash["uid"] == "engagement-consumer" and dash["title"]
    ids = [p["id"] for p in every]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource", "no hard-wired data source"
    for panel in every:
        if panel["type"] == "row":
            continue
        assert panel.get("description"), f"{panel['title']}: say what the panel shows"
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= set(grid) and grid["x"] + grid["w"] <= 24, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
    used = {s.name for selectors in dashboard_reads.values() for s in selectors}
    for what, metric in REQUIRED_PANELS.items():
        assert metric in used, f"no panel shows {what} ({metric})"


def test_every_daemon_metric_is_on_the_dashboard(dashboard_reads: dict[str, list[Selector]]) -> None:
    used = {s.name for selectors in dashboard_reads.values() for s in selectors}
    families = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in used}
    missing = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in DAEMON} - families
    assert not missing, f"daemon metrics nobody looks at: {missing}"
