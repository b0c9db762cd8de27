"""How one pair is negotiated and kept up: one :class:`Negotiation` per remote participant.

It owns the pair's negotiation state (generations, whether our offer was answered, the restart
task, since when it is reconnecting, whether a path to the peer ever worked) and decides:
- who offers (:func:`offers_first`: the smaller (public key, session id), so there is no glare);
- which offers and answers count (a generation at or below the last one is stale);
- when a pair that does not connect has failed (our connect guard: aiortc alone may wait a minute,
  or forever with no candidates) and when it is only reconnecting (a path to this peer worked);
- when and how ICE restarts, over the data channel while it lives and through the room.

Everything else comes through a :class:`PeerContext` (the room, local media, diagnosis, new
connections and the call's callbacks), so tests drive it with fakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from sdparta.engine import defaults
from sdparta.engine.diagnosis import Diagnosis, candidate_types
from sdparta.engine.ice_adapter import end_of_candidates_safe
from sdparta.engine.peer import MAX_CHAT_CHARS, MAX_DATA_MESSAGE, PeerLink
from sdparta.engine.state import PeerStatus
from sdparta.room.wire import Member
from sdparta.store.base import StoreError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NegotiationTiming:
    """The reconnection policy's clocks (seconds); tests shorten them."""

    connect_timeout: float = defaults.CONNECT_TIMEOUT  # a fresh pair not connected by then has failed
    silence: float = 4.0  # no data channel traffic for this long: the pair is broken, restart ICE
    give_up: float = 120.0  # still not back after this long: failed (a peer that left is gone sooner)
    reoffer: float = 15.0  # an unanswered restart offer is renewed this often
    answered_timeout: float = 8.0  # an answered restart that has not connected by then is tried again
    retry: float = 0.5  # pause between restart offers that could not be sent (network still down)
    room_send_timeout: float = 4.0  # a restart's room write that takes longer is retried on a fresh connection
    room_probe_timeout: float = 1.0  # while reconnecting, how long one "is the network back?" read may take
    regather: int = 2  # fresh gatherings in a row for restart offers that lost candidate types
    channel_fresh: float = 2.0  # a data channel heard from this recently can carry restart signalling


def offers_first(our_key: bytes, our_session: str, member: Member) -> bool:
    """Deterministic offerer: the smaller (public key, session id) offers — no glare."""
    return (our_key, our_session) < (member.public_key, member.session_id)


class Signalling(Protocol):
    """What a negotiation needs from the room (``RoomSession`` is one)."""

    async def send(self, member: Member, body: dict[str, Any]) -> None: ...
    async def watch(self, member: Member, active: bool) -> None: ...
    def mark_pending(self, seconds: float = 10.0, *, urgent: bool = False) -> None: ...
    def kick(self) -> None: ...
    async def room_reachable(self, timeout: float = 1.0) -> bool: ...


class PeerMedia(Protocol):
    """What a negotiation needs from local media (``LocalMedia`` is one)."""

    def add_to(self, pc: RTCPeerConnection, offering: bool) -> None: ...
    def receive(self, link: PeerLink, pc: RTCPeerConnection, track: MediaStreamTrack) -> None: ...
    def state_message(self) -> dict[str, Any]: ...


@dataclass
class PeerContext:
    """What every negotiation of a call shares: the call's services and callbacks."""

    room: Signalling
    media: PeerMedia
    diagnosis: Diagnosis
    new_pc: Callable[[], RTCPeerConnection]
    finish: Callable[[PeerLink, PeerStatus, str | None], None]  # the pair is over
    notice: Callable[[str, str], None]  # (severity, text) for the user
    chat: Callable[[PeerLink, str], None]  # a chat line from the peer (printable, bounded)
    invalid: Callable[[str], None]  # a malformed message was dropped
    changed: Callable[[], None]  # something a snapshot shows changed
    timing: NegotiationTiming = NegotiationTiming()
    # a peer said whether our media reaches it through the room's SFU (our mesh senders follow)
    sfu_rx: Callable[[PeerLink], None] = lambda link: None


def send_signal(channel: Any, body: dict[str, Any]) -> bool:
    """An offer/answer over the data channel; False when it does not fit or the channel broke."""
    raw = json.dumps({"t": "signal", "body": body}, separators=(",", ":"))
    if len(raw) > MAX_DATA_MESSAGE or channel.readyState != "open":
        return False
    try:
        channel.send(raw)
    except Exception:
        return False
    return True


def _valid_signal(body: Any) -> bool:
    return (isinstance(body, dict) and body.get("type") in ("offer", "answer")
            and isinstance(body.get("sdp"), str) and isinstance(body.get("gen"), int)
            and not isinstance(body.get("gen"), bool))


class Negotiation:
    """One pair's negotiation and reconnection (lives on the engine loop)."""

    def __init__(self, link: PeerLink, context: PeerContext) -> None:
        self.link = link
        self.ctx = context
        self.gen = 0  # our offers' generation (a new offer for the same session bumps it)
        self.remote_gen = -1  # the newest offer generation we answered
        self.answered = False  # our latest offer has its answer
        self.answered_at = 0.0
        self.restart_task: asyncio.Task[None] | None = None
        self.reconnecting_since: float | None = None
        self.path_worked = False  # a connection to this peer worked (on this pair or one before it)
        self.working_types: set[str] = set()  # local candidate types of the last connection that worked
        self.offer_incomplete = False  # our latest restart offer lacks some of those types

    @property
    def we_offer(self) -> bool:
        return self.link.we_offer

    def follow(self, old: Negotiation) -> None:
        """A fresh pair with a member that was gone and is back: generations go on above the old
        pair's (neither side takes the new offer for a stale one) and a path that worked still counts."""
        self.gen, self.remote_gen = old.gen, old.remote_gen
        self.path_worked = old.path_worked
        self.link.record("peer", "back in the room after being gone")

    def start(self) -> None:
        """First contact: the connect guard runs, and the offerer offers (the answerer watches)."""
        self.link.tasks.append(asyncio.create_task(self._connect_guard()))
        if self.we_offer:
            self._spawn(self._offer())
        else:
            self._spawn(self.ctx.room.watch(self.link.member, True))

    # ------------------------------------------------------------------ offer / answer
    def on_signal(self, body: dict[str, Any]) -> None:
        """An offer or answer, from the room or over the data channel (the one dispatch of both)."""
        if self.link.finished:
            return
        if body["type"] == "offer" and not self.we_offer:
            self._spawn(self._answer(body))
        elif body["type"] == "answer" and self.we_offer:
            self._spawn(self._take_answer(body))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        link = self.link

        async def guarded() -> None:
            try:
                await coro
            except StoreError as exc:
                self.ctx.notice("warning", f"signalling to {link.remote_name} failed: {exc}")
            except Exception as exc:
                log.exception("negotiation with %s failed", link.remote_name)
                self.ctx.finish(link, PeerStatus.FAILED, f"negotiation error: {exc}")

        link.tasks.append(asyncio.create_task(guarded()))

    def _new_connection(self) -> RTCPeerConnection:
        pc = self.ctx.new_pc()
        self.link.attach(pc, self._on_connection_state)

        @pc.on("track")
        def _on_track(track: MediaStreamTrack) -> None:
            self.ctx.media.receive(self.link, pc, track)

        @pc.on("datachannel")
        def _on_channel(channel: Any) -> None:
            self._wire_channel(pc, channel)

        return pc

    def _add_local_media(self, pc: RTCPeerConnection, offering: bool) -> None:
        """Our tracks; the offering side also creates the data channel."""
        self.ctx.media.add_to(pc, offering)
        if offering:
            self._wire_channel(pc, pc.createDataChannel("sdparta", ordered=True))

    async def _offer(self) -> bool:
        """Offer a fresh connection (first contact, or an ICE restart with ``gen`` + 1).

        A restart offer also goes over the data channel when it is alive (faster, and works while
        the portal is unreachable); the room copy reaches a peer whose channel is dead. Returns
        whether the offer reached the room (or the channel)."""
        link, room, timing = self.link, self.ctx.room, self.ctx.timing
        restart = link.pc is not None
        old_channel = link.channel if link.channel_alive(timing.channel_fresh) else None
        self.gen += 1
        self.answered = False
        pc = self._new_connection()
        self._add_local_media(pc, offering=True)
        if not restart:
            link.set_status(PeerStatus.CONNECTING)
        await pc.setLocalDescription(await pc.createOffer())
        if link.pc is not pc:
            return False  # replaced meanwhile (the link closed or another attempt began)
        self.offer_incomplete = restart and bool(self.working_types - candidate_types(pc.localDescription.sdp))
        body = {"type": "offer", "sdp": pc.localDescription.sdp, "gen": self.gen}
        via_channel = old_channel is not None and send_signal(old_channel, body)
        await room.watch(link.member, True)
        room.mark_pending(urgent=restart)
        if not restart:
            await room.send(link.member, body)
            self._check_gathering(pc)  # after sending: the peer then finds its own problems too
            return True
        link.record("peer", f"restart offer gen {self.gen}" + (" via data channel" if via_channel else ""))
        try:
            await asyncio.wait_for(room.send(link.member, body), timing.room_send_timeout)
        except (StoreError, TimeoutError) as exc:
            log.info("restart offer to %s not written to the room: %s", link.remote_name, exc)
            return via_channel
        finally:
            self._check_gathering(pc)
        return True

    async def _answer(self, body: dict[str, Any]) -> None:
        link, room = self.link, self.ctx.room
        gen = int(body.get("gen", 0))
        if gen <= self.remote_gen:
            return  # stale or repeated offer (the same offer comes over the channel and the room)
        self.remote_gen = gen
        restart = link.pc is not None
        old_channel = link.channel if restart and link.channel_alive(self.ctx.timing.channel_fresh) else None
        pc = self._new_connection()
        if not restart:
            link.set_status(PeerStatus.CONNECTING)
        elif link.status == PeerStatus.CONNECTED:
            link.set_status(PeerStatus.RECONNECTING, "the peer restarts ICE")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="offer"))
        # Browsers send no a=end-of-candidates: signal it (so a dead check list can fail) only when
        # that cannot prune the component (no remote candidate resolved: prflx may still connect).
        await self._end_remote_candidates(pc)
        self._add_local_media(pc, offering=False)
        await pc.setLocalDescription(await pc.createAnswer())
        if link.pc is not pc:
            return  # a newer offer took over while we answered
        answer = {"type": "answer", "sdp": pc.localDescription.sdp, "gen": gen}
        if old_channel is not None:
            send_signal(old_channel, answer)
        try:
            if restart:
                room.mark_pending(urgent=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(room.send(link.member, answer), self.ctx.timing.room_send_timeout)
            else:
                await room.send(link.member, answer)
        finally:
            self._check_gathering(pc)  # after answering, so the offerer learns its side too

    async def _take_answer(self, body: dict[str, Any]) -> None:
        pc = self.link.pc
        if self.answered or int(body.get("gen", 0)) != self.gen:
            return  # an answer to an older offer, or a repeat
        if pc is None or pc.signalingState != "have-local-offer":
            return
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="answer"))
        # Browsers send no a=end-of-candidates: signal it (so a dead check list can fail) only when
        # that cannot prune the component (no remote candidate resolved: prflx may still connect).
        await self._end_remote_candidates(pc)
        self.answered = True
        self.answered_at = time.monotonic()

    async def _end_remote_candidates(self, pc: RTCPeerConnection) -> None:
        if end_of_candidates_safe(pc):
            await pc.addIceCandidate(None)
        else:
            self.link.record("peer", "no remote ICE candidate resolved: waiting for peer-reflexive ones "
                             "(end-of-candidates not signalled)")

    def _check_gathering(self, pc: RTCPeerConnection) -> None:
        """Right after gathering: a configured server that gave no candidate is probed for the reason
        (aioice drops the error), and a connection with no candidate at all fails now, not in 20 s."""
        link, diagnosis = self.link, self.ctx.diagnosis
        sdp = pc.localDescription.sdp if pc.localDescription else ""
        if not diagnosis.gathering_incomplete(sdp):
            return
        none = not candidate_types(sdp)

        async def explain() -> None:
            problem = await diagnosis.gathering_problem()
            link.record("peer", f"gathering: {problem}")
            if none and link.pc is pc and link.connected_after_s is None:
                self.ctx.finish(link, PeerStatus.FAILED, f"no local ICE candidates were gathered ({problem})")

        link.tasks.append(asyncio.create_task(explain()))

    # ------------------------------------------------------------------ connection state
    def _on_connection_state(self, pc: RTCPeerConnection) -> None:
        link = self.link
        if pc.connectionState == "connected":
            self.working_types = candidate_types(pc.localDescription.sdp if pc.localDescription else "")
            if link.status == PeerStatus.RECONNECTING:
                link.restarts += 1
            self.reconnecting_since = None
            self.path_worked = True
            link.connected()
        elif pc.connectionState == "failed" and not link.finished:
            link.set_status(PeerStatus.RECONNECTING if self.path_worked else PeerStatus.FAILED, "ICE/DTLS failed")

    async def _connect_guard(self) -> None:
        """Our own connect timeout: aiortc alone may wait a minute, or forever with no candidates."""
        link, timeout = self.link, self.ctx.timing.connect_timeout
        await asyncio.sleep(timeout)
        if link.connected_after_s is not None or link.finished:
            return
        if self.path_worked:
            # A path to this peer worked before: the network may still be settling after the outage
            # (or the first answer went to an offer written while we were away). Keep trying, as for
            # a broken pair, until the reconnection gives up.
            self.begin_reconnect(f"not connected within {timeout:.0f} s of coming back: trying again "
                                 "(a path to this peer worked before)")
            return
        self.ctx.finish(link, PeerStatus.FAILED, await self.ctx.diagnosis.why_not_connected(link.pc, timeout))

    # ------------------------------------------------------------------ the data channel
    def _wire_channel(self, pc: RTCPeerConnection, channel: Any) -> None:
        link = self.link
        link.set_channel(channel, pc)

        def _opened() -> None:
            link.last_heard = time.monotonic()
            link.send_control(self.ctx.media.state_message())
            if link.sfu_receiving:  # a new channel (a reconnect): they must know we hear them via the SFU
                link.send_control({"t": "sfu", "rx": True})
            link.flush_outbox()
            self.ctx.changed()

        if channel.readyState == "open":
            _opened()
        else:
            channel.on("open", _opened)

        @channel.on("message")
        def _on_message(raw: Any) -> None:
            link.last_heard = time.monotonic()
            message = PeerLink.parse_control(raw)
            if message is None:
                self.ctx.invalid("data channel: malformed message")
                return
            self.on_control(message)

    def on_control(self, message: dict[str, Any]) -> None:
        """One message from the peer's data channel."""
        link, kind = self.link, message["t"]
        if kind == "chat" and isinstance(message.get("text"), str):
            self.ctx.chat(link, "".join(ch for ch in message["text"] if ch.isprintable())[:MAX_CHAT_CHARS])
        elif kind == "state":
            link.remote_muted = bool(message.get("muted"))
            link.remote_camera_off = bool(message.get("camera_off"))
            link.remote_audio_only = bool(message.get("audio_only"))
        elif kind == "bye":
            self.ctx.finish(link, PeerStatus.LEFT, None)
        elif kind == "sfu" and isinstance(message.get("rx"), bool):
            if link.peer_gets_us_from_sfu != message["rx"]:
                link.peer_gets_us_from_sfu = message["rx"]
                link.record("sfu", "they receive us through the SFU" if message["rx"]
                            else "they receive us through the mesh")
                self.ctx.sfu_rx(link)
        elif kind == "ping":
            link.send_control({"t": "pong"})
        elif kind == "restart" and self.we_offer and link.status == PeerStatus.CONNECTED:
            self.begin_reconnect("the peer asked for an ICE restart")
        elif kind == "signal":  # an ICE restart's offer/answer over the (DTLS-authenticated) channel
            if _valid_signal(message.get("body")):
                self.on_signal(message["body"])
            else:
                self.ctx.invalid("data channel: malformed signal")
        self.ctx.changed()

    # ------------------------------------------------------------------ reconnection
    def heard_recently(self, now: float) -> bool:
        """Connected and the data channel spoke lately: alive, whatever the presence list says."""
        return self.link.status == PeerStatus.CONNECTED and now - self.link.last_heard < self.ctx.timing.silence

    def heartbeat(self, now: float) -> None:
        """Once a second: ping, and notice silence (restart) or a reconnection that takes too long."""
        link, timing = self.link, self.ctx.timing
        if link.status == PeerStatus.CONNECTED:
            link.send_control({"t": "ping"})
            if now - link.last_heard > timing.silence:
                self.begin_reconnect(f"nothing heard for {timing.silence:.0f} s")
        elif link.status == PeerStatus.RECONNECTING:
            link.send_control({"t": "ping"})
            if now - (self.reconnecting_since or now) > timing.give_up:
                self.ctx.finish(link, PeerStatus.FAILED, f"could not reconnect for {timing.give_up:.0f} s")
            else:  # also picks up a failure reported by the connection itself
                self.begin_reconnect(link.failure_reason or "connection failed")
                self.ctx.room.mark_pending(3.0, urgent=True)

    def request_restart(self) -> None:
        """Restart ICE now (by hand); the answerer asks the offerer, the only side that restarts."""
        link = self.link
        if link.finished or link.pc is None:
            return
        if not self.we_offer:  # only the offerer restarts (no glare): ask it to
            link.send_control({"t": "restart"})
            link.record("peer", "asked the peer to restart ICE")
            return
        self.begin_reconnect("ICE restart requested")

    def relay_added(self) -> None:
        """The room shared a TURN relay: a first attempt still trying without one starts again."""
        link = self.link
        if self.we_offer and not link.finished and link.status == PeerStatus.CONNECTING and link.pc is not None:
            self.begin_reconnect("trying again through the room's TURN relay")

    def begin_reconnect(self, reason: str) -> None:
        """The pair broke (silence, or ICE/DTLS failed): both sides watch the room closely again
        and the offerer restarts ICE with fresh connections until the pair is back."""
        link, room = self.link, self.ctx.room
        if link.status != PeerStatus.RECONNECTING:
            link.set_status(PeerStatus.RECONNECTING, reason)
        if self.reconnecting_since is None:
            self.reconnecting_since = time.monotonic()
            self._spawn(room.watch(link.member, True))
            room.mark_pending(urgent=True)
            room.kick()  # the push socket may have died with the network
        if self.we_offer and (self.restart_task is None or self.restart_task.done()):
            self.restart_task = asyncio.create_task(self._restart_loop())
            link.tasks.append(self.restart_task)

    async def _restart_loop(self) -> None:
        link, timing = self.link, self.ctx.timing
        regathered = 0
        while link.status == PeerStatus.RECONNECTING:
            if not link.channel_alive(timing.channel_fresh):
                # Gathering while offline yields no server-reflexive/relay candidates (and waits out
                # the STUN timeout): wait until the room answers, i.e. the network is back.
                await self._wait_for_room()
                if link.status != PeerStatus.RECONNECTING:
                    return
            try:
                offered = await self._offer()
            except Exception as exc:  # one failed attempt (e.g. no network to gather on) is retried
                log.info("ICE restart attempt for %s failed: %s", link.remote_name, exc)
                offered = False
            if not offered:
                await asyncio.sleep(timing.retry)
                continue
            if self.offer_incomplete and regathered < timing.regather:
                # The network went away during gathering and is back (the offer went out): an offer
                # without the candidate types that worked before would fail behind NAT. Gather again.
                regathered += 1
                link.record("peer", "restart offer lacked candidates gathered before (network was away): "
                                    "gathering again")
                continue
            regathered = 0
            sent_at = time.monotonic()
            while link.status == PeerStatus.RECONNECTING:
                now = time.monotonic()
                if self.answered and now - self.answered_at > timing.answered_timeout:
                    break  # answered but the checks did not get through: a fresh attempt
                if not self.answered and now - sent_at > timing.reoffer:
                    break
                await asyncio.sleep(0.1)

    async def _wait_for_room(self) -> None:
        link, timing = self.link, self.ctx.timing
        while (link.status == PeerStatus.RECONNECTING
               and not await self.ctx.room.room_reachable(timing.room_probe_timeout)):
            await asyncio.sleep(timing.retry)
