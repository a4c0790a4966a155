"""`python -m bench.run`: run the scenarios, write bench/out/*.json, render bench/RESULTS.md and the plot.

python -m bench.run                 # every scenario, full size (make bench; a few minutes)
python -m bench.run --quick         # the same, small: a smoke run
python -m bench.run --only single   # some scenarios (comma-separated names or groups)
python -m bench.run --only formats  # the input-format group; splices its section into RESULTS.md
python -m bench.run --only traces   # tracing off and on (sampler 1.0); splices its section
python -m bench.run --only rebalance  # three replicas, one joins, one leaves; splices its section
python -m bench.run --report-only   # re-render RESULTS.md from bench/out/*.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench import accounts, formats, rebalance, report, traces
from bench.driver import run_scenario
from bench.scenarios import FORMAT_ENCODINGS, FULL, Scenario, quick
from consumer.sandbox.broker import LocalBroker

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 0 (targets are reported, not enforced)."""
    parser = argparse.ArgumentParser(description="engagement-consumer benchmark")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run in about a minute")
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument("--out", type=Path, default=HERE / "out", help="raw figures and logs")
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--plot", type=Path, default=HERE / "throughput.png")
    parser.add_argument("--report-only", action="store_true", help="render from the existing JSON")
    args = parser.parse_args(argv)
    scenarios = quick() if args.quick else list(FULL)
    with_rebalance = not args.quick and not args.report_only
    if args.only:
        wanted = {n.strip() for n in args.only.split(",")}
        with_rebalance = with_rebalance and "rebalance" in wanted
        wanted.discard("rebalance")
        if not wanted:  # only the rebalance scenario: its own run, its own section
            return rebalance.main(args.out, args.results) if with_rebalance else 0
        unknown = wanted - {s.name for s in scenarios} - {s.group for s in scenarios}
        if unknown:
            parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
        scenarios = [s for s in scenarios if s.name in wanted or s.group in wanted]
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        started = time.monotonic()
        run_id = time.strftime("%H%M%S")
        with LocalBroker(log_path=args.out / "tansu.log") as broker:
            runs: dict[str, list[dict[str, Any]]] = {s.name: [] for s in scenarios}
            took: dict[str, float] = dict.fromkeys(runs, 0.0)
            for s, i in _schedule(scenarios):
                print(f"[bench] {s.name}: {s.title}", flush=True)
                t0 = time.monotonic()
                only_first = replace(s, profile=s.profile and i == 0)
                runs[s.name].append(run_scenario(only_first, broker, args.out, f"{run_id}{i}"))
                took[s.name] += time.monotonic() - t0
                print(f"[bench] {s.name}: {report.one_line(runs[s.name][-1])}", flush=True)
                if len(runs[s.name]) == s.repeat:
                    result = _median_run(runs[s.name])
                    result["run"] = _machine(args.quick, took[s.name])
                    (args.out / f"{s.name}.json").write_text(json.dumps(result, indent=1))
        print(f"[bench] all scenarios in {time.monotonic() - started:.0f} s", flush=True)
    if args.only and {s.group for s in scenarios} == {"accounts"}:
        # only the accounts pair: splice its section, keep every other scenario's figures as they are
        found = report.load(args.out, [s.name for s in scenarios])
        formats.splice(args.results, accounts.section(found, args.out), accounts.BEGIN, accounts.END)
        print(f"[bench] wrote the accounts section of {args.results}", flush=True)
        return 0
    if args.only and {s.group for s in scenarios} == {"traces"}:
        # only the traces pair: splice its section, keep every other scenario's figures as they are
        found = report.load(args.out, [s.name for s in scenarios])
        formats.splice(args.results, traces.section(found, traces.off_path_us()), traces.BEGIN, traces.END)
        print(f"[bench] wrote the traces section of {args.results}", flush=True)
        return 0
    if args.only and {s.group for s in scenarios} == {"formats"}:
        # only the formats group: splice its section, keep every other scenario's figures as they are
        found = report.load(args.out, [s.name for s in scenarios])
        formats.splice(args.results, formats.section(found, formats.decode_costs(FORMAT_ENCODINGS)))
        print(f"[bench] wrote the formats section of {args.results}", flush=True)
        return 0
    names = [s.name for s in (quick() if args.quick else FULL)]
    results = report.load(args.out, names)
    report.render(results, args.results, args.plot)
    if with_rebalance:
        rebalance.main(args.out, args.results)
    print(f"[bench] wrote {args.results} and {args.plot}", flush=True)
    return 0


def _schedule(scenarios: list[Scenario]) -> list[tuple[Scenario, int]]:
    """Each scenario's runs back to back, except a group's: round by round across its scenarios."""
    order: list[tuple[Scenario, int]] = []
    done: set[str] = set()
    for s in scenarios:
        if s.name in done:
            continue
        members = [m for m in scenarios if s.group and m.group == s.group] or [s]
        for i in range(max(m.repeat for m in members)):
            order += [(m, i) for m in members if i < m.repeat]
        done.update(m.name for m in members)
    return order


MEDIAN_KEYS = (
    "attributes_per_s",
    "requests_per_s",
    "ratio_to_limit",
    "cpu_us_per_attribute",
    "cpu_us_per_request",
    "latency_p50_s",
    "latency_p99_s",
)


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several runs as one: each key figure's median (peak RSS: the highest), the rest from the run
    with the median CPU per attribute; every run's key figures are listed under `repeats`."""
    if len(runs) == 1:
        return runs[0]
    ordered = sorted(runs, key=lambda r: r["cpu_us_per_attribute"] or 0.0)
    chosen = dict(ordered[len(ordered) // 2])
    for key in MEDIAN_KEYS:
        values = [r[key] for r in runs if r.get(key) is not None]
        chosen[key] = statistics.median(values) if values else None
    chosen["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    chosen["profile"] = next((r["profile"] for r in runs if r.get("profile")), None)
    chosen["repeats"] = [{k: r.get(k) for k in (*MEDIAN_KEYS, "peak_rss_mb")} for r in runs]
    chosen["runs"] = [{"accounts": r.get("accounts"), "loadavg": r.get("loadavg")} for r in runs]
    return chosen


def _machine(quick_mode: bool, seconds: float) -> dict[str, object]:
    return {
        "quick": quick_mode,
        "seconds": seconds,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_end": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


if __name__ == "__main__":
    sys.exit(main())
