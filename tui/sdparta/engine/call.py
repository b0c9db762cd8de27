"""The call engine's conductor: one room session, one :class:`Negotiation` per remote participant.

Runs in its own thread with its own asyncio loop (a slow terminal must never stall ICE or RTP)
and talks to the outside only through immutable snapshots, a latest-frame slot per peer and
thread-safe command methods.  ``stop()`` is explicit: it says bye, closes every peer and joins
the thread.  The pieces it conducts: ``negotiation`` (each pair's offers, answers, restarts and
reconnection policy), ``diagnosis`` (why a pair failed), ``local_media`` (what we send and play).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from sdparta.engine import codec_tuning, defaults, ice_adapter
from sdparta.engine.call_config import CallConfig
from sdparta.engine.diagnosis import Diagnosis, stun_urls_of, turn_servers_of
from sdparta.engine.local_media import LocalMedia
from sdparta.engine.membership import Membership
from sdparta.engine.negotiation import Negotiation, NegotiationTiming, PeerContext
from sdparta.engine.peer import MAX_CHAT_CHARS, PeerLink
from sdparta.engine.sfu_link import SfuLink
from sdparta.engine.sfu_policy import SfuPolicy
from sdparta.engine.state import LIVE, NEGOTIATING, CallSnapshot, CallStatus, ChatMessage, Notice, PeerStatus
from sdparta.nostr.pool import RelayPool
from sdparta.room.events import SessionCounters
from sdparta.room.keys import Identity, RoomKeys, claim_identity, fingerprint, new_session_id
from sdparta.room.networks import open_room, public_relays
from sdparta.room.rendezvous import Rendezvous
from sdparta.store import open_store
from sdparta.store.base import Store, StoreError
from sdparta.supervise import supervised

__all__ = ["Call", "CallConfig"]

log = logging.getLogger(__name__)

PUBLISH_INTERVAL = 0.1  # snapshots are published at most this often
STATS_INTERVAL = 1.0
HEARTBEAT_INTERVAL = 1.0
PORTAL_PROBE_INTERVAL = 10.0  # while alone: one bounded registry read this often (is the portal there?)
PORTAL_PROBE_TIMEOUT = 4.0


class Call:
    """A running call; every public method is safe to call from any thread."""

    def __init__(self, config: CallConfig) -> None:
        self.config = config
        # the identity file is locked while the call runs: a second session takes another profile
        self.identity_claim = (claim_identity(config.identity_path, profiles=config.identity_profiles)
                               if config.identity_path is not None else None)
        self.identity = (self.identity_claim.identity if self.identity_claim is not None
                         else config.identity or Identity.generate())
        self.session_id = new_session_id()
        self.started_at = time.time()
        self._mono_start = time.monotonic()
        self._listeners: list[Callable[[CallSnapshot], None]] = []
        self._lock = threading.Lock()
        self._snapshot = CallSnapshot(
            room=config.room, name=config.name, fingerprint=self.identity.fingerprint,
            session_id=self.session_id, portals=tuple(config.portals), started_at=self.started_at,
            stun=tuple(stun_urls_of(config.ice_servers)),
            audio_only=config.audio_only, mic_source=config.audio, password_set=bool(config.password),
        )
        # What the snapshot says about being alone and the portal (see _presence_fields)
        self._alone_since: float | None = None
        self._portal_ok: bool | None = None
        self._portal_probed_at = 0.0
        self._portal_probe: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        # Engine-loop state
        self._members: Membership | None = None  # the pairs, made on the engine loop
        self._chat: list[ChatMessage] = []
        self._notices: list[Notice] = []
        self._dirty = True
        self._session: Rendezvous | None = None
        # Built here, not on join: making the HTTP client (its TLS context) costs ~50 ms.
        self._store: Store | None = config.store or (open_store(config.portals) if config.portals else None)
        self._media: LocalMedia | None = None  # opened on the engine loop
        self._sfu: SfuLink | None = None  # made with the room session
        self._status = CallStatus.STARTING
        self._error: str | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._wake_publisher: asyncio.Event | None = None
        self._notice_seq = 0

    # ================================================================== public API (any thread)
    def start(self) -> None:
        """Start the engine thread and return at once."""
        if self._thread is not None:
            raise RuntimeError("call already started")
        self._thread = threading.Thread(target=self._thread_main, name="sdparta-engine", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        """Leave the room (bye), close every peer and join the engine thread."""
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def add_listener(self, fn: Callable[[CallSnapshot], None]) -> None:
        """``fn`` is called from the engine thread with every new snapshot."""
        with self._lock:
            self._listeners.append(fn)

    def snapshot(self) -> CallSnapshot:
        with self._lock:
            return self._snapshot

    def latest_frame(self, session_id: str) -> tuple[int, np.ndarray] | None:
        sink = self._media.video_sinks.get(session_id) if self._media is not None else None
        return sink.latest() if sink is not None else None

    def latest_local_frame(self) -> tuple[int, np.ndarray] | None:
        view = self._media.local_view if self._media is not None else None
        return view.latest() if view is not None else None

    def set_mic_muted(self, muted: bool) -> None:
        self._command(self._switch, "mic", muted)

    def set_camera(self, on: bool) -> None:
        self._command(self._switch, "camera", on)

    def send_chat(self, text: str, to: str | None = None) -> None:
        """Chat to everyone, or only to the participant with session id `to`."""
        self._command(self._send_chat, text, to)

    def restart_ice(self, session_id: str) -> None:
        """Restart ICE with one participant now (for debugging a path; the pair stays up meanwhile)."""
        self._command(self._restart_ice, session_id)

    def _command(self, fn: Callable[..., Any], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(fn, *args)

    # ================================================================== engine thread
    def _thread_main(self) -> None:
        ice_adapter.drain_udp_sockets()  # before any socket opens: a bundled socket must keep up
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        self._stop_event = asyncio.Event()
        self._ready.set()
        try:
            loop.run_until_complete(self._main())
        except Exception as exc:
            log.exception("engine crashed")
            self._status, self._error = CallStatus.ERROR, f"engine crashed: {exc}"
            self._publish()
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            if self.identity_claim is not None:
                self.identity_claim.release()  # the session is over: its identity is free again

    async def _main(self) -> None:
        assert self._stop_event is not None
        cfg = self.config
        codecs = cfg.codecs
        codec_tuning.use(codecs)  # aiortc's encoders made on this thread: this call's settings
        if self.identity_claim is not None and self.identity_claim.notice is not None:
            self._notice(*self.identity_claim.notice)
        media = self._media = LocalMedia(cfg, codecs, self._notice)
        media.open()
        members = self._members = Membership(self.identity.public_key, self.session_id, self._mono_start, media,
                                             ice_servers=cfg.ice_servers, relay_only=cfg.relay_only,
                                             notice=self._notice, changed=self._changed)
        members.sfu_at = cfg.sfu_at
        for name, loop in (("publisher", self._publisher), ("stats", self._stats_loop),
                           ("heartbeat", self._heartbeat_loop)):
            self._tasks.append(asyncio.create_task(supervised(name, loop, members.loop_failed)))
        try:
            keys = cfg.room_keys or await asyncio.to_thread(RoomKeys.derive, cfg.room, cfg.password)
            share = turn_servers_of(cfg.ice_servers) if cfg.share_turn else None
            if cfg.share_turn and not share:
                self._notice("warning", "--share-turn: no TURN server configured to share (add --turn …)")
            relay_urls = list(cfg.relays)
            if not relay_urls and cfg.public_relays:
                relay_urls = public_relays(keys, defaults.PUBLIC_RELAYS, defaults.PUBLIC_RELAYS_PER_ROOM)
            pool = RelayPool(relay_urls, on_crash=members.loop_failed) if relay_urls else None
            self._snapshot = replace(self._snapshot, relays=tuple(relay_urls), public_relays=cfg.public_relays)
            self._session = open_room(keys, self.identity, cfg.name, self.session_id, members, store=self._store,
                                      relays=pool, push=cfg.push, timing=cfg.timing, relay_timing=cfg.relay_timing,
                                      share_turn=share,
                                      share_sfu=cfg.share_sfu.to_json() if cfg.share_sfu is not None else None)
            diagnosis = Diagnosis(lambda: members.ice_servers, relay_only=cfg.relay_only, notice=self._notice)
            sfu = self._sfu = SfuLink(members, media, self.session_id, SfuPolicy(cfg.sfu_at, cfg.sfu_hold_s),
                                      clock=lambda: round(time.monotonic() - self._mono_start, 4),
                                      notice=self._notice, changed=self._changed, on_crash=members.loop_failed,
                                      room_size=self._room_size)
            members.context = PeerContext(
                room=self._session, media=media, diagnosis=diagnosis, new_pc=members.new_pc, finish=members.finish,
                notice=self._notice, chat=self._on_chat, invalid=members.invalid, changed=self._changed,
                timing=NegotiationTiming(connect_timeout=cfg.connect_timeout),
                sfu_rx=lambda link: members.apply_sending(sfu.publishing, sfu.kinds))
            self._tasks.append(asyncio.create_task(supervised("sfu", sfu.run, members.loop_failed)))
            if await self._join_with_retry():
                await self._stop_event.wait()
        finally:
            await self._shutdown()

    async def _join_with_retry(self) -> bool:
        """Join the room; while no portal answers, say so and retry with backoff."""
        assert self._session is not None and self._stop_event is not None
        delay = 1.0
        while not self._stop_event.is_set():
            # stop() must end a join still waiting on a portal (one that does not answer takes up
            # to its deadline per request), or the engine thread outlives the caller's join timeout
            starting = asyncio.ensure_future(self._session.start())
            stopping = asyncio.ensure_future(self._stop_event.wait())
            try:
                await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                if not starting.done():
                    starting.cancel()
                    await asyncio.gather(starting, return_exceptions=True)
            if starting.cancelled():
                return False
            try:
                starting.result()
            except StoreError as exc:
                self._status, self._error = CallStatus.ERROR, str(exc)
                self._notice("error", f"{exc} — retrying in {delay:.0f} s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_event.wait(), delay)
                delay = min(delay * 2, 15.0)
                continue
            self._status, self._error = CallStatus.JOINED, None
            self._changed()
            return True
        return False

    async def _shutdown(self) -> None:
        try:
            if self._session is not None:
                for negotiation in self._pairs.values():
                    negotiation.link.send_control({"t": "bye"})
            if self._sfu is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._sfu.close(), 8)
            if self._session is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._session.leave(), 5)
                await self._session.close()
            for negotiation in list(self._pairs.values()):
                await negotiation.link.close()
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if self._media is not None:
                await self._media.close()
        finally:
            # on every path: the store's HTTP clients and push sessions (an unclosed one is reported
            # at exit as "Unclosed client session" / "Event loop is closed")
            if self._store is not None and self.config.store is None:
                with contextlib.suppress(Exception):
                    await self._store.aclose()
            self._status = CallStatus.STOPPED
            self._publish()

    def _room_size(self) -> int:
        """Sessions in the presence list, us included: what every member's SFU rule counts."""
        session = self._session
        if session is None:
            return 1
        return 1 + len({m.session_id for m in session.members()} - {self.session_id})

    @property
    def _pairs(self) -> dict[str, Negotiation]:
        return self._members.pairs if self._members is not None else {}

    # ------------------------------------------------------------------ commands (engine loop)
    def _switch(self, what: str, value: bool) -> None:
        media = self._media
        if media is None or not (media.set_mic_muted(value) if what == "mic" else media.set_camera(value)):
            return
        message = media.state_message()
        for negotiation in self._pairs.values():
            negotiation.link.send_control(message)
        self._changed()

    def _send_chat(self, text: str, to: str | None = None) -> None:
        text = "".join(ch for ch in text if ch.isprintable() or ch == " ")[:MAX_CHAT_CHARS].strip()
        if not text:
            return
        now = time.time()
        for sid, negotiation in self._pairs.items():
            if (to is None or sid == to) and negotiation.link.status not in (PeerStatus.LEFT, PeerStatus.GONE):
                negotiation.link.send_or_hold({"t": "chat", "text": text, "ts": now})
        self._chat.append(ChatMessage(now, self.config.name, self.identity.fingerprint, text, own=True))
        self._changed()

    def _restart_ice(self, session_id: str) -> None:
        negotiation = self._pairs.get(session_id)
        if negotiation is not None:
            negotiation.request_restart()

    def _on_chat(self, link: PeerLink, text: str) -> None:
        self._chat.append(ChatMessage(time.time(), link.remote_name, fingerprint(link.member.public_key), text))
        del self._chat[:-500]

    # ------------------------------------------------------------------ loops
    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_INTERVAL)
            now = time.monotonic()
            for negotiation in list(self._pairs.values()):
                negotiation.heartbeat(now)
            if self._members is not None:
                self._members.prune(now)  # leavers shown for a while, then off the list
            if self._media is not None:
                self._media.tune_for_room(sum(not n.link.finished for n in self._pairs.values()))
            if self._session is not None:
                # A silent peer whose presence record also went stale crashed or lost its network.
                self._session.expire_stale()
                # Slots of peers we are connected to need no polling; the rest do.
                for negotiation in list(self._pairs.values()):
                    if negotiation.link.status == PeerStatus.CONNECTED:
                        await self._session.watch(negotiation.link.member, False)
                if not any(n.link.status in NEGOTIATING for n in self._pairs.values()):
                    self._session.clear_pending()

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            await asyncio.gather(*(n.link.refresh_stats() for n in list(self._pairs.values())
                                   if n.link.status == PeerStatus.CONNECTED), return_exceptions=True)
            if self._sfu is not None:
                await self._sfu.refresh_stats()
            self._changed()

    # ------------------------------------------------------------------ publishing
    async def _publisher(self) -> None:
        """Publish the first change at once, then at most every PUBLISH_INTERVAL while busy."""
        self._wake_publisher = asyncio.Event()
        while True:
            await self._wake_publisher.wait()
            self._wake_publisher.clear()
            if self._dirty:
                self._publish()
            await asyncio.sleep(PUBLISH_INTERVAL)

    def _changed(self) -> None:
        self._dirty = True
        if self._wake_publisher is not None:
            self._wake_publisher.set()

    def _notice(self, severity: str, text: str) -> None:
        self._notice_seq += 1
        self._notices.append(Notice(self._notice_seq, severity, text))
        del self._notices[:-50]
        self._changed()

    def _publish(self) -> None:
        self._dirty = False
        media, session = self._media, self._session
        peers = tuple(n.link.snapshot(*(media.peer_figures(sid) if media is not None else (0.0, 0.0, 0)))
                      for sid, n in self._pairs.items())
        snapshot = replace(
            self._snapshot,
            push=bool(session and session.push_active),
            status=self._status,
            error=self._error,
            mic=media.mic if media is not None else "off",
            camera=media.camera if media is not None else "off",
            audio_out=media.audio_out if media is not None else "none",
            audio_started_at=media.mixer.started_at if media is not None and media.mixer is not None else None,
            peers=peers,
            chat=tuple(self._chat),
            notices=tuple(self._notices),
            networks=tuple(session.networks()) if session is not None else (),
            room_sfu=self._members.room_sfu_label if self._members is not None else None,
            sfu=self._sfu.snapshot() if self._sfu is not None else None,
            **_counter_fields(session.counters if session is not None else None,
                              self._members.counters if self._members is not None else None),
            **self._presence_fields(peers),
        )
        with self._lock:
            self._snapshot = snapshot
            listeners = list(self._listeners)
        for fn in listeners:
            try:
                fn(snapshot)
            except Exception:
                log.exception("snapshot listener failed")

    def _presence_fields(self, peers: tuple[Any, ...]) -> dict[str, Any]:
        """Since when we are alone after joining, and whether a portal answers: joining that fails
        and is retried says no; while alone (when no pair would notice an outage) a bounded registry
        read every PORTAL_PROBE_INTERVAL s asks again. A pair being there says yes."""
        joined = self._status == CallStatus.JOINED
        alone = joined and not any(p.status in LIVE for p in peers)
        if not alone:
            self._alone_since = None
            if joined:
                self._portal_ok = True  # someone is here: the room works
        elif self._alone_since is None:  # just joined, or the last one left: the portal answered lately
            self._alone_since = self._portal_probed_at = time.time()
            self._portal_ok = True
        if self._status == CallStatus.ERROR and not (self._error or "").startswith("engine crashed"):
            self._portal_ok = False  # joining failed: _join_with_retry says so and retries
        if alone and self._portal_probe is None and time.time() - self._portal_probed_at >= PORTAL_PROBE_INTERVAL:
            with contextlib.suppress(RuntimeError):  # no running loop: not publishing from the engine
                self._portal_probe = asyncio.get_running_loop().create_task(self._probe_portal())
        return {"alone_since": self._alone_since, "portal_reachable": self._portal_ok}

    async def _probe_portal(self) -> None:
        """One bounded read of the room's presence slot; the answer goes into the next snapshot."""
        try:
            session = self._session
            self._portal_ok = session is not None and await session.room_reachable(PORTAL_PROBE_TIMEOUT)
        except Exception:  # a store closed under us while leaving: nothing to report
            self._portal_ok = False
        finally:
            self._portal_probed_at = time.time()
            self._portal_probe = None
        self._changed()


def _counter_fields(counters: SessionCounters | None, engine: SessionCounters | None = None) -> dict[str, Any]:
    """The room session's counters as snapshot fields (all zero before the session exists), with
    what the engine itself rejected (``engine``: a room's invalid SFU entry) among the invalid."""
    if counters is None:
        return {}
    reasons = dict(counters.invalid_reasons)
    for reason, n in (engine.invalid_reasons.items() if engine is not None else ()):
        reasons[reason] = reasons.get(reason, 0) + n
    return {"requests_counted": True, "gets": counters.gets, "sets": counters.sets, "uploads": counters.uploads,
            "downloads": counters.downloads, "conflicts": counters.conflicts,
            "invalid_messages": counters.invalid_messages + (engine.invalid_messages if engine is not None else 0),
            "invalid_reasons": tuple(reasons.items()),
            "epoch_moves": counters.epoch_moves, "loop_restarts": counters.loop_restarts}
