"""Prometheus's own binaries for the tests: find them, extract the shipped rules, run a server.

The tests that need `promtool` or `prometheus` skip naming the missing binary, except under CI
(`CI=true`), where a missing binary fails them. Debian and Ubuntu ship both in one package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumer.sandbox.broker import free_port

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "base" / "prometheusrule.yaml"
INSTALL = "apt-get install -y prometheus (Debian/Ubuntu: brings prometheus and promtool)"


def binary(name: str) -> str:
    """The path of a Prometheus binary; skips the test naming it, or fails it under CI=true."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} not on PATH; get it with: {INSTALL}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: a missing binary is a failure, not a skip)")
    pytest.skip(message)


def rule_groups(for_: str | None = None) -> dict[str, Any]:
    """The shipped PrometheusRule's rule groups as a rule file; `for_` replaces every `for`."""
    groups = yaml.safe_load(RULES.read_text())["spec"]["groups"]
    if for_ is not None:
        for group in groups:
            for rule in group["rules"]:
                rule["for"] = for_
    return {"groups": groups}


def write_yaml(path: Path, content: dict[str, Any]) -> Path:
    """Write `content` as YAML to `path` (parents created); return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


class PromServer:
    """A Prometheus server on a free loopback port with its own storage, config and log under `workdir`."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "prometheus.log"
        config_path = write_yaml(workdir / "prometheus.yml", config)
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                binary("prometheus"),
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 30.0) -> PromServer:
        """Wait until /-/ready answers 200; fail with the log's tail when it exits or times out."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"prometheus exited:\n{self.logs()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            assert time.monotonic() < deadline, f"prometheus not ready in {timeout}s:\n{self.logs()[-3000:]}"
            time.sleep(0.1)

    def logs(self) -> str:
        """Everything the server logged so far."""
        return self.log_path.read_text(errors="replace")

    def call(self, path: str, **params: Any) -> tuple[int, dict[str, Any]]:
        """GET /api/v1/<path> with query parameters (lists repeat): (HTTP status, decoded JSON answer)."""
        query = urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def data(self, path: str, **params: Any) -> Any:
        """The `data` of a successful API answer; fails naming Prometheus's error otherwise."""
        status, answer = self.call(path, **params)
        assert status == 200 and answer.get("status") == "success", (path, params, status, answer)
        return answer["data"]

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts Prometheus holds now (pending and firing; resolved ones are gone)."""
        alerts: list[dict[str, Any]] = self.data("alerts")["alerts"]
        return alerts

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; close the log."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
