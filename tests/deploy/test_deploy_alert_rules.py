"""The alert rules through promtool: they load, and every alert passes its unit tests.

The rule groups of deploy/base/prometheusrule.yaml are extracted into a plain rule file next to a
copy of promtool/alerts_test.yaml (every alert: fires after its `for` with the labels and
annotations its runbook names; silent while pending, on healthy series, just below its threshold).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from exported import KNOWN
from promserver import binary, rule_groups, write_yaml

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(60)]

UNIT_TESTS = Path(__file__).parent / "promtool" / "alerts_test.yaml"
RULES = rule_groups()["groups"][0]["rules"]
ALERTS = [rule["alert"] for rule in RULES]


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run promtool in `cwd` (the skip or CI failure when it is missing comes from `binary`)."""
    return subprocess.run(
        [binary("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=50, check=False
    )


def unit_tests() -> list[dict[str, Any]]:
    """The test groups of promtool/alerts_test.yaml."""
    tests: list[dict[str, Any]] = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    return tests


def workdir(tmp_path: Path, rules: dict[str, Any]) -> Path:
    """`rules` as rules.yaml beside a copy of the unit tests, in `tmp_path`."""
    write_yaml(tmp_path / "rules.yaml", rules)
    shutil.copy(UNIT_TESTS, tmp_path / "alerts_test.yaml")
    return tmp_path


def test_promtool_check_rules(tmp_path: Path) -> None:
    result = promtool("check", "rules", "rules.yaml", cwd=workdir(tmp_path, rule_groups()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout, result.stdout


def test_every_alert_passes_its_promtool_unit_tests(tmp_path: Path) -> None:
    result = promtool("test", "rules", "alerts_test.yaml", cwd=workdir(tmp_path, rule_groups()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout, result.stdout


def test_every_alert_has_tests_where_it_fires_and_where_it_is_silent() -> None:
    """A firing case with its labels and annotations, and a silent one, for every shipped alert."""
    firing: set[str] = set()
    silent: set[str] = set()
    for group in unit_tests():
        for case in group.get("alert_rule_test", []):
            assert case["alertname"] in ALERTS, f"{group['name']}: tests an alert that is not shipped"
            if case.get("exp_alerts"):
                firing.add(case["alertname"])
                for alert in case["exp_alerts"]:
                    assert {"summary", "description", "runbook"} <= set(alert["exp_annotations"])
                    assert alert["exp_labels"]["severity"], group["name"]
            else:
                silent.add(case["alertname"])
    assert firing == set(ALERTS), f"never seen firing: {set(ALERTS) - firing}"
    assert silent == set(ALERTS), f"never seen silent: {set(ALERTS) - silent}"


def test_unit_tests_feed_only_series_the_daemon_exports() -> None:
    """Input series are named as the daemon exports them (or `up`, kube-state-metrics): an alert on a
    name nobody exports cannot fire in its test."""
    for group in unit_tests():
        for series in group["input_series"]:
            name = series["series"].split("{", 1)[0].strip()
            assert name in KNOWN, f"{group['name']}: {name} is not exported by the daemon"


@pytest.mark.parametrize(
    "name", sorted(n for n in KNOWN if any(re.search(rf"\b{n}\b", r["expr"]) for r in RULES))
)
def test_a_renamed_metric_fails_the_unit_tests(name: str, tmp_path: Path) -> None:
    """Every metric an alert reads carries its tests: renamed in the expressions, some test fails."""
    rules = rule_groups()
    for rule in rules["groups"][0]["rules"]:
        rule["expr"] = re.sub(rf"\b{name}\b", f"{name}_renamed", rule["expr"])
    result = promtool("test", "rules", "alerts_test.yaml", cwd=workdir(tmp_path, rules))
    readers = [r["alert"] for r in RULES if re.search(rf"\b{name}\b", r["expr"])]
    assert result.returncode != 0, f"renaming {name} failed no test of {readers}"
    output = result.stdout + result.stderr
    assert any(f"alertname: {alert}" in output for alert in readers), output
