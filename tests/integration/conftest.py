"""Fixtures shared by the integration tests that talk to the stand-in API directly over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from consumer.sandbox.api import SandboxAPI


@pytest.fixture
async def sandbox() -> AsyncIterator[SandboxAPI]:
    """A stand-in LivePerson API on a loopback port, stopped after the test."""
    async with SandboxAPI() as api:
        yield api


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """One aiohttp client session, closed after the test."""
    async with aiohttp.ClientSession() as s:
        yield s
