"""One remote participant: its RTCPeerConnection, data channel, state timeline and stats.

The record only: how the pair is negotiated and kept up is ``engine/negotiation.py``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from aiortc import RTCDataChannel, RTCPeerConnection

from sdparta import safe_json
from sdparta.engine.ice_adapter import ice_details, path_kind
from sdparta.engine.state import PeerSnapshot, PeerStats, PeerStatus, StateChange
from sdparta.room.keys import fingerprint
from sdparta.room.wire import Member

log = logging.getLogger(__name__)

MAX_DATA_MESSAGE = 16 * 1024
MAX_CHAT_CHARS = 2000
STATS_HISTORY = 120
OUTBOX_LIMIT = 50  # chat lines kept for a peer whose data channel is not open yet
BYE_REASON = "left the call (said bye)"  # a `left` that is final: that session will not come back


class PeerLink:
    """The engine's record of one remote participant (lives on the engine loop)."""

    def __init__(self, member: Member, we_offer: bool, started_at: float,
                 on_change: Callable[[], None]) -> None:
        self.member = member
        self.we_offer = we_offer
        self.call_started = started_at  # monotonic start of the call, for timeline times
        self.link_started = time.monotonic()
        self.on_change = on_change
        self.pc: RTCPeerConnection | None = None
        self.channel: RTCDataChannel | None = None
        self._channel_pc: RTCPeerConnection | None = None  # the connection the channel runs on
        self.status = PeerStatus.DISCOVERED
        self.failure_reason: str | None = None
        self.timeline: list[StateChange] = []
        self.connected_after_s: float | None = None
        self.stats = PeerStats()
        self.stats_history: deque[PeerStats] = deque(maxlen=STATS_HISTORY)
        self.last_heard = time.monotonic()
        self.remote_muted = False
        self.remote_camera_off = False
        self.remote_audio_only = False
        self.remote_name = member.name
        self.tasks: list[asyncio.Task[Any]] = []  # link-level work (negotiation, guards, restarts)
        self._pc_tasks: dict[int, list[asyncio.Task[Any]]] = {}
        self.restarts = 0  # ICE restarts that brought the pair back
        self.previous_pc: RTCPeerConnection | None = None  # kept until its replacement connects
        self.outbox: deque[dict[str, Any]] = deque(maxlen=OUTBOX_LIMIT)  # chat held until the channel opens
        self._prev_bytes: tuple[float, int, int] | None = None
        self._last_ice: tuple = (None, (), (), ())  # kept after close so reports still show the path
        # The room's SFU (engine/sfu_link.py): their media reaches us through it (our mesh audio from
        # them is then not played); they told us ours reaches them through it ({"t": "sfu", "rx": true}:
        # our mesh senders to them then pause, while we publish to the SFU).
        self.sfu_receiving = False
        self.peer_gets_us_from_sfu = False
        self.paused_senders: dict[int, list[Any]] = {}  # per connection: LocalMedia.pause_sending's
        self.record("peer", "discovered")

    # ------------------------------------------------------------------ state
    def now(self) -> float:
        return round(time.monotonic() - self.call_started, 4)

    def record(self, kind: str, state: str) -> None:
        self.timeline.append(StateChange(self.now(), kind, state))
        if len(self.timeline) > 500:
            del self.timeline[:100]
        self.on_change()

    def set_status(self, status: PeerStatus, reason: str | None = None) -> None:
        if status == self.status and reason == self.failure_reason:
            return
        self.status = PeerStatus(status)
        self.failure_reason = reason
        if status == PeerStatus.CONNECTED and self.connected_after_s is None:
            self.connected_after_s = round(time.monotonic() - self.link_started, 4)
        self.record("peer", str(status) if reason is None else f"{status}: {reason}")

    @property
    def finished(self) -> bool:
        return self.status.finished

    @property
    def may_come_back(self) -> bool:
        """Ended by what the presence list said (stale, or out of the list), not by a bye: if the
        same session is listed again it is alive, and gets a fresh pair."""
        return self.status == PeerStatus.GONE or (self.status == PeerStatus.LEFT
                                                  and self.failure_reason not in (None, BYE_REASON))

    def attach(self, pc: RTCPeerConnection, on_connection_state: Callable[[RTCPeerConnection], None]) -> None:
        """Make ``pc`` the link's connection and follow its four state machines; changes of its
        connection state (while it is the link's connection) go to ``on_connection_state``.

        An ICE restart builds a new connection while the old one may still carry the data channel
        (the restart's signalling can go over it): the old one is kept as ``previous_pc`` until the
        new one connects, and events of a connection that is no longer ``self.pc`` are ignored."""
        if self.previous_pc is not None:
            asyncio.get_running_loop().create_task(self.retire(self.previous_pc))
        self.previous_pc, self.pc = self.pc, pc
        self._prev_bytes = None  # byte counters start again with a new connection
        self.record("signaling", pc.signalingState)
        self.record("ice_gathering", pc.iceGatheringState)

        @pc.on("signalingstatechange")
        def _signaling() -> None:
            if self.pc is pc:
                self.record("signaling", pc.signalingState)

        @pc.on("icegatheringstatechange")
        def _gathering() -> None:
            if self.pc is pc:
                self.record("ice_gathering", pc.iceGatheringState)

        @pc.on("iceconnectionstatechange")
        def _ice() -> None:
            if self.pc is pc:
                self.record("ice_connection", pc.iceConnectionState)

        @pc.on("connectionstatechange")
        def _connection() -> None:
            if self.pc is not pc:
                return
            self.record("connection", pc.connectionState)
            on_connection_state(pc)

    def connected(self) -> None:
        """The link's connection is up: it is the one now (the one it replaced is closed)."""
        self.last_heard = time.monotonic()
        self.set_status(PeerStatus.CONNECTED)
        if self.previous_pc is not None:
            old, self.previous_pc = self.previous_pc, None
            asyncio.get_running_loop().create_task(self.retire(old))

    def track_task(self, pc: RTCPeerConnection, task: asyncio.Task[Any]) -> None:
        """A media consumer that belongs to ``pc`` (cancelled when that connection is retired)."""
        self._pc_tasks.setdefault(id(pc), []).append(task)

    async def retire(self, pc: RTCPeerConnection | None) -> None:
        """Close a connection that an ICE restart replaced (or the link's last one)."""
        if pc is None:
            return
        for task in self._pc_tasks.pop(id(pc), []):
            task.cancel()
        for _sender, track, drain in self.paused_senders.pop(id(pc), []):
            drain.cancel()
            track.stop()
        if self._channel_pc is pc:
            self.channel, self._channel_pc = None, None
        for sender in pc.getSenders():  # our per-connection views of the shared sources end with it
            if sender.track is not None:
                sender.track.stop()
        with contextlib.suppress(Exception):
            await pc.close()

    # ------------------------------------------------------------------ data channel
    def set_channel(self, channel: RTCDataChannel, pc: RTCPeerConnection) -> None:
        self.channel, self._channel_pc = channel, pc

    def channel_alive(self, within: float) -> bool:
        """Open and heard from lately: worth sending signalling over (faster than the room)."""
        channel = self.channel
        return (channel is not None and channel.readyState == "open"
                and time.monotonic() - self.last_heard < within)

    def send_control(self, message: dict[str, Any]) -> bool:
        channel = self.channel
        if channel is None or channel.readyState != "open":
            return False
        try:
            channel.send(json.dumps(message, separators=(",", ":")))
        except Exception as exc:  # channel closing under us
            log.debug("data channel send failed: %s", exc)
            return False
        return True

    def send_or_hold(self, message: dict[str, Any]) -> None:
        """Send now, or keep the message until the channel opens (a chat typed while connecting)."""
        if not self.send_control(message):
            self.outbox.append(message)

    def flush_outbox(self) -> None:
        while self.outbox and self.send_control(self.outbox[0]):
            self.outbox.popleft()

    @staticmethod
    def parse_control(raw: str | bytes) -> dict[str, Any] | None:
        """Validate one data channel message; None when malformed."""
        if len(raw) > MAX_DATA_MESSAGE:
            return None
        try:
            message = safe_json.loads(raw, max_depth=8)
        except safe_json.JSONError:
            return None
        if not isinstance(message, dict) or not isinstance(message.get("t"), str):
            return None
        return message

    # ------------------------------------------------------------------ stats
    async def refresh_stats(self) -> None:
        pc = self.pc
        if pc is None or pc.connectionState == "closed":
            return
        result = await read_stats(pc, self._prev_bytes, self.now())
        if result is not None:
            self.stats, self._prev_bytes = result
            self.stats_history.append(self.stats)

    # ------------------------------------------------------------------ teardown
    async def close(self) -> None:
        for task in self.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self.tasks.clear()
        await self.retire(self.previous_pc)
        await self.retire(self.pc)

    def snapshot(self, audio_level: float, audio_seconds: float, video_frames: int) -> PeerSnapshot:
        if self.pc is not None and self.pc.connectionState != "closed":
            details = ice_details(self.pc)
            if details[0] is not None or not self._last_ice[0]:
                self._last_ice = details
        selected, check_list, local, remote = self._last_ice
        pc = self.pc
        return PeerSnapshot(
            session_id=self.member.session_id,
            name=self.remote_name,
            fingerprint=fingerprint(self.member.public_key),
            public_key=self.member.public_key.hex(),
            we_offer=self.we_offer,
            status=self.status,
            failure_reason=self.failure_reason,
            signaling_state=pc.signalingState if pc else "stable",
            ice_gathering_state=pc.iceGatheringState if pc else "new",
            ice_connection_state=pc.iceConnectionState if pc else "new",
            connection_state=pc.connectionState if pc else "new",
            timeline=tuple(self.timeline),
            connected_after_s=self.connected_after_s,
            path=path_kind(selected) if self.connected_after_s is not None else None,
            selected_pair=selected,
            local_candidates=local or (),
            remote_candidates=remote or (),
            check_list=check_list or (),
            stats=self.stats,
            stats_history=tuple(self.stats_history),
            audio_level=audio_level,
            speaking=audio_level > 0.02 and not self.remote_muted,
            video_frames=video_frames,
            audio_seconds=audio_seconds,
            remote_muted=self.remote_muted,
            remote_camera_off=self.remote_camera_off,
            remote_audio_only=self.remote_audio_only,
            restarts=self.restarts,
            via="sfu" if self.sfu_receiving else "mesh",
        )


async def read_stats(pc: RTCPeerConnection, prev: tuple[float, int, int] | None,
                     t: float) -> tuple[PeerStats, tuple[float, int, int]] | None:
    """One connection's figures (and the byte counters the next call computes rates from);
    None when aiortc cannot report (a connection closing under us). Pairs and SFU connections alike."""
    try:
        report = await pc.getStats()
    except Exception:
        return None
    rtt: float | None = None
    received = lost = sent_bytes = recv_bytes = 0
    transport_in = 0
    for stat in report.values():
        kind = getattr(stat, "type", "")
        if kind == "remote-inbound-rtp" and getattr(stat, "roundTripTime", None) is not None:
            rtt = max(rtt or 0.0, float(stat.roundTripTime) * 1000)
        elif kind == "inbound-rtp":
            received += int(getattr(stat, "packetsReceived", 0) or 0)
            lost += max(0, int(getattr(stat, "packetsLost", 0) or 0))
            recv_bytes += int(getattr(stat, "bytesReceived", 0) or 0)
        elif kind == "outbound-rtp":
            sent_bytes += int(getattr(stat, "bytesSent", 0) or 0)
        elif kind == "transport":
            transport_in += int(getattr(stat, "bytesReceived", 0) or 0)
    # aiortc's inbound-rtp stats carry no byte counts: the transport's are the best measure in.
    recv_bytes = recv_bytes or transport_in
    now = time.monotonic()
    in_kbps = out_kbps = 0.0
    if prev is not None:
        dt = now - prev[0]
        if dt > 0:
            in_kbps = max(0, recv_bytes - prev[1]) * 8 / dt / 1000
            out_kbps = max(0, sent_bytes - prev[2]) * 8 / dt / 1000
    total = received + lost
    stats = PeerStats(
        t=t, rtt_ms=rtt, bitrate_in_kbps=round(in_kbps, 2), bitrate_out_kbps=round(out_kbps, 2),
        packets_received=received, packets_lost=lost,
        loss_fraction=round(lost / total, 4) if total else 0.0, bytes_sent=sent_bytes,
        bytes_received=recv_bytes,
    )
    return stats, (now, recv_bytes, sent_bytes)
