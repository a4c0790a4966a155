"""What the client needs of the account a request is sent for (`consumer.accounts.account.Account`).

The client sits below the accounts: it does not import them, it names what it reads of one.
"""

from __future__ import annotations

from typing import Protocol

from consumer.liveperson.oauth import Signer
from consumer.liveperson.tokens import TokenCache


class Account(Protocol):
    """How a request is authorized (a signer, or a token cache and its header), and where it is counted."""

    @property
    def signer(self) -> Signer | None:
        """OAuth 1.0: signs each request (None for OAuth 2.0 or unusable credentials)."""

    @property
    def tokens(self) -> TokenCache | None:
        """OAuth 2.0: the account's bearer token cache (None for OAuth 1.0)."""

    @property
    def problem(self) -> str | None:
        """Why the credentials cannot be used now, None when they can."""

    async def authorization(self, method: str, url: str, body: bytes) -> str:
        """The `Authorization` header for one attempt."""

    def count(self, label: str) -> None:
        """One more request answered `label`."""
