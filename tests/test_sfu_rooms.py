"""Rooms past the mesh (issue 10): real bot processes move onto a real Janus (Debian's) and back.

One lab for the module (tests/support/sfu_lab.py): Janus in its own namespace, a portal and the bots on the
clients' side; each test has its own sdparta room and its own Janus room. The NAT test builds the NAT lab
(tests/netlab/lab.py) with a Janus of its own on the lab's public side. Arrival is asserted, never rates;
every wait is on a condition with a generous deadline (two loaded cores).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from netlab.lab import PUBLIC_NET, build_lab, netlab_unavailable, run
from sdparta.media.analysis import tone_power
from support.janus import AudioBridgeSpec, VideoRoomSpec, start_janus
from support.procs import BotProcess, peers_by_name, peers_seen_by_name, start_bot, wait_for
from support.sfu_lab import SfuLab, media_from_all, recorded_between, sfu_lab_missing, sfu_of

pytestmark = pytest.mark.integration

TEN_ROOM, AUDIO_ROOM, SHRINK_ROOM, CRASH_ROOM, NAT_ROOM = 1010, 2020, 3030, 4040, 5050
DEADLINE = 180.0  # seconds: ten bot processes starting on two loaded cores


def _missing() -> str | None:
    reason = sfu_lab_missing()
    if reason is not None and os.environ.get("CI"):
        pytest.fail(f"the SFU lab must run in CI: {reason}")
    return reason


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SfuLab]:
    reason = _missing()
    if reason is not None:
        pytest.skip(reason)
    lab = SfuLab(tmp_path_factory.mktemp("sfu-lab"),
                 videorooms=[VideoRoomSpec(TEN_ROOM, publishers=16), VideoRoomSpec(SHRINK_ROOM),
                             VideoRoomSpec(CRASH_ROOM)],
                 audiobridges=[AudioBridgeSpec(AUDIO_ROOM)]).start()
    try:
        yield lab
    finally:
        print(f"--- janus log tail\n{lab.janus_log(60)}")
        lab.close()


@pytest.fixture
def lab(shared: SfuLab) -> Iterator[SfuLab]:
    """The module's lab, with Janus running and no bot left from an earlier test."""
    if shared.janus is None or shared.janus.proc.poll() is not None:
        shared.start_janus()
    try:
        yield shared
    finally:
        shared.forget()


# ------------------------------------------------------------------ helpers
def assert_hears(lab: SfuLab, name: str, others: list[str], start: float, end: float) -> None:
    """``name``'s WAV, between ``start`` and ``end``, holds every other's tone at its pitch: at least 1/20 of
    its fair share of the power, and 3x the noise floor (the median band halfway between the pitches, which
    nobody sends: in a twelve-voice Opus mix the codec's noise and the tones' intermodulation land there)."""
    tones = lab.tones()
    samples, rate, where = recorded_between(lab.gone[name], start, end)
    assert len(samples) > rate, f"{name}'s WAV has only {len(samples) / rate:.1f} s between the marks ({where})"
    floor = float(np.median([tone_power(samples, rate, f + 65.0) for f in sorted(tones.values())]))
    own = tone_power(samples, rate, tones[name])
    powers = {other: tone_power(samples, rate, tones[other]) for other in others}
    weak = {other: (tones[other], round(power, 4)) for other, power in powers.items()
            if not (power > 0.2 / len(others) / 4 and power > 3 * floor)}
    assert not weak, (f"{name}'s WAV lacks these tones (name: Hz, power; noise floor {floor:.4f}, "
                      f"own band {own:.4f}): {weak}; every tone's power: "
                      f"{ {other: round(power, 4) for other, power in powers.items()} }; {where}")


def counters(lab: SfuLab) -> dict[str, dict[str, tuple[float, int]]]:
    """Per bot, per peer: (audio seconds, video frames) received so far."""
    return {name: {n: (p.get("audio_seconds", 0.0), p.get("video_frames", 0)) for n, p in peers_by_name(r).items()}
            for name, r in lab.reports().items() if r is not None}


def grew(lab: SfuLab, before: dict[str, dict[str, tuple[float, int]]], *, video: bool, seconds: float = 1.5,
         frames: int = 5):  # type: ignore[no-untyped-def]
    """A check: every bot received more audio (and video) from every other since ``before``."""
    def check(name: str, report: dict[str, Any]) -> bool:
        peers = peers_by_name(report)
        for other in set(lab.bots) - {name}:
            a0, v0 = before.get(name, {}).get(other, (0.0, 0))
            peer = peers.get(other, {})
            if peer.get("audio_seconds", 0) < a0 + seconds:
                return False
            if video and peer.get("video_frames", 0) < v0 + frames:
                return False
        return True
    return check


def lost_anyone(report: dict[str, Any] | None) -> list[str]:
    """Peers this bot ever saw gone or failed (the switch must lose no participant)."""
    lost = []
    for name, peer in peers_seen_by_name(report).items():
        if peer.get("status") in ("gone", "failed") or any(
                s.get("kind") == "peer" and str(s.get("state", "")).startswith(("gone", "failed"))
                for s in peer.get("states", [])):
            lost.append(name)
    return lost


# ------------------------------------------------------------------ the harness itself
def test_a_room_without_an_sfu_stays_a_mesh_of_four(lab: SfuLab) -> None:
    """The harness (and the default): four bots, no SFU named, every pair connected over the mesh, every
    WAV holds the other three tones."""
    names = ["m1", "m2", "m3", "m4"]
    lab.start_bots(names, "sfu-mesh-four", chat="hello from")
    lab.wait_all(lambda n, r: media_from_all(r, set(names) - {n}, video=True, frames=10, seconds=2),
                 "media from every other bot over the mesh", DEADLINE)
    lab.wait_all(lambda n, r: {c["text"] for c in r.get("chat_received", [])}
                 >= {f"hello from {o}" for o in set(names) - {n}}, "chat from every other bot", 60)
    start = time.time()
    lab.wait_all(grew(lab, counters(lab), video=True, seconds=2), "two more seconds of media", 60)
    end = time.time()
    for report in lab.reports().values():
        assert sfu_of(report).get("named") is None, lab.diagnose()
        for peer in peers_by_name(report).values():
            assert peer.get("via", "mesh") == "mesh", lab.diagnose()
            assert peer["path"] == "direct"
        assert report["invalid_messages"] == 0
    assert set(lab.stop_all().values()) == {0}, lab.diagnose()
    for name in names:
        assert_hears(lab, name, [n for n in names if n != name], start, end)


# ------------------------------------------------------------------ the tests
def test_a_video_room_of_ten_moves_onto_the_sfu_as_it_grows(lab: SfuLab) -> None:
    """Three bots in a mesh; the fourth moves the room onto Janus' VideoRoom (--sfu-at 4); six more join
    in steps. Every bot ends with every other's video frames and its tone in its WAV, via the SFU; the
    first bot's chat reaches all nine (over the data channels, which stay up); nobody was lost."""
    common = {"sfu_at": 4, "sfu_hold": 30, "plugin": "videoroom"}
    first = ["v1", "v2", "v3"]
    lab.start_bots(first, "sfu-ten", sfu_room=TEN_ROOM, chat="hello from", **common)  # type: ignore[arg-type]
    lab.wait_all(lambda n, r: media_from_all(r, set(first) - {n}, video=True, via="mesh"),
                 "three bots in a mesh, media arriving", DEADLINE)
    for name, report in lab.reports().items():
        assert sfu_of(report).get("named") == f"janus @ {lab.net.server_ip} room {TEN_ROOM}", lab.diagnose()
        assert sfu_of(report).get("state") == "mesh", f"{name} left the mesh below --sfu-at\n{lab.diagnose()}"
    for step in (["v4"], ["v5", "v6", "v7"], ["v8", "v9", "v10"]):
        lab.start_bots(step, "sfu-ten", sfu_room=TEN_ROOM, share=None, **common)  # type: ignore[arg-type]
        lab.wait_state("sfu", DEADLINE)
        lab.wait_all(lambda n, r: media_from_all(r, set(lab.bots) - {n}, video=True, via="sfu"),
                     f"{len(lab.bots)} bots on the SFU, media from every other", DEADLINE)
    lab.wait_all(lambda n, r: n == "v1" or any(c["text"] == "hello from v1" for c in r.get("chat_received", [])),
                 "v1's chat at every other bot", 60)
    start = time.time()
    lab.wait_all(grew(lab, counters(lab), video=True, seconds=2), "two more seconds of media from everyone", 90)
    end = time.time()
    everyone = sorted(lab.bots)
    for name, report in lab.reports().items():
        assert report is not None
        present = {n for n, p in peers_by_name(report).items() if p.get("status") not in ("gone", "failed", "left")}
        assert present == set(everyone) - {name}, lab.diagnose()
        assert {p.get("via") for p in peers_by_name(report).values()} == {"sfu"}, lab.diagnose()
        assert lost_anyone(report) == [], f"{name} lost {lost_anyone(report)} across the switch\n{lab.diagnose()}"
        assert report.get("departed", []) == [], lab.diagnose()
    assert set(lab.stop_all().values()) == {0}, lab.diagnose()
    for name in everyone:
        assert_hears(lab, name, [n for n in everyone if n != name], start, end)


def test_an_audio_room_of_twelve_on_audiobridge(lab: SfuLab) -> None:
    """Twelve audio-only bots on an AudioBridge entry: each WAV holds all eleven other tones at their pitches
    (one mixed stream down, whatever N). Through the bridge one mix arrives, not one stream per peer: the
    report counts it as ``sfu.mix_seconds`` and each peer is ``via: sfu``; the WAV tells the voices apart."""
    common = {"sfu_at": 4, "plugin": "audiobridge", "audio_only": True}
    names = [f"a{i}" for i in range(1, 13)]

    def on_bridge(name: str, report: dict[str, Any], seconds: float = 1.0) -> bool:
        peers = peers_by_name(report)
        return (sfu_of(report).get("state") == "sfu" and (sfu_of(report).get("mix_seconds") or 0) >= seconds
                and all(peers.get(o, {}).get("via") == "sfu" for o in set(lab.bots) - {name}))

    lab.start_bots(names[:3], "sfu-audio-twelve", sfu_room=AUDIO_ROOM, **common)  # type: ignore[arg-type]
    lab.wait_all(lambda n, r: media_from_all(r, set(lab.bots) - {n}, video=False), "three bots hear each other",
                 DEADLINE)
    for step in (names[3:6], names[6:9], names[9:]):  # in steps: twelve bot processes starting at once
        # on two loaded cores starve each other (and the portal) for tens of seconds
        lab.start_bots(step, "sfu-audio-twelve", share=None, **common)  # type: ignore[arg-type]
        lab.wait_all(on_bridge, f"{len(lab.bots)} bots on the AudioBridge, the mix arriving, every peer via sfu",
                     DEADLINE)
    mixed = {n: sfu_of(r).get("mix_seconds") or 0 for n, r in lab.reports().items()}
    start = time.time()
    # six seconds, not three: on two loaded cores one voice can stall at the bridge for a second or so
    # (CI once measured a3 at 1/25 of its share in a5's three seconds, while a1-a4 heard it)
    lab.wait_all(lambda n, r: on_bridge(n, r, mixed[n] + 6), "six more seconds of the mix", 90)
    end = time.time()
    for report in lab.reports().values():
        assert lost_anyone(report) == [], lab.diagnose()
    assert set(lab.stop_all().values()) == {0}, lab.diagnose()
    for name in names:
        assert_hears(lab, name, [n for n in names if n != name], start, end)


def test_a_room_that_shrinks_returns_to_the_mesh_after_the_hold(lab: SfuLab) -> None:
    """Five bots on the SFU (--sfu-at 4); three leave; the two left (below N−1) go back to the mesh, not
    before --sfu-hold seconds, and keep hearing and seeing each other."""
    hold = 8.0
    common = {"sfu_at": 4, "sfu_hold": hold, "plugin": "videoroom"}
    names = ["s1", "s2", "s3", "s4", "s5"]
    lab.start_bots(names, "sfu-shrink", sfu_room=SHRINK_ROOM, **common)  # type: ignore[arg-type]
    lab.wait_state("sfu", DEADLINE)
    lab.wait_all(lambda n, r: media_from_all(r, set(lab.bots) - {n}, video=True, via="sfu"),
                 "five bots on the SFU, media from every other", DEADLINE)
    for name in ("s3", "s4", "s5"):
        assert lab.stop(name) == 0, lab.diagnose()
    small_at = time.time()
    lab.wait_state("mesh", DEADLINE)
    lab.wait_all(lambda n, r: media_from_all(r, set(lab.bots) - {n}, video=True, via="mesh"),
                 "the two left back on the mesh", DEADLINE)
    for name, report in lab.reports().items():
        back = [e for e in sfu_of(report).get("events", []) if e.get("t", 0) > small_at]
        assert back, f"{name}'s sfu events record no move back\n{lab.diagnose()}"
        # a lower bound only (the engine cannot have seen the room small before we made it so)
        assert max(e["t"] for e in back) - small_at >= hold - 1, f"{name} left the SFU before the hold"
    start = time.time()
    lab.wait_all(grew(lab, counters(lab), video=True, seconds=2), "two more seconds of media over the mesh", 90)
    end = time.time()
    for report in lab.reports().values():
        assert lost_anyone(report) == [], lab.diagnose()  # the leavers left cleanly: "left", not lost
    assert set(lab.stop_all().values()) == {0}, lab.diagnose()
    assert_hears(lab, "s1", ["s2"], start, end)
    assert_hears(lab, "s2", ["s1"], start, end)


def test_janus_killed_mid_call_the_room_falls_back_to_the_mesh(lab: SfuLab) -> None:
    """Four bots on the SFU; Janus is SIGKILLed. Every member is told why, the room goes back to the mesh
    and every pair carries media again, without anyone rejoining."""
    common = {"sfu_at": 4, "plugin": "videoroom"}
    names = ["k1", "k2", "k3", "k4"]
    lab.start_bots(names, "sfu-crash", sfu_room=CRASH_ROOM, **common)  # type: ignore[arg-type]
    lab.wait_state("sfu", DEADLINE)
    lab.wait_all(lambda n, r: media_from_all(r, set(lab.bots) - {n}, video=True, via="sfu"),
                 "four bots on the SFU, media from every other", DEADLINE)
    sessions = {n: r["session_id"] for n, r in lab.reports().items() if r}
    lab.kill_janus()
    killed_at = time.time()
    lab.wait_all(lambda n, r: media_from_all(r, set(lab.bots) - {n}, video=True, via="mesh"),
                 "every pair back on the mesh", DEADLINE)
    lab.wait_all(grew(lab, counters(lab), video=True, seconds=2), "two more seconds of media over the mesh", 90)
    for name, report in lab.reports().items():
        assert report is not None and report["session_id"] == sessions[name], f"{name} rejoined"
        assert sfu_of(report).get("state") in ("mesh", "failed"), lab.diagnose()
        said = [e["text"] for e in sfu_of(report).get("events", []) if e.get("t", 0) >= killed_at - 1]
        said += [n["text"] for n in report.get("notices", [])]
        assert any("sfu" in t.lower() or "janus" in t.lower() for t in said), \
            f"{name} was not told why the room left the SFU: {said}"
        assert lost_anyone(report) == [], lab.diagnose()
    assert set(lab.stop_all().values()) == {0}, lab.diagnose()


# ------------------------------------------------------------------ behind a symmetric NAT
JANUS_PUBLIC_IP = f"{PUBLIC_NET}.4"


def janus_host(lab: Any) -> str:
    """A namespace of its own on the lab's public bridge for Janus (its WebSocket transport binds the first
    address of the interface holding ``ws_ip``: on the bridge itself that is the portal's)."""
    ns, port = f"{lab.prefix}-j", f"{lab.prefix}jp"
    run("ip", "netns", "add", ns)
    lab.namespaces.append(ns)
    run("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns", lab.public_ns)
    lab.sh(lab.public_ns, f"ip link set {port} master br0", f"ip link set {port} up")
    lab.sh(ns, "ip link set lo up", f"ip addr add {JANUS_PUBLIC_IP}/24 dev eth0", "ip link set eth0 up")
    return ns


def test_a_bot_behind_a_symmetric_nat_reaches_the_sfu_through_the_room_turn(tmp_path: Path) -> None:
    """The NAT lab: a bot behind a symmetric NAT with no TURN settings of its own, whose NAT box lets no UDP
    through to Janus' address; the other member shares the room's TURN relay and the SFU (--sfu-at 2). The
    first bot's media reaches the SFU and comes back from it: the relay is its only way there."""
    reason = _missing() or netlab_unavailable()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the NAT lab must run in CI: {reason}")
        pytest.skip(reason)
    lab = build_lab(tmp_path)
    bots: list[BotProcess] = []
    janus = None
    try:
        janus_ns = janus_host(lab)
        janus = start_janus(tmp_path / "janus", netns=janus_ns, address=JANUS_PUBLIC_IP,
                            videorooms=[VideoRoomSpec(NAT_ROOM)])
        portal, coturn = lab.start_portal(tmp_path), lab.start_coturn(tmp_path)
        behind, open_ = lab.add_private("behind", "symmetric"), lab.add_private("open", "eim")
        lab.sh(behind.nat_ns, f"iptables -I FORWARD 1 -p udp -d {JANUS_PUBLIC_IP} -j DROP")
        stun = ["--stun", coturn.stun_url()]
        sharer = [*stun, "--turn", coturn.url("udp"), "--turn-user", coturn.user, "--turn-password", coturn.password,
                  "--share-turn", "--share-sfu", janus.url, "--sfu-room", str(NAT_ROOM), "--sfu-plugin", "videoroom"]
        sfu = ["--sfu-at", "2", "--connect-timeout", "60"]
        bots.append(start_bot(tmp_path, "sfu-nat", [portal], "open", tone=500, record=False,
                              extra=[*sharer, *sfu], argv_prefix=open_.exec_prefix()))
        bots.append(start_bot(tmp_path, "sfu-nat", [portal], "behind", tone=700, record=False,
                              extra=[*stun, *sfu], argv_prefix=behind.exec_prefix()))

        def describe() -> str:
            return "\n".join(f"{b.name}: sfu={sfu_of(b.report())} peers={peers_by_name(b.report())}"[:3000]
                             for b in bots) + "\njanus:\n" + janus.log_tail(30)  # type: ignore[union-attr]

        def on_sfu(bot: BotProcess, other: str) -> bool:
            report = bot.report() or {}
            return sfu_of(report).get("state") == "sfu" and media_from_all(report, {other}, video=True, via="sfu")

        wait_for(lambda: on_sfu(bots[0], "behind") and on_sfu(bots[1], "open"), DEADLINE,
                 "both bots on the SFU, media from each other", diagnostics=describe)
        before = {b.name: peers_by_name(b.report()) for b in bots}
        other = {"open": "behind", "behind": "open"}
        wait_for(lambda: all(peers_by_name(b.report())[other[b.name]]["video_frames"]
                             >= before[b.name][other[b.name]]["video_frames"] + 10 for b in bots), 60,
                 "more video both ways through the SFU", diagnostics=describe)
        assert peers_by_name(bots[1].report())["open"]["via"] == "sfu"
    finally:
        for bot in bots:
            bot.stop()
        if janus is not None:
            print(f"--- janus log tail\n{janus.log_tail(40)}")
            janus.stop()
        lab.close()
