"""The `formats` group: daemon CPU per event by input encoding against plain JSON, and decode-only cost.

`python -m bench.run --only formats` runs the group's scenarios in interleaved rounds and splices this
section into RESULTS.md (between markers) without re-rendering the other scenarios' figures; a full
`make bench` renders it in place too.
"""

from __future__ import annotations

import timeit
from pathlib import Path
from typing import Any

from bench.workload import STAMP, events
from consumer.config import load_settings
from consumer.formats.reader import EventReader
from consumer.sandbox.registry import SandboxRegistry

BEGIN, END = "<!-- formats:begin -->", "<!-- formats:end -->"
TOLERANCE = 0.15  # the bound: each encoding within 15% of plain JSON


def decode_costs(encodings: tuple[str, ...], rounds: int = 20_000) -> dict[str, float]:
    """Microseconds per EventReader.read of one `single` event in each encoding (best of 5, this process)."""
    out: dict[str, float] = {}
    with SandboxRegistry() as registry:
        env = {"LP_CONSUMER_KEY": "k", "LP_CONSUMER_SECRET": "s", "LP_ACCESS_TOKEN": "t"}
        env |= {"LP_ACCESS_TOKEN_SECRET": "x", "LEAD_TOPICS": "bench", "SCHEMA_REGISTRY_URL": registry.url}
        reader = EventReader(load_settings(env, require_kafka=False))
        assert reader.registry is not None
        for encoding in encodings:
            _, template, headers = next(
                events(1, 1, encoding=encoding, registry_url=registry.url, topic="bench")
            )
            value = template.replace(STAMP, b"%017.6f" % 1.0)
            if value[:1] == b"\x00":
                reader.registry.prepare(int.from_bytes(value[1:5], "big"), value)
            hdrs: Any = headers
            reader.read("bench", value, hdrs)  # fails loudly if the sample does not decode
            timer = timeit.Timer(lambda v=value, h=hdrs: reader.read("bench", v, h))
            out[encoding] = min(timer.repeat(repeat=5, number=rounds)) / rounds * 1e6
    return out


def section(results: list[dict[str, Any]], decode: dict[str, float] | None) -> list[str]:
    """The markdown section of the formats group (empty when none of its results are there)."""
    found = {r["scenario"]["encoding"]: r for r in results if r["scenario"].get("group") == "formats"}
    if not found:
        return []
    base = found.get("json")
    lines = [
        BEGIN,
        "## Input formats (`formats`)",
        "",
        "Daemon CPU per delivered event in the `single` set-up with the events encoded as other producers",
        "write them (bench/workload.py via consumer/tools/encode.py), median of interleaved rounds; and the",
        "decode-only cost of `EventReader.read` on the same event in the bench process (best of 5). The",
        "machine (2 vCPUs) was shared with other engineers' test runs while this ran (load column):",
        "the daemon's CPU per event rises when its throughput falls (fixed per-second work is spread",
        "over fewer events), and the run-to-run spread is larger than the decode differences.",
        "",
        "| encoding | us CPU / event (median) | vs plain JSON | runs: us / event at events/s "
        "| decode only (us) | load (1 min) |",
        "|---|---|---|---|---|---|",
    ]
    for encoding, r in found.items():
        cpu = r["cpu_us_per_attribute"]
        ratio = (
            cpu / base["cpu_us_per_attribute"] - 1 if base and cpu and base["cpu_us_per_attribute"] else None
        )
        verdict = (
            "" if ratio is None else f"{ratio:+.1%}" + ("" if abs(ratio) <= TOLERANCE else " (outside 15%)")
        )
        runs = ", ".join(
            f"{x['cpu_us_per_attribute']:.0f} at {x['attributes_per_s']:,.0f}" for x in r.get("repeats", [r])
        )
        load = r.get("loadavg", [[0], [0]])
        decoded = f"{decode[encoding]:.1f}" if decode and encoding in decode else "n/a"
        loads = f"{load[0][0]:.2f} -> {load[1][0]:.2f}"
        lines.append(f"| {encoding} | {cpu:.0f} | {verdict or '-'} | {runs} | {decoded} | {loads} |")
    lines += ["", END, ""]
    return lines


def splice(md_path: Path, lines: list[str], begin: str = BEGIN, end: str = END) -> None:
    """Replace a section of RESULTS.md between its markers (or insert it before `## Targets`)."""
    text = md_path.read_text() if md_path.exists() else "# Benchmark results\n\n"
    block = "\n".join(lines)
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block.rstrip("\n") + rest.split(end, 1)[1]
    elif "## Targets" in text:
        head, rest = text.split("## Targets", 1)
        text = head + block + "\n## Targets" + rest
    else:
        text = text.rstrip("\n") + "\n\n" + block
    md_path.write_text(text)
