"""/accounts and `top` against a running daemon: a revoked key's halt shows in the next frame, worst first."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from harness import Topics, event, produce, wait_until
from rich.console import Console

from consumer.config.credentials import Credentials, write_folder
from consumer.tools import top

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

GOOD = Credentials("ck-100", "cs-100", "at-100", "ats-100")
REVOKED = Credentials("ck-200", "cs-200", "at-200", "ats-200")
ROTATED = Credentials("ck-200b", "cs-200b", "at-200b", "ats-200b")
SECRETS = ("cs-100", "ats-100", "cs-200", "ats-200", "cs-200b", "ats-200b")


def _frame(url: str) -> str:
    console = Console(record=True, width=160, file=io.StringIO())
    console.print(top.render(top.fetch_all([url])))
    return console.export_text()


def _row(frame: str, account: str) -> str:
    return next((line for line in frame.splitlines() if line.strip("│┃ ").startswith(account + " ")), "")


def _started(tmp_path: Path, broker, topics: Topics, api, daemon_env, start_daemon):  # type: ignore[no-untyped-def]
    creds_dir = tmp_path / "accounts"
    for account, creds in (("100", GOOD), ("200", REVOKED)):
        write_folder(creds_dir / account, creds)
        api.set_account(account, creds)
    api.set_account("200", ROTATED)  # the key the daemon has was revoked
    env = daemon_env(api.base_url, LP_CREDENTIALS_DIR=str(creds_dir), HALT_BACKOFF_INITIAL_S="5")
    for key in ("LP_CONSUMER_KEY", "LP_CONSUMER_SECRET", "LP_ACCESS_TOKEN", "LP_ACCESS_TOKEN_SECRET"):
        env.pop(key)
    d = start_daemon(env)
    url = f"http://127.0.0.1:{d.http_port}"
    assert "200" in _frame(url) and not [e for e in d.log_events() if e.get("event") == "halted_on_auth"]
    produce(
        broker,
        [
            (topics.leads, f"{a}-v{i}".encode(), event(a, f"{a}-v{i}", value=i))
            for i in range(20)
            for a in ("100", "200")
        ],
    )
    return d, url, creds_dir


def test_top_shows_a_halted_account_in_its_first_frame_after_the_halt(
    broker, topics: Topics, api, daemon_env, start_daemon, tmp_path: Path
) -> None:
    """200's first request is refused (its key was revoked): the first `top` frame fetched after the
    daemon logged the halt shows it halted, first, with its reason and its held events (nothing
    cached, whatever the machine's load); `top --once` (the CLI) prints the same; /accounts is
    bounded and has no secret."""
    d, url, _ = _started(tmp_path, broker, topics, api, daemon_env, start_daemon)

    def halted_logged() -> bool:
        return any(e.get("event") == "halted_on_auth" for e in d.log_events())

    wait_until(halted_logged, 30, "200's halt logged")
    # the daemon sets the halt before it logs it: a frame fetched now must show it
    assert "halted" in _row(_frame(url), "200"), "top's first frame after the halt"

    status, body = d.get("/accounts")
    doc = json.loads(body)
    assert status == 200 and doc["accounts"][0]["account"] == "200", "worst first"
    first = doc["accounts"][0]
    assert (first["state"], first["reason"]) == ("halted", "401")
    wait_until(lambda: json.loads(d.get("/accounts")[1])["accounts"][0]["held"] > 0, 10, "200's events held")
    assert doc["totals"]["halted"] == 1 and doc["more"] == 0
    assert json.loads(d.get("/accounts?limit=1")[1])["more"] == 1, "bounded"
    assert not any(secret in body for secret in SECRETS)
    wait_until(
        lambda: "flowing" in _row(_frame(url), "100") or "idle" in _row(_frame(url), "100"), 10, "100 ok"
    )

    once = subprocess.run(
        [sys.executable, "-m", "consumer", "top", "--once", "--url", url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert once.returncode == 0, once.stderr
    print(once.stdout)
    assert "halted" in _row(once.stdout, "200") and "401" in _row(once.stdout, "200")
    lines = [line for line in once.stdout.splitlines() if _row(line, "200") or _row(line, "100")]
    assert lines and "200" in lines[0], "sorted by trouble: the halted account first"
    assert d.stop() == 0


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_top_live_in_a_terminal_refreshes_and_quits_on_q(
    broker, topics: Topics, api, daemon_env, start_daemon, tmp_path: Path
) -> None:
    """The live view in a real terminal (tmux): shows 200's halt, then its recovery after the key
    is rotated (a refresh), and `q` ends it with exit 0."""
    d, url, creds_dir = _started(tmp_path, broker, topics, api, daemon_env, start_daemon)
    sock = f"top-{d.http_port}"
    done = tmp_path / "top.exit"
    command = f"{sys.executable} -m consumer top --url {url}; echo $? > {done}"
    tmux = ["tmux", "-L", sock]
    subprocess.run([*tmux, "new-session", "-d", "-x", "150", "-y", "45", command], check=True, timeout=10)
    try:

        def screen() -> str:
            return subprocess.run(
                [*tmux, "capture-pane", "-p"], capture_output=True, text=True, timeout=10
            ).stdout

        wait_until(lambda: "halted" in _row(screen(), "200"), 30, "the live view to show 200 halted")
        write_folder(creds_dir / "200", ROTATED)
        wait_until(lambda: "halted" not in _row(screen(), "200") and _row(screen(), "200"), 30, "a refresh")
        subprocess.run([*tmux, "send-keys", "q"], check=True, timeout=10)
        wait_until(done.exists, 10, "top to quit on q")
        assert done.read_text().strip() == "0"
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, timeout=10)
    assert d.stop() == 0
