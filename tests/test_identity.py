"""Identity files are locked per running session: a second concurrent session of one account gets
its own (stable) identity and is told so; a crashed session never leaves a stale lock."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sdparta.room.keys import MAX_IDENTITY_PROFILES, IdentityLock, claim_identity, profile_path
from support.procs import wait_for

HOLD = """
import sys, time
from pathlib import Path
from sdparta.room.keys import claim_identity
claimed = claim_identity(Path(sys.argv[1]), profiles=True)
print(claimed.path, claimed.identity.fingerprint, flush=True)
time.sleep(600)
"""


def _holder(path: Path) -> tuple[subprocess.Popen[str], str]:
    """Another process that holds the identity at ``path`` (as a running session does)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    assert line, "the holder did not claim an identity"
    return proc, line[1]


def _end(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


def test_profile_names() -> None:
    base = Path("/x/identity.key")
    assert profile_path(base, 1) == base
    assert profile_path(base, 2) == Path("/x/identity-2.key")


def test_second_session_takes_the_next_profile_and_keeps_it(tmp_path: Path) -> None:
    """A second session gets identity-2.key with a notice naming its fingerprint; the next time it
    is second it gets the same identity again (stable), and the first identity is untouched."""
    key = tmp_path / "identity.key"
    first, first_fp = _holder(key)
    try:
        second = claim_identity(key, profiles=True)
        try:
            assert second.path == tmp_path / "identity-2.key"
            assert second.identity.fingerprint != first_fp
            assert second.notice is not None and second.notice[0] == "warning"
            assert "identity.key" in second.notice[1] and "identity-2.key" in second.notice[1]
            assert second.identity.fingerprint in second.notice[1]
            assert oct((tmp_path / "identity-2.key").stat().st_mode & 0o777) == "0o600"
        finally:
            second.release()
        again = claim_identity(key, profiles=True)
        try:
            assert again.path == second.path and again.identity.fingerprint == second.identity.fingerprint
        finally:
            again.release()
    finally:
        _end(first)
    # the first session ended: its identity is free, and it is the same one as before
    alone = claim_identity(key, profiles=True)
    try:
        assert alone.path == key and alone.identity.fingerprint == first_fp and alone.notice is None
    finally:
        alone.release()


def test_a_killed_session_leaves_no_stale_lock(tmp_path: Path) -> None:
    key = tmp_path / "identity.key"
    holder, fingerprint = _holder(key)
    assert IdentityLock.try_acquire(key) is None  # held
    _end(holder, signal.SIGKILL)
    lock = IdentityLock.try_acquire(key)
    assert lock is not None, "the OS must drop a killed process's lock"
    lock.release()
    claimed = claim_identity(key, profiles=True)
    assert claimed.path == key and claimed.identity.fingerprint == fingerprint
    claimed.release()


def test_a_named_identity_file_is_shared_with_a_notice(tmp_path: Path) -> None:
    """--identity FILE: the user asked for that identity; it is used even when in use, with a warning."""
    key = tmp_path / "me.key"
    holder, fingerprint = _holder(key)
    try:
        claimed = claim_identity(key, profiles=False)
        assert claimed.path == key and claimed.identity.fingerprint == fingerprint and claimed.lock is None
        assert claimed.notice is not None and fingerprint in claimed.notice[1]
    finally:
        _end(holder)


def test_every_profile_in_use_gives_a_fresh_identity(tmp_path: Path) -> None:
    key = tmp_path / "identity.key"
    locks = [IdentityLock.try_acquire(profile_path(key, n)) for n in range(1, MAX_IDENTITY_PROFILES + 1)]
    try:
        claimed = claim_identity(key, profiles=True)
        assert claimed.path is None and claimed.lock is None
        assert claimed.notice is not None and claimed.identity.fingerprint in claimed.notice[1]
        assert not (tmp_path / f"identity-{MAX_IDENTITY_PROFILES + 1}.key").exists()
    finally:
        for lock in locks:
            assert lock is not None
            lock.release()


# ---------------------------------------------------------------------- two real `sdparta join`
def _capture(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-t", session, "-p"], capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (Debian package tmux)")
def test_two_joins_in_one_account_show_different_fingerprints(tmp_path: Path, portal) -> None:  # type: ignore[no-untyped-def]
    """Two `sdparta join` of one account (one data dir) in two terminals: the second takes
    identity-2.key, says so in the app, and each sees the other with a different fingerprint."""
    data = tmp_path / "data"
    env = {"XDG_DATA_HOME": str(data), "XDG_CONFIG_HOME": str(tmp_path / "config"), "SDPARTA_LOG": "WARNING"}
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    sdparta = Path(sys.executable).with_name("sdparta")
    sessions = [f"sdparta-id-{os.getpid()}-{n}" for n in (1, 2)]
    try:
        for n, session in enumerate(sessions, 1):
            command = (f"env {exports} {sdparta} join id-room --portal {portal.url} --name user{n} "
                       f"--video none --audio none --audio-out none")
            subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "45", command],
                           check=True)
            if n == 1:
                wait_for(lambda: (data / "sdparta" / "identity.key").exists(), 30, "the first identity file")
        first_fp = _fingerprint(data / "sdparta" / "identity.key")
        second_fp = _fingerprint(data / "sdparta" / "identity-2.key", wait=True)
        assert first_fp != second_fp
        screens: dict[str, str] = {}
        noticed = False

        def shown() -> bool:
            nonlocal noticed
            screens.update({s: _capture(s) for s in sessions})
            # the notice is a toast for a few seconds: it names the profile and the fingerprint
            flat = " ".join(screens[sessions[1]].split())
            noticed = noticed or ("identity-2.key" in flat and second_fp in flat)
            return noticed and second_fp in screens[sessions[0]] and first_fp in screens[sessions[1]]

        wait_for(shown, 60, "the notice, and each join listing the other with its own fingerprint",
                 interval=0.1, diagnostics=lambda: "\n\n".join(screens.values()))
        assert "identity-2.key" not in " ".join(screens[sessions[0]].split())  # the first one was told nothing
    finally:
        for session in sessions:
            subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def _fingerprint(path: Path, wait: bool = False) -> str:
    if wait:
        wait_for(path.exists, 30, f"{path.name} created")
    from sdparta.room.keys import Identity

    deadline = time.monotonic() + 10
    while True:
        try:
            return Identity.load_or_create(path).fingerprint
        except ValueError:  # being written right now
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
