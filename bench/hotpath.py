"""The dispatcher's per-request CPU in-process, without network or Kafka: what accounts cost one account.

Submits N single-attribute visits of one account to a real `Dispatcher` whose client signs each
request with OAuth 1.0 (as the real one does) and answers 200 at once; CPU seconds per request,
best of R runs. It runs against whichever `consumer` is first on the path, so the tree before the
accounts change can be measured the same way:

    git worktree add --detach /tmp/before e887367
    PYTHONPATH=/tmp/before python bench/hotpath.py --tag before --out bench/out
    PYTHONPATH=. python bench/hotpath.py --tag after --out bench/out

`bench/accounts.py` shows both in RESULTS.md when their JSON files are in the output directory.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from consumer.config import load_settings
from consumer.delivery.dispatch import Dispatcher
from consumer.formats.events import parse_event
from consumer.kafka.offsets import OffsetTracker
from consumer.liveperson.oauth import Signer
from consumer.liveperson.url import events_url
from consumer.values.records import Record
from consumer.values.reply import Reply

ENV = {
    "LP_CONSUMER_KEY": "k",
    "LP_CONSUMER_SECRET": "s",
    "LP_ACCESS_TOKEN": "t",
    "LP_ACCESS_TOKEN_SECRET": "x",
    "MAX_IN_FLIGHT": "128",
    "LP_BASE_URL": "http://127.0.0.1:1",
}
WITH_ACCOUNTS = "accounts" in inspect.signature(Dispatcher.__init__).parameters


class _Client:
    """Signs like the real client (the account's signer, or the single one before accounts)."""

    def __init__(self, settings: Any) -> None:
        self.signer = Signer(settings.credentials())

    def ready(self, visit: Any, account: Any) -> None:
        """Nothing to look up before a send (a fixed base, OAuth 1.0)."""
        return None

    async def send(self, visit: Any, body: bytes, account: Any = None, still_ours: Any = None) -> Reply:
        url = events_url("http://127.0.0.1:1", visit.account, visit.visitor, visit.sid)
        (account.signer if account is not None else self.signer).authorization("POST", url, body)
        await asyncio.sleep(0)
        return Reply(200, duration=0.05)


class _DeadLetters:
    pending = 0
    pending_by_tp: Counter[Any] = Counter()


async def _once(n: int) -> float:
    settings = load_settings(ENV, require_kafka=False)
    tracker = OffsetTracker()
    client = _Client(settings)
    if WITH_ACCOUNTS:
        from consumer.accounts.registry import AccountRegistry

        async def no_tokens(account: str, creds: Any) -> tuple[str, float]:
            raise AssertionError("no OAuth 2.0 here")

        d = Dispatcher(settings, client, AccountRegistry(settings, no_tokens), tracker)  # type: ignore[arg-type]
    else:  # the dispatcher before accounts: one limiter, one auth gate
        from consumer.accounts.halt import AuthGate  # type: ignore[attr-defined]
        from consumer.accounts.limiter import ConcurrencyLimiter

        gate = AuthGate(1, 2, lambda: None, lambda halted: None)
        d = Dispatcher(settings, client, ConcurrencyLimiter(128, True), tracker, gate)  # type: ignore[arg-type,call-arg]
    d.dead_letters = _DeadLetters()  # type: ignore[assignment]
    tp = ("t", 0)
    generation = tracker.assign(tp)
    records = []
    for i in range(n):
        value = orjson.dumps({"account": "1234", "visitor": f"v{i}", "sid": "s", "topic": "x"})
        records.append(Record("t", 0, i, generation, b"k", value, None, None, parse_event(value, "lead")))
    gc.collect()
    started = time.process_time()
    for i, record in enumerate(records):
        tracker.add(tp, i)
        d.submit(record)
    while tracker.pending_total:  # noqa: ASYNC110 - a busy loop is the measurement: no timer overhead
        await asyncio.sleep(0)
    return (time.process_time() - started) / n * 1e6


def main() -> None:
    """Measure and write `<out>/hotpath-<tag>.json`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    import uvloop

    best = min(uvloop.run(_once(args.requests)) for _ in range(args.rounds))
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"tag": args.tag, "us_per_request": best, "accounts": WITH_ACCOUNTS, "rounds": args.rounds}
    (args.out / f"hotpath-{args.tag}.json").write_text(json.dumps(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
