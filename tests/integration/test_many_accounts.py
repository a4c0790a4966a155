"""Many accounts behind one daemon, end to end: a real broker, the daemon process, the stand-in API
checking each account's own OAuth 1.0 keys or OAuth 2.0 bearer tokens over HTTP."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import pytest
from harness import Topics, committed, event, produce, read_to_end, wait_until

from consumer.config.credentials import ClientCredentials, Credentials, write_folder

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

GOOD = Credentials("ck-100", "cs-100", "at-100", "ats-100")
REVOKED = Credentials("ck-200", "cs-200", "at-200", "ats-200")
ROTATED = Credentials("ck-200b", "cs-200b", "at-200b", "ats-200b")
APP = ClientCredentials("client-300", "secret-300")
SECRETS = ("cs-100", "ats-100", "cs-200", "ats-200", "cs-200b", "ats-200b", "secret-300")


def test_three_accounts_share_partitions_one_revoked_is_held_then_delivered_after_rotation(
    broker, topics: Topics, api, daemon_env, start_daemon, tmp_path: Path
) -> None:
    """100 (OAuth 1.0) and 300 (OAuth 2.0, tokens expiring during the run) are delivered while 200
    (revoked key) is held, nothing of it dead-lettered; after its files are rotated it is delivered in
    order; 999 (no credentials) is dead-lettered without a call; offsets committed to the end; exit 0."""
    creds_dir = tmp_path / "accounts"
    for account, creds in (("100", GOOD), ("200", REVOKED), ("300", APP)):
        write_folder(creds_dir / account, creds)
        api.set_account(account, creds)
    api.set_account("200", ROTATED)  # the key the daemon has was revoked
    api.token_lifetime_s = 1.5
    visitors = {a: [f"{a}-v{i}" for i in range(6)] for a in ("100", "200", "300", "999")}
    expected: dict[tuple[str, str], list[str]] = defaultdict(list)

    def wave(n: int, first: int) -> list[tuple[str, bytes, bytes]]:
        out = []
        for i in range(first, first + n):
            for account, names in visitors.items():
                v = names[i % len(names)]
                uid = f"{account}-e{i}"
                expected[(account, v)].append(uid)
                out.append((topics.leads, v.encode(), event(account, v, topic=uid, value=i)))
        return out

    produced = produce(broker, wave(30, 0))
    env = daemon_env(api.base_url, LP_SENTINEL_URL=api.base_url, LP_CREDENTIALS_DIR=str(creds_dir))
    for key in ("LP_CONSUMER_KEY", "LP_CONSUMER_SECRET", "LP_ACCESS_TOKEN", "LP_ACCESS_TOKEN_SECRET"):
        env.pop(key)
    d = start_daemon(env)

    def delivered(account: str) -> int:
        return sum(1 for visit, _ in api.delivered() if visit.account == account)

    wait_until(lambda: delivered("100") == 30 and delivered("300") == 30, 30, "100 and 300 delivered")
    wait_until(lambda: d.metric_or_zero("engagement_halted", account="200") == 1, 10, "200 halted")
    started = time.monotonic()
    wait_until(lambda: time.monotonic() - started > api.token_lifetime_s, 5, "300's first token to expire")
    api.expire_tokens("300")  # and one expires at the API before the daemon's refresh ahead
    produced.records += produce(broker, wave(20, 30)).records
    wait_until(lambda: delivered("100") == 50 and delivered("300") == 50, 30, "the second wave of 100, 300")
    assert d.metric("engagement_halted", account="100") == 0 == d.metric("engagement_halted", account="300")
    assert d.metric("engagement_halted", account="200") == 1 and delivered("200") == 0
    status, body = d.get("/readyz")
    assert status == 200 and "200" in body, "ready while any account can send; the reason names 200"
    assert len([s for a, s in api.token_requests if a == "300"]) >= 2, "a new token after expiry"
    assert not [r for r in api.received if r.account == "999"], "no call for an unknown account"
    wait_until(
        lambda: d.metric_or_zero("engagement_dead_letters_total", reason="unknown_account") == 50,
        20,
        "999's events dead-lettered as unknown_account",
    )
    assert d.metric("engagement_account_requests_total", account="200", status="401") >= 1
    # No series for an account without credentials: the account labels of the parsed exposition (a
    # substring test over the text failed whenever any value, a sum or a timestamp, contained 999).
    _, samples = d.scrape()
    labelled = {value for _, labels in samples for key, value in labels if key == "account"}
    assert {"100", "200", "300"} <= labelled and "999" not in labelled, sorted(labelled)

    write_folder(creds_dir / "200", ROTATED)  # the Secret is rotated: files change, no restart
    wait_until(lambda: delivered("200") == 50, 30, "200 delivered after the rotation")
    wait_until(lambda: d.metric("engagement_halted", account="200") == 0, 10, "200's halt to end")
    got: dict[tuple[str, str], list[str]] = defaultdict(list)
    for visit, attr in api.delivered():
        got[(visit.account, visit.visitor)].append(attr["lead"]["topic"])
    for (account, visitor), uids in expected.items():
        if account != "999":
            assert got[(account, visitor)] == uids, (account, visitor)
    letters = read_to_end(broker.bootstrap, topics.dlq, at_least=50)
    assert len(letters) == 50
    reasons = {dict(m.headers())["dlq.reason"] for m in letters}
    assert reasons == {b"unknown_account"}, "999's events only: 200's halt dead-letters nothing"

    assert d.stop() == 0
    ends = produced.end_offsets()
    assert committed(broker, topics.group, list(ends)) == ends
    assert not any(secret in d.logs() for secret in SECRETS)
