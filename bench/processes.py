"""The processes a scenario runs: the daemon (sampled every 0.5 s) and the stand-in API server(s)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from consumer.sandbox.broker import free_port

SAMPLE_S = 0.5
DAEMON_COMMAND = [sys.executable, "-m", "consumer", "run"]  # experiments may wrap the daemon
SCRAPED = (
    "engagement_inflight_requests",
    "engagement_concurrency_limit",
    "engagement_attributes_delivered_total",
    "engagement_requests_total",
)


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET a loopback URL: (status, body); (0, b"") when it is not reachable."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def parse_metrics(text: str) -> dict[str, float]:
    """The scraped families summed over their labels (429s kept apart as `..._429`)."""
    out = dict.fromkeys(SCRAPED, 0.0)
    out["engagement_requests_total_429"] = 0.0
    for line in text.splitlines():
        if not line.startswith("engagement_"):
            continue
        key, _, value = line.rpartition(" ")
        name = key.partition("{")[0]
        if name in out:
            out[name] += float(value)
            if name == "engagement_requests_total" and 'status="429"' in key:
                out["engagement_requests_total_429"] += float(value)
    return out


def peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM) in bytes, 0 if unknown."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


@dataclass
class Sample:
    """One 0.5 s sample of the daemon: time, CPU seconds, RSS and the scraped metrics."""

    t: float
    cpu_s: float
    rss: int
    metrics: dict[str, float] = field(default_factory=dict)


class DaemonProcess:
    """`python -m consumer run` with a given environment; a thread samples it every 0.5 s."""

    def __init__(self, env: dict[str, str], log_path: Path, command: list[str] | None = None) -> None:
        self.http_port = int(env["HTTP_PORT"])
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            command or DAEMON_COMMAND,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.ps = psutil.Process(self.proc.pid)
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_loop, name="daemon-sampler", daemon=True)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait for /readyz 200 (joined the group, session open)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}; see {self.log_path}")
            if http_get(f"http://127.0.0.1:{self.http_port}/readyz")[0] == 200:
                return
            time.sleep(0.05)
        raise TimeoutError(f"daemon not ready within {timeout}s; see {self.log_path}")

    def cpu_s(self) -> float:
        """User + system CPU seconds of the daemon so far (every thread)."""
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def thread_cpu(self) -> dict[str, float]:
        """CPU seconds by kind of thread: the event loop (main), librdkafka's (rdk:*), other Python ones."""
        out = {"main": 0.0, "librdkafka": 0.0, "other threads": 0.0}
        for t in self.ps.threads():
            comm = ""
            with contextlib.suppress(OSError):
                comm = Path(f"/proc/{self.proc.pid}/task/{t.id}/comm").read_text().strip()
            kind = (
                "main"
                if t.id == self.proc.pid
                else "librdkafka"
                if comm.startswith("rdk:")
                else "other threads"
            )
            out[kind] += t.user_time + t.system_time
        return out

    def start_sampling(self) -> None:
        """Start the 0.5 s sampler."""
        self._thread.start()

    def sample(self) -> Sample:
        """Take one sample now."""
        status, body = http_get(f"http://127.0.0.1:{self.http_port}/metrics")
        metrics = parse_metrics(body.decode()) if status == 200 else {}
        return Sample(time.time(), self.cpu_s(), self.ps.memory_info().rss, metrics)

    def _sample_loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                self.samples.append(self.sample())
            next_at += SAMPLE_S
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, wait for the exit code (SIGKILL after `timeout`)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)
        finally:
            self._log.close()

    def stopped_summary(self) -> dict[str, Any]:
        """The daemon's `stopped` log line (counts, drained), {} if absent."""
        for line in reversed(self.log_path.read_text(errors="replace").splitlines()):
            if '"stopped"' in line:
                with contextlib.suppress(ValueError):
                    return dict(json.loads(line))
        return {}


class APIServers:
    """N stand-in API processes sharing one port (SO_REUSEPORT), each with its own control port."""

    def __init__(self, count: int, args: list[str], log_dir: Path) -> None:
        self.port = free_port()
        self.control_ports = [free_port() for _ in range(count)]
        self.procs: list[subprocess.Popen[bytes]] = []
        for i, control in enumerate(self.control_ports):
            log = open(log_dir / f"api-{i}.log", "wb")  # noqa: SIM115
            cmd = [sys.executable, "-m", "bench.api_server", "--port", str(self.port)]
            cmd += ["--control-port", str(control), "--reuse-port", *args]
            self.procs.append(
                subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env_with_repo())
            )
        deadline = time.monotonic() + 20
        for control in self.control_ports:
            while http_get(f"http://127.0.0.1:{control}/bench/stats")[0] != 200:
                if time.monotonic() > deadline:
                    raise TimeoutError("stand-in API did not start")
                time.sleep(0.05)

    @property
    def base_url(self) -> str:
        """The API base URL for LP_BASE_URL."""
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> list[dict[str, Any]]:
        """Every server's figures."""
        out = []
        for control in self.control_ports:
            status, body = http_get(f"http://127.0.0.1:{control}/bench/stats", timeout=10)
            if status == 200:
                out.append(json.loads(body))
        return out

    def attributes_ok(self) -> int:
        """Attributes answered 2xx so far, over every server."""
        total = 0
        for control in self.control_ports:
            status, body = http_get(f"http://127.0.0.1:{control}/bench/stats?brief=1")
            if status == 200:
                total += json.loads(body)["attributes_ok"]
        return total

    def stop(self) -> None:
        """SIGTERM every server and wait."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def env_with_repo(env: dict[str, str] | None = None) -> dict[str, str]:
    """`env` (default: ours) with the repository root on PYTHONPATH, so `-m bench.*` imports."""
    env = dict(os.environ if env is None else env)
    root = str(Path(__file__).resolve().parent.parent)
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = f"{root}{os.pathsep}{path}" if path else root
    return env
