"""A real Prometheus scraping a real run: the shipped alert fires and resolves, the dashboard answers.

The daemon runs on the test broker against the stand-in API; a Prometheus server on loopback scrapes
it every second with the shipped rules (their `for` shortened to 2 s in a copy). One account's key
is revoked: EngagementHaltedOnAuth goes firing in Prometheus's own /api/v1/alerts; every dashboard
query, its variables substituted as Grafana would, is answered, and the panels of the core flow
return series; after the key is rotated the alert resolves.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from dashboard import dashboard, interpolate, label_values_queries, targets
from harness import Daemon, Topics, event, produce, wait_until
from promserver import PromServer, binary, rule_groups, write_yaml

from consumer.config.credentials import Credentials, write_folder

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

GOOD = Credentials("ck-100", "cs-100", "at-100", "ats-100")
FIRST = Credentials("ck-200", "cs-200", "at-200", "ats-200")
ROTATED = Credentials("ck-200b", "cs-200b", "at-200b", "ats-200b")
NAMESPACE, POD = "engagement-test", "engagement-consumer-0"  # the target labels a ServiceMonitor adds
SCRAPE_S = 1
VARIABLES = {"namespace": NAMESPACE, "pod": ".*"}  # $pod: "All"
CORE_PANELS = {  # the panels of the core flow: each must return series during the run
    "Attributes delivered /s",
    "Attributes delivered by type",
    "Requests by status",
    "Consumer lag",
    "Lag per partition",
    "In flight",
    "Dead letters (1h)",
    "Dead letters by reason",
    "Parked events and paused accounts",
    "Oldest parked event, seconds",
    "Parked and brought back /s",
}


def _config(rules: Path, daemon_port: int) -> dict[str, Any]:
    return {
        "global": {
            "scrape_interval": f"{SCRAPE_S}s",
            "scrape_timeout": f"{SCRAPE_S}s",
            "evaluation_interval": "1s",
        },
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": "engagement-consumer",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{daemon_port}"], "labels": {"namespace": NAMESPACE, "pod": POD}}
                ],
            }
        ],
    }


def _halted_alerts(prom: PromServer, *states: str) -> list[dict[str, Any]]:
    """Prometheus's EngagementHaltedOnAuth alerts now in one of `states` (pending, firing)."""
    halted = [a for a in prom.alerts() if a["labels"]["alertname"] == "EngagementHaltedOnAuth"]
    return [a for a in halted if a["state"] in states]


def _range(prom: PromServer, expr: str) -> list[dict[str, Any]]:
    """A range query over the last 20 s at the panel's step, as Grafana asks for a time series."""
    now = time.time()
    data = prom.data("query_range", query=expr, start=now - 20, end=now, step=SCRAPE_S)
    series: list[dict[str, Any]] = data["result"]
    return series


def _expr(panel: str) -> str:
    [expr] = [t.expr for t in targets(dashboard()) if t.panel == panel]
    return expr


def _dashboard_gaps(prom: PromServer) -> list[str]:
    """Core panels without series yet, or with series lacking a label their legend names. Every
    query must be answered and each variable list our target's labels: a refusal fails at once."""
    dash = dashboard()
    for name, selector, label in label_values_queries(dash):
        values = prom.data(f"label/{label}/values", **{"match[]": interpolate(selector, VARIABLES)})
        assert {"namespace": NAMESPACE, "pod": POD}[label] in values, (name, values)
    gaps, answered = [], set()
    for t in targets(dash):
        series = _range(prom, interpolate(t.expr, VARIABLES, scrape_s=SCRAPE_S, interval_s=SCRAPE_S))
        if series:
            answered.add(t.panel)
        for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", t.legend) if t.panel in CORE_PANELS else ():
            gaps += [f"{t.where}: no {label} in {s['metric']}" for s in series if not s["metric"].get(label)]
    assert {t.panel for t in targets(dash)} >= CORE_PANELS, "a core panel was renamed"
    return gaps + [f"{panel}: no series" for panel in sorted(CORE_PANELS - answered)]


def _wait_for_the_dashboard(prom: PromServer) -> None:
    """Poll until _dashboard_gaps finds none (20 s), or fail naming what is still missing."""
    gaps: list[str] = []

    def answered() -> bool:
        gaps[:] = _dashboard_gaps(prom)
        return not gaps

    try:
        wait_until(answered, 20, "the dashboard's core panels", interval=0.5)
    except AssertionError as e:
        raise AssertionError(f"{e}: {gaps}") from None


def _start_daemon(api: Any, daemon_env: Any, start_daemon: Any, creds_dir: Path) -> Daemon:
    """The daemon with accounts 100 and 200 in LP_CREDENTIALS_DIR, both keys valid at the API."""
    for account, creds in (("100", GOOD), ("200", FIRST)):
        write_folder(creds_dir / account, creds)
        api.set_account(account, creds)
    env = daemon_env(api.base_url, LP_CREDENTIALS_DIR=str(creds_dir))
    for key in ("LP_CONSUMER_KEY", "LP_CONSUMER_SECRET", "LP_ACCESS_TOKEN", "LP_ACCESS_TOKEN_SECRET"):
        env.pop(key)
    daemon: Daemon = start_daemon(env)
    return daemon


def test_prometheus_fires_and_resolves_the_halted_account_alert_and_answers_the_dashboard(
    broker, topics: Topics, api, daemon_env, start_daemon, start_prometheus, tmp_path: Path
) -> None:
    """Account 200's key is revoked: its alert fires (account label, runbook), 100 has none; every
    dashboard query is answered with the core panels' series; after rotation the alert resolves."""
    binary("prometheus")  # skip (or fail under CI=true) before starting anything
    creds_dir = tmp_path / "accounts"
    d = _start_daemon(api, daemon_env, start_daemon, creds_dir)
    rules = write_yaml(tmp_path / "rules.yaml", rule_groups(for_="2s"))
    prom = start_prometheus(_config(rules, d.http_port))

    def wave(first: int) -> list[tuple[str, bytes, bytes]]:
        return [
            (topics.leads, f"{a}-v{i % 4}".encode(), event(a, f"{a}-v{i % 4}", topic=f"{a}-e{i}", value=i))
            for i in range(first, first + 20)
            for a in ("100", "200")
        ]

    produce(broker, [*wave(0), (topics.leads, b"bad", b"not json")])
    api.wait_delivered(40)
    api.set_account("200", ROTATED)  # the key the daemon has is revoked
    produce(broker, wave(20))
    wait_until(lambda: _halted_alerts(prom, "firing"), 30, "EngagementHaltedOnAuth firing in Prometheus")
    [alert] = _halted_alerts(prom, "firing")
    assert alert["labels"] == {
        "alertname": "EngagementHaltedOnAuth",
        "severity": "critical",
        "namespace": NAMESPACE,
        "account": "200",
    }
    assert alert["annotations"]["summary"].endswith(f"account 200 in {NAMESPACE}")
    assert "LP_CREDENTIALS_DIR" in alert["annotations"]["runbook"]
    halted = prom.data("query", query=interpolate(_expr("Halted accounts"), VARIABLES))["result"]
    assert [float(s["value"][1]) for s in halted] == [1.0], halted
    probes = d.metric("engagement_account_requests_total", account="200", status="401")
    wait_until(lambda: prom.data("query", query="engagement_parked_events > 0")["result"], 20, "200 parked")
    _wait_for_the_dashboard(prom)

    # The daemon's probes go on, and the halt stays active across them: a `for` of minutes is reachable.
    wait_until(
        lambda: d.metric("engagement_account_requests_total", account="200", status="401") >= probes + 2,
        15,
        "two more probes of 200's revoked key",
    )
    assert [a["activeAt"] for a in _halted_alerts(prom, "firing")] == [alert["activeAt"]]

    write_folder(creds_dir / "200", ROTATED)  # the Secret is rotated: the daemon re-reads its files
    wait_until(lambda: not _halted_alerts(prom, "firing", "pending"), 30, "EngagementHaltedOnAuth resolved")
    wait_until(lambda: sum(1 for v, _ in api.delivered() if v.account == "200") == 40, 30, "200 delivered")
    names = {a["labels"]["alertname"] for a in prom.alerts()}
    assert "EngagementConsumerAbsent" not in names, "the scraped target is not seen as the consumer"
