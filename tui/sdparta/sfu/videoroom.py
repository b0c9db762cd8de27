"""Janus VideoRoom: publish one peer connection, receive everyone else on one multistream subscription.

- :class:`VideoRoomPublisher` joins as a publisher (``ptype: publisher``) and publishes one aiortc
  peer connection (audio and/or video, ``max-bundle``); its handle tells who else publishes
  (``joined``'s list, then ``publishers``/``unpublished``/``leaving`` events).
- :class:`VideoRoomSubscriber` is Janus 1.x multistream: one subscriber handle and one peer
  connection for all feeds; :meth:`~VideoRoomSubscriber.set_feeds` turns a wanted set of feeds into
  ``join`` (first time), ``subscribe``/``unsubscribe`` — each answered by a Janus offer we answer with
  ``start``. Janus also re-offers by itself when a subscribed publisher's media goes (``autoupdate``)
  — but not when that publisher sent ``leave`` first: then only our next ``update`` renegotiates, so
  departed feeds are unsubscribed by m-line (``sub_mid``). Every offer, whenever it comes, is applied
  under one lock, and each offer's ``streams`` (mid → feed) replaces the mapping once it is answered.
  Janus recycles inactive m-lines for the next feed of the same kind (with a new SSRC:
  :func:`~sdparta.sfu.peer.follow_remote_ssrcs`), and aiortc keeps the receiver's track of a recycled
  mid, so which feed a track carries is read from ``streams``, never from the track.
- :class:`VideoRoomClient` is both, wired as the engine wants: publish, subscribe to every other
  active publisher (Janus lists a publisher only after its ``webrtcup``, so a listed feed is
  subscribable), follow arrivals and departures, report :class:`RoomEvent`\\ s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCIceServer, RTCPeerConnection
from aiortc.exceptions import InvalidStateError
from aiortc.mediastreams import MediaStreamTrack

from sdparta.sfu.errors import JanusError, JanusProtocolError, JanusRequestError, SessionLost
from sdparta.sfu.janus import HandleEvent, JanusHandle, JanusSession, clean_text, janus_id, stop_task
from sdparta.sfu.peer import accept_offer, apply_answer, make_offer, new_peer_connection, prefer_sfu_codecs
from sdparta.supervise import supervised

log = logging.getLogger(__name__)

__all__ = ["PLUGIN", "PublisherInfo", "RoomEvent", "SubscribedStream", "VideoRoomClient", "VideoRoomPublisher",
           "VideoRoomSubscriber", "parse_publishers"]

PLUGIN = "janus.plugin.videoroom"
MAX_PUBLISHERS_LISTED = 256
MAX_STREAMS = 256
_NO_SUCH_FEED = 428
_KINDS = ("audio", "video", "data")


@dataclass(frozen=True)
class PublisherInfo:
    id: int
    display: str
    kinds: tuple[str, ...]  # the media it publishes, e.g. ("audio", "video")


@dataclass(frozen=True)
class SubscribedStream:
    """One m-line of the subscription: which feed's stream it carries, and its receiving track."""

    mid: str
    kind: str
    feed_id: int
    feed_display: str
    track: MediaStreamTrack | None = None


@dataclass(frozen=True)
class RoomEvent:
    """``publisher-joined`` / ``publisher-left`` (feed_id), ``streams`` (the subscription changed),
    ``webrtcup`` (``what``: publisher or subscriber), ``hangup``, ``lost`` (error), ``error`` (error)."""

    kind: str
    feed_id: int | None = None
    display: str = ""
    what: str = ""
    error: JanusError | None = None


def parse_publishers(value: object) -> list[PublisherInfo]:
    """The ``publishers`` list of a joined/event message; malformed entries are skipped."""
    found: list[PublisherInfo] = []
    if not isinstance(value, list):
        return found
    for item in value[:MAX_PUBLISHERS_LISTED]:
        if not isinstance(item, dict) or (feed := janus_id(item.get("id"))) is None or item.get("dummy") is True:
            continue
        streams = item.get("streams")
        kinds = tuple(sorted({s["type"] for s in streams[:MAX_STREAMS] if isinstance(s, dict)
                              and s.get("type") in _KINDS and s.get("disabled") is not True}
                             if isinstance(streams, list) else set()))
        found.append(PublisherInfo(feed, clean_text(item.get("display"), 64), kinds))
    return found


def _parse_streams(value: object) -> dict[str, tuple[str, int, str]]:
    """mid → (kind, feed id, feed display) for the active audio/video m-lines of a subscription."""
    streams: dict[str, tuple[str, int, str]] = {}
    if not isinstance(value, list):
        return streams
    for item in value[:MAX_STREAMS]:
        if not isinstance(item, dict):
            continue
        mid, kind, feed = item.get("mid"), item.get("type"), janus_id(item.get("feed_id"))
        if not isinstance(mid, str) or not 0 < len(mid) <= 64 or kind not in ("audio", "video") or feed is None:
            continue
        if item.get("active") is False:
            continue
        streams[mid] = (kind, feed, clean_text(item.get("feed_display"), 64))
    return streams


def _ssrcs_by_mid(sdp: str) -> dict[str, tuple[str, list[str]]]:
    """mid → (direction, SSRCs) of an SDP, for the debug log."""
    found: dict[str, tuple[str, list[str]]] = {}
    for section in sdp.split("\nm=")[1:]:
        lines = [line.strip() for line in section.splitlines()]
        mid = next((line[6:] for line in lines if line.startswith("a=mid:")), "?")
        direction = next((line[2:] for line in lines if line[2:] in ("sendrecv", "sendonly", "recvonly", "inactive")),
                         "?")
        ssrcs = sorted({line[7:].split()[0] for line in lines if line.startswith("a=ssrc:")})
        found[mid] = (f"{lines[0].split()[1] if lines and len(lines[0].split()) > 1 else '?'} {direction}", ssrcs)
    return found


def _room_body(request: str, room: int, pin: str | None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"request": request, "room": room, **extra}
    if pin is not None:
        body["pin"] = pin
    return body


class _Worker:
    """Consumes a handle's events in one supervised task."""

    def __init__(self, name: str, handle: JanusHandle, on_event: Callable[[HandleEvent], Any],
                 on_crash: Callable[[str, str], None]) -> None:
        self._handle, self._on_event = handle, on_event
        self._stopping = False
        self.task = asyncio.create_task(supervised(name, self._loop, on_crash, stopping=lambda: self._stopping),
                                        name=name)

    async def _loop(self) -> None:
        while True:
            event = await self._handle.events.get()
            result = self._on_event(event)
            if asyncio.iscoroutine(result):
                await result
            if event.janus in ("lost", "detached"):
                return

    async def stop(self) -> None:
        self._stopping = True
        if self.task is not asyncio.current_task():
            await stop_task(self.task)


class VideoRoomPublisher:
    """Join a VideoRoom as a publisher and publish one peer connection."""

    def __init__(self, session: JanusSession, room: int, *, pin: str | None = None, display: str = "",
                 ice_servers: Sequence[RTCIceServer] = (), relay_only: bool = False) -> None:
        self.session, self.room, self.pin, self.display = session, room, pin, display
        self.ice_servers, self.relay_only = ice_servers, relay_only
        self.handle: JanusHandle | None = None
        self.pc: RTCPeerConnection | None = None
        self.id: int | None = None
        self.private_id: int | None = None
        self.webrtcup = asyncio.Event()

    async def join(self) -> list[PublisherInfo]:
        """Attach and join; return the publishers already active in the room."""
        self.handle = await self.session.attach(PLUGIN)
        data, _ = await self.handle.request(_room_body("join", self.room, self.pin, ptype="publisher",
                                                       display=self.display[:64]))
        if data.get("videoroom") != "joined" or (own := janus_id(data.get("id"))) is None:
            raise JanusProtocolError(f"{self.session.label}: VideoRoom did not confirm the join")
        self.id, self.private_id = own, janus_id(data.get("private_id"))
        return [p for p in parse_publishers(data.get("publishers")) if p.id != own]

    async def publish(self, tracks: Iterable[MediaStreamTrack]) -> RTCPeerConnection:
        """Send one offer with ``tracks`` (send-only) and apply Janus' answer."""
        if self.handle is None:
            raise RuntimeError("join first")
        pc = self.pc = new_peer_connection(self.ice_servers, relay_only=self.relay_only)
        for track in tracks:
            pc.addTransceiver(track, direction="sendonly")
        prefer_sfu_codecs(pc)
        offer = await make_offer(pc)
        data, answer = await self.handle.request({"request": "publish"}, offer)
        if data.get("configured") != "ok":
            raise JanusProtocolError(f"{self.session.label}: VideoRoom did not accept the publication")
        await apply_answer(pc, answer)
        return pc

    async def leave(self) -> None:
        """``unpublish``, then ``leave``, then detach. Unpublishing first matters: Janus sends its
        subscribers their autoupdate offer when a publisher's media goes, but not once the publisher
        has left the room (the offer is then skipped until each subscriber's next update)."""
        if self.handle is not None and not self.session.lost:
            if self.id is not None:
                if self.pc is not None:
                    with contextlib.suppress(JanusError):
                        await self.handle.request({"request": "unpublish"}, timeout=5)
                with contextlib.suppress(JanusError):
                    await self.handle.request({"request": "leave"}, timeout=5)
            await self.handle.detach()
        if self.pc is not None:
            await self.pc.close()


class VideoRoomSubscriber:
    """One multistream subscription (one handle, one peer connection) for any number of feeds."""

    def __init__(self, session: JanusSession, room: int, *, pin: str | None = None, private_id: int | None = None,
                 ice_servers: Sequence[RTCIceServer] = (), relay_only: bool = False,
                 on_change: Callable[[RoomEvent], None] | None = None,
                 on_crash: Callable[[str, str], None] | None = None) -> None:
        self.session, self.room, self.pin, self.private_id = session, room, pin, private_id
        self.ice_servers, self.relay_only = ice_servers, relay_only
        self.handle: JanusHandle | None = None
        self.pc: RTCPeerConnection | None = None
        self.streams: dict[str, SubscribedStream] = {}
        self.webrtcup = asyncio.Event()
        self.offers_answered = 0
        #: The feeds Janus has been asked to send us (the m-line mapping can lag behind it while an
        #: offer is postponed: asking again would add the same feed's m-lines twice).
        self._requested: set[int] = set()
        self._wanted: set[int] = set()
        self._lock = asyncio.Lock()
        self._on_change = on_change or (lambda event: None)
        self._on_crash = on_crash or (lambda name, error: None)
        self._worker: _Worker | None = None

    @property
    def feeds(self) -> set[int]:
        return {stream.feed_id for stream in self.streams.values()}

    async def set_feeds(self, wanted: Iterable[int]) -> None:
        """Receive exactly the feeds in ``wanted``: subscribe to those not yet asked for, unsubscribe
        the others. Feeds that stopped publishing meanwhile are skipped (Janus: no such feed)."""
        async with self._lock:
            self._wanted = set(wanted)
            if self.handle is None:
                if self._wanted:
                    await self._join(sorted(self._wanted))
                return
            await self._converge()

    async def _converge(self) -> None:
        """One ``update`` towards the wanted set, if anything differs (called under the lock, after
        ``set_feeds`` and after every offer of Janus' own).

        A feed is unsubscribed by its m-lines (``sub_mid``), never by feed id: once a publisher has
        sent ``leave``, Janus no longer finds it by id ("Publisher … not found, not unsubscribing":
        nothing changes, no offer), and when its media then goes Janus turns our m-lines inactive
        *without* the autoupdate offer (its room pointer is gone). By mid always renegotiates. A feed
        asked for whose m-lines no answered offer has shown yet is just forgotten: the offer that
        shows them runs this again. Janus answers an ``update`` at once (an offer, ``updated`` with no
        change, or ``updating`` while an offer of its own awaits our answer — that one then comes as
        an event), so holding the lock across the request never waits on an offer we must answer."""
        assert self.handle is not None
        wanted = self._wanted
        self._requested &= wanted | self.feeds  # forgotten: asked for, unwanted, not (yet) in a mapping
        add = sorted(wanted - self._requested)
        drop_mids = sorted(mid for mid, stream in self.streams.items() if stream.feed_id not in wanted)
        for _ in range(len(add) + 1):
            if not add and not drop_mids:
                return
            body: dict[str, Any] = {"request": "update"}
            if add:
                body["subscribe"] = [{"feed": feed} for feed in add]
            if drop_mids:
                body["unsubscribe"] = [{"sub_mid": mid} for mid in drop_mids]
            try:
                data, jsep = await self.handle.request(body)
            except JanusRequestError as exc:
                if exc.code != _NO_SUCH_FEED or not add:
                    raise
                live = await self._still_publishing(add)  # one of them left meanwhile: not asked again
                self._wanted -= set(add) - set(live)
                add = live
                continue
            self._requested = (self._requested | set(add)) - {self.streams[mid].feed_id for mid in drop_mids}
            log.debug("subscription update: +%s −mids %s → %s", add, drop_mids, data.get("videoroom"))
            await self._apply(data, jsep)
            return

    async def _join(self, feeds: list[int]) -> None:
        self.handle = await self.session.attach(PLUGIN)
        self.pc = new_peer_connection(self.ice_servers, relay_only=self.relay_only)
        self._worker = _Worker("janus videoroom subscriber", self.handle, self._event, self._on_crash)
        extra: dict[str, Any] = {"ptype": "subscriber", "streams": [{"feed": feed} for feed in feeds]}
        if self.private_id is not None:
            extra["private_id"] = self.private_id
        for attempt in range(len(feeds)):
            try:
                data, jsep = await self.handle.request(_room_body("join", self.room, self.pin, **extra))
                break
            except JanusRequestError as exc:  # a feed left between its listing and our join
                if exc.code != _NO_SUCH_FEED or attempt == len(feeds) - 1:
                    raise
                feeds = await self._still_publishing(feeds)
                if not feeds:
                    raise
                extra["streams"] = [{"feed": feed} for feed in feeds]
        self._requested = set(feeds)
        await self._apply(data, jsep)

    async def _still_publishing(self, feeds: list[int]) -> list[int]:
        assert self.handle is not None
        data, _ = await self.handle.request({"request": "listparticipants", "room": self.room})
        live = {janus_id(p.get("id")) for p in data.get("participants", []) if isinstance(p, dict)
                and p.get("publisher") is True} if isinstance(data.get("participants"), list) else set()
        return [feed for feed in feeds if feed in live]

    async def _apply(self, data: dict[str, Any], jsep: dict[str, str] | None) -> None:
        """An attached/updated answer or event: new mapping, and an offer to answer (if any)."""
        mapping = _parse_streams(data.get("streams")) if "streams" in data else None
        if jsep is not None and jsep["type"] == "offer":
            assert self.pc is not None and self.handle is not None
            if log.isEnabledFor(logging.DEBUG):
                log.debug("subscriber offer: %s", _ssrcs_by_mid(jsep["sdp"]))
            answer = await accept_offer(self.pc, jsep)
            await self.handle.request({"request": "start"}, answer)
            self.offers_answered += 1
        if mapping is not None:
            self._set_streams(mapping)

    def _set_streams(self, mapping: dict[str, tuple[str, int, str]]) -> None:
        tracks: dict[str, MediaStreamTrack] = {}
        if self.pc is not None:
            for transceiver in self.pc.getTransceivers():
                if transceiver.mid is not None and transceiver.receiver.track is not None:
                    tracks[transceiver.mid] = transceiver.receiver.track
        self.streams = {mid: SubscribedStream(mid, kind, feed, display, tracks.get(mid))
                        for mid, (kind, feed, display) in mapping.items()}
        self._on_change(RoomEvent("streams"))

    async def _event(self, event: HandleEvent) -> None:
        if event.janus == "webrtcup":
            self.webrtcup.set()
            self._on_change(RoomEvent("webrtcup", what="subscriber"))
        elif event.janus == "hangup":
            self.webrtcup.clear()
            self._on_change(RoomEvent("hangup", what="subscriber"))
        elif event.janus == "event" and (event.jsep is not None or "streams" in event.data):
            async with self._lock:  # an offer of Janus' own (a subscribed publisher left: autoupdate)
                try:
                    await self._apply(event.data, event.jsep)
                    if self.handle is not None and event.jsep is not None:
                        await self._converge()  # it may show feeds dropped while it was due
                except SessionLost:
                    return
                except (JanusError, ValueError, InvalidStateError) as exc:
                    # InvalidStateError: our peer connection closed by itself (ICE consent expired)
                    error = exc if isinstance(exc, JanusError) else JanusProtocolError(
                        f"{self.session.label}: the subscription's offer could not be applied: {exc}")
                    self._on_change(RoomEvent("error", what="subscriber", error=error))

    async def close(self) -> None:
        if self._worker is not None:
            await self._worker.stop()
        if self.handle is not None:
            await self.handle.detach()
        if self.pc is not None:
            await self.pc.close()


@dataclass
class VideoRoomClient:
    """Publish our tracks and receive every other publisher of the room. Build it with :meth:`join`."""

    session: JanusSession
    room: int
    publisher: VideoRoomPublisher
    subscriber: VideoRoomSubscriber
    on_event: Callable[[RoomEvent], None]
    remote: dict[int, PublisherInfo] = field(default_factory=dict)
    _worker: _Worker | None = None

    @classmethod
    async def join(cls, session: JanusSession, room: int, *, pin: str | None = None, display: str = "",
                   tracks: Iterable[MediaStreamTrack] = (), ice_servers: Sequence[RTCIceServer] = (),
                   relay_only: bool = False,
                   on_event: Callable[[RoomEvent], None] | None = None,
                   on_crash: Callable[[str, str], None] | None = None) -> VideoRoomClient:
        """Join as publisher, publish ``tracks``, subscribe to the active publishers. Typed errors:
        NoSuchRoom, WrongPin, RoomFull, SfuUnreachable/SessionLost, JanusRequestError."""
        report = on_event or (lambda event: None)

        def listen(event: RoomEvent) -> None:
            try:
                report(event)
            except Exception:
                log.exception("a VideoRoom event listener failed")

        publisher = VideoRoomPublisher(session, room, pin=pin, display=display, ice_servers=ice_servers,
                                       relay_only=relay_only)
        subscriber = VideoRoomSubscriber(session, room, pin=pin, ice_servers=ice_servers, relay_only=relay_only,
                                         on_change=listen,
                                         on_crash=on_crash)
        client = cls(session, room, publisher, subscriber, listen)
        try:
            others = await publisher.join()
            subscriber.private_id = publisher.private_id
            assert publisher.handle is not None
            client._worker = _Worker("janus videoroom publisher", publisher.handle, client._event,
                                     on_crash or (lambda name, error: None))
            tracks = list(tracks)
            if tracks:
                await publisher.publish(tracks)
            for info in others:
                client.remote[info.id] = info
            await subscriber.set_feeds(client.remote)
        except BaseException:
            await client.leave()
            raise
        return client

    @property
    def streams(self) -> dict[str, SubscribedStream]:
        return self.subscriber.streams

    def peer_connections(self) -> dict[str, RTCPeerConnection]:
        """What the ICE panel shows: ``publisher`` and ``subscriber`` (once they exist)."""
        found = {"publisher": self.publisher.pc, "subscriber": self.subscriber.pc}
        return {name: pc for name, pc in found.items() if pc is not None}

    async def _event(self, event: HandleEvent) -> None:
        data = event.data
        if event.janus == "webrtcup":
            self.publisher.webrtcup.set()
            self.on_event(RoomEvent("webrtcup", what="publisher"))
            return
        if event.janus == "lost":
            self.on_event(RoomEvent("lost", error=event.error))
            return
        if event.janus == "hangup":
            self.publisher.webrtcup.clear()
            self.on_event(RoomEvent("hangup", what="publisher"))
            return
        if event.janus != "event":
            return
        changed = False
        for info in parse_publishers(data.get("publishers")):
            if info.id != self.publisher.id and info.id not in self.remote:
                self.remote[info.id] = info
                changed = True
                self.on_event(RoomEvent("publisher-joined", info.id, info.display))
        for key in ("unpublished", "leaving", "kicked"):
            gone = janus_id(data.get(key))
            if gone is not None and gone in self.remote:
                info = self.remote.pop(gone)
                changed = True
                self.on_event(RoomEvent("publisher-left", gone, info.display))
        if changed:
            try:
                await self.subscriber.set_feeds(self.remote)
            except SessionLost:
                return
            except (JanusError, ValueError) as exc:
                error = exc if isinstance(exc, JanusError) else JanusProtocolError(str(exc))
                self.on_event(RoomEvent("error", what="subscriber", error=error))

    async def leave(self) -> None:
        """Unpublish and leave (best effort), close both peer connections. Idempotent."""
        if self._worker is not None:
            await self._worker.stop()
        await self.subscriber.close()
        await self.publisher.leave()
