"""The stand-in API for the benchmark: the sandbox in its own process, recording figures, not requests.

`BenchAPI` is the sandbox (`consumer.sandbox.api.SandboxAPI`: same routes, validation, OAuth check
when `verify_signatures`, scripted latency / status mix / throttling) with one change: instead of
keeping every `Received` (a million of them would be the benchmark's own memory problem) it keeps
counters, a time series in 0.25 s buckets and the produce-to-API time of every delivered attribute
(the producer writes `time.time()` into the lead's `topic` as ``t:<seconds>``).

Each server process serves the API port (with SO_REUSEPORT, so several processes may share it)
and its own control port: ``GET /bench/stats`` answers the figures as JSON.

Run: ``python -m bench.api_server --port P --control-port C [--latency 0.05] [--throttle-rps R]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import time
from array import array
from collections import Counter
from typing import Any

from aiohttp import web

from consumer.sandbox.api import SandboxAPI
from consumer.sandbox.script import Received, Reply

BUCKET_S = 0.25


class BenchAPI(SandboxAPI):
    """The sandbox, aggregating what it answers instead of recording each request."""

    def __init__(self, *, verify_signatures: bool) -> None:
        super().__init__(verify_signatures=verify_signatures)
        self.started = time.monotonic()
        self._wall_offset = time.time() - time.monotonic()
        self.by_status: Counter[int] = Counter()
        self.attributes_ok = 0
        self.requests = 0
        self.first_ok: float | None = None
        self.last_ok: float | None = None
        self.produce_to_api = array("d")
        self.series: dict[int, list[int]] = {}  # bucket -> [requests, attributes ok, 429s]
        self.by_account: dict[str, dict[int, list[int]]] = {}  # account -> the same series, its own

    async def start_bench(self, port: int, control_port: int, reuse_port: bool) -> None:
        """Serve the API on `port` (shared with SO_REUSEPORT) and the figures on `control_port`."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port, reuse_port=reuse_port, backlog=1024).start()
        self.domain = f"127.0.0.1:{port}"
        self.base_url = f"http://{self.domain}"
        control = web.Application()
        control.router.add_get("/bench/stats", self._stats)
        self._control = web.AppRunner(control, access_log=None)
        await self._control.setup()
        await web.TCPSite(self._control, "127.0.0.1", control_port).start()

    async def stop(self) -> None:
        """Stop both servers."""
        await super().stop()
        await self._control.cleanup()

    def _answer(self, received: Received, reply: Reply) -> web.Response:
        status = reply.status
        self.by_status[status] += 1
        self.requests += 1
        arrived = received.time
        slot = self.series.get(key := int((arrived - self.started) / BUCKET_S))
        if slot is None:
            slot = self.series[key] = [0, 0, 0]
        slot[0] += 1
        account = self.by_account.get(received.account)
        if account is None:
            account = self.by_account[received.account] = {}
        mine = account.get(key)
        if mine is None:
            mine = account[key] = [0, 0, 0]
        mine[0] += 1
        if 200 <= status < 300:
            mine[1] += len(received.attributes)
            n = len(received.attributes)
            self.attributes_ok += n
            slot[1] += n
            if self.first_ok is None:
                self.first_ok = arrived
            self.last_ok = arrived
            wall = arrived + self._wall_offset
            for attr in received.attributes:
                stamp = (attr.get("lead") or attr.get("service") or {}).get("topic", "")
                if stamp.startswith("t:"):
                    self.produce_to_api.append(wall - float(stamp[2:]))
        elif status == 429:
            slot[2] += 1
            mine[2] += 1
        body = reply.body
        if body is None:
            body = b"{}" if 200 <= status < 300 else b'{"error":"scripted"}'
        return web.Response(status=status, body=body, headers=reply.headers, content_type="application/json")

    def figures(self) -> dict[str, Any]:
        """Everything the driver needs, as JSON-able values (times relative to this server's start)."""
        lat = sorted(self.produce_to_api)
        return {
            "pid": os.getpid(),
            "requests": self.requests,
            "attributes_ok": self.attributes_ok,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "first_ok": None if self.first_ok is None else self.first_ok + self._wall_offset,
            "last_ok": None if self.last_ok is None else self.last_ok + self._wall_offset,
            "started_wall": self.started + self._wall_offset,
            "bucket_s": BUCKET_S,
            "series": {str(k): v for k, v in sorted(self.series.items())},
            "accounts": {
                a: {str(k): v for k, v in sorted(series.items())} for a, series in self.by_account.items()
            },
            "latency_samples": len(lat),
            "latency_p50": _quantile(lat, 0.50),
            "latency_p99": _quantile(lat, 0.99),
            "latency_max": lat[-1] if lat else None,
            "max_in_flight": self.max_in_flight,
            "max_in_flight_per_visit": self.max_in_flight_per_visit,
            "cpu_s": sum(os.times()[:2]),
        }

    async def _stats(self, request: web.Request) -> web.Response:
        if request.query.get("brief"):
            brief = {"attributes_ok": self.attributes_ok, "requests": self.requests}
            return web.Response(body=json.dumps(brief).encode(), content_type="application/json")
        return web.Response(body=json.dumps(self.figures()).encode(), content_type="application/json")


def _quantile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _serve(args: argparse.Namespace) -> None:
    api = BenchAPI(verify_signatures=args.verify)
    api.latency = args.latency
    api.jitter = args.jitter
    api.throttle_rps = args.throttle_rps
    for spec in args.throttle_account:
        account, _, rps = spec.partition("=")
        api.throttle_account(account, float(rps))
    if args.status_mix:
        api.status_mix = {int(k): float(v) for k, v in json.loads(args.status_mix).items()}
    await api.start_bench(args.port, args.control_port, args.reuse_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await api.stop()


def main(argv: list[str] | None = None) -> None:
    """Serve the benchmark's stand-in API until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--control-port", type=int, required=True)
    parser.add_argument("--reuse-port", action="store_true")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--jitter", type=float, default=0.0)
    parser.add_argument("--throttle-rps", type=float, default=None)
    parser.add_argument("--status-mix", default="", help='JSON {"503": 0.01}')
    parser.add_argument("--throttle-account", action="append", default=[], help="ACCOUNT=RPS (repeatable)")
    parser.add_argument("--verify", action="store_true", help="check OAuth signatures (~0.3 ms per request)")
    args = parser.parse_args(argv)
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover
        runner = asyncio.Runner()
    with runner, contextlib.suppress(KeyboardInterrupt):
        runner.run(_serve(args))


if __name__ == "__main__":
    main()
