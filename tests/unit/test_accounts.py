"""Credential folders, the account registry and the configuration of many accounts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from consumer.accounts.registry import AccountRegistry
from consumer.config import load_settings
from consumer.config.credentials import ClientCredentials, Credentials, scan, write_folder
from consumer.errors import ConfigError

pytestmark = pytest.mark.timeout(10)

KEYS = Credentials("ck-1", "cs-1", "at-1", "ats-1")
APP = ClientCredentials("client-1", "client-secret-1")
SINGLE = {
    "LP_CONSUMER_KEY": "k",
    "LP_CONSUMER_SECRET": "s",
    "LP_ACCESS_TOKEN": "t",
    "LP_ACCESS_TOKEN_SECRET": "x",
}


async def _no_tokens(account: str, creds: ClientCredentials) -> tuple[str, float]:
    raise AssertionError("not called")


def registry(env: dict[str, str]) -> AccountRegistry:
    return AccountRegistry(load_settings(env, require_kafka=False), _no_tokens)


def test_folders_of_both_kinds_load_and_secrets_never_show(tmp_path: Path) -> None:
    write_folder(tmp_path / "100", KEYS)
    write_folder(tmp_path / "200", APP)
    (tmp_path / "..data").mkdir()  # a Kubernetes volume's own entries are ignored
    found, problems = scan(tmp_path)
    assert problems == [] and found == {"100": KEYS, "200": APP}
    assert not any(v in repr(found) for v in ("ck-1", "cs-1", "at-1", "ats-1", "client-1", "client-secret-1"))


@pytest.mark.parametrize(
    ("breakage", "named"),
    [
        (lambda f: (f / "access-token").unlink(), "access-token: missing"),
        (lambda f: (f / "consumer-secret").write_bytes(b"\xff\xfe"), "consumer-secret: not UTF-8"),
        (lambda f: (f / "consumer-key").write_text("  \n"), "consumer-key: empty"),
        (lambda f: (f / "client-id").write_text("cid"), "client-id: both OAuth 1.0"),
    ],
    ids=["missing", "not-utf8", "empty", "both-kinds"],
)
def test_a_bad_folder_is_a_start_up_error_naming_the_file(tmp_path: Path, breakage, named: str) -> None:
    write_folder(tmp_path / "100", KEYS)
    write_folder(tmp_path / "200", KEYS)
    breakage(tmp_path / "200")
    with pytest.raises(ConfigError) as err:
        load_settings({"LP_CREDENTIALS_DIR": str(tmp_path)}, require_kafka=False)
    assert len(err.value.problems) == 1, err.value.problems
    assert "account 200" in err.value.problems[0] and named in err.value.problems[0]
    assert str(tmp_path / "200") in err.value.problems[0]


def test_the_single_set_beside_a_directory_needs_lp_account(tmp_path: Path) -> None:
    write_folder(tmp_path / "100", KEYS)
    with pytest.raises(ConfigError) as err:
        load_settings({"LP_CREDENTIALS_DIR": str(tmp_path), **SINGLE}, require_kafka=False)
    assert [p.split(":")[0] for p in err.value.problems] == ["LP_ACCOUNT"]
    with pytest.raises(ConfigError) as err:
        load_settings({"LP_CREDENTIALS_DIR": str(tmp_path / "missing")}, require_kafka=False)
    assert "cannot read" in err.value.problems[0]
    s = load_settings(
        {"LP_CREDENTIALS_DIR": str(tmp_path), "LP_ACCOUNT": "300", **SINGLE}, require_kafka=False
    )
    assert s.lp_account == "300"


async def test_the_three_modes_find_accounts() -> None:
    anyone = registry(SINGLE)
    one_id, other = anyone.get("1"), anyone.get("2")
    assert one_id is not None and other is not None and one_id is not other and anyone.get("1") is one_id
    assert not one_id.labelled and not other.labelled, "ids of the single set are no metric label"
    one = registry({**SINGLE, "LP_ACCOUNT": "7"})
    assert one.get("7") is not None and one.get("8") is None


async def test_the_directory_is_followed_without_a_restart(tmp_path: Path) -> None:
    write_folder(tmp_path / "100", KEYS)
    reg = registry({"LP_CREDENTIALS_DIR": str(tmp_path)})
    first = reg.get("100")
    assert first is not None and reg.get("200") is None and first.signer is not None
    signer = first.signer
    write_folder(tmp_path / "200", APP)
    write_folder(tmp_path / "100", Credentials("ck-2", "cs-2", "at-2", "ats-2"))
    reg.rescan()
    assert reg.get("200") is not None and reg.get("200").kind == "oauth2"  # type: ignore[union-attr]
    assert reg.get("100") is first and first.signer is not signer, "changed files are re-read"
    for name in ("consumer-key", "consumer-secret", "access-token", "access-token-secret"):
        (tmp_path / "100" / name).unlink()
    (tmp_path / "100").rmdir()
    reg.rescan()
    assert reg.get("100") is None and first.removed


async def test_an_unreadable_folder_at_run_time_halts_that_account_alone(tmp_path: Path) -> None:
    write_folder(tmp_path / "100", KEYS)
    write_folder(tmp_path / "200", KEYS)
    reg = registry({"LP_CREDENTIALS_DIR": str(tmp_path), "HALT_BACKOFF_INITIAL_S": "0.01"})
    probes: list[str] = []

    def prober(account):  # type: ignore[no-untyped-def]
        async def probe() -> str | None:
            probes.append(account.name)
            return None if account.reload() else "credentials"

        return probe

    reg.bind(prober)
    (tmp_path / "200" / "access-token").unlink()
    (tmp_path / "200" / "consumer-key").write_text("ck-changed")  # a change the watcher notices
    reg.rescan()
    bad, good = reg.get("200"), reg.get("100")
    assert bad is not None and good is not None
    assert bad.halt.halted and "access-token: missing" in bad.halt.reason and not good.halt.halted
    assert not reg.all_halted
    write_folder(tmp_path / "200", KEYS)

    async def resumed() -> None:
        while bad.halt.halted:
            await asyncio.sleep(0.005)

    await asyncio.wait_for(resumed(), 5)
    assert "200" in probes
    await reg.close()


async def test_a_paced_account_keeps_its_concurrency_limit_where_it_was() -> None:
    """Its slots wait on the pacer: 'in use' says nothing about the API, so the limit grows only to
    what the paced rate needs in flight (64/s x 50 ms: 4), not to MAX_IN_FLIGHT."""
    account = registry({**SINGLE, "LP_ACCOUNT": "7", "MAX_IN_FLIGHT": "64"}).get("7")
    assert account is not None
    account.limiter._set(3.0)
    account.limiter.in_flight = 3  # every slot in use, as when lanes queue behind the pacer
    account.observe(429, 0.05, backpressure=True)
    assert account.pacer.bucket is not None
    for _ in range(200):
        account.observe(200, 0.05, backpressure=False)
    assert account.pacer.bucket.rate == pytest.approx(64.0)  # 3 / 50 ms, +0.02 per accepted
    assert account.limiter.limit == 4


async def test_fast_refusals_of_a_revoked_key_are_not_the_accounts_latency_baseline() -> None:
    """The demo's 10002: its first answers were 401s in ~4 ms (refused before any work); after its
    rotation every 30 ms 2xx looked like latency well above that, and its limit fell to 1."""
    account = registry({**SINGLE, "LP_ACCOUNT": "7", "MAX_IN_FLIGHT": "64"}).get("7")
    assert account is not None
    for _ in range(20):
        account.observe(401, 0.004, backpressure=False)
    for _ in range(200):
        account.limiter.in_flight = account.limiter.limit
        account.observe(200, 0.03, backpressure=False)
    assert account.limiter.limit >= 16, account.limiter.limit


async def test_a_429_cuts_only_that_accounts_limit(tmp_path: Path) -> None:
    write_folder(tmp_path / "100", KEYS)
    write_folder(tmp_path / "200", APP)
    reg = registry({"LP_CREDENTIALS_DIR": str(tmp_path), "MAX_IN_FLIGHT": "64"})
    throttled, other = reg.get("100"), reg.get("200")
    assert throttled is not None and other is not None
    before = other.limiter.limit
    throttled.observe(429, 0.05, backpressure=True)  # a large limit: the concurrency limit answers it
    assert throttled.limiter.limit < before and other.limiter.limit == before
    assert throttled.pacer.bucket is None


async def test_rate_limit_per_account_spaces_that_accounts_requests() -> None:
    account = registry({**SINGLE, "LP_ACCOUNT": "7", "RATE_LIMIT_PER_ACCOUNT": "20"}).get("7")
    assert account is not None and account.bucket is not None
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(6):  # a burst of 2 (a tenth of a second), then one every 50 ms
        await account.acquire()
        account.release()
    assert loop.time() - started >= 0.19


async def test_single_set_serving_any_account_halts_only_the_account_id_answered_401() -> None:
    """Issue #19: one misaddressed event's 401 halted the only Account, every partition with it."""
    anyone = registry(SINGLE)

    async def still_401() -> str | None:
        return "401"

    bad, good = anyone.get("misaddressed"), anyone.get("1234")
    assert bad is not None and good is not None
    bad.halt.halt("401", "unknown account", still_401)
    assert bad.held == "halted" and good.held is None
    assert not anyone.all_halted and anyone.halted() == [bad]
    await anyone.close()
