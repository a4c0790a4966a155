"""The `traces` group: daemon CPU per event with tracing off and on (sampler 1.0, OTLP/HTTP export).

`traces-off` and `traces-on` are the `single` set-up with a producer's `traceparent` header on every
event; `traces-on` exports every span (one `POST` per request: per event here) to a stand-in OTLP/HTTP
receiver in the bench process. The issue's bounds: off <= 1 % CPU per event (what tracing off runs
is the no-op interface, timed here per request against the CPU per event of the off runs), on
<= 10 % against off. `python -m bench.run --only traces` runs the pair in interleaved rounds and
splices this section into RESULTS.md between its markers.
"""

from __future__ import annotations

import statistics
import timeit
from typing import Any

from consumer.formats.events import Visit
from consumer.liveperson.client import Reply
from consumer.ops.tracing import OFF

BEGIN, END = "<!-- traces:begin -->", "<!-- traces:end -->"
ON_BOUND, OFF_BOUND = 0.10, 0.01


def off_path_us(rounds: int = 200_000) -> float:
    """Microseconds per request of what tracing off adds: the delivery and request no-ops (best of 5)."""
    visit, reply, batch = Visit("1234", "v", "s"), Reply(200), [object()]
    account: Any = None

    def one() -> None:
        with OFF.delivery(visit, batch), OFF.request(visit, account) as span:  # type: ignore[arg-type]
            span.reply(reply)

    return min(timeit.Timer(one).repeat(repeat=5, number=rounds)) / rounds * 1e6


def section(results: list[dict[str, Any]], off_us: float | None = None) -> list[str]:
    """The markdown section of the traces pair (empty when its results are not there)."""
    found = {r["name"]: r for r in results if r["scenario"].get("group") == "traces"}
    off, on = found.get("traces-off"), found.get("traces-on")
    if off is None or on is None:
        return []
    rounds = list(zip(off.get("repeats", [off]), on.get("repeats", [on]), strict=False))
    loads = [(r.get("loadavg") or [[0], [0]]) for r in (off, on)]
    lines = [
        BEGIN,
        "## Traces off and on (`traces`)",
        "",
        "The `single` set-up (20,000 single-attribute visits, 50 ms API latency, MAX_IN_FLIGHT 128), every",
        "event with a producer's `traceparent` header. `traces-off`: no OTEL_* variable (OpenTelemetry is",
        "not imported). `traces-on`: OTEL_EXPORTER_OTLP_ENDPOINT at a stand-in OTLP/HTTP receiver in the",
        "bench process, OTEL_TRACES_SAMPLER=traceidratio with 1.0: one `POST` span per request (linked to",
        "the producer; here one per event), exported by the SDK's batch processor. Daemon CPU per",
        "delivered event; rounds interleaved (off, on, off, on, ...) on the shared 2-vCPU machine.",
        "",
        "| round | off: us CPU / event | on: us CPU / event | on vs off (bound +10 %) | spans (on) |",
        "|---|---|---|---|---|",
    ]
    ratios = []
    for i, (a, b) in enumerate(rounds, 1):
        ratio = b["cpu_us_per_attribute"] / a["cpu_us_per_attribute"] - 1
        ratios.append(ratio)
        lines.append(
            f"| {i} | {a['cpu_us_per_attribute']:.0f} | {b['cpu_us_per_attribute']:.0f} | {ratio:+.1%} | |"
        )
    off_cpu, on_cpu = off["cpu_us_per_attribute"], on["cpu_us_per_attribute"]
    median = statistics.median(ratios) if ratios else on_cpu / off_cpu - 1
    spans = on.get("spans_received")
    lines.append(
        f"| median | {off_cpu:.0f} | {on_cpu:.0f} | {median:+.1%}"
        f"{'' if median <= ON_BOUND else ' (above the bound)'} | {spans if spans is not None else 'n/a'} |"
    )
    lines += [
        "",
        f"Load (1 min) during the runs: off {loads[0][0][0]:.2f} -> {loads[0][1][0]:.2f}, "
        f"on {loads[1][0][0]:.2f} -> {loads[1][1][0]:.2f}.",
    ]
    if off_us is not None:
        share = off_us / off_cpu
        lines += [
            "",
            f"Tracing off: the daemon runs the no-op delivery and request spans, {off_us:.2f} us per request",
            f"(timed in the bench process, best of 5), {share:.3%} of the {off_cpu:.0f} us CPU per event",
            "above (bound 1 %), and one boolean test per consumed record.",
        ]
    lines += ["", END, ""]
    return lines
