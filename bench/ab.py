"""A/B: the same scenarios against two builds of the daemon, interleaved on one broker and one machine.

    git -C <repo> worktree add /tmp/base <commit> && make -C /tmp/base .venv/.installed
    python -m bench.ab --base /tmp/base --only single,coalesce --rounds 5

Each round runs every scenario once per build, the order alternating round by round (base first,
then this build first), so a drift of the shared machine's load lands on both sides. Per pair the
ratio this/base of CPU per attribute, throughput and peak RSS; the medians over the pairs are what
to read (a single run on 2 shared vCPUs swings by +-20 %). `--profile` runs py-spy in every run.
Writes `<out>/ab-<scenario>.json`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.driver import run_scenario
from bench.scenarios import FULL
from consumer.sandbox.broker import LocalBroker

HERE = Path(__file__).resolve().parent
KEYS = ("cpu_us_per_attribute", "attributes_per_s", "ratio_to_limit", "peak_rss_mb")


def command(tree: Path) -> list[str]:
    """The daemon of a checkout with its own venv (`-P`: not the current directory's package)."""
    return [str(tree / ".venv" / "bin" / "python"), "-P", "-m", "consumer", "run"]


def _pairs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    base = [r for r in runs if r["build"] == "base"]
    this = [r for r in runs if r["build"] == "this"]
    out: dict[str, Any] = {}
    for key in KEYS:
        ratios = [t[key] / b[key] for b, t in zip(base, this, strict=False) if b.get(key) and t.get(key)]
        out[key] = {
            "base_median": statistics.median(r[key] for r in base if r.get(key) is not None),
            "this_median": statistics.median(r[key] for r in this if r.get(key) is not None),
            "ratios": ratios,
            "ratio_median": statistics.median(ratios) if ratios else None,
        }
    out["peak_rss_mb"]["base_max"] = max(r["peak_rss_mb"] for r in base)
    out["peak_rss_mb"]["this_max"] = max(r["peak_rss_mb"] for r in this)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the rounds; print and write each scenario's pairs and medians."""
    parser = argparse.ArgumentParser(description="A/B of two daemon builds")
    parser.add_argument("--base", type=Path, required=True, help="a checkout with .venv (the A side)")
    parser.add_argument("--this", type=Path, default=HERE.parent, help="the B side (default: this tree)")
    parser.add_argument("--only", default="single,coalesce")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="py-spy in every run")
    parser.add_argument("--visits", type=int, default=0, help="override the scenarios' visits")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for this build's daemon")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "ab")
    parser.add_argument("--builds", default="base,this", help="`this`: only this build (no pairs)")
    args = parser.parse_args(argv)
    wanted = [n.strip() for n in args.only.split(",")]
    scenarios = [replace(s, profile=args.profile) for n in wanted for s in FULL if s.name == n]
    if args.visits:
        scenarios = [replace(s, visits=args.visits) for s in scenarios]
    extra = dict(kv.split("=", 1) for kv in args.env)
    args.out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict[str, Any]]] = {s.name: [] for s in scenarios}
    run_id = time.strftime("%H%M%S")
    with LocalBroker(log_path=args.out / "tansu.log") as broker:
        for i in range(args.rounds):
            for s in scenarios:
                order = ("base", "this") if i % 2 == 0 else ("this", "base")
                for build in (b for b in order if b in args.builds.split(",")):
                    tree = args.base if build == "base" else args.this
                    sc = replace(s, env={**s.env, **extra}) if build == "this" else s
                    r = run_scenario(sc, broker, args.out, f"{run_id}{i}{build[0]}", command(tree))
                    r.update(build=build, round=i)
                    runs[s.name].append(r)
                    figs = " ".join(f"{k}={r[k]:.3f}" for k in KEYS if r.get(k) is not None)
                    print(f"[ab] {s.name} round {i} {build}: {figs} load={r['loadavg']}", flush=True)
    for name, found in runs.items():
        if len({r["build"] for r in found}) < 2:
            only = {"runs": [_brief(r) for r in found]}
            (args.out / f"ab-{name}.json").write_text(json.dumps(only, indent=1))
            continue
        summary = {"pairs": _pairs(found), "runs": [_brief(r) for r in found]}
        (args.out / f"ab-{name}.json").write_text(json.dumps(summary, indent=1))
        for key, v in summary["pairs"].items():
            print(
                f"[ab] {name} {key}: base {v['base_median']:.3f} this {v['this_median']:.3f} "
                f"ratio median {v['ratio_median']} ({', '.join(f'{x:.3f}' for x in v['ratios'])})",
                flush=True,
            )
    return 0


def _brief(r: dict[str, Any]) -> dict[str, Any]:
    keep = (*KEYS, "build", "round", "loadavg", "requests_per_s", "cpu_us_per_request", "profile")
    return {k: r.get(k) for k in keep} | {"threads": r.get("daemon_thread_cpu_s")}


if __name__ == "__main__":
    sys.exit(main())
