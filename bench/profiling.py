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
    ("consumer/liveperson/transport", "consumer: HTTP transport"),
    ("consumer/liveperson", "consumer: client (URL, send, Reply)"),
    ("consumer/values/reply", "consumer: client (URL, send, Reply)"),
    ("consumer/accounts/limiter", "consumer: limiter"),
    ("consumer/delivery", "consumer: dispatcher (lanes, outcomes)"),
    ("consumer/accounts", "consumer: accounts (slots, pacing, halt)"),
    ("consumer/app", "consumer: app (on_messages)"),
    ("consumer/formats", "consumer: parse/encode events"),
    ("consumer/kafka/source", "consumer: Kafka poll thread"),
    ("consumer/kafka/offset", "consumer: offset tracker"),
    ("consumer/", "consumer: other"),
    ("prometheus_client", "prometheus_client"),
    ("structlog", "structlog / logging"),
    ("logging", "structlog / logging"),
    ("aiohttp", "aiohttp"),
    ("pyreqwest", "pyreqwest"),
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


# Where the CPU of an event goes (the list). A sample counts for the innermost frame of its
# stack that belongs to a stage (a stdlib frame counts for its caller's stage: `secrets.token_hex`
# under the signer is signing, `asyncio.wait_for` under a lane is the lane's wait). Path fragments
# are matched against the frame's file, function names (`name (`) against the frame itself.
STAGES = (
    ("prometheus_client", "metrics (prometheus-client counters, histograms)"),
    ("structlog", "logging (structlog)"),
    ("logging/", "logging (structlog)"),
    ("consumer/liveperson/oauth", "OAuth signing"),
    ("aiohttp", "HTTP client (aiohttp, yarl, multidict)"),
    ("yarl", "HTTP client (aiohttp, yarl, multidict)"),
    ("multidict", "HTTP client (aiohttp, yarl, multidict)"),
    ("propcache", "HTTP client (aiohttp, yarl, multidict)"),
    ("pyreqwest", "HTTP client (pyreqwest)"),
    ("consumer/liveperson/transport", "HTTP client (transport adapter)"),
    ("consumer/liveperson", "client: URL, Reply, send"),
    ("consumer/values/reply", "client: URL, Reply, send"),
    ("consumer/accounts/", "limiter and slots (account, limiter, fair slots, pacer)"),
    ("consumer/delivery/", "lanes: tasks, waits, outcomes (dispatcher)"),
    ("consumer/formats/", "parsing (reader, events) and encoding"),
    ("consumer/kafka/offset", "offset tracking"),
    ("consumer/kafka/", "Kafka poll and hand-over (source, thread)"),
    ("confluent_kafka", "Kafka poll and hand-over (source, thread)"),
    ("threading", "Kafka poll and hand-over (source, thread)"),
    ("consumer/app", "intake: messages -> records (app.on_messages)"),
    ("consumer/ops", "ops (health, metrics glue)"),
)
LOOP_PY = "event loop (asyncio in Python, called by no stage above)"
LOOP_C = "event loop (uvloop in C: I/O, callbacks, task steps)"


def _stage(stack: str) -> str:
    frames = stack.split(";")
    for frame in reversed(frames):
        for fragment, stage in STAGES:
            if fragment in frame:
                return stage
    if frames[-1].startswith("run (asyncio/runners"):
        return LOOP_C
    if any("asyncio/" in f or "uvloop" in f for f in frames):
        return LOOP_PY
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
    # Every non-idle Python thread, named: the summary keeps the event loop's (MainThread). With
    # `--gil` (only the thread holding the GIL) the loop's time without the GIL was missed: with
    # pyreqwest's runtime thread taking the GIL for every answer, 0.7 s sampled of 1.7 s of CPU.
    cmd += ["--output", str(raw), "--threads"]
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
    for marker in ("site-packages/", "/lib/python3", "/work/main/", "/work/wt/"):
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
    other_threads = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        if stack.startswith("thread ("):  # --threads: keep the event loop's thread only
            thread, _, stack = stack.partition(";")
            if "MainThread" not in thread:
                other_threads += n
                continue
            if not stack:
                continue
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
        "other_thread_samples": other_threads,
        "rate_hz": RATE_HZ,
        "self": self_counts.most_common(top),
        "inclusive": incl_counts.most_common(top),
        "areas": areas.most_common(),
        "stages": stages.most_common(),
    }
