"""`python -m bench.signing`: CPU per OAuth 1.0 signature, the daemon's Signer against oauthlib's Client.

A speed figure belongs here, not in the unit tests (a wall-clock bound flakes on a busy machine).
Each figure is the median of several rounds of `--calls` signatures of one events URL with a
JSON body; `--budget-us` makes the run exit 1 when the Signer's median is above it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

from oauthlib.oauth1 import Client

from consumer.config.credentials import Credentials
from consumer.liveperson.oauth import Signer
from consumer.liveperson.url import events_url

CREDS = Credentials("consumer-key", "consumer-secret", "access-token", "token-secret")
URL = events_url("https://va.liveperson.net", "1234", "aGVsbG8+d29ybGQ/Pw==", "c2lk+/=")
BODY = json.dumps([{"type": "lead", "lead": {"topic": "upgrade inquiry", "value": 200, "leadId": "x1"}}])


def per_call_us(sign: Callable[[], object], calls: int, rounds: int) -> float:
    """Median over `rounds` of the mean CPU microseconds of one `sign()` call."""
    figures = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(calls):
            sign()
        figures.append((time.process_time() - start) / calls * 1e6)
    return statistics.median(figures)


def main(argv: list[str] | None = None) -> int:
    """Measure and print both figures; 1 when the Signer is over `--budget-us`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=2000, help="signatures per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--budget-us", type=float, default=0.0, help="fail above this (0: report only)")
    args = parser.parse_args(argv)
    signer = Signer(CREDS)
    client = Client(
        CREDS.consumer_key,
        client_secret=CREDS.consumer_secret,
        resource_owner_key=CREDS.access_token,
        resource_owner_secret=CREDS.access_token_secret,
    )
    ours = per_call_us(lambda: signer.authorization("POST", URL, BODY.encode()), args.calls, args.rounds)
    theirs = per_call_us(
        lambda: client.sign(URL, "POST", BODY, {"Content-Type": "application/json"}),
        max(1, args.calls // 4),
        args.rounds,
    )
    print(f"Signer.authorization: {ours:.1f} us CPU per call (median of {args.rounds} x {args.calls})")
    print(f"oauthlib Client.sign: {theirs:.1f} us CPU per call ({theirs / ours:.1f}x)")
    if args.budget_us and ours > args.budget_us:
        print(f"over budget: {ours:.1f} us > {args.budget_us:g} us")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
