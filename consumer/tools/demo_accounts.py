"""The demo's accounts: one daemon, several LivePerson accounts, each with its own credentials.

Account 10001 is an OAuth 2.0 app (client id and secret; bearer tokens from the stand-in's Sentinel
endpoint, living 5 s, so they are refreshed ahead during the run). Account 10002 has OAuth 1.0 keys
that were revoked: the stand-in refuses them, the daemon halts that account alone (its events
held, 10001 keeps flowing) until the demo rotates its files in `LP_CREDENTIALS_DIR` half way
through; the daemon re-reads them and delivers everything it held. The 422 account has the
stand-in's default keys; events of an account without a folder are dead-lettered as
`unknown_account`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from consumer.config.credentials import ClientCredentials, Credentials, write_folder

APP_ACCOUNT, REVOKED_ACCOUNT = "10001", "10002"
ACCOUNTS = (APP_ACCOUNT, REVOKED_ACCOUNT)
UNKNOWN_ACCOUNT = "10009"  # no folder: its events are dead-lettered as unknown_account
APP = ClientCredentials("demo-app-10001", "demo-app-secret-10001")
OLD_KEYS = Credentials("demo-key-10002", "demo-secret-10002", "demo-token-10002", "demo-token-secret-10002")
NEW_KEYS = Credentials("demo-key-10002-v2", "demo-secret-v2", "demo-token-v2", "demo-token-secret-v2")
_SINGLE_SET = ("LP_CONSUMER_KEY", "LP_CONSUMER_SECRET", "LP_ACCESS_TOKEN", "LP_ACCESS_TOKEN_SECRET")


class DemoAccounts:
    """Writes the credential folders, scripts the stand-in, rotates the revoked key mid-run."""

    def __init__(self, bad_account: str, bad_credentials: Credentials) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="engagement-demo-accounts-")
        self.directory = Path(self._tmp.name)
        write_folder(self.directory / APP_ACCOUNT, APP)
        write_folder(self.directory / REVOKED_ACCOUNT, OLD_KEYS)
        write_folder(self.directory / bad_account, bad_credentials)
        self.halted_at: float | None = None
        self.rotated_at: float | None = None
        self.resumed_at: float | None = None

    def script(self, api: Any) -> None:
        """The stand-in knows each account's own credentials; 10002's old key is already revoked."""
        api.set_account(APP_ACCOUNT, APP)
        api.set_account(REVOKED_ACCOUNT, NEW_KEYS)
        api.token_lifetime_s = 5.0

    def configure(self, env: dict[str, str], api: Any) -> None:
        """The daemon reads credentials from the folders (not the single set), tokens from the stand-in."""
        for name in _SINGLE_SET:
            env.pop(name, None)
        env.update(
            LP_CREDENTIALS_DIR=str(self.directory),
            LP_SENTINEL_URL=api.base_url,
            CREDENTIALS_RECHECK_S="0.5",
            HALT_BACKOFF_INITIAL_S="0.5",
            HALT_BACKOFF_MAX_S="2",
        )

    def tick(self, app: Any, produced: int, target: int, note: Any) -> None:
        """Watch 10002's halt; rotate its files once it was halted a while and half the events are in."""
        account = app.accounts.get(REVOKED_ACCOUNT) if app.accounts is not None else None
        if account is None:
            return
        now = time.monotonic()
        if self.halted_at is None and account.halt.halted:
            self.halted_at = now
            note(f"account {REVOKED_ACCOUNT}: its key was revoked -> halted (its events held, others flow)")
        if (
            self.rotated_at is None
            and self.halted_at is not None
            and now - self.halted_at >= 3.0
            and produced >= target // 2
        ):
            write_folder(self.directory / REVOKED_ACCOUNT, NEW_KEYS)
            self.rotated_at = now
            note(f"account {REVOKED_ACCOUNT}: rotated its credential files (as a Secret update would)")
        if self.rotated_at is not None and self.resumed_at is None and not account.halt.halted:
            self.resumed_at = now
            note(f"account {REVOKED_ACCOUNT}: credentials accepted again -> resumed")

    def notes(self, api: Any, started: float) -> list[str]:
        """One summary line per account."""
        by_account: dict[str, int] = {}
        for visit, _ in api.delivered():
            by_account[visit.account] = by_account.get(visit.account, 0) + 1
        tokens = sum(1 for account, status in api.token_requests if account == APP_ACCOUNT and status == 200)
        out = [
            f"account {APP_ACCOUNT} (OAuth 2.0): {by_account.get(APP_ACCOUNT, 0)} delivered, {tokens} tokens"
        ]
        when = [
            f"{label} at {at - started:.1f}s"
            for label, at in (
                ("halted", self.halted_at),
                ("rotated", self.rotated_at),
                ("resumed", self.resumed_at),
            )
            if at is not None
        ]
        out.append(
            f"account {REVOKED_ACCOUNT} (OAuth 1.0, revoked key): {', '.join(when) or 'never halted'}; "
            f"{by_account.get(REVOKED_ACCOUNT, 0)} delivered"
        )
        return out

    def close(self) -> None:
        """Remove the folders."""
        self._tmp.cleanup()
