"""Credentials (OAuth 1.0 keys, OAuth 2.0 client credentials) and the per-account folders they are
read from: `LP_CREDENTIALS_DIR/<account>/`, one value per file.

OAuth 1.0 keys are the files `consumer-key`, `consumer-secret`, `access-token`,
`access-token-secret`; OAuth 2.0 client credentials are `client-id`, `client-secret`. Values are
UTF-8 with surrounding whitespace trimmed. Entries whose names start with a dot are ignored (a
Kubernetes volume keeps its `..data` and timestamped folders there). Every problem names its file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

OAUTH1_FILES = ("consumer-key", "consumer-secret", "access-token", "access-token-secret")
OAUTH2_FILES = ("client-id", "client-secret")

Fingerprint = tuple[tuple[str, int, int, int], ...]
PAUSED_FILE = "paused"  # in an account's folder: the operator holds that account (its records park)


@dataclass(frozen=True)
class Credentials:
    """OAuth 1.0 consumer key/secret and access token/secret of one LivePerson API key."""

    consumer_key: str
    consumer_secret: str
    access_token: str
    access_token_secret: str

    def __repr__(self) -> str:
        masked = ", ".join(f"{name}='***'" for name in self.__dataclass_fields__)
        return f"Credentials({masked})"

    __str__ = __repr__


class CredentialsProblem(Exception):
    """A credential folder cannot be used; the message names the file and what is wrong with it."""


@dataclass(frozen=True)
class ClientCredentials:
    """OAuth 2.0 client credentials (LivePerson Sentinel app token) of one account."""

    client_id: str
    client_secret: str

    def __repr__(self) -> str:
        return "ClientCredentials(client_id='***', client_secret='***')"

    __str__ = __repr__


AccountCredentials = Credentials | ClientCredentials


def kind(creds: AccountCredentials) -> str:
    """`oauth1` or `oauth2`."""
    return "oauth2" if isinstance(creds, ClientCredentials) else "oauth1"


def masked(creds: AccountCredentials) -> dict[str, str]:
    """What may be shown of credentials: the kind, every value as `***`."""
    if isinstance(creds, ClientCredentials):
        return {"kind": "oauth2", "client_id": "***", "client_secret": "***"}
    return {
        "kind": "oauth1",
        "consumer_key": "***",
        "consumer_secret": "***",
        "access_token": "***",
        "access_token_secret": "***",
    }


def _read_value(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CredentialsProblem(f"{path}: missing") from None
    except OSError as exc:
        raise CredentialsProblem(f"{path}: unreadable ({exc.strerror or exc})") from None
    try:
        value = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CredentialsProblem(f"{path}: not UTF-8") from None
    if not value:
        raise CredentialsProblem(f"{path}: empty")
    return value


def load_folder(folder: Path) -> AccountCredentials:
    """Read one account's folder; raise CredentialsProblem naming the offending file."""
    present = {name for name in OAUTH1_FILES + OAUTH2_FILES if (folder / name).exists()}
    has1, has2 = present & set(OAUTH1_FILES), present & set(OAUTH2_FILES)
    if has1 and has2:
        raise CredentialsProblem(
            f"{folder / sorted(has2)[0]}: both OAuth 1.0 ({', '.join(OAUTH1_FILES)}) and OAuth 2.0 "
            f"({', '.join(OAUTH2_FILES)}) files in one folder: keep one kind"
        )
    if has2:
        cid, secret = (_read_value(folder / n) for n in OAUTH2_FILES)
        return ClientCredentials(cid, secret)
    if not has1:
        raise CredentialsProblem(
            f"{folder}: no credential files (expected {', '.join(OAUTH1_FILES)} or {', '.join(OAUTH2_FILES)})"
        )
    key, secret, token, token_secret = (_read_value(folder / n) for n in OAUTH1_FILES)
    return Credentials(key, secret, token, token_secret)


def account_folders(directory: Path) -> dict[str, Path]:
    """The account folders of the credentials directory (names not starting with a dot)."""
    out: dict[str, Path] = {}
    with os.scandir(directory) as entries:
        for entry in entries:
            if not entry.name.startswith(".") and entry.is_dir():
                out[entry.name] = Path(entry.path)
    return out


def fingerprint(folder: Path) -> Fingerprint:
    """What changes when a credential file changes (followed through symlinks): name, inode, mtime, size."""
    out = []
    for name in OAUTH1_FILES + OAUTH2_FILES:
        try:
            st = os.stat(folder / name)
        except OSError:
            continue
        out.append((name, st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(out)


def scan(directory: Path) -> tuple[dict[str, AccountCredentials], list[str]]:
    """Every account folder's credentials, and one problem line per folder that cannot be used."""
    found: dict[str, AccountCredentials] = {}
    problems: list[str] = []
    try:
        folders = account_folders(directory)
    except OSError as exc:
        return {}, [f"LP_CREDENTIALS_DIR: cannot read {directory}: {exc.strerror or exc}"]
    for account, folder in sorted(folders.items()):
        try:
            found[account] = load_folder(folder)
        except CredentialsProblem as exc:
            problems.append(f"LP_CREDENTIALS_DIR: account {account}: {exc}")
    return found, problems


def write_folder(folder: Path, creds: AccountCredentials) -> None:
    """Write an account's credential files, each replaced atomically (for the demo, tests, tooling)."""
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(creds, ClientCredentials):
        values = dict(zip(OAUTH2_FILES, (creds.client_id, creds.client_secret), strict=True))
    else:
        values = dict(
            zip(
                OAUTH1_FILES,
                (creds.consumer_key, creds.consumer_secret, creds.access_token, creds.access_token_secret),
                strict=True,
            )
        )
    for name in OAUTH1_FILES + OAUTH2_FILES:
        if name not in values:
            (folder / name).unlink(missing_ok=True)
    for name, value in values.items():
        tmp = folder / f".{name}.tmp"
        tmp.write_text(value + "\n", encoding="utf-8")
        os.replace(tmp, folder / name)
