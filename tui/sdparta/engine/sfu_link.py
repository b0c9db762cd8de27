"""The call's connection to the room's SFU (Janus), and the rule that moves media onto it and back.

The pairs stay: every remote participant keeps its peer connection and data channel (chat, state,
bye, ICE restarts), so moving onto the SFU or off it never loses anyone. Only media moves, pair by
pair and make-before-break:

1. We publish to the SFU (VideoRoom: one send-only connection; AudioBridge: one Opus stream, one mix
   back) and subscribe to the others. Each feed names its session id as its Janus ``display``; only a
   feed naming a current pair's session is played.
2. Once a peer's media *arrives* through the SFU we stop playing its mesh audio and tell it
   ``{"t": "sfu", "rx": true}`` over the pair's data channel; only then does it stop sending us its mesh
   media (``LocalMedia.pause_sending``). A peer that never gets there (not on the SFU, a browser, a
   failure) keeps the mesh with us: a room half on the SFU still hears everyone.
3. Leaving (the room got small, the SFU was lost, the call ends): our mesh senders resume first, we
   tell everyone ``rx: false``, and the SFU's audio of a peer is played until its mesh audio is back.

Janus terminates DTLS-SRTP: media through it is decrypted on that server (the UI says so); the room's
signalling stays sealed end to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from sdparta.engine.ice_adapter import ice_details, path_kind
from sdparta.engine.local_media import LocalMedia, sfu_key
from sdparta.engine.peer import read_stats
from sdparta.engine.sfu_policy import SfuPolicy
from sdparta.engine.state import PeerSnapshot, PeerStats, PeerStatus, SfuSnapshot, StateChange
from sdparta.media.sinks import VideoSink
from sdparta.sfu.audiobridge import AudioBridgeClient
from sdparta.sfu.errors import JanusError
from sdparta.sfu.janus import JanusSession
from sdparta.sfu.settings import SfuEntry
from sdparta.sfu.videoroom import RoomEvent, VideoRoomClient

log = logging.getLogger(__name__)

__all__ = ["DECRYPTED_NOTE", "SfuLink"]

TICK_S = 0.5
#: A feed counts as arriving through the SFU while its last frame is this recent. Generous: a peer
#: judged not arriving gets our rx:false and resumes its mesh media to us, which on loaded cores is
#: more load; the SFU dropping a feed (its m-line gone) or the connection lost is noticed at once anyway.
STALE_S = 6.0
#: A tick this late means our own loop stalled (a loaded machine): no feed is judged stale by it.
STALL_S = 1.5
#: After resuming our mesh senders, how long the SFU stays up while the peers' mesh media comes back.
LEAVE_GRACE_S = 3.0
JOIN_TIMEOUT_S = 20.0
MIX_KEY = "sfu/mix"
DECRYPTED_NOTE = "media through an SFU is decrypted on that server; the room's signalling stays sealed"


class _Counted(MediaStreamTrack):
    """A received SFU track, counting what arrives (does the SFU carry this feed yet?)."""

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.kind = source.kind
        self._source = source
        self.last_frame = 0.0

    async def recv(self) -> Any:
        frame = await self._source.recv()
        self.last_frame = time.monotonic()
        return frame


class _Connection:
    """One SFU peer connection as the ICE panel shows it: timeline, candidates, stats."""

    def __init__(self, role: str, label: str, pc: RTCPeerConnection, clock: Callable[[], float],
                 changed: Callable[[], None]) -> None:
        self.role, self.label, self.pc = role, label, pc
        self._clock, self._changed = clock, changed
        self.timeline: list[StateChange] = [StateChange(clock(), "peer", f"sfu {role}")]
        self.stats = PeerStats()
        self._prev: tuple[float, int, int] | None = None
        for event, attribute, kind in (("signalingstatechange", "signalingState", "signaling"),
                                       ("icegatheringstatechange", "iceGatheringState", "ice_gathering"),
                                       ("iceconnectionstatechange", "iceConnectionState", "ice_connection"),
                                       ("connectionstatechange", "connectionState", "connection")):
            pc.on(event, self._recorder(attribute, kind))
        for kind, state in (("signaling", pc.signalingState), ("ice_gathering", pc.iceGatheringState),
                            ("ice_connection", pc.iceConnectionState), ("connection", pc.connectionState)):
            self.record(kind, state)  # where it is now: the connection was made before it was shown

    def _recorder(self, attribute: str, kind: str) -> Callable[[], None]:
        def record() -> None:
            self.record(kind, getattr(self.pc, attribute))
        return record

    def record(self, kind: str, state: str) -> None:
        self.timeline.append(StateChange(self._clock(), kind, state))
        del self.timeline[:-200]
        self._changed()

    async def refresh_stats(self) -> None:
        if self.pc.connectionState != "closed":
            result = await read_stats(self.pc, self._prev, self._clock())
            if result is not None:
                self.stats, self._prev = result

    def snapshot(self) -> PeerSnapshot:
        selected, check_list, local, remote = ice_details(self.pc)
        state = self.pc.connectionState
        status = {"connected": PeerStatus.CONNECTED, "failed": PeerStatus.FAILED,
                  "closed": PeerStatus.LEFT}.get(state, PeerStatus.CONNECTING)
        return PeerSnapshot(
            session_id=f"sfu-{self.role}", name=f"SFU {self.role} ({self.label})", fingerprint="", public_key="",
            we_offer=self.role != "subscriber", status=status, signaling_state=self.pc.signalingState,
            ice_gathering_state=self.pc.iceGatheringState, ice_connection_state=self.pc.iceConnectionState,
            connection_state=state, timeline=tuple(self.timeline),
            path=path_kind(selected) if selected is not None else None, selected_pair=selected,
            local_candidates=local or (), remote_candidates=remote or (), check_list=check_list or (),
            stats=self.stats, via="sfu")


class SfuLink:
    """Moves this call's media onto the room's SFU when the policy says so, and back (engine loop)."""

    def __init__(self, members: Any, media: LocalMedia, session_id: str, policy: SfuPolicy, *,
                 clock: Callable[[], float], notice: Callable[[str, str], None], changed: Callable[[], None],
                 on_crash: Callable[[str, str], None], room_size: Callable[[], int]) -> None:
        self.members, self.media, self.session_id, self.policy = members, media, session_id, policy
        self._clock, self._notice, self._changed, self._on_crash = clock, notice, changed, on_crash
        self._room_size = room_size
        self.entry: SfuEntry | None = None  # the SFU we are on (or joining)
        self.state = "mesh"
        self.error: str | None = None
        self.events: list[StateChange] = []
        self._session: JanusSession | None = None
        self._client: VideoRoomClient | AudioBridgeClient | None = None
        self._connections: dict[str, _Connection] = {}
        self._published: list[MediaStreamTrack] = []
        self._consumers: dict[str, tuple[str, _Counted, asyncio.Task[None]]] = {}  # mid → (sid, track, task)
        self._mix: _Counted | None = None
        self._mix_task: asyncio.Task[None] | None = None
        self._busy: asyncio.Task[None] | None = None  # a join or a leave in progress
        self._lost = False
        self._closed = False
        self._last_tick = time.monotonic()

    # ------------------------------------------------------------------ what the snapshot shows
    @property
    def publishing(self) -> bool:
        """Our media goes to the SFU (so peers that receive it there need none from our mesh senders)."""
        return self.state == "sfu" and not self._lost

    @property
    def kinds(self) -> tuple[str, ...]:
        """What the SFU carries for us: an AudioBridge no video (a camera's video stays on the mesh)."""
        return ("audio",) if self.entry is not None and self.entry.plugin == "audiobridge" else ("audio", "video")

    def snapshot(self) -> SfuSnapshot | None:
        entry = self.entry or self.members.room_sfu
        if entry is None:
            return None
        mix = self.media.mixer.input_stats(MIX_KEY)[1] if self.media.mixer is not None else 0.0
        return SfuSnapshot(label=entry.label(), plugin=entry.plugin, state=self.state, error=self.error,
                           events=tuple(self.events), connections=tuple(c.snapshot() for c in
                                                                        self._connections.values()),
                           mix_seconds=round(mix, 3))

    def _event(self, text: str) -> None:
        self.events.append(StateChange(self._clock(), "sfu", text))
        del self.events[:-100]
        for negotiation in self.members.pairs.values():  # the switch is an event in each timeline
            negotiation.link.record("sfu", text)
        self._changed()

    # ------------------------------------------------------------------ the loop
    async def run(self) -> None:
        """Every TICK_S: apply the policy, follow which peers arrive through the SFU."""
        while True:
            await asyncio.sleep(TICK_S)
            await self.tick()

    async def tick(self) -> None:
        if self._closed:
            return
        named = self.members.room_sfu
        now = time.monotonic()
        stalled, self._last_tick = now - self._last_tick > TICK_S + STALL_S, now
        if self._busy is None:
            on = self.state == "sfu"
            if on and (self._lost or named != self.entry):
                reason = (f"the SFU connection was lost ({self.error})" if self._lost
                          else "the room's SFU entry changed")
                self._start(self._leave(reason, failed=self._lost))
            elif named is not None and self.policy.want_sfu(now, self._room_size(), on):
                if not on:
                    self._start(self._join(named))
            elif on:
                self._start(self._leave(f"the room is down to {self._room_size()} members", failed=False))
        # every tick, not only on the SFU's stream events: Janus can announce a member's feed before the
        # room's presence shows that member (a big room's portal polls lag), and its streams are played
        # only once it is a pair here
        self._follow_streams()
        self._follow_arrivals(stalled)
        self.members.apply_sending(self.publishing, self.kinds)

    def _start(self, work: Any) -> None:
        async def run() -> None:
            try:
                await work
            finally:
                self._busy = None
        self._busy = asyncio.get_running_loop().create_task(run())

    # ------------------------------------------------------------------ joining
    async def _join(self, entry: SfuEntry) -> None:
        self.entry, self.state, self.error, self._lost = entry, "joining", None, False
        size = self._room_size()
        self._event(f"moving onto the SFU {entry.label()} ({entry.plugin}, room of {size})")
        self._notice("information", f"the room has {size} members: moving onto its SFU {entry.label()} "
                                    f"({DECRYPTED_NOTE})")
        try:
            async with asyncio.timeout(JOIN_TIMEOUT_S):
                await self._connect(entry)
        except (JanusError, ValueError, OSError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            if isinstance(exc, TimeoutError):
                reason = f"{entry.label()} did not set up the call within {JOIN_TIMEOUT_S:g} s"
            await self._teardown()
            wait = self.policy.failed(time.monotonic())
            self.state, self.error = "failed", reason
            self._event(f"SFU failed: {reason}")
            self._notice("warning", f"cannot use the room's SFU: {reason} — the call stays a mesh "
                                    f"(trying again in {wait:.0f} s)")
            return
        self.policy.succeeded()
        self.state = "sfu"
        self._event(f"on the SFU {entry.label()}")

    async def _connect(self, entry: SfuEntry) -> None:
        members = self.members
        session = self._session = await JanusSession.connect(entry.url, on_crash=self._on_crash,
                                                             on_lost=self._session_lost)
        ice = list(members.ice_servers)
        audio_only = entry.plugin == "audiobridge"
        tracks = self._published = self.media.sfu_tracks(audio_only=audio_only)
        if audio_only:
            audio = next((t for t in tracks if t.kind == "audio"), None)
            if audio is None:
                raise ValueError("nothing to send to an AudioBridge (no microphone or tone)")
            client = await AudioBridgeClient.join(session, entry.room, audio, pin=entry.pin,
                                                  display=self.session_id, ice_servers=ice,
                                                  relay_only=members.relay_only, on_event=self._room_event,
                                                  on_crash=self._on_crash)
            self._client = client
            self._watch("audiobridge", client.pc)
            if client.mixed is not None:
                self._mix = _Counted(client.mixed)
                if self.media.mixer is not None:
                    self._mix_task = asyncio.get_running_loop().create_task(
                        self.media.mixer.consume(MIX_KEY, self._mix))
            await client.webrtcup.wait()
        else:
            video = await VideoRoomClient.join(session, entry.room, pin=entry.pin, display=self.session_id,
                                               tracks=tracks, ice_servers=ice, relay_only=members.relay_only,
                                               on_event=self._room_event, on_crash=self._on_crash)
            self._client = video
            for role, pc in video.peer_connections().items():
                self._watch(role, pc)
            await video.publisher.webrtcup.wait()
            self._follow_streams()

    def _watch(self, role: str, pc: RTCPeerConnection) -> None:
        if role not in self._connections or self._connections[role].pc is not pc:
            label = self.entry.label() if self.entry is not None else "sfu"
            self._connections[role] = _Connection(role, label, pc, self._clock, self._changed)
            pc.on("connectionstatechange", lambda: self._connection_changed(role, pc))

    def _connection_changed(self, role: str, pc: RTCPeerConnection) -> None:
        """An SFU connection that fails or closes by itself (ICE consent expired under load: aiortc then
        closes the whole connection, and Janus, no longer reached, hangs up only much later) is a lost
        SFU: back to the mesh now. Our own leave closes them only after leaving state ``sfu``; at
        :meth:`close` the call is over and no tick acts on it."""
        if pc.connectionState in ("failed", "closed") and self.state == "sfu" and not self._lost:
            self._lose(f"the SFU {role} connection {pc.connectionState}")

    def _session_lost(self, error: Exception) -> None:
        self._lose(str(error))

    def _lose(self, error: str) -> None:
        """The SFU is gone under us: the next tick leaves it (back to the mesh) and schedules the retry."""
        self._lost = True
        self.error = error
        self._changed()

    def _room_event(self, event: RoomEvent) -> None:
        if event.kind in ("lost", "hangup") and self.state == "sfu":
            self._lose(str(event.error) if event.error is not None else f"the SFU hung up our {event.what}")
        elif event.kind == "error" and event.error is not None:
            self._notice("warning", f"SFU: {event.error}")
        elif event.kind == "publisher-joined" and self.media.video_fanout is not None:
            self.media.video_fanout.request_keyframe()  # it will subscribe to us: decodable from the next frame
        if isinstance(self._client, VideoRoomClient):
            for role, pc in self._client.peer_connections().items():
                self._watch(role, pc)
            if event.kind == "streams":
                self._follow_streams()
        self._changed()

    # ------------------------------------------------------------------ receiving
    def _follow_streams(self) -> None:
        """Play every subscribed stream of a current pair (the feed's display is its session id)."""
        client = self._client
        if not isinstance(client, VideoRoomClient):
            return
        pairs = self.members.pairs
        wanted: dict[str, tuple[str, MediaStreamTrack]] = {}
        for mid, stream in client.streams.items():
            if stream.track is not None and stream.feed_display in pairs and stream.feed_display != self.session_id:
                wanted[mid] = (stream.feed_display, stream.track)
        for mid, (sid, counted, _task) in list(self._consumers.items()):
            if wanted.get(mid, (None, None))[0] != sid or wanted[mid][1] is not counted._source:
                self._drop_consumer(mid)
        for mid, (sid, track) in wanted.items():
            if mid not in self._consumers:
                counted = _Counted(track)
                self._consumers[mid] = (sid, counted, asyncio.get_running_loop().create_task(
                    self._consume(sid, counted)))

    async def _consume(self, sid: str, track: _Counted) -> None:
        with contextlib.suppress(MediaStreamError):
            if track.kind == "audio" and self.media.mixer is not None:
                await self.media.mixer.consume(sfu_key(sid), track)
            elif track.kind == "video":
                await self.media.video_sinks.setdefault(sid, VideoSink()).consume(track)

    def _arrived(self) -> set[str]:
        """The sessions whose media reaches us through the SFU now."""
        if not self.publishing:
            return set()
        now = time.monotonic()
        client = self._client
        if isinstance(client, AudioBridgeClient):
            if self._mix is None or now - self._mix.last_frame > STALE_S:
                return set()
            return {p.display for p in client.participants.values()}
        return {sid for sid, track, _task in self._consumers.values() if now - track.last_frame < STALE_S}

    def _follow_arrivals(self, stalled: bool = False) -> None:
        arrived = self._arrived()
        mixer = self.media.mixer
        for sid, negotiation in self.members.pairs.items():
            link = negotiation.link
            receiving = sid in arrived and not link.finished
            if receiving == link.sfu_receiving:
                continue
            if not receiving and stalled and self.publishing and not link.finished:
                continue  # our loop was late, not their frames: judge again on the next tick
            if not receiving and mixer is not None and self.publishing:
                # gone from the SFU while we are on it: its mesh audio plays again at once
                mixer.set_gated(sid, False)
            elif receiving and mixer is not None:
                mixer.set_gated(sid, True)  # heard through the SFU: its mesh audio is not played twice
            link.sfu_receiving = receiving
            link.send_control({"t": "sfu", "rx": receiving})
            link.record("sfu", "receiving them through the SFU" if receiving else "receiving them through the mesh")
            self._changed()

    # ------------------------------------------------------------------ leaving
    async def _leave(self, reason: str, *, failed: bool) -> None:
        """Back to the mesh: our senders resume, peers are told, their mesh audio comes back, then we go."""
        entry = self.entry
        self.state = "failed" if failed else "mesh"
        if failed:
            wait = self.policy.failed(time.monotonic())
            self._notice("warning", f"lost the room's SFU ({reason}): back to the mesh, nobody has to rejoin "
                                    f"(trying the SFU again in {wait:.0f} s)")
        else:
            self._notice("information", f"{reason}: back to the mesh (media peer to peer again)")
        self._event(f"leaving the SFU: {reason}")
        self.members.apply_sending(False)
        mixer = self.media.mixer
        since = time.monotonic()
        waiting = []
        for sid, negotiation in self.members.pairs.items():
            link = negotiation.link
            if link.sfu_receiving:
                link.sfu_receiving = False
                link.send_control({"t": "sfu", "rx": False})
                waiting.append(sid)
        if not failed and mixer is not None:
            deadline = since + LEAVE_GRACE_S
            while waiting and time.monotonic() < deadline:  # their mesh audio back (gated meanwhile)?
                await asyncio.sleep(0.1)
                back = [sid for sid in waiting if mixer.arrived_since(sid, since + 0.2)]
                for sid in back:
                    mixer.set_gated(sid, False)
                    self._stop_consumers(sid)
                    waiting.remove(sid)
        if mixer is not None:
            for sid in self.members.pairs:
                mixer.set_gated(sid, False)
        await self._teardown()
        self._event(f"off the SFU {entry.label() if entry is not None else ''}".rstrip())

    def _stop_consumers(self, sid: str) -> None:
        for mid in [mid for mid, (owner, _track, _task) in self._consumers.items() if owner == sid]:
            self._drop_consumer(mid)

    def _drop_consumer(self, mid: str) -> None:
        """Stop playing one subscribed m-line (and take its audio out of the mix)."""
        sid, counted, task = self._consumers.pop(mid)
        task.cancel()
        if self.media.mixer is not None and counted.kind == "audio":
            self.media.mixer.remove_input(sfu_key(sid))

    async def _teardown(self) -> None:
        for sid in {owner for owner, _track, _task in self._consumers.values()}:
            self._stop_consumers(sid)
        if self._mix_task is not None:
            self._mix_task.cancel()
            self._mix_task = None
            if self.media.mixer is not None:
                self.media.mixer.remove_input(MIX_KEY)
        self._mix = None
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(6):
                    await client.leave()
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):
                await session.close()
        for track in self._published:
            track.stop()
        self._published = []
        self._connections.clear()
        self._lost = False
        self._changed()

    async def close(self) -> None:
        """The call ends: leave the SFU (the pairs say bye on their own)."""
        self._closed = True
        if self._busy is not None:
            self._busy.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._busy
        await self._teardown()
        if self.state in ("sfu", "joining"):  # the last report must not say "on the SFU" with nothing there
            self.state = "mesh"
            self._event("the call ended: left the SFU")

    async def refresh_stats(self) -> None:
        await asyncio.gather(*(c.refresh_stats() for c in list(self._connections.values())),
                             return_exceptions=True)

