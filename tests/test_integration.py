"""Loopback integration: a real portal process and real bot processes in one room.

Covers issue 2's acceptance: every pair connects, each bot hears the others' tones at their
frequencies, video frames arrive, chat reaches everyone, a SIGKILLed bot is reported gone, a fresh
bot joins the survivors — with push, with polling only, and with two portals of which one is down.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sdparta.media.analysis import read_wav, tone_power
from support.procs import (
    BotProcess,
    free_port,
    peers_by_name,
    peers_seen_by_name,
    start_bot,
    start_portal,
    wait_for,
)

pytestmark = pytest.mark.integration

TONES = {"bot1": 440.0, "bot2": 620.0, "bot3": 830.0, "bot4": 1010.0}
RECONNECTING_BOUND_S = 8.0  # a silent peer is shown as reconnecting within this long
# ... and reported gone once its presence record is stale too (TTL 50 s after its last announce):
# until then a crash cannot be told from a network outage, which the pair survives.
GONE_BOUND_S = 55.0


def _diagnose(bots: list[BotProcess]) -> str:
    lines = []
    for bot in bots:
        report = bot.report() or {}
        peers = {n: (p["status"], p.get("failure_reason"), f"video={p['video_frames']}",
                     f"audio={p['audio_seconds']}s") for n, p in peers_by_name(report).items()}
        chats = [c["text"] for c in report.get("chat_received", [])]
        lines.append(f"{bot.name}: status={report.get('status')} peers={peers} chat={chats}")
        lines.append("  log tail: " + " | ".join(bot.log_path.read_text().splitlines()[-8:]))
    return "\n".join(lines)


def _connected_to(bot: BotProcess, names: set[str]) -> bool:
    peers = peers_by_name(bot.report())
    return all(peers.get(n, {}).get("status") == "connected" for n in names)


def _run_room(tmp_path: Path, portals: list[str], room: str, extra: list[str] | None = None, *,
              gone_bound: float = GONE_BOUND_S, crash: bool = True) -> dict[str, BotProcess]:
    """Three bots connect with media and chat; then (``crash``) one is SIGKILLed and reported gone
    within ``gone_bound`` seconds, and a fresh one joins the survivors. Returns the bots (stopped)."""
    names = ["bot1", "bot2", "bot3"]
    bots = {n: start_bot(tmp_path, room, portals, n, tone=TONES[n], chat=f"hello from {n}", extra=extra)
            for n in names}
    everyone = list(bots.values())
    try:
        for name, bot in bots.items():
            wait_for(lambda b=bot, n=name: _connected_to(b, set(names) - {n}), 60,
                     f"{name} connected to the others", diagnostics=lambda: _diagnose(everyone))

        def media_and_chat_arrived(bot: BotProcess, me: str) -> bool:
            report = bot.report() or {}
            peers = peers_by_name(report)
            others = set(names) - {me}
            chats = {c["text"] for c in report.get("chat_received", [])}
            return (all(peers[n]["video_frames"] >= 20 and peers[n]["audio_seconds"] >= 3 for n in others)
                    and chats >= {f"hello from {n}" for n in others})

        for name, bot in bots.items():
            wait_for(lambda b=bot, n=name: media_and_chat_arrived(b, n), 60,
                     f"{name} received video, audio and chat", diagnostics=lambda: _diagnose(everyone))

        for bot in bots.values():
            report = bot.report() or {}
            assert report["invalid_messages"] == 0
            for peer in peers_by_name(report).values():
                assert peer["path"] == "direct"
                assert peer["connected_after_s"] is not None and peer["connected_after_s"] > 0
                assert peer["fingerprint"] != report["fingerprint"]

        started: dict[str, float] = {}
        killed_at = 0.0
        if crash:
            started.update({n: (b.report() or {}).get("started_at", time.time()) for n, b in bots.items()})
            # SIGKILL bot3: the survivors show it reconnecting, then report it gone, within bounds.
            killed_at = time.time()
            bots["bot3"].kill()
            for name in ("bot1", "bot2"):
                # (a leaver is listed for a while, then recorded under "departed": look at both)
                wait_for(lambda b=bots[name]: peers_seen_by_name(b.report()).get("bot3", {}).get("status") == "gone",
                         gone_bound + 5, f"{name} reports bot3 gone", diagnostics=lambda: _diagnose(everyone))
                report = bots[name].report() or {}
                bot3 = peers_seen_by_name(report)["bot3"]

                def first(prefix: str, states: list[dict] = bot3["states"]) -> float:
                    return next(s["t"] for s in states if s["kind"] == "peer" and s["state"].startswith(prefix))

                assert report["started_at"] + first("reconnecting") - killed_at < RECONNECTING_BOUND_S
                assert report["started_at"] + first("gone") - killed_at < gone_bound

            # A fresh bot joins afterwards and connects to the survivors.
            bots["bot4"] = start_bot(tmp_path, room, portals, "bot4", tone=TONES["bot4"], extra=extra)
            everyone.append(bots["bot4"])
            wait_for(lambda: _connected_to(bots["bot4"], {"bot1", "bot2"}), 60, "bot4 connected to survivors",
                     diagnostics=lambda: _diagnose(everyone))
            for name in ("bot1", "bot2"):
                wait_for(lambda b=bots[name]: _connected_to(b, {"bot4"}), 30, f"{name} connected to bot4",
                         diagnostics=lambda: _diagnose(everyone))
            wait_for(lambda: all(p["audio_seconds"] >= 3 for p in peers_by_name(bots["bot4"].report()).values()
                                 if p["name"] in ("bot1", "bot2")), 30, "bot4 hears the survivors",
                     diagnostics=lambda: _diagnose(everyone))
            for name in ("bot1", "bot2"):
                wait_for(lambda b=bots[name]: peers_by_name(b.report()).get("bot4", {}).get("audio_seconds", 0) >= 3,
                         30, f"{name} hears bot4", diagnostics=lambda: _diagnose(everyone))
            # the survivors greet the late joiner too (each --chat line goes to every participant as it connects)
            wait_for(lambda: {c["text"] for c in bots["bot4"].report().get("chat_received", [])}
                     >= {"hello from bot1", "hello from bot2"}, 30, "bot4 greeted by the survivors",
                     diagnostics=lambda: _diagnose(everyone))
    finally:
        codes = {n: b.stop() for n, b in bots.items() if n != "bot3" or not crash}

    if not crash:
        assert set(codes.values()) == {0}, _diagnose(everyone)
        for name in names:
            _assert_hears(bots[name], name, [n for n in names if n != name])
        return bots
    assert codes == {"bot1": 0, "bot2": 0, "bot4": 0}, _diagnose(everyone)
    # Audio: each survivor's recording holds the tones of those it heard, clearly above other bands.
    for name, heard in (("bot1", ["bot2", "bot3", "bot4"]), ("bot2", ["bot1", "bot3", "bot4"]),
                        ("bot4", ["bot1", "bot2"])):
        samples, rate = read_wav(bots[name].wav_path)  # type: ignore[arg-type]
        assert len(samples) > rate * 3, f"{name} recorded only {len(samples) / rate:.1f} s"
        for other in heard:
            # bot4 joined last: look for it only in the final seconds, when it was in the room;
            # bot3 only until it was killed
            if other == "bot4":
                part = samples[-rate * 2 :]
            elif other == "bot3":
                part = samples[: int((killed_at - started[name]) * rate)]
            else:
                part = samples
            power = tone_power(part, rate, TONES[other])
            own = tone_power(part, rate, TONES[name])
            assert power > 0.003, f"{name}'s WAV lacks {other}'s {TONES[other]} Hz tone ({power:.4f})"
            assert power > 20 * own, f"{name} hears {other} no louder than silence at its own tone"
    return bots


def _assert_hears(bot: BotProcess, name: str, others: list[str]) -> None:
    """The bot's WAV holds each other's tone at its pitch, clearly above its own (silent) band."""
    samples, rate = read_wav(bot.wav_path)  # type: ignore[arg-type]
    assert len(samples) > rate * 3, f"{name} recorded only {len(samples) / rate:.1f} s"
    for other in others:
        power, own = tone_power(samples, rate, TONES[other]), tone_power(samples, rate, TONES[name])
        assert power > 0.003, f"{name}'s WAV lacks {other}'s {TONES[other]} Hz tone ({power:.4f})"
        assert power > 20 * own, f"{name} hears {other} no louder than silence at its own tone"


def test_three_bots_with_push(tmp_path: Path, portal) -> None:  # type: ignore[no-untyped-def]
    _run_room(tmp_path, [portal.url], "push-room")
    # The push path was really used.
    assert (tmp_path / "bot1.json").exists()


def test_three_bots_polling_only(tmp_path: Path) -> None:
    plain = start_portal(tmp_path / "plain.sqlite3", subscription=False)
    try:
        _run_room(tmp_path, [plain.url], "poll-room")
        report = BotProcess("bot1", None, tmp_path / "bot1.json", None, tmp_path / "bot1.log").report()  # type: ignore[arg-type]
        assert report is not None and report["push"] is False
    finally:
        plain.stop()


def test_two_portals_one_down(tmp_path: Path, portal) -> None:  # type: ignore[no-untyped-def]
    dead = f"http://127.0.0.1:{free_port()}"
    _run_room(tmp_path, [dead, portal.url], "two-portal-room")


def test_one_identity_two_processes_are_two_participants(tmp_path: Path, portal) -> None:  # type: ignore[no-untyped-def]
    """Two terminals of one user: same identity file, distinct sessions, and they connect."""
    identity = ["--identity", str(tmp_path / "me.key")]
    first = start_bot(tmp_path, "same-me", [portal.url], "me-a", tone=500, record=False, extra=identity)
    wait_for(lambda: (tmp_path / "me.key").exists() and first.report() is not None, 20, "identity created")
    second = start_bot(tmp_path, "same-me", [portal.url], "me-b", tone=700, record=False, extra=identity)
    bots = [first, second]
    try:
        wait_for(lambda: _connected_to(first, {"me-b"}) and _connected_to(second, {"me-a"}), 60,
                 "both sessions of one identity connected", diagnostics=lambda: _diagnose(bots))
        a, b = first.report() or {}, second.report() or {}
        assert a["fingerprint"] == b["fingerprint"]
        assert a["session_id"] != b["session_id"]
        assert peers_by_name(a)["me-b"]["fingerprint"] == a["fingerprint"]
    finally:
        for bot in bots:
            bot.stop()


def test_crashed_peer_back_with_a_new_session_replaces_the_old_pair(tmp_path: Path, portal) -> None:  # type: ignore[no-untyped-def]
    """A participant's app crashes and is started again (same identity, new session): the others
    replace the dead pair at once instead of showing a ghost until its presence expires, and
    connect to the new session."""
    identity = ["--identity", str(tmp_path / "crasher.key")]
    stay = start_bot(tmp_path, "crash-room", [portal.url], "stay", tone=500, record=False)
    first = start_bot(tmp_path, "crash-room", [portal.url], "back", tone=700, record=False, extra=identity)
    bots = [stay, first]
    try:
        # both sides' reports: a bot writes its first report about a second after it starts
        wait_for(lambda: _connected_to(stay, {"back"}) and _connected_to(first, {"stay"}), 60,
                 "stay and back connected", diagnostics=lambda: _diagnose(bots))
        old_session = (first.report() or {})["session_id"]
        first.kill()
        wait_for(lambda: peers_by_name(stay.report())["back"]["status"] == "reconnecting", 15,
                 "stay notices the crash", diagnostics=lambda: _diagnose(bots))
        (tmp_path / "again").mkdir()
        second = start_bot(tmp_path / "again", "crash-room", [portal.url], "back", tone=700, record=False,
                           extra=identity)
        bots.append(second)
        new_session = None

        def replaced() -> bool:
            nonlocal new_session
            peers = {p["session_id"]: p for p in (stay.report() or {}).get("peers", [])}
            new_session = (second.report() or {}).get("session_id")
            # the old pair is dropped from the list (or shown as left), the new one connects
            old, new = peers.get(old_session), peers.get(new_session or "", {})
            return (old is None or old["status"] == "left") and new.get("status") == "connected"

        # bounded well below the 50 s presence expiry that a ghost would wait for (bot start-up included)
        wait_for(replaced, 45, "the old pair replaced by the new session",
                 diagnostics=lambda: f"old {old_session} new {new_session} stay's pairs: "
                 + str([(p["session_id"], p["status"], p["failure_reason"]) for p in stay.report()["peers"]]))
        assert new_session != old_session
        # the old pair leaves the live list at once (within a second: it is not a departure, its
        # participant is still here) and is recorded under "departed"
        wait_for(lambda: [p["status"] for p in (stay.report() or {})["peers"] if p["name"] == "back"] == ["connected"],
                 5, "only the new session of back listed", diagnostics=lambda: str(stay.report()))
        departed = {p["session_id"]: p for p in (stay.report() or {}).get("departed", [])}
        assert departed[old_session]["status"] == "left", departed
    finally:
        for bot in bots:
            bot.stop()


def test_bot_alone_says_why(tmp_path: Path, portal) -> None:  # type: ignore[no-untyped-def]
    """Exit 3 when it saw nobody, with the cause to fix: a wrong password looks like an empty room;
    an unreachable portal is named."""
    peer = start_bot(tmp_path, "why-room", [portal.url], "peer", tone=440, record=False,
                     extra=["--password", "right"])
    try:
        wrong = start_bot(tmp_path, "why-room", [portal.url], "wrong", tone=440, record=False,
                          extra=["--password", "wrong", "--duration", "4"])
        assert wrong.proc.wait(30) == 3
        assert "saw nobody in the room (same room name, password and portal" in wrong.log_path.read_text()
    finally:
        peer.stop()
    dead = start_bot(tmp_path, "why-room", [f"http://127.0.0.1:{free_port()}"], "dead", tone=440, record=False,
                     extra=["--duration", "3"])
    assert dead.proc.wait(30) == 3
    last_line = dead.log_path.read_text().strip().splitlines()[-1]
    assert last_line.startswith("bot: saw nobody in the room (portal http://127.0.0.1:")
    assert "is unreachable" in last_line
