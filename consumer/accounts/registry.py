"""The accounts the daemon serves, made from the configuration and kept in step with LP_CREDENTIALS_DIR.

Three modes: no directory and no `LP_ACCOUNT`: the single-set `LP_*` credentials serve every
account (one `Account` per account id seen, at most `LP_ANY_ACCOUNT_IDS_MAX`: see `_evict`);
`LP_ACCOUNT`: they serve that account only; a directory: one
account per folder (plus `LP_ACCOUNT`'s, if set). A watcher task re-checks the folders every
`CREDENTIALS_RECHECK_S` (a stat per file, no reads unless something changed): new folders become
accounts, removed ones stop being served, changed files are re-read. Nothing on the request path
touches the file system.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import structlog

from consumer.accounts.account import Account, Loader, TokenFetch
from consumer.accounts.halt import Halt, Probe
from consumer.accounts.limiter import ConcurrencyLimiter
from consumer.accounts.slots import FairSlots, TokenBucket
from consumer.config import Settings
from consumer.config.credentials import PAUSED_FILE, Fingerprint, account_folders, fingerprint, load_folder
from consumer.ops import metrics

log = structlog.get_logger("consumer.accounts")

FORGOTTEN_HALTS_PER_ID = 10  # halted ids evicted and remembered (by name only), per id kept


class AccountRegistry:
    """Finds the `Account` of an event's account id (None: no credentials for it)."""

    def __init__(
        self,
        settings: Settings,
        fetch_token: TokenFetch,
        on_halt_change: Callable[[bool], None] = lambda halted: None,
    ) -> None:
        self._s = settings
        self._fetch_token = fetch_token
        self._on_halt_change = on_halt_change
        self.slots = FairSlots(settings.max_in_flight)
        self._accounts: dict[str, Account] = {}
        self._any: Account | None = None  # the single set serving every account: the template
        self._ids: OrderedDict[str, Account] = OrderedDict()  # its account ids, each halted on its own
        self._forgotten: OrderedDict[str, str] = OrderedDict()  # evicted while halted: id -> halt reason
        self._sweep_at = settings.lp_any_account_ids_max  # evict when this many ids are kept
        self._in_use: Callable[[], Iterable[Account]] = tuple  # the accounts lanes hold (the dispatcher's)
        self._prints: dict[str, Fingerprint] = {}
        self._prober: Callable[[Account], Probe] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._dir = Path(settings.lp_credentials_dir) if settings.lp_credentials_dir else None
        if settings.lp_account is not None:
            self._add(settings.lp_account, settings.credentials)
        elif self._dir is None:
            self._any = self._add("", settings.credentials)
        if self._dir is not None:
            self.rescan()
        self.check_pauses()

    # ---- look-up (hot path) -----------------------------------------------------------------
    def get(self, account: str) -> Account | None:
        """The account serving this account id, or None when it has no credentials."""
        if self._any is not None:
            return self._wildcard(account)
        return self._accounts.get(account)

    def _wildcard(self, account_id: str) -> Account:
        """The single set's `Account` for one account id: a 401 for one id halts that id only."""
        got = self._ids.get(account_id)
        if got is not None:
            self._ids.move_to_end(account_id)
            return got
        assert self._any is not None
        got = self._make(account_id, self._s.credentials, labelled=False)
        got.paused = self._any.paused
        reason = self._forgotten.pop(account_id, None)
        if reason is not None and got.probe is not None:  # evicted while halted: back halted, no request
            got.probe_id = account_id
            got.halt.halt(reason, "halted before it was evicted (LP_ANY_ACCOUNT_IDS_MAX)", got.probe)
        self._ids[account_id] = got
        if len(self._ids) > self._sweep_at:
            self._evict(keep=account_id)
        return got

    def _evict(self, keep: str) -> None:
        """Bring the ids kept back under LP_ANY_ACCOUNT_IDS_MAX (a tenth under, so this runs seldom).

        Idle halted ids go first, then idle ones, least recently used first; an id a lane holds is
        never evicted (lanes are bounded by MAX_PENDING_EVENTS). An evicted id's prober stops and it
        is marked removed (a lane that still had it takes the id's new Account at its next send); a
        halted one is remembered by name, so the park keeps it held and it comes back halted.
        """
        limit = self._s.lp_any_account_ids_max
        busy = {id(a) for a in self._in_use()}
        idle = [(k, a) for k, a in self._ids.items() if k != keep and id(a) not in busy]
        ranked = [p for p in idle if p[1].halt.halted] + [p for p in idle if not p[1].halt.halted]
        halted = False
        for name, account in ranked[: len(self._ids) - (limit - limit // 10)]:
            del self._ids[name]
            if account.halt.halted:
                halted = True
                self._forgotten[name] = account.halt.reason
                self._forgotten.move_to_end(name)
            account.removed = True
            account.halt.dismiss()
        while len(self._forgotten) > limit * FORGOTTEN_HALTS_PER_ID:
            self._forgotten.popitem(last=False)
        # Lanes hold all the rest: look again once a tenth more ids came (not at every new id).
        self._sweep_at = max(limit, len(self._ids) + limit // 10)
        if halted:
            self._wildcard_halt_change(False)

    def held_reason(self, account_id: str) -> str | None:
        """Why an account id cannot send now (None: it can, or it has no credentials), making no Account."""
        if self._any is None:
            account = self._accounts.get(account_id)
        else:
            account = self._ids.get(account_id)
            if account is None:
                return "halted" if account_id in self._forgotten else self._any.held
        return account.held if account is not None else None

    def _serving(self) -> list[Account]:
        if self._any is not None and self._ids:
            return list(self._ids.values())
        return list(self._accounts.values())

    def labelled(self, account: str) -> bool:
        """True when an account id has credentials of its own (it may be a metric label value)."""
        return account in self._accounts and self._any is None

    def __iter__(self) -> Iterator[Account]:
        """The accounts served now (the single set serving every account: each account id kept)."""
        return iter(self._serving())

    def __len__(self) -> int:
        return len(self._accounts)

    @property
    def all_halted(self) -> bool:
        """True when no account can send (every one is halted, or there is none)."""
        return all(a.halt.halted for a in self._serving())

    def halted(self) -> list[Account]:
        """The halted accounts (with the single set serving every account: its halted ids)."""
        return [a for a in self._serving() if a.halt.halted]

    # ---- wiring and lifecycle ----------------------------------------------------------------
    def bind(
        self, prober: Callable[[Account], Probe], in_use: Callable[[], Iterable[Account]] = tuple
    ) -> None:
        """Give every account (now and later) its probe request; halt those whose files are unusable.
        `in_use`: the accounts lanes hold now (never evicted)."""
        self._prober = prober
        self._in_use = in_use
        for account in self._accounts.values():
            account.probe = prober(account)
            account.halt_if_unusable()

    def start(self) -> None:
        """Watch the credentials directory and the pause file (if any)."""
        if self._dir is not None or self._s.lp_pause_file:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def close(self) -> None:
        """Stop watching and probing."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for account in [*self._accounts.values(), *self._ids.values()]:
            await account.halt.close()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._s.credentials_recheck_s)
            try:
                if self._dir is not None:
                    self.rescan()
                self.check_pauses()
            except OSError as exc:
                log.error("credentials_dir_unreadable", directory=str(self._dir), error=str(exc))

    def rescan(self) -> None:
        """Pick up added, removed and changed account folders."""
        assert self._dir is not None
        folders = account_folders(self._dir)
        for name, folder in folders.items():
            if name == self._s.lp_account:
                continue
            now = fingerprint(folder)
            account = self._accounts.get(name)
            if account is None:
                self._prints[name] = now
                account = self._add(name, functools.partial(load_folder, folder))
                log.info("account_added", account=name, kind=account.kind, usable=account.problem is None)
            elif now != self._prints.get(name):
                self._prints[name] = now
                if account.reload():
                    log.info("credentials_reloaded", account=name, kind=account.kind)
        for name in [n for n in self._accounts if n not in folders and n != self._s.lp_account]:
            self._remove(name)

    def check_pauses(self) -> None:
        """Pause the accounts whose `paused` file exists (the single set: LP_PAUSE_FILE); resume the rest."""
        single = self._s.lp_pause_file
        for name, account in self._accounts.items():
            if name == "" or name == self._s.lp_account:
                paused = bool(single) and os.path.exists(single or "")
            else:
                paused = self._dir is not None and (self._dir / name / PAUSED_FILE).exists()
            if paused != account.paused:
                account.paused = paused
                if account is self._any:
                    for wild in self._ids.values():
                        wild.paused = paused
                metrics.PAUSED.labels(name).set(1 if paused else 0)
                log.warning(
                    "account_paused" if paused else "account_resumed",
                    account=name,
                    note="its records are parked until the file is removed" if paused else "sending again",
                )
                self._on_halt_change(paused)

    def paused(self) -> list[Account]:
        """The accounts the operator paused."""
        return [a for a in self._accounts.values() if a.paused]

    def _add(self, name: str, load: Loader) -> Account:
        account = self._accounts[name] = self._make(name, load)
        return account

    def _make(self, name: str, load: Loader, labelled: bool = True) -> Account:
        s = self._s
        gauge = metrics.CONCURRENCY_LIMIT.labels(name) if labelled else None
        limiter = ConcurrencyLimiter(s.per_account_limit, s.adaptive_concurrency, gauge=gauge)
        bucket = TokenBucket(s.rate_limit_per_account) if s.rate_limit_per_account else None
        change = self._on_halt_change if labelled else self._wildcard_halt_change
        halt = Halt(name, s.halt_backoff_initial_s, s.halt_backoff_max_s, change, gauge=labelled)
        account = Account(name, load, self.slots, limiter, bucket, halt, self._fetch_token, labelled)
        if self._prober is not None:
            account.probe = self._prober(account)
            account.halt_if_unusable()
        return account

    def _wildcard_halt_change(self, halted: bool) -> None:
        """engagement_halted{account=""}: 1 while any id of the single set is halted."""
        metrics.HALTED.labels("").set(1 if any(a.halt.halted for a in self._ids.values()) else 0)
        self._on_halt_change(halted)

    def _remove(self, name: str) -> None:
        account = self._accounts.pop(name)
        self._prints.pop(name, None)
        account.removed = True
        account.halt.dismiss()
        for gauge in (metrics.HALTED, metrics.CONCURRENCY_LIMIT):
            with contextlib.suppress(KeyError):
                gauge.remove(name)
        log.warning(
            "account_removed", account=name, note="its events are now dead-lettered as unknown_account"
        )
