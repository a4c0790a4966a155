"""A revoke during the lookups before a request (Domain API, Sentinel token): the request is never sent.

The real dispatcher, client and offset tracker against the stand-in API over HTTP; the API's
lookups are held open by a gate, the partition is revoked while a lane waits on one, then the gate
opens. Before issue 17 the POST went out after the revoke (and could land after the new owner's
newer request for the same visit).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from consumer.accounts.registry import AccountRegistry
from consumer.config import Settings, load_settings
from consumer.config.credentials import ClientCredentials, write_folder
from consumer.delivery.dispatch import Dispatcher
from consumer.formats.events import parse_event
from consumer.kafka.offsets import CommitPoint, OffsetTracker
from consumer.liveperson.client import EngagementClient
from consumer.sandbox.api import DEFAULT_CREDENTIALS, SandboxAPI
from consumer.values.records import Record

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
TP = ("engagement.leads", 0)
APP = ClientCredentials("client-b", "secret-b")


async def until(condition: object, what: str, within_s: float = 20.0) -> None:
    """Poll a condition every 10 ms (no fixed sleeps), failing after a generous deadline."""
    assert callable(condition)
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {within_s} s: {what}"
        await asyncio.sleep(0.01)


def settings_for(sandbox: SandboxAPI, lookup: str, tmp_path: Path) -> dict[str, str]:
    common = {"REVOKE_DRAIN_S": "20", "HTTP_TIMEOUT_S": "20", "SHUTDOWN_DRAIN_S": "23"}
    if lookup == "domain":  # OAuth 1.0 single set; the events base from the Domain API
        c = DEFAULT_CREDENTIALS
        return {
            **common,
            "LP_DOMAIN_API_URL": sandbox.base_url,
            "LP_SCHEME": "http",
            "LP_CONSUMER_KEY": c.consumer_key,
            "LP_CONSUMER_SECRET": c.consumer_secret,
            "LP_ACCESS_TOKEN": c.access_token,
            "LP_ACCESS_TOKEN_SECRET": c.access_token_secret,
        }
    sandbox.set_account("7", APP)  # OAuth 2.0: a Sentinel token first
    write_folder(tmp_path / "7", APP)
    return {
        **common,
        "LP_BASE_URL": sandbox.base_url,
        "LP_SENTINEL_URL": sandbox.base_url,
        "LP_CREDENTIALS_DIR": str(tmp_path),
    }


@contextlib.asynccontextmanager
async def wired(settings: Settings) -> AsyncIterator[tuple[Dispatcher, OffsetTracker]]:
    """The real dispatcher, client, accounts and offset tracker; drained and closed after."""
    client = EngagementClient(settings)
    await client.start()
    tracker = OffsetTracker(settings.offset_map_max_bytes)
    accounts = AccountRegistry(settings, client.fetch_token)
    dispatcher = Dispatcher(settings, client, accounts, tracker)
    try:
        yield dispatcher, tracker
    finally:
        await dispatcher.drain(1.0)
        await accounts.close()
        await client.close()


def submit_one(dispatcher: Dispatcher, tracker: OffsetTracker) -> int:
    """Assign TP and submit one lead of account 7 at offset 0; the assignment's generation."""
    generation = tracker.assign(TP)
    value = orjson.dumps({"account": "7", "visitor": "v", "sid": "s", "topic": "t"})
    tracker.add(TP, 0)
    dispatcher.submit(Record(*TP, 0, generation, b"v", value, None, None, parse_event(value, "lead")))
    return generation


@pytest.mark.parametrize("lookup", ["domain", "token"])
async def test_a_partition_revoked_during_a_lookup_sends_nothing(
    sandbox: SandboxAPI, tmp_path: Path, lookup: str
) -> None:
    settings = load_settings(settings_for(sandbox, lookup, tmp_path), require_kafka=False)
    sandbox.lookup_gate = gate = asyncio.Event()
    async with wired(settings) as (dispatcher, tracker):
        try:
            generation = submit_one(dispatcher, tracker)
            asked = sandbox.domain_lookups if lookup == "domain" else sandbox.token_asked
            await until(lambda: asked == ["7"], f"the {lookup} lookup is waiting")
            revoke = asyncio.create_task(dispatcher.revoke([TP]))
            # the lane waits on the lookup before it takes a request slot or its record: the
            # revoke has nothing on the wire to wait for and may be over at once
            await until(lambda: revoke.done() or (TP, generation) in dispatcher._revoking, "the revoke began")
            gate.set()  # the lookup answers after the revoke
            commit = await asyncio.wait_for(revoke, 30)
            assert commit == {TP: CommitPoint(0, "")}, "offset 0 stays undone: the new owner sends it"
            assert tracker.partitions() == []
            # The revoke is over before the lookup's answer reaches the lane: only once the lane
            # has gone on from its lookup and ended (no drain, which would stop it first) is the
            # check below about what it did after the revoke.
            await until(lambda: not dispatcher.lanes.by_visit, "the lane to end after its lookup answered")
            assert sandbox.received == [], "a request went out for a revoked partition"
        finally:
            gate.set()


async def test_a_partition_revoked_during_the_lookup_of_a_taken_batch_sends_nothing(
    sandbox: SandboxAPI, tmp_path: Path
) -> None:
    """The lane took its batch, then the send looks the base URL up again (its cache entry expired):
    the revoke waits for that request, and the client's own check before the write keeps it off the
    wire (the lane's checks all ran before the revoke)."""
    env = settings_for(sandbox, "domain", tmp_path) | {"LP_DOMAIN_CACHE_TTL_S": "0.000001"}
    settings = load_settings(env, require_kafka=False)
    sandbox.lookup_gate = first = asyncio.Event()
    gate = asyncio.Event()
    async with wired(settings) as (dispatcher, tracker):
        try:
            generation = submit_one(dispatcher, tracker)
            await until(lambda: sandbox.domain_lookups == ["7"], "the lane's own lookup")
            sandbox.lookup_gate = gate  # the next lookup waits on this one
            first.set()  # the lane's own lookup answers
            await until(lambda: sandbox.domain_lookups == ["7", "7"], "the send's lookup is waiting")
            assert dispatcher._courier.inflight_by_tp[TP] == 1, "the batch is taken and in the send"
            revoke = asyncio.create_task(dispatcher.revoke([TP]))
            await until(lambda: (TP, generation) in dispatcher._revoking, "the revoke began")
            gate.set()
            commit = await asyncio.wait_for(revoke, 30)
            assert commit == {TP: CommitPoint(0, "")}, "offset 0 stays undone: the new owner sends it"
            await until(lambda: not dispatcher.lanes.by_visit, "the lane to end")
            assert sandbox.received == [], "a request went out for a revoked partition"
        finally:
            first.set()
            gate.set()
