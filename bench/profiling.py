"""Sampling profile of the daemon with py-spy (no pause of the target), summarised by function and area."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RATE_HZ = 100
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")

# Where a file belongs, first match wins (a path fragment -> an area of the report).
AREAS = (
    ("consumer/liveperson/oauth", "consumer: OAuth signing"),
    ("consumer/liveperson", "consumer: client (URL, send, Reply)"),
    ("consumer/dispatch", "consumer: dispatcher (lanes, outcomes)"),
    ("consumer/limiter", "consumer: limiter"),
    ("consumer/app", "consumer: app (on_messages)"),
    ("consumer/events", "consumer: parse/encode events"),
    ("consumer/source", "consumer: Kafka poll thread"),
    ("consumer/offsets", "consumer: offset tracker"),
    ("consumer/", "consumer: other"),
    ("prometheus_client", "prometheus_client"),
    ("structlog", "structlog / logging"),
    ("logging", "structlog / logging"),
    ("aiohttp", "aiohttp"),
    ("yarl", "yarl / multidict"),
    ("multidict", "yarl / multidict"),
    ("asyncio", "asyncio / uvloop"),
    ("uvloop", "asyncio / uvloop"),
    ("confluent_kafka", "confluent_kafka"),
)


_OTHER = "other (stdlib, C, threads)"
# Frames every sample of a thread has (module start, CLI, the loop runner): not worth listing.
_ROOTS = (
    "_run_module_as_main",
    "_run_code",
    "<module>",
    "main (consumer",
    "run_async",
    "run (asyncio/runners",
)
_ROOTS += ("_bootstrap", "run (threading")


# Stages of the pipeline, by what a sample's stack contains, first match wins.
STAGES = (
    ("threading.py", "Kafka poll and dead-letter threads"),
    ("on_messages", "intake: messages -> records -> lanes (app.on_messages)"),
    ("consumer/liveperson/oauth", "OAuth signing"),
    ("events_url", "URL building"),
    ("aiohttp", "HTTP: aiohttp (request, response, connection pool)"),
    ("yarl", "HTTP: aiohttp (request, response, connection pool)"),
    ("consumer/liveperson/client", "client: Reply, metrics"),
    ("consumer/dispatch", "dispatcher: lanes, coalescing, outcomes, limiter"),
    ("consumer/limiter", "dispatcher: lanes, coalescing, outcomes, limiter"),
)


def _stage(stack: str) -> str:
    for fragment, stage in STAGES:
        if fragment in stack:
            return stage
    if stack.rsplit(";", 1)[-1].startswith("run (asyncio/runners"):
        return "event loop (uvloop, in C)"
    return "other"


@dataclass
class Spy:
    """A running py-spy and where it writes."""

    proc: subprocess.Popen[bytes]
    output: Path


def py_spy() -> str | None:
    """The py-spy executable (beside this Python, or on PATH), None if not installed."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def start(pid: int, output: Path) -> Spy | None:
    """Start sampling `pid` (each sample pauses the daemon for a few microseconds); None without py-spy."""
    exe = py_spy()
    if exe is None:
        return None
    raw = output.with_suffix(".raw")
    cmd = [exe, "record", "--pid", str(pid), "--rate", str(RATE_HZ), "--format", "raw"]
    cmd += ["--output", str(raw), "--gil"]  # threads waiting in librdkafka hold no GIL: not sampled
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return Spy(proc, raw)


def stop(spy: Spy) -> dict[str, Any] | None:
    """Stop sampling and summarise (None if py-spy could not attach)."""
    spy.proc.send_signal(signal.SIGINT)
    try:
        spy.proc.wait(30)
    except subprocess.TimeoutExpired:
        spy.proc.kill()
        return None
    if not spy.output.exists():
        return None
    return summarise(spy.output.read_text(errors="replace"))


def _frame(text: str) -> tuple[str, str]:
    m = _FRAME.match(text)
    if not m:
        return text, ""
    return m["func"], m["file"]


def _short(path: str) -> str:
    for marker in ("site-packages/", "/lib/python3", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return path


def _area(path: str) -> str:
    for fragment, area in AREAS:
        if fragment in path:
            return area
    return _OTHER


def summarise(collapsed: str, top: int = 25) -> dict[str, Any]:
    """Self and inclusive samples per function, and self samples per area, from collapsed stacks."""
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        stages[_stage(stack)] += n
        frames = [_frame(f) for f in stack.split(";")]
        names = [f"{func} ({_short(path)})" for func, path in frames]
        self_counts[names[-1]] += n
        for name in set(names):
            if not name.startswith(_ROOTS):
                incl_counts[name] += n
        # The area of a sample: that of its innermost frame in a known area (stdlib -> its caller's).
        areas[next((a for _, p in reversed(frames) if (a := _area(p)) != _OTHER), _OTHER)] += n
    return {
        "samples": total,
        "rate_hz": RATE_HZ,
        "self": self_counts.most_common(top),
        "inclusive": incl_counts.most_common(top),
        "areas": areas.most_common(),
        "stages": stages.most_common(),
    }
