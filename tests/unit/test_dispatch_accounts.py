"""The dispatcher with many accounts: unknown accounts, a halt that stays with its account, tokens."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from test_dispatch import TP, build, settle, submit

from consumer.config.credentials import ClientCredentials, Credentials, write_folder
from consumer.values.reply import Reply

pytestmark = pytest.mark.timeout(20)


def keys(n: int) -> Credentials:
    return Credentials(f"ck-{n}", f"cs-{n}", f"at-{n}", f"ats-{n}")


def signed_with(auth: str, n: int) -> bool:
    return f'oauth_consumer_key="ck-{n}"' in auth


async def until(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.002)

    await asyncio.wait_for(poll(), timeout)


async def test_an_account_without_credentials_is_dead_lettered_without_a_call(tmp_path: Path) -> None:
    write_folder(tmp_path / "100", keys(1))
    d, client, dl, tracker = build(lambda v, t: Reply(200), LP_CREDENTIALS_DIR=str(tmp_path))
    submit(d, tracker, [("a", "x0")], account="100")
    submit(d, tracker, [("b", "x1"), ("b", "x2")], account="999", start=1)
    await settle(tracker)
    assert [t for _, t in client.calls] == [["x0"]] and signed_with(client.auths[0], 1)
    assert [(t, v.reason) for t, v in dl.letters] == [("x1", "unknown_account"), ("x2", "unknown_account")]
    assert "999" in dl.letters[0][1].error and dl.letters[0][1].status is None


async def test_a_halt_holds_only_its_account_and_its_prober_ends_it_with_no_lane_left(
    tmp_path: Path,
) -> None:
    """Account 200's key is revoked: 100 keeps flowing; 200's events are held (never dead-lettered);
    its partition is revoked (no lane left); once its files are rotated the prober ends the halt."""
    for n in (100, 200):
        write_folder(tmp_path / str(n), keys(n))
    revoked = {"200": True}

    def answer(visit, topics):  # type: ignore[no-untyped-def]
        auth = client.auth
        if visit.account == "200" and signed_with(auth, 200) and revoked["200"]:
            return Reply(401, detail="revoked")
        return Reply(200)

    d, client, dl, tracker = build(answer, LP_CREDENTIALS_DIR=str(tmp_path))
    submit(d, tracker, [(f"b{i}", f"b{i}") for i in range(5)], account="200")
    submit(d, tracker, [(f"a{i}", f"a{i}") for i in range(30)], account="100", start=5)
    bad, good = d._accounts.get("200"), d._accounts.get("100")
    assert bad is not None and good is not None
    await until(lambda: bad.halt.halted and tracker.pending_total == 5)
    assert not good.halt.halted and len({t[0] for v, t in client.calls if v.account == "100"}) == 30
    assert not dl.letters
    await until(lambda: bad.halt.step >= 3)
    assert (await d.revoke([TP]))[TP].offset == 0  # every lane of the halted account is gone
    revoked["200"] = False
    write_folder(tmp_path / "200", Credentials("ck-201", "cs-201", "at-201", "ats-201"))
    await until(lambda: not bad.halt.halted)
    assert any('oauth_consumer_key="ck-201"' in a for a in client.auths), "re-read before the probe"
    assert not dl.letters


async def test_a_401_on_a_token_refreshes_once_and_resends_a_second_halts(tmp_path: Path) -> None:
    write_folder(tmp_path / "300", ClientCredentials("app", "app-secret"))
    issued: list[str] = []
    refused = {"below": 0}  # tokens tok-<n> with n below this are refused by the API

    async def fetch_token(account: str, creds: ClientCredentials) -> tuple[str, float]:
        assert (account, creds.client_id) == ("300", "app")
        issued.append(f"tok-{len(issued)}")
        return issued[-1], 3600.0

    def answer(visit, topics):  # type: ignore[no-untyped-def]
        return Reply(401) if int(client.auth.rpartition("-")[2]) < refused["below"] else Reply(200)

    d, client, dl, tracker = build(answer, fetch_token=fetch_token, LP_CREDENTIALS_DIR=str(tmp_path))
    submit(d, tracker, [("a", "x0")], account="300")
    await settle(tracker)
    assert client.auths == ["Bearer tok-0"] and issued == ["tok-0"]
    refused["below"] = 1  # the token expired at the API: one refresh, one resend, delivered
    submit(d, tracker, [("a", "x1")], account="300")
    await settle(tracker)
    assert client.auths[1:] == ["Bearer tok-0", "Bearer tok-1"] and not dl.letters
    refused["below"] = 10**6  # refused again after the refresh: the account halts
    submit(d, tracker, [("a", "x2")], account="300")
    account = d._accounts.get("300")
    assert account is not None
    await until(lambda: account.halt.halted)
    assert client.auths[3:5] == ["Bearer tok-1", "Bearer tok-2"] and not dl.letters
    assert tracker.pending_total == 1
    refused["below"] = 0
    await settle(tracker)
    assert not account.halt.halted and not dl.letters
