"""Leaving, and how leavers are shown: one rule everywhere — a participant who left (bye, or out of
the list) or is gone (crashed: stopped announcing) is listed with that status and a reason for
DEPARTED_LINGER_S, then taken off the list (the bot's report keeps it under ``departed``); no
ghosts. SIGTERM and SIGHUP (the terminal closed) leave like ctrl+q, for `bot` and `join`.

Real processes (portal, bots, `sdparta join` in tmux) and real signals; the engine-level cases run a
real Call against a real portal with a bare room session as the other member."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sdparta.engine import membership
from sdparta.engine.call import Call, CallConfig
from sdparta.engine.peer import BYE_REASON
from sdparta.engine.state import PeerSnapshot
from sdparta.room.keys import Identity, IdentityLock, RoomKeys
from sdparta.room.roster import STALE_REASON
from sdparta.room.session import RoomEvents, RoomSession, SessionTiming
from sdparta.store import open_store
from support.procs import BotProcess, peers_by_name, start_bot, wait_for
from support.tmux import Terminal, open_terminal

pytestmark = pytest.mark.integration
needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (Debian package tmux)")

LINGER = membership.DEPARTED_LINGER_S
LEAVE_SEEN_S = 6.0  # a signalled leave reaches the others (bye) within this long
EXIT_BOUND_S = 12.0  # … and the signalled process is gone within this long


# ---------------------------------------------------------------------- engine: one rule for leavers
def _peers(call: Call) -> list[PeerSnapshot]:
    return list(call.snapshot().peers)


def _describe(call: Call) -> str:
    return "; ".join(f"{p.name} {p.status} {p.failure_reason}" for p in _peers(call)) or "no peers"


def _wait(predicate: Callable[[], bool], timeout: float, what: str, call: Call) -> None:
    wait_for(predicate, timeout, what, interval=0.05, diagnostics=lambda: _describe(call))


def _bob(portal_url: str, keys: RoomKeys, timing: SessionTiming | None = None) -> tuple[RoomSession, object]:
    store = open_store([portal_url])
    session = RoomSession(store, keys, Identity.generate(), "bob", "b0b0b0b0b0b0b0b0", RoomEvents(),
                          timing=timing or SessionTiming(reannounce=3600, poll_push=3600))
    return session, store


def test_a_failed_pair_whose_member_says_bye_is_left_then_off_the_list_and_stays_off(
        portal, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """A pair that failed (the member never answered) ends as `left` when the member says bye, is
    listed so for the linger time, then removed; the same session listed again (a writer that
    re-inserts a record it still had) does not bring it back."""
    monkeypatch.setattr(membership, "DEPARTED_LINGER_S", 2.0)
    keys = RoomKeys.derive("bye-room", "")
    call = Call(CallConfig(room="bye-room", portals=[portal.url], name="alice", video="none", audio="none",
                           room_keys=keys, connect_timeout=1.5))
    call.start()

    async def bob_fails_then_says_bye() -> None:
        bob, store = _bob(portal.url, keys)
        await bob.start()
        try:
            await asyncio.to_thread(_wait, lambda: [p.status for p in _peers(call)] == ["failed"], 20,
                                    "alice's pair with the silent bob failed", call)
            await bob.leave()  # bye in the pair slot, record out of the list
            await asyncio.to_thread(_wait, lambda: [(p.status, p.failure_reason) for p in _peers(call)]
                                    == [("left", BYE_REASON)], 10, "bob shown as left", call)
            left_at = time.monotonic()
            await asyncio.to_thread(_wait, lambda: not _peers(call), 10, "bob off the list", call)
            assert time.monotonic() - left_at >= 2.0 - 1.1  # shown for the linger (pruned once a second)
            bob._closing = False
            await bob._update_presence(leaving=False)  # the same session listed again
            await asyncio.sleep(2.0)
            assert not _peers(call), _describe(call)
        finally:
            await bob.close()
            await store.aclose()  # type: ignore[attr-defined]

    try:
        asyncio.run(bob_fails_then_says_bye())
    finally:
        call.stop()


def test_a_member_that_stops_announcing_is_gone_with_the_reason_then_off_the_list(
        portal, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """The ghost a killed `join` left: a newcomer who saw its (still fresh) record tried to connect,
    failed, and listed it as `failed` for good. Now the record's expiry ends that pair as `gone`
    with the reason, and it leaves the list like any leaver."""
    monkeypatch.setattr(membership, "DEPARTED_LINGER_S", 2.0)
    keys = RoomKeys.derive("ghost-room", "")
    call = Call(CallConfig(room="ghost-room", portals=[portal.url], name="alice", video="none", audio="none",
                           room_keys=keys, connect_timeout=1.5, timing=SessionTiming(ttl=5.0)))

    async def bob_crashes() -> None:
        bob, store = _bob(portal.url, keys)
        await bob.start()  # announces once, never again: a crashed process's last record
        await bob.close()
        await store.aclose()  # type: ignore[attr-defined]
        call.start()
        await asyncio.to_thread(_wait, lambda: [p.status for p in _peers(call)] == ["failed"], 20,
                                "the newcomer's pair with the dead bob failed", call)
        await asyncio.to_thread(_wait, lambda: [(p.status, p.failure_reason) for p in _peers(call)]
                                == [("gone", STALE_REASON)], 15, "bob gone, with the reason", call)
        await asyncio.to_thread(_wait, lambda: not _peers(call), 10, "bob off the list", call)

    try:
        asyncio.run(bob_crashes())
    finally:
        call.stop()


# ---------------------------------------------------------------------- bots: signals and crashes
def _diagnose(bots: list[BotProcess]) -> str:
    lines = []
    for bot in bots:
        report = bot.report() or {}
        lines.append(f"{bot.name} (exit {bot.proc.poll()}): peers="
                     f"{[(p['name'], p['status'], p['failure_reason']) for p in report.get('peers', [])]} "
                     f"departed={[(p['name'], p['status'], p['failure_reason']) for p in report.get('departed', [])]}")
        lines.append("  log tail: " + " | ".join(bot.log_path.read_text().splitlines()[-6:]))
    return "\n".join(lines)


def _status(bot: BotProcess, name: str) -> tuple[str, str | None] | None:
    peer = peers_by_name(bot.report()).get(name)
    return (peer["status"], peer["failure_reason"]) if peer else None


def _departed(bot: BotProcess, name: str) -> dict | None:
    return next((p for p in (bot.report() or {}).get("departed", []) if p["name"] == name), None)


def _connected(bot: BotProcess, names: set[str]) -> bool:
    return all((_status(bot, n) or ("",))[0] == "connected" for n in names)


def _shown(watcher: BotProcess, name: str, status: str, reason: str, bots: list[BotProcess],
           within: float) -> float:
    """Wait until ``watcher`` lists ``name`` with ``status`` and ``reason``; when that was seen."""
    wait_for(lambda: _status(watcher, name) == (status, reason), within, f"{watcher.name} shows {name} {status}",
             diagnostics=lambda: _diagnose(bots))
    return time.monotonic()


def _removed(watcher: BotProcess, name: str, status: str, reason: str, bots: list[BotProcess],
             shown_at: float) -> None:
    """… then it leaves the live list after the linger time and is kept under ``departed``."""
    wait_for(lambda: _status(watcher, name) is None, LINGER + 10, f"{name} off {watcher.name}'s live list",
             diagnostics=lambda: _diagnose(bots))
    assert time.monotonic() - shown_at > LINGER - 3, "a leaver must stay listed for the linger time"
    record = _departed(watcher, name)
    assert record is not None and record["status"] == status and record["failure_reason"] == reason, record


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signalled_bot_leaves_and_is_shown_left_then_removed(tmp_path: Path, portal, sig: int) -> None:  # type: ignore[no-untyped-def]
    watcher = start_bot(tmp_path, "signal-room", [portal.url], "watcher", tone=500, record=False)
    leaver = start_bot(tmp_path, "signal-room", [portal.url], "leaver", tone=700, record=False)
    bots = [watcher, leaver]
    try:
        wait_for(lambda: _connected(watcher, {"leaver"}) and _connected(leaver, {"watcher"}), 60,
                 "the two bots connected", diagnostics=lambda: _diagnose(bots))
        leaver.proc.send_signal(sig)
        shown_at = _shown(watcher, "leaver", "left", BYE_REASON, bots, LEAVE_SEEN_S)
        assert leaver.proc.wait(EXIT_BOUND_S) == 0, _diagnose(bots)
        assert (leaver.report() or {})["status"] == "stopped"
        _removed(watcher, "leaver", "left", BYE_REASON, bots, shown_at)
        assert _departed(watcher, "leaver")["connected_after_s"] is not None  # type: ignore[index]
    finally:
        for bot in bots:
            bot.stop()


def test_a_killed_bot_is_gone_with_a_reason_for_everyone_then_removed(tmp_path: Path, portal) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL: no bye. Those who were connected show it reconnecting, then gone with the reason; a
    newcomer who joined while its record was still fresh shows it gone too (it used to keep a
    `failed` ghost for good); after the linger it is off every list."""
    first = start_bot(tmp_path, "kill-room", [portal.url], "first", tone=500, record=False)
    victim = start_bot(tmp_path, "kill-room", [portal.url], "victim", tone=700, record=False)
    bots = [first, victim]
    try:
        wait_for(lambda: _connected(first, {"victim"}), 60, "first connected to the victim",
                 diagnostics=lambda: _diagnose(bots))
        victim.kill()
        newcomer = start_bot(tmp_path, "kill-room", [portal.url], "newcomer", tone=900, record=False)
        bots.append(newcomer)
        wait_for(lambda: _connected(newcomer, {"first"}) and _status(newcomer, "victim") is not None, 60,
                 "the newcomer connected to first and saw the victim's record", diagnostics=lambda: _diagnose(bots))
        shown = {w.name: _shown(w, "victim", "gone", STALE_REASON, bots, 60) for w in (first, newcomer)}
        for watcher in (first, newcomer):
            _removed(watcher, "victim", "gone", STALE_REASON, bots, shown[watcher.name])
    finally:
        for bot in bots:
            bot.stop()


# ---------------------------------------------------------------------- `sdparta join` in a terminal
def _process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] == "Z"
    except FileNotFoundError:
        return True


def _exit_status(term: Terminal, pid: int) -> int | None:
    """The process's exit status: tmux's once it reaped it, else the zombie's own (/proc/PID/stat field
    52, waitpid's form) — under load tmux can take long to reap, and the status is known before."""
    status = term.exit_status()
    if status is not None:
        return status
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # fields from the 3rd on (the name may hold spaces)
    except FileNotFoundError:
        return None  # reaped: tmux reports it on the next look
    if fields[0] != "Z":
        return None
    return (int(fields[52 - 3]) >> 8) & 0xFF


@needs_tmux
@pytest.mark.parametrize("how", ["SIGTERM", "close the terminal"])
def test_join_leaves_on_sigterm_and_when_its_terminal_closes(tmp_path: Path, portal, how: str) -> None:  # type: ignore[no-untyped-def]
    """`sdparta join` killed with SIGTERM, or its terminal closed (SIGHUP, then EIO on the tty): the
    others see it leave at once (bye: `left`, not a `reconnecting` ghost), the process ends within
    the bound, and its identity file is free again."""
    watcher = start_bot(tmp_path, "join-room", [portal.url], "watcher", tone=500, record=False)
    env = {"XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "SDPARTA_LOG": "WARNING"}
    term = open_terminal(tmp_path, "join", ["join", "join-room", "--portal", portal.url, "--name", "human",
                                            "--video", "pattern", "--audio", "tone:550", "--audio-out", "none"],
                         env=env)
    try:
        term.wait_screen(lambda s: "watcher" in s and "connected" in s, 60, "the app connected to the watcher")
        wait_for(lambda: _connected(watcher, {"human"}), 30, "the watcher connected to the app",
                 diagnostics=lambda: _diagnose([watcher]))
        pid = term.pid
        signalled = time.monotonic()
        if how == "SIGTERM":
            os.kill(pid, signal.SIGTERM)
        else:
            term.close()
        shown_at = _shown(watcher, "human", "left", BYE_REASON, [watcher], LEAVE_SEEN_S)
        wait_for(lambda: _process_gone(pid), EXIT_BOUND_S - (time.monotonic() - signalled), "the join process ended")
        lock = IdentityLock.try_acquire(tmp_path / "data" / "sdparta" / "identity.key")
        assert lock is not None, "the identity file is still locked"
        lock.release()
        _removed(watcher, "human", "left", BYE_REASON, [watcher], shown_at)
        if how == "SIGTERM":
            wait_for(lambda: _exit_status(term, pid) is not None, 30, "the exit status")
            assert _exit_status(term, pid) == 0
    finally:
        term.close()
        watcher.stop()
