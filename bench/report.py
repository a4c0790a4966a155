"""Render bench/RESULTS.md (figures beside their targets, profile, notes) and the throughput plot."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

from bench.scenarios import FULL, Target

NOTES = Path(__file__).resolve().parent / "NOTES.md"
_TARGETS: dict[str, tuple[Target, ...]] = {s.name: s.targets for s in FULL}


def load(out: Path, names: list[str]) -> list[dict[str, Any]]:
    """The results of these scenarios found in `out` (in this order)."""
    found = []
    for name in names:
        path = out / f"{name}.json"
        if path.exists():
            found.append(json.loads(path.read_text()))
    return found


def _f(value: float | None, fmt: str = "{:,.0f}") -> str:
    return "n/a" if value is None else fmt.format(value)


def _opt(fmt: str, value: float | None) -> str:
    return fmt.format(value) if value else ""


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000:,.0f} ms"


def one_line(r: dict[str, Any]) -> str:
    """A console summary of one result."""
    return (
        f"{r['attributes_ok']}/{r['events']} attributes, {r['attributes_per_s']:,.0f} attr/s, "
        f"{r['requests_per_s']:,.0f} req/s (x{r['ratio_to_limit']:.2f} of limit), "
        f"{_f(r['cpu_us_per_attribute'])} us CPU/attr, peak RSS {r['peak_rss_mb']:.0f} MB, "
        f"p50/p99 {_ms(r['latency_p50_s'])}/{_ms(r['latency_p99_s'])}, "
        f"429 share {_f(r['share_429'], '{:.3f}')}"
    )


def _target_rows(r: dict[str, Any]) -> list[str]:
    rows = []
    for t in _TARGETS.get(r["name"], ()):
        value = r.get(t.key)
        met = t.met(value)
        mark = "n/a" if met is None else ("met" if met else "**missed**")
        shown = _f(value, "{:,.3f}" if value is not None and abs(value) < 10 else "{:,.0f}")
        partial = "" if r["complete"] else " (time-bounded run)"
        rows.append(f"| {r['name']} | {t.label} | {t.op} {t.threshold:g} | {shown}{partial} | {mark} |")
    return rows


def _targets_cell(r: dict[str, Any]) -> str:
    """Each target of the scenario as `figure vs target: met/MISSED`, or a dash."""
    cells = []
    for t in _TARGETS.get(r["name"], ()):
        value = r.get(t.key)
        met = t.met(value)
        shown = _f(value, "{:,.3f}" if value is not None and abs(value) < 10 else "{:,.0f}")
        verdict = "n/a" if met is None else ("met" if met else "**MISSED**")
        cells.append(f"{t.key} {shown} vs {t.op} {t.threshold:g}: {verdict}")
    return "<br>".join(cells) or "-"


def _table(results: list[dict[str, Any]]) -> list[str]:
    out = [
        "| scenario | delivered | attr/s | req/s | Little's-law limit (req/s) | ratio "
        "| daemon CPU s / 1,000 attr | us / attr | us / req | peak RSS | produce->API p50 / p99 "
        "| 429 share | load (1 min) | targets |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        cpu = r["cpu_us_per_attribute"]
        n = len(r.get("repeats") or [])
        name = f"{r['name']} (median of {n})" if n > 1 else r["name"]
        out.append(
            f"| {name} | {r['attributes_ok']:,} / {r['events']:,}{'' if r['complete'] else ' *'} "
            f"| {r['attributes_per_s']:,.0f} | {r['requests_per_s']:,.0f} | {r['littles_limit']:,.0f} "
            f"| {r['ratio_to_limit']:.2f} | {_f(None if cpu is None else cpu / 1000, '{:.3f}')} "
            f"| {_f(cpu)} | {_f(r['cpu_us_per_request'])} | {r['peak_rss_mb']:.0f} MB "
            f"| {_ms(r['latency_p50_s'])} / {_ms(r['latency_p99_s'])} | {_f(r['share_429'], '{:.3f}')} "
            f"| {r['loadavg'][0][0]:.2f} -> {r['loadavg'][1][0]:.2f} | {_targets_cell(r)} |"
        )
    return out


def _details(r: dict[str, Any]) -> list[str]:
    s = r["scenario"]
    stopped = r.get("stopped") or {}
    lines = [
        f"### {r['name']}: {r['title']}",
        "",
        f"- Produced {r['produced']['messages']:,} events in {r['produced']['seconds']:.1f} s "
        f"({'before the daemon started' if s['produce_first'] else 'after it joined'}"
        f"{_opt(', paced at {:g}/s', s['pace_rps'])}); "
        f"{r['produced']['failed']} produce failures.",
        f"- API: latency {s['latency_s'] * 1000:g} ms, "
        f"{'signatures verified' if s['verify'] else 'signatures not verified'}"
        f"{_opt(', throttled at {:g} requests/s', s['throttle_rps'])}; "
        f"{s['servers']} server process(es). Daemon: MAX_IN_FLIGHT {s['max_in_flight']}, "
        f"adaptive concurrency {'on' if s['adaptive'] else 'off'}.",
        f"- {'Delivered everything' if r['complete'] else 'Stopped at the time limit'} after "
        f"{r['elapsed_s']:.1f} s; rates over a {r['window_s']:.1f} s window"
        f"{_opt(' (after a {:g} s warm-up)', s['warmup_s'])}. "
        f"Requests by status: {r['by_status']}; {r['attributes_per_request']:.2f} attributes per request.",
        f"- CPU seconds in the window: daemon {r['daemon_cpu_s']:.1f}, stand-in API "
        f"{r['server_cpu_s']:.1f}, broker {r['broker_cpu_s']:.1f} (of {r['cpus']} cores x "
        f"{r['elapsed_s']:.1f} s = {r['cpus'] * r['elapsed_s']:.0f}). Daemon by thread: "
        + ", ".join(f"{k} {v:.1f}" for k, v in r.get("daemon_thread_cpu_s", {}).items())
        + ".",
        f"- Daemon exit code {r['exit_code']}; stopped line: drained={stopped.get('drained')}, "
        f"uncommitted={stopped.get('uncommitted')}, consumed={stopped.get('consumed')}.",
    ]
    if len(r.get("repeats") or []) > 1:
        runs = ", ".join(
            f"{x['cpu_us_per_attribute']:.0f} us/attr at {x['requests_per_s']:,.0f} req/s "
            f"(x{x['ratio_to_limit']:.2f})"
            for x in r["repeats"]
        )
        lines.append(
            f"- {len(r['repeats'])} runs; the table has each figure's median (peak RSS: the highest), "
            f"the other figures and the plot are from the run with the median CPU: {runs}."
        )
    if r.get("rate_over_throttle") is not None:
        lines.append(
            f"- Delivered {r['attributes_per_s']:,.0f}/s = {r['rate_over_throttle']:.2f} R; 429 share "
            f"{r['share_429']:.3f} over the run, {_f(r['window_429_share'], '{:.3f}')} in the window."
        )
    return [*lines, ""]


def _profile(results: list[dict[str, Any]]) -> list[str]:
    profiled = [r for r in results if r.get("profile")]
    if not profiled:
        return ["No profile in this run (py-spy not installed, or `--quick`).", ""]
    out: list[str] = []
    for r in profiled:
        p = r["profile"]
        total = max(1, p["samples"])
        out += [
            f"py-spy, {p['rate_hz']} Hz, `--threads`, the event loop's thread (MainThread) while not "
            f"idle, during the `{r['name']}` scenario: {p['samples']:,} samples. Other threads (the "
            "Kafka poll thread, librdkafka's, pyreqwest's runtime) are not in these tables; their CPU "
            "is in the thread table of the scenario.",
            "",
            "By stage (a sample counts for the innermost frame of its stack that belongs to a stage; "
            "stdlib frames count for their caller's stage):",
            "",
            "| stage | share |",
            "|---|---|",
            *[f"| {stage} | {n / total:.1%} |" for stage, n in p.get("stages", [])],
            "",
            "By library or module (each sample to the innermost frame in a known area):",
            "",
            "| area | share |",
            "|---|---|",
        ]
        out += [f"| {area} | {n / total:.1%} |" for area, n in p["areas"]]
        out += ["", "Top functions by self time:", "", "| function | self |", "|---|---|"]
        out += [f"| `{name}` | {n / total:.1%} |" for name, n in p["self"][:15]]
        out += ["", "Top functions by inclusive time:", "", "| function | inclusive |", "|---|---|"]
        out += [f"| `{name}` | {n / total:.1%} |" for name, n in p["inclusive"][:20]]
        out.append("")
    return out


def render(results: list[dict[str, Any]], md_path: Path, png_path: Path) -> None:
    """Write RESULTS.md and the plot."""
    plot(results, png_path)
    run = results[0]["run"] if results else {}
    quick_note = " (**--quick**: small sizes, not comparable with the targets)" if run.get("quick") else ""
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `make bench` (`python -m bench.run`){quick_note} on {run.get('date', '?')}: "
        f"{run.get('cpus', os.cpu_count())} cores, Python {run.get('python', '?')}, "
        f"{run.get('platform', '?')}. "
        "Daemon, stand-in API, Tansu broker and this driver share those cores; the load column is "
        "the 1-minute load average at the start and the end of each scenario (other engineers' tests "
        "may run on the same machine).",
        "",
        "Little's-law limit = MAX_IN_FLIGHT / API latency. Daemon CPU is the user + system time of the "
        "daemon process (psutil) from when it joined to the last delivery, over the attributes delivered. "
        "Produce->API is the time from `time.time()` at produce (in the event) to arrival at the API. "
        "`*` = stopped at the scenario's time limit.",
        "",
        *_table(results),
        "",
        *_formats_section(results),
        *_accounts_section(results),
        *(traces := _traces_section(results)),
        *_kept(md_path, traces=not traces),
        "## Targets",
        "",
        "| scenario | target | threshold | figure | |",
        "|---|---|---|---|---|",
        *[row for r in results for row in _target_rows(r)],
        "",
        f"![throughput and requests in flight over time]({png_path.name})",
        "",
        "## Scenarios",
        "",
        *[line for r in results for line in _details(r)],
        "## Profile",
        "",
        *_profile(results),
    ]
    if NOTES.exists():
        lines += [NOTES.read_text().rstrip(), ""]
    md_path.write_text("\n".join(lines))


def _kept(md_path: Path, traces: bool) -> list[str]:
    """Sections not made from this run's JSON, as they are in the file: `rebalance` (a run of its own:
    spliced again when it runs, kept by `--report-only`), `traces` when its group did not run, and
    `cpu` (bench/cpu_report.py, from A/B runs)."""
    from bench import cpu_report, rebalance
    from bench import traces as traces_group

    text = md_path.read_text() if md_path.exists() else ""
    markers = [(rebalance.BEGIN, rebalance.END), (cpu_report.BEGIN, cpu_report.END)]
    if traces:
        markers.insert(1, (traces_group.BEGIN, traces_group.END))
    out: list[str] = []
    for begin, end in markers:
        if begin in text and end in text:
            block = begin + text.split(begin, 1)[1].split(end, 1)[0] + end
            out += [*block.splitlines(), ""]
    return out


def _formats_section(results: list[dict[str, Any]]) -> list[str]:
    """The `formats` group's section (with the decode-only costs measured now), if it ran."""
    from bench import formats
    from bench.scenarios import FORMAT_ENCODINGS

    if not any(r["scenario"].get("group") == "formats" for r in results):
        return []
    return formats.section(results, formats.decode_costs(FORMAT_ENCODINGS))


def _accounts_section(results: list[dict[str, Any]]) -> list[str]:
    """The `accounts` pair's section, if it ran."""
    from bench import accounts

    return accounts.section(results, Path(__file__).resolve().parent / "out")


def _traces_section(results: list[dict[str, Any]]) -> list[str]:
    """The `traces` pair's section, if it ran."""
    from bench import traces

    if not any(r["scenario"].get("group") == "traces" for r in results):
        return []
    return traces.section(results, traces.off_path_us())


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Delivered attributes/s and requests in flight (and the concurrency limit) over time, per scenario."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(results))
    fig, axes = plt.subplots(n, 1, figsize=(10, 2.4 * n), squeeze=False)
    for ax, r in zip(axes[:, 0], results, strict=False):
        samples = [x for x in r["samples"] if "engagement_attributes_delivered_total" in x]
        ts = [x["t"] for x in samples]
        rate = [0.0] + [
            (b["engagement_attributes_delivered_total"] - a["engagement_attributes_delivered_total"])
            / max(1e-6, b["t"] - a["t"])
            for a, b in itertools.pairwise(samples)
        ]
        ax.plot(ts, rate, color="tab:blue", label="delivered attributes/s")
        ax.set_ylabel("attributes/s", color="tab:blue")
        ax.set_title(f"{r['name']}: {r['title']}", fontsize=9)
        twin = ax.twinx()
        twin.plot(
            ts, [x["engagement_inflight_requests"] for x in samples], color="tab:orange", label="in flight"
        )
        twin.plot(
            ts,
            [x["engagement_concurrency_limit"] for x in samples],
            color="tab:green",
            linestyle="--",
            label="concurrency limit",
        )
        twin.set_ylabel("requests", color="tab:orange")
        twin.set_ylim(bottom=0)
        ax.set_ylim(bottom=0)
        handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        ax.legend(handles=handles, loc="upper right", fontsize=7)
    axes[-1, 0].set_xlabel("seconds since the daemon joined")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
