"""The `cpu` section of RESULTS.md: A/B figures (bench/ab.py) and the per-stage CPU breakdown.

    python -m bench.cpu_report --ab bench/out/ab --profiles bench/out/prof  # text: bench/cpu_notes.md

`--ab`: a directory of `ab-<scenario>.json` from interleaved unprofiled rounds (the figures);
`--profiles`: one from profiled rounds (`bench.ab --profile`): each stage's share of the samples
of the event-loop thread, times that thread's CPU per attribute, before (base) and after (this).
CPU of other threads (pyreqwest's runtime, librdkafka) is not sampled by py-spy `--gil`; it has its
own rows, from the daemon's per-thread CPU.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.formats import splice

BEGIN, END = "<!-- cpu:begin -->", "<!-- cpu:end -->"
HERE = Path(__file__).resolve().parent


def _load(directory: Path, scenario: str) -> dict[str, Any] | None:
    path = directory / f"ab-{scenario}.json"
    return json.loads(path.read_text()) if path.exists() else None


def ab_table(found: dict[str, dict[str, Any]]) -> list[str]:
    """One row per scenario: medians of each build and the median of the per-pair ratios."""
    out = [
        "| scenario | pairs | us CPU / attribute, base -> this (median) | ratio this/base (median; pairs) "
        "| ratio to Little's-law limit, base -> this | peak RSS MB, base -> this (highest) |",
        "|---|---|---|---|---|---|",
    ]
    for name, ab in found.items():
        p = ab["pairs"]
        cpu, lim, rss = p["cpu_us_per_attribute"], p["ratio_to_limit"], p["peak_rss_mb"]
        pairs = ", ".join(f"{r:.2f}" for r in cpu["ratios"])
        out.append(
            f"| {name} | {len(cpu['ratios'])} | {cpu['base_median']:.1f} -> {cpu['this_median']:.1f} "
            f"| **{cpu['ratio_median']:.2f}** ({pairs}) "
            f"| {lim['base_median']:.2f} -> {lim['this_median']:.2f} "
            f"| {rss['base_max']:.0f} -> {rss['this_max']:.0f} |"
        )
    return out


def breakdown(ab: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per build: us per attribute by stage (loop thread by the profile; other threads measured)."""
    per: dict[str, dict[str, list[float]]] = {"base": defaultdict(list), "this": defaultdict(list)}
    for r in ab["runs"]:
        profile, threads = r.get("profile"), r.get("threads") or {}
        if not profile or not profile["samples"]:
            continue
        total_cpu = sum(threads.values()) or 1.0
        us = r["cpu_us_per_attribute"]
        main = us * threads.get("main", total_cpu) / total_cpu
        for stage, n in profile["stages"]:
            per[r["build"]][stage].append(main * n / profile["samples"])
        per[r["build"]]["other threads (pyreqwest's runtime, Kafka's poll): not sampled"].append(
            us * threads.get("other threads", 0.0) / total_cpu
        )
        rdkafka = us * threads.get("librdkafka", 0.0) / total_cpu
        per[r["build"]]["librdkafka threads: not sampled"].append(rdkafka)
        per[r["build"]]["total (measured)"].append(us)
    runs = {b: sum(1 for r in ab["runs"] if r["build"] == b and r.get("profile")) for b in per}
    return {
        b: {stage: sum(v) / runs[b] for stage, v in stages.items()} for b, stages in per.items() if runs[b]
    }


def breakdown_table(name: str, ab: dict[str, Any]) -> list[str]:
    """Stages as rows, before and after as columns (us per attribute)."""
    figures = breakdown(ab)
    if "base" not in figures or "this" not in figures:
        return []
    before, after = figures["base"], figures["this"]
    stages = sorted(set(before) | set(after), key=lambda s: (s.startswith("total"), -before.get(s, 0.0)))
    runs = {b: sum(1 for r in ab["runs"] if r["build"] == b and r.get("profile")) for b in ("base", "this")}
    out = [
        f"`{name}`, us of daemon CPU per attribute by stage (profiled runs: {runs['base']} base, "
        f"{runs['this']} this; mean):",
        "",
        "| stage | before (base) | after (this) |",
        "|---|---:|---:|",
    ]
    for stage in stages:
        b, a = before.get(stage, 0.0), after.get(stage, 0.0)
        if stage.startswith("total"):
            out.append(f"| **{stage}** | **{b:.1f}** | **{a:.1f}** |")
        elif max(a, b) >= 0.05:
            out.append(f"| {stage} | {b:.1f} | {a:.1f} |")
    return [*out, ""]


def section(ab_dir: Path, profile_dir: Path | None, scenarios: list[str], notes: list[str]) -> list[str]:
    """The whole section, markers included."""
    found = {n: ab for n in scenarios if (ab := _load(ab_dir, n)) is not None}
    lines = [BEGIN, "## CPU per event: A/B against the build before (`cpu`)", "", *notes, ""]
    lines += [*ab_table(found), ""]
    if profile_dir is not None:
        for n in scenarios:
            ab = _load(profile_dir, n)
            if ab is not None:
                lines += breakdown_table(n, ab)
    return [*lines, END, ""]


def main(argv: list[str] | None = None) -> int:
    """Render the section and splice it into RESULTS.md."""
    parser = argparse.ArgumentParser(description="the cpu section of RESULTS.md")
    parser.add_argument("--ab", type=Path, required=True)
    parser.add_argument("--profiles", type=Path, default=None)
    parser.add_argument("--only", default="single,coalesce,backlog")
    parser.add_argument("--notes", type=Path, default=HERE / "cpu_notes.md", help="the section's text")
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args(argv)
    notes = args.notes.read_text().rstrip("\n").splitlines() if args.notes else []
    splice(args.results, section(args.ab, args.profiles, args.only.split(","), notes), BEGIN, END)
    print(f"[cpu_report] wrote the cpu section of {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
