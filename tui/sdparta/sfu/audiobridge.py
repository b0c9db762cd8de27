"""Janus AudioBridge: one Opus stream up, one mixed stream down, whatever the room's size.

``join`` (room, PIN, display, muted) then ``configure`` with our offer; Janus answers, and its one
audio m-line carries everyone else mixed (the bridge leaves each participant's own voice out of
its mix). Mute is ``configure`` with ``muted`` — no renegotiation. Participants are followed from
``joined``/``event``/``leaving`` notifications.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aiortc import RTCIceServer, RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

from sdparta.sfu.errors import JanusError, JanusProtocolError
from sdparta.sfu.janus import HandleEvent, JanusHandle, JanusSession, clean_text, janus_id
from sdparta.sfu.peer import apply_answer, make_offer, new_peer_connection, prefer_sfu_codecs
from sdparta.sfu.videoroom import RoomEvent, _room_body, _Worker

log = logging.getLogger(__name__)

__all__ = ["PLUGIN", "AudioBridgeClient", "Participant"]

PLUGIN = "janus.plugin.audiobridge"
MAX_PARTICIPANTS_LISTED = 512


@dataclass(frozen=True)
class Participant:
    id: int
    display: str
    muted: bool


def _participants(value: object) -> list[Participant]:
    if not isinstance(value, list):
        return []
    return [Participant(pid, clean_text(item.get("display"), 64), item.get("muted") is True)
            for item in value[:MAX_PARTICIPANTS_LISTED]
            if isinstance(item, dict) and (pid := janus_id(item.get("id"))) is not None]


@dataclass
class AudioBridgeClient:
    """One participant of an AudioBridge room. Build it with :meth:`join`."""

    session: JanusSession
    room: int
    handle: JanusHandle
    pc: RTCPeerConnection
    id: int
    on_event: Callable[[RoomEvent], None]
    muted: bool = False
    participants: dict[int, Participant] = field(default_factory=dict)
    mixed: MediaStreamTrack | None = None  # the room's mix, once the answer is applied
    webrtcup: asyncio.Event = field(default_factory=asyncio.Event)
    _worker: _Worker | None = None

    @classmethod
    async def join(cls, session: JanusSession, room: int, track: MediaStreamTrack, *, pin: str | None = None,
                   display: str = "", muted: bool = False, ice_servers: Sequence[RTCIceServer] = (),
                   relay_only: bool = False,
                   on_event: Callable[[RoomEvent], None] | None = None,
                   on_crash: Callable[[str, str], None] | None = None) -> AudioBridgeClient:
        """Join ``room`` sending ``track`` (Opus) and receiving the mix. Typed errors: NoSuchRoom,
        WrongPin, SfuUnreachable/SessionLost, JanusRequestError."""
        report = on_event or (lambda event: None)

        def listen(event: RoomEvent) -> None:
            try:
                report(event)
            except Exception:
                log.exception("an AudioBridge event listener failed")

        handle = await session.attach(PLUGIN)
        pc = None
        try:
            data, _ = await handle.request(_room_body("join", room, pin, display=display[:64], muted=muted))
            own = janus_id(data.get("id"))
            if data.get("audiobridge") != "joined" or own is None:
                raise JanusProtocolError(f"{session.label}: AudioBridge did not confirm the join")
            pc = new_peer_connection(ice_servers, relay_only=relay_only)
            client = cls(session, room, handle, pc, own, listen, muted)
            for participant in _participants(data.get("participants")):
                client.participants[participant.id] = participant
            client._worker = _Worker("janus audiobridge", handle, client._event, on_crash or (lambda n, e: None))
            pc.addTransceiver(track, direction="sendrecv")
            prefer_sfu_codecs(pc)
            offer = await make_offer(pc)
            reply, answer = await handle.request({"request": "configure", "muted": muted}, offer)
            if reply.get("result") != "ok":
                raise JanusProtocolError(f"{session.label}: AudioBridge did not accept our offer")
            await apply_answer(pc, answer)
            receivers = [t.receiver.track for t in pc.getTransceivers() if t.receiver.track is not None]
            client.mixed = receivers[0] if receivers else None
        except BaseException:
            if pc is not None:
                await pc.close()
            with contextlib.suppress(Exception):
                await handle.detach()
            raise
        return client

    async def set_muted(self, muted: bool) -> None:
        """Mute or unmute our stream at the bridge (the others stop hearing us; no renegotiation)."""
        await self.handle.request({"request": "configure", "muted": muted})
        self.muted = muted

    async def _event(self, event: HandleEvent) -> None:
        data = event.data
        if event.janus == "webrtcup":
            self.webrtcup.set()
            self.on_event(RoomEvent("webrtcup", what="audiobridge"))
        elif event.janus == "lost":
            self.on_event(RoomEvent("lost", error=event.error))
        elif event.janus == "hangup":
            self.webrtcup.clear()
            self.on_event(RoomEvent("hangup", what="audiobridge"))
        elif event.janus == "event":
            for participant in _participants(data.get("participants")):
                if participant.id == self.id:
                    continue
                new = participant.id not in self.participants
                self.participants[participant.id] = participant
                if new:
                    self.on_event(RoomEvent("publisher-joined", participant.id, participant.display))
            for key in ("leaving", "kicked"):
                gone = janus_id(data.get(key))
                if gone is not None and (info := self.participants.pop(gone, None)) is not None:
                    self.on_event(RoomEvent("publisher-left", gone, info.display))

    async def leave(self) -> None:
        """Leave the room (best effort), close the peer connection. Idempotent."""
        if self._worker is not None:
            await self._worker.stop()
            self._worker = None
        if not self.session.lost and not self.handle.detached:
            with contextlib.suppress(JanusError):
                await self.handle.request({"request": "leave"}, timeout=5)
        await self.handle.detach()
        await self.pc.close()
