"""The engine moving a room onto its SFU and back, in-process: real Calls (real aiortc pairs, real
codecs), a real portal and a real Janus, each in a network namespace of this test's own.

Janus runs on 10.201.x.2 (tests/support/janus.py); the portal and the three Calls run on the clients'
side (the Calls' threads are started from the main thread while it is in that namespace, so their
sockets are made there). The multi-process rooms (10 bots, 12 on an AudioBridge, NAT) are in
tests/test_sfu_rooms.py. Waits are on conditions with generous deadlines; counts are asserted, never rates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sdparta.engine.call import Call, CallConfig
from sdparta.engine.state import CallSnapshot
from sdparta.room.events import SessionTiming
from sdparta.room.keys import RoomKeys
from sdparta.sfu.settings import SfuEntry
from sdparta.sfu.videoroom import VideoRoomClient
from support.janus import AudioBridgeSpec, JanusNet, JanusProcess, VideoRoomSpec, janus_missing, start_janus
from support.procs import PortalProcess, start_portal, stop_process, wait_for

pytestmark = pytest.mark.integration

VIDEO_ROOM, AUDIO_ROOM, PIN = 2345, 5432, "engine-pin"


@dataclass
class Lab:
    net: JanusNet
    janus: JanusProcess
    portal: PortalProcess
    workdir: Path

    def entry(self, plugin: str = "videoroom", room: int | None = None, pin: str | None = PIN) -> SfuEntry:
        return SfuEntry(url=self.janus.url, room=room or (AUDIO_ROOM if plugin == "audiobridge" else VIDEO_ROOM),
                        pin=pin, plugin=plugin)

    def restart_janus(self) -> None:
        """A new Janus on the same address and port (a restart after a crash: the old one is gone)."""
        self.janus.stop()
        self.janus = start_janus(self.workdir / "janus2", netns=self.net.server_ns, address=self.net.server_ip,
                                 session_timeout=10, videorooms=[VideoRoomSpec(VIDEO_ROOM, PIN)],
                                 audiobridges=[AudioBridgeSpec(AUDIO_ROOM, PIN)])


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    missing = janus_missing()
    if missing is not None:
        pytest.skip(missing)
    net = JanusNet(subnet="10.201.4").create()
    janus = portal = None
    try:
        janus = start_janus(tmp_path / "janus", netns=net.server_ns, address=net.server_ip, session_timeout=10,
                            videorooms=[VideoRoomSpec(VIDEO_ROOM, PIN)],
                            audiobridges=[AudioBridgeSpec(AUDIO_ROOM, PIN)])
        portal = start_portal(tmp_path / "portal", host=net.client_ip,
                              argv_prefix=("ip", "netns", "exec", net.client_ns))
        with net.entered():
            lab = Lab(net, janus, portal, tmp_path)
            yield lab
            janus = lab.janus
    finally:
        if portal is not None:
            stop_process(portal.proc)
        if janus is not None:
            print(f"--- tail of {janus.log_path}\n{janus.log_tail(60)}")
            janus.stop()
        net.close()


def _calls(lab: Lab, room: str, n: int, *, share: SfuEntry, audio_only: bool = False, sfu_at: int = 3,
           hold: float = 3.0, never: tuple[int, ...] = ()) -> list[Call]:
    keys = RoomKeys.derive(room, "")
    calls = []
    for i in range(n):
        config = CallConfig(room=room, portals=[lab.portal.url], name=f"p{i}", room_keys=keys,
                            audio=f"tone:{440 + 220 * i}", video="none" if audio_only else "pattern",
                            audio_only=audio_only, fps=5, share_sfu=share if i == 0 else None,
                            sfu_at=0 if i in never else sfu_at, sfu_hold_s=hold)
        call = Call(config)
        call.start()
        calls.append(call)
    return calls


def _describe(calls: list[Call]) -> Callable[[], str]:
    def describe() -> str:
        lines = []
        for call in calls:
            snap = call.snapshot()
            sfu = snap.sfu
            lines.append(f"{snap.name}: sfu={sfu.state if sfu else None} {sfu.error if sfu else ''} peers=" + ", ".join(
                f"{p.name}:{p.status}/{p.via}/a{p.audio_seconds:.1f}/v{p.video_frames}" for p in snap.peers)
                + " notices=" + " | ".join(n.text for n in snap.notices[-3:]))
        return "\n".join(lines)
    return describe


def _all(calls: list[Call], check: Callable[[CallSnapshot], bool]) -> Callable[[], bool]:
    return lambda: all(check(call.snapshot()) for call in calls)


def _via(snap: CallSnapshot, via: str, n: int) -> bool:
    return len(snap.peers) == n and all(p.status == "connected" and p.via == via for p in snap.peers)


def _figures(calls: list[Call]) -> dict[tuple[str, str], tuple[float, int]]:
    return {(c.snapshot().name, p.name): (p.audio_seconds, p.video_frames) for c in calls for p in c.snapshot().peers}


def test_a_video_room_moves_onto_the_sfu_keeps_chatting_falls_back_when_janus_dies_and_returns(lab: Lab) -> None:
    calls = _calls(lab, "sfu-engine-video", 3, share=lab.entry())
    describe = _describe(calls)
    try:
        wait_for(_all(calls, lambda s: s.sfu is not None and s.sfu.state == "sfu" and _via(s, "sfu", 2)), 90,
                 "every member on the SFU, receiving both others through it", diagnostics=describe)
        before = _figures(calls)
        wait_for(lambda: all(a > before[k][0] + 1 and v > before[k][1] + 3 for k, (a, v) in _figures(calls).items()),
                 60, "audio and video from everyone arriving through the SFU", diagnostics=describe)
        # make-before-break done: no media on the pairs any more (RTP bytes sent stop growing), chat stays
        wait_for(_all(calls, lambda s: all(len(p.stats_history) >= 3 and len({h.bytes_sent for h in
                                                                               p.stats_history[-3:]}) == 1
                                           for p in s.peers)), 60,
                 "every pair's mesh media paused while the SFU carries it", diagnostics=describe)
        for call in calls:
            snap = call.snapshot()
            assert {c.session_id for c in snap.sfu.connections} == {"sfu-publisher", "sfu-subscriber"}
            assert any("decrypted" in n.text for n in snap.notices), "the UI must say the SFU decrypts media"
            assert all(any(e.kind == "sfu" for e in p.timeline) for p in snap.peers), "the switch is in each timeline"
        calls[0].send_chat("hello over the mesh data path")
        wait_for(_all(calls[1:], lambda s: any(m.text == "hello over the mesh data path" for m in s.chat)), 30,
                 "chat reaching everyone while media goes through the SFU", diagnostics=describe)

        lab.janus.kill()
        wait_for(_all(calls, lambda s: s.sfu is not None and s.sfu.state == "failed" and _via(s, "mesh", 2)), 60,
                 "every member back on the mesh after Janus died", diagnostics=describe)
        before = _figures(calls)
        wait_for(lambda: all(a > before[k][0] + 1 and v > before[k][1] + 3 for k, (a, v) in _figures(calls).items()),
                 60, "audio and video from everyone arriving over the mesh again", diagnostics=describe)
        wait_for(_all(calls, lambda s: all(len({h.bytes_sent for h in p.stats_history[-2:]}) == 2 for p in s.peers)),
                 60, "every pair sending media again", diagnostics=describe)
        for call in calls:
            assert any("back to the mesh" in n.text for n in call.snapshot().notices)

        lab.restart_janus()  # Janus back: the room returns to it by itself (the retry), nobody rejoins
        wait_for(_all(calls, lambda s: s.sfu is not None and s.sfu.state == "sfu" and _via(s, "sfu", 2)), 120,
                 "every member back on the restarted SFU", diagnostics=describe)
        calls[0].stop()  # the last snapshot (what a bot's final report shows) no longer claims the SFU
        last = calls[0].snapshot().sfu
        assert last is not None and (last.state, last.connections) == ("mesh", ()), last
        assert last.events[-1].state == "the call ended: left the SFU", last.events[-3:]
    finally:
        for call in calls:
            call.stop()


def test_an_audio_room_moves_onto_the_audiobridge_and_back_to_the_mesh_when_it_shrinks(lab: Lab) -> None:
    calls = _calls(lab, "sfu-engine-audio", 3, share=lab.entry("audiobridge"), audio_only=True, hold=2.0)
    describe = _describe(calls)
    try:
        wait_for(_all(calls, lambda s: s.sfu is not None and s.sfu.state == "sfu" and _via(s, "sfu", 2)), 90,
                 "every member on the AudioBridge", diagnostics=describe)
        mixed = {c.snapshot().name: c.snapshot().sfu.mix_seconds for c in calls}
        wait_for(_all(calls, lambda s: s.sfu.mix_seconds > mixed[s.name] + 2), 60, "the mix arriving",
                 diagnostics=describe)
        calls[2].stop()
        rest = calls[:2]
        wait_for(_all(rest, lambda s: s.sfu is not None and s.sfu.state == "mesh"
                      and any(p.status == "connected" and p.via == "mesh" for p in s.peers)), 90,
                 "the two left back on the mesh after the hold", diagnostics=_describe(rest))
        before = _figures(rest)
        wait_for(lambda: all(a > before[k][0] + 1 for k, (a, _v) in _figures(rest).items() if k[1] != "p2"), 60,
                 "the two still hearing each other over the mesh", diagnostics=_describe(rest))
    finally:
        for call in calls:
            call.stop()


def _expire_consent(call: Call, role: str) -> None:
    """What aioice does when ICE consent expires (a starved loop missing six checks in a row): it closes
    its connection, and aiortc then closes the whole peer connection, with no goodbye reaching Janus."""
    link = call._sfu
    assert link is not None and isinstance(link._client, VideoRoomClient) and call._loop is not None
    pc = link._client.peer_connections()[role]
    ice = pc.getTransceivers()[0].receiver.transport.transport
    asyncio.run_coroutine_threadsafe(ice._connection.close(), call._loop).result(10)


def test_an_sfu_connection_that_closes_by_itself_is_a_lost_sfu_back_to_the_mesh(lab: Lab) -> None:
    """p1's subscription dies of ICE consent expiry (Janus is not told): p1 goes back to the mesh with a
    notice and hears both others again, and the retry takes it back onto the SFU."""
    calls = _calls(lab, "sfu-engine-consent", 3, share=lab.entry())
    describe = _describe(calls)
    try:
        wait_for(_all(calls, lambda s: s.sfu is not None and s.sfu.state == "sfu" and _via(s, "sfu", 2)), 90,
                 "every member on the SFU, receiving both others through it", diagnostics=describe)
        _expire_consent(calls[1], "subscriber")
        wait_for(lambda: (s := calls[1].snapshot()).sfu is not None and s.sfu.state == "failed"
                 and _via(s, "mesh", 2), 60, "p1 back on the mesh after its subscription closed",
                 diagnostics=describe)
        assert "subscriber connection closed" in (calls[1].snapshot().sfu.error or ""), describe()
        assert any("lost the room's SFU" in n.text for n in calls[1].snapshot().notices), describe()
        before = _figures(calls[1:2])
        wait_for(lambda: all(a > before[k][0] + 1 for k, (a, _v) in _figures(calls[1:2]).items()), 60,
                 "p1 hearing both others over the mesh", diagnostics=describe)
        wait_for(_all(calls, lambda s: s.sfu is not None and s.sfu.state == "sfu" and _via(s, "sfu", 2)), 120,
                 "p1 back on the SFU by the retry, everyone receiving through it", diagnostics=describe)
    finally:
        for call in calls:
            call.stop()


def test_a_feed_the_sfu_announces_before_the_room_shows_its_member_is_still_played(lab: Lab) -> None:
    """Janus tells the room of a new publisher as soon as its media is up; the members' portal polls can
    show that member seconds later (big rooms, slow polls). p0–p2 are on the SFU and poll only every
    30 s; p3 joins, sees the room of four and publishes at once, so its feed is in their subscriptions
    before it is a pair there. Once it is, they must play it through the SFU (they used to skip it for
    good: streams were matched to pairs only when the SFU's streams changed)."""
    keys = RoomKeys.derive("sfu-engine-late", "")
    slow = SessionTiming(poll_slow=30.0, poll_push=30.0)

    def call(i: int, timing: SessionTiming | None) -> Call:
        config = CallConfig(room="sfu-engine-late", portals=[lab.portal.url], name=f"p{i}", room_keys=keys,
                            audio=f"tone:{440 + 220 * i}", video="pattern", fps=5,
                            share_sfu=lab.entry() if i == 0 else None, sfu_at=3, sfu_hold_s=3.0,
                            push=timing is None, timing=timing)
        made = Call(config)
        made.start()
        return made

    calls = [call(i, slow) for i in range(3)]
    describe = _describe(calls)
    try:
        wait_for(_all(calls, lambda s: s.sfu is not None and s.sfu.state == "sfu" and _via(s, "sfu", 2)), 90,
                 "three members on the SFU, receiving each other through it", diagnostics=describe)
        calls.append(call(3, None))
        wait_for(_all(calls[3:], lambda s: s.sfu is not None and s.sfu.state == "sfu"), 60,
                 "p3 on the SFU", diagnostics=describe)
        wait_for(_all(calls, lambda s: _via(s, "sfu", 3)), 120,
                 "every member receiving every other through the SFU, p3 included", diagnostics=describe)
    finally:
        for made in calls:
            made.stop()


def test_a_member_that_stays_on_the_mesh_is_still_heard_and_hears_everyone(lab: Lab) -> None:
    """No split: p2 never moves (sfu_at 0, like a browser); p0 and p1 move and receive each other
    through the SFU, and keep sending p2 their media over the mesh (it never said it gets them there)."""
    calls = _calls(lab, "sfu-engine-mixed", 3, share=lab.entry(), never=(2,))
    describe = _describe(calls)
    try:
        wait_for(_all(calls[:2], lambda s: s.sfu is not None and s.sfu.state == "sfu"
                      and {p.name: p.via for p in s.peers if p.status == "connected"}.get("p2") == "mesh"
                      and sum(p.via == "sfu" for p in s.peers) == 1), 90,
                 "p0 and p1 on the SFU with each other, on the mesh with p2", diagnostics=describe)
        assert calls[2].snapshot().sfu.state == "mesh"
        before = _figures(calls)
        wait_for(lambda: all(a > before[k][0] + 1 and v > before[k][1] + 3 for k, (a, v) in _figures(calls).items()),
                 60, "everyone hearing and seeing everyone, either way", diagnostics=describe)
    finally:
        for call in calls:
            call.stop()


def test_a_wrong_pin_is_told_and_the_room_stays_a_mesh(lab: Lab) -> None:
    calls = _calls(lab, "sfu-engine-pin", 3, share=lab.entry(pin="not-the-pin"))
    describe = _describe(calls)
    try:
        wait_for(_all(calls, lambda s: s.sfu is not None and s.sfu.state == "failed" and _via(s, "mesh", 2)), 90,
                 "every member told the SFU refused it, on the mesh", diagnostics=describe)
        for call in calls:
            notices = [n.text for n in call.snapshot().notices]
            assert any("cannot use the room's SFU" in n and "PIN" in n for n in notices), notices
    finally:
        for call in calls:
            call.stop()


async def test_the_app_says_via_sfu_and_its_ice_panel_shows_the_sfu_connections(lab: Lab, tmp_path: Path) -> None:
    """The terminal app (Textual Pilot) in a room that moved onto the SFU: the status bar says where
    media goes and that it is decrypted there, each participant is "via SFU", tab reaches the SFU's
    publisher and subscriber in the ICE panel (their timelines and candidate pairs)."""
    from textual.widgets import Static

    from sdparta.ui.app import SdpartaApp
    from test_ui_pilot import until

    others = _calls(lab, "sfu-engine-app", 2, share=lab.entry())
    keys = RoomKeys.derive("sfu-engine-app", "")
    call = Call(CallConfig(room="sfu-engine-app", portals=[lab.portal.url], name="app", room_keys=keys,
                           audio="tone:1500", video="pattern", fps=5, sfu_at=3, sfu_hold_s=3.0))
    app = SdpartaApp(call, video_mode="256", fps=5, dump_dir=tmp_path)
    try:
        async with app.run_test(size=(160, 45)) as pilot:
            await until(pilot, lambda: _via(app.snapshot_state, "sfu", 2), 90, "the app receiving both via the SFU")
            label = f"janus @ {lab.net.server_ip}"
            await until(pilot, lambda: f"via SFU ({label})" in str(app.query_one("#status").render()), 20,
                        "the status bar saying via SFU")
            status = str(app.query_one("#status").render())
            assert "decrypted" in status, status
            assert str(app.query_one("#participants", Static).render()).count(f"via SFU ({label})") == 2
            await pilot.press("i")
            seen = set()
            for _ in range(4):  # two participants, then the SFU's two connections
                await pilot.press("tab")
                await pilot.pause(0.3)
                seen.add(app.focused_sid)
            assert {"sfu-publisher", "sfu-subscriber"} <= seen, seen
            while app.focused_sid != "sfu-publisher":
                await pilot.press("tab")
            await until(pilot, lambda: "candidate pairs" in str(app.query_one("#ice-text", Static).render()), 20,
                        "the ICE panel showing the SFU publisher")
            assert "SFU publisher" in str(app.query_one("#ice-head", Static).render())
            ice = str(app.query_one("#ice-text", Static).render())
            assert "connected" in ice and "host udp" in ice, ice
            await pilot.press("ctrl+q")
            await until(pilot, lambda: not call.running, 20, "engine stopped")
    finally:
        call.stop()
        for other in others:
            other.stop()
