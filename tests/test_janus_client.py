"""sdparta.sfu against a real Janus 1.1.2 (Debian) in a network namespace, with real aiortc peer
connections and real codecs: session life, VideoRoom multistream, AudioBridge mixes, failures.

Janus runs with this test's own config (tests/support/janus.py) on 10.201.0.2 in one namespace; the
clients run in this process, moved into a second namespace (10.201.0.1) joined to the first by a
veth pair. Every wait is on a condition with a generous timeout; counts, never rates, are asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from sdparta.media.analysis import as_mono_float, tone_power
from sdparta.media.sources import TestPatternTrack, ToneTrack
from sdparta.sfu import NoSuchRoom, RoomFull, SessionLost, SfuUnreachable, WrongPin
from sdparta.sfu.audiobridge import AudioBridgeClient
from sdparta.sfu.janus import JanusSession, stop_task
from sdparta.sfu.videoroom import RoomEvent, VideoRoomClient
from support.janus import AudioBridgeSpec, JanusNet, JanusProcess, VideoRoomSpec, janus_missing, start_janus
from support.waits import wait_until

VIDEO_ROOM, VIDEO_PIN = 1234, "lab-pin-1"
SMALL_ROOM = 77  # one publisher at most
AUDIO_ROOM, AUDIO_PIN = 4321, "lab-pin-2"
SESSION_TIMEOUT_S = 10


@dataclass
class Lab:
    net: JanusNet
    janus: JanusProcess

    @property
    def url(self) -> str:
        return self.janus.url


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    missing = janus_missing()
    if missing is not None:
        pytest.skip(missing)
    net = JanusNet().create()
    janus = None
    try:
        janus = start_janus(tmp_path / "janus", netns=net.server_ns, address=net.server_ip,
                            session_timeout=SESSION_TIMEOUT_S,
                            videorooms=[VideoRoomSpec(VIDEO_ROOM, VIDEO_PIN), VideoRoomSpec(SMALL_ROOM, publishers=1)],
                            audiobridges=[AudioBridgeSpec(AUDIO_ROOM, AUDIO_PIN)])
        with net.entered():
            yield Lab(net, janus)
    finally:
        if janus is not None:
            print(f"--- tail of {janus.log_path}\n{janus.log_tail(80)}")  # shown when the test failed
            janus.stop()
        net.close()


# ------------------------------------------------------------------ session life
async def test_stop_task_ends_a_task_that_swallowed_its_cancellation() -> None:
    """Python 3.11 can lose a cancellation (asyncio.wait_for whose future completes at that moment);
    a worker then waits on for its next event, and a plain cancel-and-await hung a test's teardown."""
    started, never = asyncio.Event(), asyncio.Event()

    async def stubborn() -> None:
        started.set()
        with contextlib.suppress(asyncio.CancelledError):  # what a lost cancellation looks like
            await asyncio.sleep(3600)
        await never.wait()  # a worker's next event

    task = asyncio.create_task(stubborn())
    await started.wait()
    await asyncio.wait_for(stop_task(task, grace_s=0.05), 30)
    assert task.cancelled()
    done = asyncio.create_task(asyncio.sleep(0))
    await done
    await stop_task(done)  # a finished task: nothing to do


async def test_keepalives_keep_a_session_alive_and_a_silent_one_is_reported_lost(lab: Lab) -> None:
    kept = await JanusSession.connect(lab.url, keepalive_s=2.0)
    silent = await JanusSession.connect(lab.url, keepalive_s=3600.0)
    try:
        lost = await asyncio.wait_for(silent.wait_lost(), SESSION_TIMEOUT_S * 4)
        assert "timed out" in str(lost) or "no longer knows" in str(lost), lost
        with pytest.raises(SessionLost):
            await silent.attach("janus.plugin.videoroom")
        start = time.monotonic()  # the kept session has already outlived the silent one
        await wait_until(lambda: time.monotonic() - start > 2.0 and kept.stats.keepalives >= 5,
                         "five keepalives answered", timeout=60)
        assert kept.lost is None
        handle = await kept.attach("janus.plugin.videoroom")  # still usable past session_timeout
        data, _ = await handle.request({"request": "exists", "room": VIDEO_ROOM})
        assert data.get("exists") is True
        assert kept.stats.crashes == 0 and silent.stats.crashes == 0
    finally:
        await kept.close()
        await silent.close()


async def test_unreachable_url_is_a_clear_error_fast(lab: Lab) -> None:
    with pytest.raises(SfuUnreachable, match="unreachable"):  # nothing listens there: refused
        await asyncio.wait_for(JanusSession.connect(f"ws://{lab.net.server_ip}:8199/", connect_timeout_s=5), 30)
    # something accepts the TCP connection and never answers the handshake: our connect timeout
    # ends it (asyncio.wait_for's 30 s would end it with a TimeoutError instead, failing the test)
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        silent.bind((lab.net.client_ip, 0))
        silent.listen(4)
        port = silent.getsockname()[1]
        with pytest.raises(SfuUnreachable, match="no answer"):
            await asyncio.wait_for(JanusSession.connect(f"ws://{lab.net.client_ip}:{port}/",
                                                        connect_timeout_s=1.5), 30)
    finally:
        silent.close()


async def test_wrong_pin_no_such_room_and_full_room_are_typed(lab: Lab) -> None:
    async with await JanusSession.connect(lab.url) as session:
        with pytest.raises(WrongPin, match="PIN"):
            await VideoRoomClient.join(session, VIDEO_ROOM, pin="wrong", display="x")
        with pytest.raises(WrongPin):
            await VideoRoomClient.join(session, VIDEO_ROOM, display="no pin")
        with pytest.raises(NoSuchRoom, match="no such room"):
            await VideoRoomClient.join(session, 999, display="x")
        with pytest.raises(WrongPin):
            await AudioBridgeClient.join(session, AUDIO_ROOM, ToneTrack(300), pin="nope")
        with pytest.raises(NoSuchRoom):
            await AudioBridgeClient.join(session, 998, ToneTrack(300))
        first = await VideoRoomClient.join(session, SMALL_ROOM, display="first",
                                           tracks=[ToneTrack(500)])
        try:
            await asyncio.wait_for(first.publisher.webrtcup.wait(), 30)
            with pytest.raises(RoomFull, match="full"):
                await VideoRoomClient.join(session, SMALL_ROOM, display="second", tracks=[ToneTrack(600)])
        finally:
            await first.leave()
        assert session.lost is None and session.stats.crashes == 0


# ------------------------------------------------------------------ VideoRoom
@dataclass
class VideoPeer:
    name: str
    client: VideoRoomClient
    frames: dict[tuple[str, str], int] = field(default_factory=dict)  # (sender's display, kind) → frames
    readers: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    events: list[RoomEvent] = field(default_factory=list)

    def watch(self) -> None:
        """One reader per receiving track (a recycled m-line keeps its track: read who sends from
        the subscription's current mid → feed mapping)."""
        for stream in self.client.streams.values():
            if stream.track is not None and id(stream.track) not in self.readers:
                self.readers[id(stream.track)] = asyncio.create_task(self._read(stream.mid, stream.track))

    async def _read(self, mid: str, track: MediaStreamTrack) -> None:
        while True:
            try:
                await track.recv()
            except MediaStreamError:
                return
            now = self.client.streams.get(mid)
            if now is not None:
                key = (now.feed_display, now.kind)
                self.frames[key] = self.frames.get(key, 0) + 1

    def got(self, sender: str, kind: str) -> int:
        return self.frames.get((sender, kind), 0)

    async def close(self) -> None:
        await self.client.leave()
        for task in self.readers.values():
            await stop_task(task)


#: Four clients with audio and video in one process: at 15 fps a loaded 2-core machine starved the event
#: loop until aioice's consent checks (one try, 0.5 s) failed six times and a peer connection closed.
VIDEO_FPS = 5


async def join_video(session: JanusSession, name: str, hz: float) -> VideoPeer:
    holder: list[VideoPeer] = []

    def on_event(event: RoomEvent) -> None:
        if holder:
            holder[0].events.append(event)
            if event.kind == "streams":
                holder[0].watch()

    client = await VideoRoomClient.join(session, VIDEO_ROOM, pin=VIDEO_PIN, display=name,
                                        tracks=[ToneTrack(hz), TestPatternTrack(fps=VIDEO_FPS, label=name)],
                                        on_event=on_event)
    peer = VideoPeer(name, client)
    holder.append(peer)
    peer.watch()
    return peer


#: Frames that count as "receiving" (a stray frame or two could be left in a recycled track's queue).
ENOUGH_FRAMES = 10


def everyone_hears(peers: list[VideoPeer], baseline: dict[tuple[str, str, str], int] | None = None) -> bool:
    base = baseline or {}
    return all(peer.got(other.name, kind) >= base.get((peer.name, other.name, kind), 0) + ENOUGH_FRAMES
               for peer in peers for other in peers if other is not peer for kind in ("audio", "video"))


def describe(peers: list[VideoPeer]) -> str:
    """What each client has: frames per (sender, kind), its mid → feed mapping, its transceivers."""
    lines = []
    for peer in peers:
        pc = peer.client.subscriber.pc
        transceivers = [(t.mid, t.kind, t.direction, t.currentDirection, t.receiver.track is not None)
                        for t in pc.getTransceivers()] if pc is not None else []
        lines.append(f"{peer.name}: frames {dict(sorted(peer.frames.items()))}; streams "
                     f"{ {mid: (s.kind, s.feed_display) for mid, s in peer.client.streams.items()} }; "
                     f"offers answered {peer.client.subscriber.offers_answered}; subscriber pc "
                     f"{pc.connectionState if pc else None}; publisher pc "
                     f"{peer.client.publisher.pc.connectionState if peer.client.publisher.pc else None}; "
                     f"transceivers {transceivers}; events "
                     f"{[(e.kind, e.what or e.display) for e in peer.events if e.kind != 'streams']}")
    return "\n".join(lines)


async def wait_for_peers(predicate: Callable[[], bool], what: str, peers: list[VideoPeer], timeout: float) -> None:
    try:
        await wait_until(predicate, what, timeout=timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{describe(peers)}") from None


def snapshot(peers: list[VideoPeer]) -> dict[tuple[str, str, str], int]:
    return {(peer.name, sender, kind): count for peer in peers for (sender, kind), count in peer.frames.items()}


async def depart(peer: VideoPeer, how: str) -> None:
    """C leaves the room: through the library (``unpublish``, ``leave``, detach); with a bare ``leave``
    and detach, as other clients do (Janus then finds it by id no more, and skips the autoupdate offer
    when its media goes); or by vanishing (its WebSocket closed, no goodbye)."""
    if how == "leave":
        await peer.close()
        return
    client = peer.client
    assert client._worker is not None and client.publisher.handle is not None
    await client._worker.stop()
    await client.subscriber.close()
    if how == "bare-leave":
        handle, client.publisher.handle = client.publisher.handle, None
        await handle.request({"request": "leave"}, timeout=10)
        await handle.detach()
    else:
        assert client.session._ws is not None
        await client.session._ws.close()  # Janus destroys the session at once (reclaim_session_timeout 0)
    if client.publisher.pc is not None:
        await client.publisher.pc.close()
    await peer.close()


@pytest.mark.parametrize("how", ["leave", "bare-leave", "vanish"])
async def test_videoroom_three_publishers_multistream_leave_and_join(lab: Lab, how: str) -> None:
    sessions = [await JanusSession.connect(lab.url) for _ in range(4)]
    assert all(s.keepalive_s <= SESSION_TIMEOUT_S / 3 for s in sessions)  # chosen from Janus' info
    peers: list[VideoPeer] = []
    try:
        for session, (name, hz) in zip(sessions, (("A", 330.0), ("B", 470.0), ("C", 610.0)), strict=False):
            peers.append(await join_video(session, name, hz))
        a, b, c = peers
        await wait_for_peers(lambda: everyone_hears(peers), "every client receiving audio and video from every other",
                             peers, timeout=90)
        for peer in peers:  # one subscriber connection carries both others
            assert len(peer.client.peer_connections()) == 2
            assert {s.feed_display for s in peer.client.streams.values()} == {p.name for p in peers} - {peer.name}

        # C leaves: A and B are told, renegotiate, and keep receiving each other
        answered = {p.name: p.client.subscriber.offers_answered for p in (a, b)}
        peers.remove(c)
        await depart(c, how)
        await wait_for_peers(lambda: all(any(e.kind == "publisher-left" and e.display == "C" for e in p.events)
                                         for p in (a, b)), "A and B told that C left", peers, timeout=30)
        await wait_for_peers(lambda: all("C" not in {s.feed_display for s in p.client.streams.values()}
                                         and p.client.subscriber.offers_answered > answered[p.name] for p in (a, b)),
                             "C's streams gone from the subscriptions (renegotiated)", peers, timeout=30)
        before = snapshot(peers)
        await wait_for_peers(lambda: everyone_hears(peers, before), "A and B still receiving each other", peers,
                             timeout=60)

        # D joins: A and B subscribe to it, D receives both
        d = await join_video(sessions[3], "D", 790.0)
        peers.append(d)
        before = snapshot(peers)
        await wait_for_peers(lambda: everyone_hears(peers, before), "A, B and D all receiving each other", peers,
                             timeout=90)
        for peer in peers:  # no feed twice, nobody's own
            displays = [s.feed_display for s in peer.client.streams.values()]
            assert sorted(displays) == sorted(2 * sorted({p.name for p in peers} - {peer.name})), displays
        assert all(p.client.subscriber.webrtcup.is_set() for p in peers)
        assert all(s.stats.crashes == 0 for s in sessions)
        assert all(s.lost is None for s in sessions[:2] + sessions[3:])
    finally:
        for peer in peers:
            await peer.close()
        for session in sessions:
            await session.close()


# ------------------------------------------------------------------ AudioBridge
async def record(track: MediaStreamTrack, seconds: float) -> np.ndarray:
    """Mono float samples of ``seconds`` of the track (48 kHz)."""
    chunks: list[np.ndarray] = []
    got = 0
    while got < 48_000 * seconds:
        frame = await asyncio.wait_for(track.recv(), 10)
        data = frame.to_ndarray()
        channels = len(frame.layout.channels)
        samples = as_mono_float(data.reshape(-1, channels) if channels > 1 else data.reshape(-1))
        chunks.append(samples)
        got += samples.size
    return np.concatenate(chunks)


async def hears_others(track: MediaStreamTrack, name: str, pitches: dict[str, float],
                       timeout: float = 60.0) -> dict[float, float]:
    """Tone powers of the first one-second window of ``track`` that holds every other participant's
    tone (fraction of the window's power within ±15 Hz of each pitch)."""
    others = [hz for other, hz in pitches.items() if other != name]
    deadline = time.monotonic() + timeout
    while True:
        window = await record(track, 1.0)
        powers = {hz: tone_power(window, 48_000, hz, bandwidth_hz=15) for hz in pitches.values()}
        if all(powers[hz] > 0.1 for hz in others):
            return powers
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} never heard all of {others} Hz in one second of its mix "
                                 f"within {timeout:g} s; last window: {powers}")


async def test_audiobridge_four_tones_each_hears_the_other_three(lab: Lab) -> None:
    pitches = {"p1": 350.0, "p2": 550.0, "p3": 750.0, "p4": 950.0}
    sessions = [await JanusSession.connect(lab.url) for _ in pitches]
    clients: list[AudioBridgeClient] = []
    try:
        for session, (name, hz) in zip(sessions, pitches.items(), strict=True):
            clients.append(await AudioBridgeClient.join(session, AUDIO_ROOM, ToneTrack(hz, amplitude=0.2),
                                                        pin=AUDIO_PIN, display=name))
        await wait_until(lambda: all(c.webrtcup.is_set() for c in clients), "every AudioBridge PC up", timeout=60)
        await wait_until(lambda: all(len(c.participants) == 3 for c in clients), "everyone listed", timeout=30)
        # the track's queue still holds the mix from before everyone's audio reached the bridge (how
        # much depends on the machine's load): read one-second windows until one holds all three
        tracks = [c.mixed for c in clients if c.mixed is not None]
        assert len(tracks) == 4
        windows = await asyncio.gather(*(hears_others(track, name, pitches)
                                         for track, name in zip(tracks, pitches, strict=True)))
        for (name, own), powers in zip(pitches.items(), windows, strict=True):
            assert powers[own] < 0.05, f"{name} hears itself ({own} Hz) in its mix: {powers}"
        await clients[0].set_muted(True)
        assert clients[0].muted
        assert all(s.stats.crashes == 0 and s.lost is None for s in sessions)
    finally:
        for client in clients:
            await client.leave()
        for session in sessions:
            await session.close()


# ------------------------------------------------------------------ Janus dies
async def test_janus_killed_mid_session_is_reported_lost(lab: Lab) -> None:
    events: list[RoomEvent] = []
    session = await JanusSession.connect(lab.url, keepalive_s=2.0)
    client = await VideoRoomClient.join(session, VIDEO_ROOM, pin=VIDEO_PIN, display="solo",
                                        tracks=[ToneTrack(440)], on_event=events.append)
    try:
        await asyncio.wait_for(client.publisher.webrtcup.wait(), 30)
        lab.janus.kill()
        lost = await asyncio.wait_for(session.wait_lost(), 30)
        assert "lost" in str(lost) or "stopped" in str(lost), lost
        await wait_until(lambda: any(e.kind == "lost" for e in events), "the room client told", timeout=10)
        with pytest.raises(SessionLost):
            await session.keepalive()
        assert session.stats.crashes == 0
        await wait_until(lambda: all(t.done() for t in session._tasks), "the session's loops ended", timeout=10)
    finally:
        await client.leave()
        await session.close()
