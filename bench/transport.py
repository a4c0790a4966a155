"""Client CPU per events POST of each HTTP transport, in-process against the stand-in API on loopback.

    python -m bench.transport --requests 10000 --rounds 5

Starts one stand-in API (bench/api_server.py, its latency 50 ms, signatures not checked), then
per round and transport (order alternating) sends N single-attribute POSTs with 128 in flight
through the daemon's `EngagementClient` (URL building, OAuth signing, the transport, the Reply,
metrics) and takes this process's CPU time (every thread: pyreqwest works on its own) over N.
Prints each round and the medians, the ratio pyreqwest / aiohttp per round; `--out` writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import time
from pathlib import Path

import orjson
import uvloop

from bench.processes import APIServers
from consumer.accounts.registry import AccountRegistry
from consumer.config import load_settings
from consumer.liveperson.client import EngagementClient
from consumer.sandbox.api import DEFAULT_CREDENTIALS
from consumer.values.event import Visit

TRANSPORTS = ("aiohttp", "pyreqwest")


async def _round(base_url: str, transport: str, n: int, in_flight: int) -> float:
    c = DEFAULT_CREDENTIALS
    env = {
        "LP_BASE_URL": base_url,
        "LP_CONSUMER_KEY": c.consumer_key,
        "LP_CONSUMER_SECRET": c.consumer_secret,
        "LP_ACCESS_TOKEN": c.access_token,
        "LP_ACCESS_TOKEN_SECRET": c.access_token_secret,
        "MAX_IN_FLIGHT": str(in_flight),
        "HTTP_CLIENT": transport,
    }
    settings = load_settings(env, require_kafka=False)
    client = EngagementClient(settings)
    await client.start()

    async def no_tokens(account: str, creds: object) -> tuple[str, float]:
        raise AssertionError("OAuth 1.0 only")

    account = AccountRegistry(settings, no_tokens).get("1234")  # type: ignore[arg-type]
    assert account is not None
    body = orjson.dumps([{"type": "lead", "lead": {"topic": "t", "value": 1, "currency": "USD"}}])
    visits = [Visit("1234", f"v{i}+a/b==", "s.1") for i in range(n)]
    sem = asyncio.Semaphore(in_flight)
    statuses: dict[int | None, int] = {}

    async def one(visit: Visit) -> None:
        async with sem:
            reply = await client.send(visit, body, account)
            statuses[reply.status] = statuses.get(reply.status, 0) + 1

    warm = [asyncio.create_task(one(v)) for v in visits[: in_flight * 2]]  # connections opened
    await asyncio.gather(*warm)
    statuses.clear()
    gc.collect()
    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.gather(*(one(v) for v in visits))
    cpu = time.process_time() - cpu0
    wall = time.monotonic() - t0
    await client.close()
    assert statuses == {200: n}, statuses
    per = cpu / n * 1e6
    print(f"[transport] {transport}: {per:.1f} us CPU per request, {n / wall:,.0f} req/s", flush=True)
    return per


def main(argv: list[str] | None = None) -> int:
    """Run the rounds and print (and write) the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--in-flight", type=int, default=128)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    logs = Path("/tmp") / f"bench-transport-{time.strftime('%H%M%S')}"
    logs.mkdir(parents=True, exist_ok=True)
    servers = APIServers(1, ["--latency", str(args.latency)], logs)
    figures: dict[str, list[float]] = {t: [] for t in TRANSPORTS}
    try:
        for i in range(args.rounds):
            for t in TRANSPORTS if i % 2 == 0 else reversed(TRANSPORTS):
                figures[t].append(uvloop.run(_round(servers.base_url, t, args.requests, args.in_flight)))
    finally:
        servers.stop()
    ratios = [b / a for a, b in zip(figures["aiohttp"], figures["pyreqwest"], strict=True)]
    result = {
        "us_per_request": figures,
        "median": {t: statistics.median(v) for t, v in figures.items()},
        "ratio_pyreqwest_over_aiohttp": ratios,
        "ratio_median": statistics.median(ratios),
        "requests": args.requests,
        "in_flight": args.in_flight,
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
