"""The Domain API cache: one lookup shared by every lane of an account, whoever of them is cancelled."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from consumer.liveperson.domain import DomainResolver

pytestmark = pytest.mark.timeout(10)


class HeldResolver(DomainResolver):
    """A resolver whose Domain API call waits until `answer` is set (no HTTP)."""

    def __init__(self) -> None:
        super().__init__("https://domain.test", ttl_s=60.0)
        self.answer = asyncio.Event()
        self.calls = 0

    async def _fetch(self, session: Any, account: str) -> str:
        self.calls += 1
        await self.answer.wait()
        return f"https://{account}.lp.test"


async def until(predicate: Any, timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.001)

    await asyncio.wait_for(poll(), timeout)


async def test_a_shared_lookup_outlives_the_cancel_of_the_lane_that_started_it() -> None:
    """Issue 27 item 3: a revoke cancels one lane's wait; another lane on the same lookup gets the answer."""
    resolver = HeldResolver()
    first = asyncio.create_task(resolver.base_url(None, "1"))  # type: ignore[arg-type]
    await until(lambda: resolver.calls == 1)
    second = asyncio.create_task(resolver.base_url(None, "1"))  # type: ignore[arg-type]
    await asyncio.sleep(0)  # the second waits on the shared lookup
    first.cancel()  # as Lanes.cut_waits cancels a lane whose partition is revoked
    with pytest.raises(asyncio.CancelledError):
        await first
    resolver.answer.set()
    assert await asyncio.wait_for(second, 2.0) == "https://1.lp.test"
    assert resolver.calls == 1, "one Domain API call for both"
    assert await resolver.base_url(None, "1") == "https://1.lp.test"  # type: ignore[arg-type]
    assert resolver.calls == 1, "the answer was cached although its starter was cancelled"


async def test_a_cancelled_waiter_leaves_the_lookup_to_the_others() -> None:
    resolver = HeldResolver()
    first = asyncio.create_task(resolver.base_url(None, "1"))  # type: ignore[arg-type]
    await until(lambda: resolver.calls == 1)
    second = asyncio.create_task(resolver.base_url(None, "1"))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    resolver.answer.set()
    assert await asyncio.wait_for(first, 2.0) == "https://1.lp.test"
