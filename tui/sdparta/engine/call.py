"""The call engine: one room session + one RTCPeerConnection per remote participant.

Runs in its own thread with its own asyncio loop (a slow terminal must never stall ICE or RTP)
and talks to the outside only through immutable snapshots, a latest-frame slot per peer and
thread-safe command methods.  ``stop()`` is explicit: it says bye, closes every peer and joins
the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamTrack

from sdparta.engine import codec_tuning
from sdparta.engine.peer import MAX_CHAT_CHARS, MAX_DATA_MESSAGE, PeerLink, candidate_types
from sdparta.engine.state import CallSnapshot, ChatMessage, Notice
from sdparta.media import sinks, sources
from sdparta.media.fanout import EncodedFanout
from sdparta.room.keys import Identity, RoomKeys, fingerprint, new_session_id
from sdparta.room.session import RoomEvents, RoomSession, SessionTiming
from sdparta.room.wire import Member, RoomSettings, TurnServer
from sdparta.store import open_store
from sdparta.store.base import Store, StoreError
from sdparta.supervise import supervised

log = logging.getLogger(__name__)


def turn_servers_of(servers: list[RTCIceServer]) -> list[TurnServer]:
    """The TURN entries of an ICE server list, one per URL (what --share-turn puts in the room)."""
    found = []
    for server in servers:
        urls = server.urls if isinstance(server.urls, list) else [server.urls]
        found += [TurnServer(url, server.username or "", server.credential or "")
                  for url in urls if url.startswith(("turn:", "turns:"))]
    return found


def stun_urls_of(servers: list[RTCIceServer]) -> list[str]:
    """The STUN URLs of an ICE server list."""
    urls = [url for server in servers for url in (server.urls if isinstance(server.urls, list) else [server.urls])]
    return [url for url in urls if url.startswith(("stun:", "stuns:"))]


def _send_signal(channel: Any, body: dict[str, Any]) -> bool:
    """An offer/answer over the data channel; False when it does not fit or the channel broke."""
    raw = json.dumps({"t": "signal", "body": body}, separators=(",", ":"))
    if len(raw) > MAX_DATA_MESSAGE or channel.readyState != "open":
        return False
    try:
        channel.send(raw)
    except Exception:
        return False
    return True

PUBLISH_INTERVAL = 0.1  # snapshots are published at most this often
STATS_INTERVAL = 1.0
HEARTBEAT_INTERVAL = 1.0
RESTART_SILENCE = 4.0  # no data channel traffic for this long: the pair is broken, restart ICE
RECONNECT_GIVE_UP = 120.0  # still not back after this long: failed (a peer that left is gone sooner)
RESTART_REOFFER = 15.0  # an unanswered restart offer is renewed this often
RESTART_ANSWERED_TIMEOUT = 8.0  # an answered restart that has not connected by then is tried again
RESTART_RETRY = 0.5  # pause between restart offers that could not be sent (network still down)
ROOM_SEND_TIMEOUT = 4.0  # a restart's room write that takes longer is retried on a fresh connection
ROOM_PROBE_TIMEOUT = 1.0  # while reconnecting, how long one "is the network back?" portal read may take
PROBE_REUSE = 30.0  # a STUN/TURN probe's finding is reused this long (gathering problems repeat in bursts)
RESTART_REGATHER = 2  # fresh gatherings in a row for restart offers that lost candidate types
CHANNEL_FRESH = 2.0  # a data channel heard from this recently can carry restart signalling


@dataclass
class CallConfig:
    """Everything a call needs; the CLI and the UI fill it from settings and flags."""

    room: str
    portals: list[str]
    password: str = ""
    name: str = "anonymous"
    identity: Identity | None = None  # None: a fresh identity for this call
    identity_path: Path | None = None  # load/create the identity here (takes precedence)
    video: str = "pattern"  # pattern | camera | none
    audio: str = "tone:440"  # tone:HZ | mic | none
    audio_out: str = "none"  # device | none | path/to/file.wav
    audio_only: bool = False
    opus_bitrate: int = 32000
    opus_channels: int = 1
    video_width: int = 160
    video_height: int = 120
    fps: int = 15
    video_max_bitrate: int = 300_000
    shared_encoding: bool = True  # encode each source once for all peers (see media/fanout.py)
    opus_frame_ms: int | None = None  # 20/40/60; None: 20 ms, 60 ms with more than 3 remotes (fewer packets)
    ice_servers: list[RTCIceServer] = field(default_factory=list)
    relay_only: bool = False
    share_turn: bool = False  # put our TURN relay into the room's sealed settings for everyone
    connect_timeout: float = 20.0
    push: bool = True
    timing: SessionTiming | None = None
    store: Store | None = None  # inject a store (unit tests); default: open_store(portals)
    room_keys: RoomKeys | None = None  # pre-derived keys (benchmarks; skips the slow KDF)


class Call:
    """A running call; every public method is safe to call from any thread."""

    def __init__(self, config: CallConfig) -> None:
        self.config = config
        if config.identity_path is not None:
            self.identity = Identity.load_or_create(config.identity_path)
        else:
            self.identity = config.identity or Identity.generate()
        self.session_id = new_session_id()
        self.started_at = time.time()
        self._mono_start = time.monotonic()
        self._listeners: list[Callable[[CallSnapshot], None]] = []
        self._lock = threading.Lock()
        self._snapshot = CallSnapshot(
            room=config.room, name=config.name, fingerprint=self.identity.fingerprint,
            session_id=self.session_id, portals=tuple(config.portals), started_at=self.started_at,
            audio_only=config.audio_only,
        )
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        # Engine-loop state
        self._peers: dict[str, PeerLink] = {}
        self._video_sinks: dict[str, sinks.VideoSink] = {}
        self._chat: list[ChatMessage] = []
        self._notices: list[Notice] = []
        self._dirty = True
        self._session: RoomSession | None = None
        # Built here, not on join: making the HTTP client (its TLS context) costs ~50 ms.
        self._store: Store | None = config.store or open_store(config.portals)
        self._relay = MediaRelay()
        self._audio_fanout: EncodedFanout | None = None
        self._video_fanout: EncodedFanout | None = None
        self._ice_servers: list[RTCIceServer] = list(config.ice_servers)  # + the room's relay, if shared
        self._probe_lock = asyncio.Lock()
        self._probe_result: tuple[float, str] | None = None  # (when, what) of the last server probe
        self._audio_switch: sources.Switchable | None = None
        self._video_switch: sources.Switchable | None = None
        self._local_view: sinks.VideoSink | None = None
        self._mixer: sinks.AudioMixer | None = None
        self._mic_state = "off"
        self._camera_state = "off"
        self._audio_out_state = "none"
        self._status = "starting"
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
        sink = self._video_sinks.get(session_id)
        return sink.latest() if sink is not None else None

    def latest_local_frame(self) -> tuple[int, np.ndarray] | None:
        return self._local_view.latest() if self._local_view is not None else None

    def set_mic_muted(self, muted: bool) -> None:
        self._command(self._set_mic_muted, muted)

    def set_camera(self, on: bool) -> None:
        self._command(self._set_camera, on)

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
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        self._stop_event = asyncio.Event()
        self._ready.set()
        try:
            loop.run_until_complete(self._main())
        except Exception as exc:
            log.exception("engine crashed")
            self._status, self._error = "error", f"engine crashed: {exc}"
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

    async def _main(self) -> None:
        assert self._stop_event is not None
        cfg = self.config
        codec_tuning.configure_opus(cfg.opus_bitrate, cfg.opus_channels)
        codec_tuning.configure_vp8(cfg.video_max_bitrate)
        self._open_media()
        for name, loop in (("publisher", self._publisher), ("stats", self._stats_loop),
                           ("heartbeat", self._heartbeat_loop)):
            self._tasks.append(asyncio.create_task(supervised(name, loop, self._on_loop_failed)))
        try:
            keys = cfg.room_keys or await asyncio.to_thread(RoomKeys.derive, cfg.room, cfg.password)
            share = turn_servers_of(cfg.ice_servers) if cfg.share_turn else None
            if cfg.share_turn and not share:
                self._notice("warning", "--share-turn: no TURN server configured to share (add --turn …)")
            self._session = RoomSession(self._store, keys, self.identity, cfg.name, self.session_id,
                                        _Events(self), push=cfg.push, timing=cfg.timing, share_turn=share)
            joined = await self._join_with_retry()
            if joined:
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
                self._status, self._error = "error", str(exc)
                self._notice("error", f"{exc} — retrying in {delay:.0f} s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_event.wait(), delay)
                delay = min(delay * 2, 15.0)
                continue
            self._status, self._error = "joined", None
            self._changed()
            self._tasks.append(asyncio.create_task(self._alone_hint()))
            return True
        return False

    async def _alone_hint(self, after: float = 15.0) -> None:
        """Nobody here after a while: a wrong password or room name looks exactly like an empty room."""
        await asyncio.sleep(after)
        if not self._peers:
            self._notice("information", "nobody else is in this room yet. If you expected someone, check the "
                                        "room name, the password and that you use the same portal.")

    async def _shutdown(self) -> None:
        try:
            await self._shutdown_call()
        finally:
            # on every path: the store's HTTP clients and push sessions (an unclosed one is reported
            # at exit as "Unclosed client session" / "Event loop is closed")
            if self._store is not None and self.config.store is None:
                with contextlib.suppress(Exception):
                    await self._store.aclose()
            self._status = "stopped"
            self._publish()

    async def _shutdown_call(self) -> None:
        if self._session is not None:
            for link in self._peers.values():
                link.send_control({"t": "bye"})
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._session.leave(), 5)
            await self._session.close()
        for link in list(self._peers.values()):
            await link.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._mixer is not None:
            await self._mixer.close()
        for fanout in (self._audio_fanout, self._video_fanout):
            if fanout is not None:
                await fanout.stop()
        for track in (self._audio_switch, self._video_switch):
            if track is not None:
                track.stop()

    # ------------------------------------------------------------------ media
    def _open_media(self) -> None:
        cfg = self.config
        # Audio source
        audio: MediaStreamTrack | None = None
        if cfg.audio.startswith("tone"):
            hz = float(cfg.audio.split(":", 1)[1]) if ":" in cfg.audio else 440.0
            audio = sources.ToneTrack(frequency_hz=hz)
            self._mic_state = "on"
        elif cfg.audio == "mic":
            result = sources.open_microphone()
            audio = result.track
            self._mic_state = "on" if audio is not None else "missing"
            if audio is None:
                self._notice("warning", f"no microphone: {result.error}. Others will not hear you.")
        if audio is not None:
            self._audio_switch = sources.Switchable(audio)
            if cfg.shared_encoding:
                self._audio_fanout = EncodedFanout(self._relay.subscribe(self._audio_switch, buffered=True),
                                                   open_opus=codec_tuning.open_opus_encoder,
                                                   opus_frame_ms=cfg.opus_frame_ms or 20)
        # Video source
        video: MediaStreamTrack | None = None
        if not cfg.audio_only:
            if cfg.video == "pattern":
                video = sources.TestPatternTrack(cfg.video_width, cfg.video_height, cfg.fps,
                                                 label=cfg.name)
                self._camera_state = "pattern"
            elif cfg.video == "camera":
                result = sources.open_camera(None, cfg.video_width, cfg.video_height, cfg.fps)
                video = result.track
                self._camera_state = "on" if video is not None else "missing"
                if video is None:
                    self._notice("warning", f"no camera: {result.error}. Others see your identicon.")
        if video is not None:
            self._video_switch = sources.Switchable(video)
            if cfg.shared_encoding:
                self._video_fanout = EncodedFanout(
                    self._relay.subscribe(self._video_switch, buffered=False),
                    video_bitrate=min(cfg.video_max_bitrate, 250_000), fps=cfg.fps)
            self._local_view = sinks.VideoSink()
            self._tasks.append(asyncio.create_task(
                self._local_view.consume(self._relay.subscribe(self._video_switch, buffered=False))))
        # Audio out
        output, state = sinks.open_audio_output(cfg.audio_out)
        self._audio_out_state = state
        if state == "missing":
            self._notice("warning", "no audio output device: you will not hear the others "
                                    "(use --record-audio FILE.wav or fix ALSA/Pulse)")
        self._mixer = sinks.AudioMixer(output)
        self._mixer.start()

    def _set_mic_muted(self, muted: bool) -> None:
        if self._audio_switch is None:
            return
        self._audio_switch.set_enabled(not muted)
        self._mic_state = "muted" if muted else "on"
        self._broadcast_state()
        self._changed()

    def _set_camera(self, on: bool) -> None:
        if self._video_switch is None:
            return
        self._video_switch.set_enabled(on)
        self._camera_state = ("pattern" if self.config.video == "pattern" else "on") if on else "off"
        self._broadcast_state()
        self._changed()

    def _local_state_message(self) -> dict[str, Any]:
        return {"t": "state", "name": self.config.name, "muted": self._mic_state != "on",
                "camera_off": self._camera_state not in ("on", "pattern"),
                "audio_only": self.config.audio_only}

    def _broadcast_state(self) -> None:
        message = self._local_state_message()
        for link in self._peers.values():
            link.send_control(message)

    def _send_chat(self, text: str, to: str | None = None) -> None:
        text = "".join(ch for ch in text if ch.isprintable() or ch == " ")[:MAX_CHAT_CHARS].strip()
        if not text:
            return
        now = time.time()
        for sid, link in self._peers.items():
            if (to is None or sid == to) and link.status not in ("left", "gone"):
                link.send_or_hold({"t": "chat", "text": text, "ts": now})
        self._chat.append(ChatMessage(now, self.config.name, self.identity.fingerprint, text, own=True))
        self._changed()

    # ------------------------------------------------------------------ peers
    def _we_offer(self, member: Member) -> bool:
        """Deterministic offerer: the smaller (public key, session id) offers — no glare."""
        return (self.identity.public_key, self.session_id) < (member.public_key, member.session_id)

    def _new_pc(self) -> RTCPeerConnection:
        from aiortc.rtcconfiguration import RTCIceTransportPolicy

        policy = RTCIceTransportPolicy.RELAY if self.config.relay_only else RTCIceTransportPolicy.ALL
        return RTCPeerConnection(RTCConfiguration(iceServers=list(self._ice_servers),
                                                  iceTransportPolicy=policy))

    def _on_room_settings(self, settings: RoomSettings) -> None:
        """Someone shared a TURN relay with the room: use it unless we have our own."""
        if not settings.turn or turn_servers_of(self._ice_servers):
            return
        self._ice_servers = [*self._ice_servers, *(RTCIceServer(urls=t.url, username=t.username,
                                                                credential=t.credential)
                                                   for t in settings.turn)]
        shared = "us" if settings.author == self.identity.public_key else fingerprint(settings.author)
        self._notice("information", f"using the room's TURN relay {settings.turn[0].url} (shared by {shared})")
        for link in self._peers.values():  # pairs still trying without a relay: try again with it
            if link.we_offer and not link.finished and link.status == "connecting" and link.pc is not None:
                self._begin_reconnect(link, "trying again through the room's TURN relay")

    def _add_local_media(self, pc: RTCPeerConnection, link: PeerLink, offering: bool) -> None:
        """Attach our tracks; on the offering side also create the transceivers and channel."""
        if self._audio_switch is not None:
            self._add_source(pc, "audio", self._audio_fanout, self._audio_switch, buffered=True)
        elif offering:
            pc.addTransceiver("audio", direction="recvonly")
        if not self.config.audio_only:
            if self._video_switch is not None:
                self._add_source(pc, "video", self._video_fanout, self._video_switch, buffered=False)
            elif offering:
                pc.addTransceiver("video", direction="recvonly")
        if offering:
            self._wire_channel(link, pc, pc.createDataChannel("sdparta", ordered=True))

    def _add_source(self, pc: RTCPeerConnection, kind: str, fanout: EncodedFanout | None,
                    source: MediaStreamTrack, *, buffered: bool) -> None:
        """Our encoded packets (shared by every connection), or frames for aiortc to encode."""
        if fanout is None:
            pc.addTrack(self._relay.subscribe(source, buffered=buffered))
            return
        sender = pc.addTrack(fanout.subscribe())
        # the packets are Opus / VP8: that is what this transceiver must negotiate
        wanted = "audio/opus" if kind == "audio" else "video/vp8"
        capabilities = RTCRtpSender.getCapabilities(kind).codecs
        preferred = [c for c in capabilities if c.mimeType.lower() in (wanted, "video/rtx")]
        for transceiver in pc.getTransceivers():
            if transceiver.sender is sender:
                transceiver.setCodecPreferences(preferred)

    def _wire_pc(self, link: PeerLink, pc: RTCPeerConnection) -> None:
        link.attach(pc)
        sid = link.member.session_id

        @pc.on("track")
        def _on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio" and self._mixer is not None:
                link.track_task(pc, asyncio.create_task(self._mixer.consume(sid, track)))
            elif track.kind == "video":
                sink = self._video_sinks.setdefault(sid, sinks.VideoSink())
                link.track_task(pc, asyncio.create_task(sink.consume(track)))

        @pc.on("datachannel")
        def _on_channel(channel: Any) -> None:
            self._wire_channel(link, pc, channel)

    def _wire_channel(self, link: PeerLink, pc: RTCPeerConnection, channel: Any) -> None:
        link.set_channel(channel, pc)

        def _opened() -> None:
            link.last_heard = time.monotonic()
            link.send_control(self._local_state_message())
            link.flush_outbox()
            self._changed()

        if channel.readyState == "open":
            _opened()
        else:
            channel.on("open", _opened)

        @channel.on("message")
        def _on_message(raw: Any) -> None:
            link.last_heard = time.monotonic()
            message = PeerLink.parse_control(raw)
            if message is None:
                self._on_invalid("data channel: malformed message")
                return
            self._on_control(link, message)

    def _on_control(self, link: PeerLink, message: dict[str, Any]) -> None:
        kind = message["t"]
        if kind == "chat" and isinstance(message.get("text"), str):
            text = "".join(ch for ch in message["text"] if ch.isprintable())[:MAX_CHAT_CHARS]
            self._chat.append(ChatMessage(time.time(), link.remote_name, fingerprint(link.member.public_key), text))
            del self._chat[:-500]
        elif kind == "state":
            link.remote_muted = bool(message.get("muted"))
            link.remote_camera_off = bool(message.get("camera_off"))
            link.remote_audio_only = bool(message.get("audio_only"))
        elif kind == "bye":
            self._peer_finished(link, "left", None)
        elif kind == "ping":
            link.send_control({"t": "pong"})
        elif kind == "restart" and link.we_offer and link.status == "connected":
            self._begin_reconnect(link, "the peer asked for an ICE restart")
        elif kind == "signal":  # an ICE restart's offer/answer over the (DTLS-authenticated) channel
            body = message.get("body")
            if (isinstance(body, dict) and body.get("type") in ("offer", "answer")
                    and isinstance(body.get("sdp"), str) and isinstance(body.get("gen"), int)
                    and not isinstance(body.get("gen"), bool)):
                self._on_signal(link, body)
            else:
                self._on_invalid("data channel: malformed signal")
        self._changed()

    async def _start_offer(self, link: PeerLink) -> bool:
        """Offer a fresh connection (first contact, or an ICE restart with ``gen`` + 1).

        A restart offer also goes over the data channel when it is alive (faster, and works while
        the portal is unreachable); the room copy reaches a peer whose channel is dead. Returns
        whether the offer reached the room (or the channel)."""
        restart = link.pc is not None
        old_channel = link.channel if link.channel_alive(CHANNEL_FRESH) else None
        link.gen += 1
        link.answered = False
        pc = self._new_pc()
        self._wire_pc(link, pc)
        self._add_local_media(pc, link, offering=True)
        if not restart:
            link.set_status("connecting")
        await pc.setLocalDescription(await pc.createOffer())
        if link.pc is not pc:
            return False  # replaced meanwhile (the link closed or another attempt began)
        link.offer_incomplete = restart and bool(link.working_types - candidate_types(pc.localDescription.sdp))
        body = {"type": "offer", "sdp": pc.localDescription.sdp, "gen": link.gen}
        via_channel = old_channel is not None and _send_signal(old_channel, body)
        assert self._session is not None
        await self._session.watch(link.member, True)
        self._session.mark_pending(urgent=restart)
        if not restart:
            await self._session.send(link.member, body)
            self._check_gathering(link, pc)  # after sending: the peer then finds its own problems too
            return True
        link.record("peer", f"restart offer gen {link.gen}" + (" via data channel" if via_channel else ""))
        try:
            await asyncio.wait_for(self._session.send(link.member, body), ROOM_SEND_TIMEOUT)
        except (StoreError, TimeoutError) as exc:
            log.info("restart offer to %s not written to the room: %s", link.remote_name, exc)
            return via_channel
        finally:
            self._check_gathering(link, pc)
        return True

    def _on_signal(self, link: PeerLink, body: dict[str, Any]) -> None:
        if link.finished:
            return
        if body["type"] == "offer" and not link.we_offer:
            self._spawn(self._on_offer(link, body), link)
        elif body["type"] == "answer" and link.we_offer:
            self._spawn(self._on_answer(link, body), link)

    async def _on_offer(self, link: PeerLink, body: dict[str, Any]) -> None:
        gen = int(body.get("gen", 0))
        if gen <= link.remote_gen:
            return  # stale or repeated offer (the same offer comes over the channel and the room)
        link.remote_gen = gen
        restart = link.pc is not None
        old_channel = link.channel if restart and link.channel_alive(CHANNEL_FRESH) else None
        pc = self._new_pc()
        self._wire_pc(link, pc)
        if not restart:
            link.set_status("connecting")
        elif link.status == "connected":
            link.set_status("reconnecting", "the peer restarts ICE")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="offer"))
        # Browsers send no a=end-of-candidates: signal it so a dead check list can fail.
        await pc.addIceCandidate(None)
        self._add_local_media(pc, link, offering=False)
        if self.config.audio_only:
            for transceiver in pc.getTransceivers():
                if transceiver.kind == "video":
                    transceiver.direction = "inactive"
        await pc.setLocalDescription(await pc.createAnswer())
        if link.pc is not pc:
            return  # a newer offer took over while we answered
        answer = {"type": "answer", "sdp": pc.localDescription.sdp, "gen": gen}
        if old_channel is not None:
            _send_signal(old_channel, answer)
        assert self._session is not None
        try:
            if restart:
                self._session.mark_pending(urgent=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._session.send(link.member, answer), ROOM_SEND_TIMEOUT)
            else:
                await self._session.send(link.member, answer)
        finally:
            self._check_gathering(link, pc)  # after answering, so the offerer learns its side too

    async def _on_answer(self, link: PeerLink, body: dict[str, Any]) -> None:
        if not link.we_offer or link.answered or int(body.get("gen", 0)) != link.gen:
            return
        if link.pc is None or link.pc.signalingState != "have-local-offer":
            return
        await link.apply_answer(body["sdp"])

    # ------------------------------------------------------------------ reconnection
    def _restart_ice(self, session_id: str) -> None:
        link = self._peers.get(session_id)
        if link is None or link.finished or link.pc is None:
            return
        if not link.we_offer:  # only the offerer restarts (no glare): ask it to
            link.send_control({"t": "restart"})
            link.record("peer", "asked the peer to restart ICE")
            return
        self._begin_reconnect(link, "ICE restart requested")

    def _begin_reconnect(self, link: PeerLink, reason: str) -> None:
        """The pair broke (silence, or ICE/DTLS failed): both sides watch the room closely again
        and the offerer restarts ICE with fresh connections until the pair is back."""
        if link.status != "reconnecting":
            link.set_status("reconnecting", reason)
        if link.reconnecting_since is None:
            link.reconnecting_since = time.monotonic()
            if self._session is not None:
                self._spawn(self._session.watch(link.member, True), link)
                self._session.mark_pending(urgent=True)
                self._session.kick()  # the push socket may have died with the network
        if link.we_offer and (link.restart_task is None or link.restart_task.done()):
            link.restart_task = asyncio.create_task(self._restart_loop(link))
            link.tasks.append(link.restart_task)

    async def _restart_loop(self, link: PeerLink) -> None:
        regathered = 0
        while link.status == "reconnecting":
            if not link.channel_alive(CHANNEL_FRESH):
                # Gathering while offline yields no server-reflexive/relay candidates (and waits out
                # the STUN timeout): wait until the room answers, i.e. the network is back.
                await self._wait_for_room(link)
                if link.status != "reconnecting":
                    return
            try:
                offered = await self._start_offer(link)
            except Exception as exc:  # one failed attempt (e.g. no network to gather on) is retried
                log.info("ICE restart attempt for %s failed: %s", link.remote_name, exc)
                offered = False
            if not offered:
                await asyncio.sleep(RESTART_RETRY)
                continue
            if link.offer_incomplete and regathered < RESTART_REGATHER:
                # The network went away during gathering and is back (the offer went out): an offer
                # without the candidate types that worked before would fail behind NAT. Gather again.
                regathered += 1
                link.record("peer", "restart offer lacked candidates gathered before (network was away): "
                                    "gathering again")
                continue
            regathered = 0
            sent_at = time.monotonic()
            while link.status == "reconnecting":
                now = time.monotonic()
                if link.answered and now - link.answered_at > RESTART_ANSWERED_TIMEOUT:
                    break  # answered but the checks did not get through: a fresh attempt
                if not link.answered and now - sent_at > RESTART_REOFFER:
                    break
                await asyncio.sleep(0.1)

    async def _wait_for_room(self, link: PeerLink) -> None:
        assert self._session is not None
        while link.status == "reconnecting" and not await self._session.room_reachable(ROOM_PROBE_TIMEOUT):
            await asyncio.sleep(RESTART_RETRY)

    def _on_member_seen(self, member: Member) -> None:
        sid = member.session_id
        if sid == self.session_id:
            return
        old = self._peers.get(sid)
        if old is not None and not old.may_come_back:
            return
        link = PeerLink(member, self._we_offer(member), self._mono_start, self._changed)
        if old is not None:
            # Declared gone (we or they were offline too long) and announcing again: a fresh pair,
            # with generations above the old ones so neither side takes the new offer for a stale one.
            link.gen, link.remote_gen = old.gen, old.remote_gen
            link.worked_before = old.path_worked
            link.record("peer", "back in the room after being gone")
        self._replace_stale_sessions(member)
        self._peers[sid] = link
        link.tasks.append(asyncio.create_task(self._connect_guard(link)))
        if link.we_offer:
            self._spawn(self._start_offer(link), link)
        else:
            assert self._session is not None
            self._spawn(self._session.watch(member, True), link)
        self._changed()

    def _replace_stale_sessions(self, member: Member) -> None:
        """The same identity came back with a new session (restarted its app): the old pair, if
        it is not working, is replaced. Two live sessions of one identity are two participants."""
        for sid, link in list(self._peers.items()):
            if (sid != member.session_id and link.member.public_key == member.public_key
                    and link.connected_after_s is not None and link.status != "connected"):
                self._peer_finished(link, "left", "rejoined with a new session")
                del self._peers[sid]
                self._video_sinks.pop(sid, None)

    def _spawn(self, coro: Any, link: PeerLink) -> None:
        async def guarded() -> None:
            try:
                await coro
            except StoreError as exc:
                self._notice("warning", f"signalling to {link.remote_name} failed: {exc}")
            except Exception as exc:
                log.exception("negotiation with %s failed", link.remote_name)
                self._peer_finished(link, "failed", f"negotiation error: {exc}")

        link.tasks.append(asyncio.create_task(guarded()))

    async def _connect_guard(self, link: PeerLink) -> None:
        """Our own connect timeout: aiortc alone may wait a minute, or forever with no candidates."""
        await asyncio.sleep(self.config.connect_timeout)
        if link.connected_after_s is not None or link.finished:
            return
        if link.worked_before:
            # A path to this peer worked before: the network may still be settling after the outage
            # (or the first answer went to an offer written while we were away). Keep trying, as for
            # a broken pair, until RECONNECT_GIVE_UP.
            self._begin_reconnect(link, f"not connected within {self.config.connect_timeout:.0f} s of coming "
                                        "back: trying again (a path to this peer worked before)")
            return
        self._peer_finished(link, "failed", await self._diagnose(link))

    async def _diagnose(self, link: PeerLink) -> str:
        """Say which case a pair that did not connect is, and what would fix it."""
        pc = link.pc
        timeout = f"not connected after {self.config.connect_timeout:.0f} s"
        if pc is None:
            return f"{timeout}: the peer never sent an offer (it may have left or crashed)"
        if pc.remoteDescription is None:
            return f"{timeout}: the peer never answered (it may have left or crashed)"
        local = candidate_types(pc.localDescription.sdp if pc.localDescription else "")
        remote = candidate_types(pc.remoteDescription.sdp)
        if not local:
            return f"{timeout}: no local ICE candidates were gathered ({await self._gathering_problem()})"
        if not remote:
            return f"{timeout}: the peer gathered no ICE candidates (its STUN/TURN settings are wrong or unreachable)"
        if "relay" not in local and "relay" not in remote:
            unlearned = ""
            if stun_urls_of(self._ice_servers) and "srflx" not in local:
                unlearned = f"; no public address was learned either ({await self._gathering_problem()})"
            return (f"{timeout}: all ICE checks failed — no direct or STUN path between these networks "
                    "(a symmetric NAT?): a TURN relay is needed (add --turn URL --turn-user U --turn-password P, "
                    f"or have someone in the room share one with --share-turn){unlearned}")
        return f"{timeout}: all ICE checks failed, even through the TURN relay (can both sides reach it?)"

    def _check_gathering(self, link: PeerLink, pc: RTCPeerConnection) -> None:
        """Right after gathering: a configured server that gave no candidate is probed for the reason
        (aioice drops the error), and a connection with no candidate at all fails now, not in 20 s."""
        types = candidate_types(pc.localDescription.sdp if pc.localDescription else "")
        servers = self._ice_servers
        missing_relay = bool(turn_servers_of(servers)) and "relay" not in types
        missing_srflx = bool(stun_urls_of(servers)) and not self.config.relay_only and "srflx" not in types
        if not types or missing_relay or missing_srflx:
            async def explain() -> None:
                problem = await self._gathering_problem()
                link.record("peer", f"gathering: {problem}")
                if not types and link.pc is pc and link.connected_after_s is None:
                    self._peer_finished(link, "failed", f"no local ICE candidates were gathered ({problem})")

            link.tasks.append(asyncio.create_task(explain()))

    async def _gathering_problem(self) -> str:
        """Why the configured STUN/TURN servers gave no candidates (probed once per call, then cached)."""
        async with self._probe_lock:
            now = time.monotonic()
            if self._probe_result is None or now - self._probe_result[0] > PROBE_REUSE:
                self._probe_result = (now, await self._probe_servers())
                self._notice("warning", self._probe_result[1])
            return self._probe_result[1]

    async def _probe_servers(self) -> str:
        from sdparta import netcheck

        turn = turn_servers_of(self._ice_servers)
        stun = [] if self.config.relay_only else stun_urls_of(self._ice_servers)
        if not turn and self.config.relay_only:
            return "--relay-only needs a TURN server: add --turn URL --turn-user U --turn-password P"
        if not turn and not stun:
            return "no usable network interface (is the network up?)"
        checks = await asyncio.gather(*(netcheck.check_turn(t.url, t.username, t.credential) for t in turn),
                                      *(netcheck.check_stun(url) for url in stun))
        problems = [f"{c.kind.upper()} {c.url}: {c.detail}" for c in checks if c.problem is not None]
        if not problems:
            return "the STUN/TURN servers answer now: the failure was temporary"
        return "; ".join(problems)

    def _peer_finished(self, link: PeerLink, status: str, reason: str | None) -> None:
        if link.finished:
            return
        link.set_status(status, reason)
        if self._mixer is not None:
            self._mixer.remove_input(link.member.session_id)
        asyncio.get_running_loop().create_task(link.close())
        self._changed()

    def _on_member_gone(self, member: Member, status: str, reason: str) -> None:
        link = self._peers.get(member.session_id)
        if link is None or link.finished:
            return
        if link.status == "connected" and time.monotonic() - link.last_heard < RESTART_SILENCE:
            return  # the data channel says it is alive; trust it over the presence list
        self._peer_finished(link, status, reason)

    def _on_message(self, member: Member, body: dict[str, Any]) -> None:
        link = self._peers.get(member.session_id)
        if link is None:
            self._on_member_seen(member)
            link = self._peers.get(member.session_id)
            if link is None:
                return
        if body.get("name"):
            link.remote_name = str(body["name"])[:48]
        kind = body["type"]
        if kind == "bye":
            self._peer_finished(link, "left", None)
        elif link.finished:
            return
        elif kind == "offer" and not link.we_offer:
            self._spawn(self._on_offer(link, body), link)
        elif kind == "answer" and link.we_offer:
            self._spawn(self._on_answer(link, body), link)
        self._changed()

    def _on_loop_failed(self, name: str, error: str) -> None:
        """A background loop crashed (a bug) and is being restarted: say so, never stay silent."""
        self._notice("error", f"internal error in the {name} loop ({error}); it was restarted — "
                              "please report this with the log (SDPARTA_LOG=INFO)")

    def _on_invalid(self, reason: str) -> None:
        log.info("dropped invalid message: %s", reason)
        self._changed()

    # ------------------------------------------------------------------ loops
    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_INTERVAL)
            now = time.monotonic()
            for link in list(self._peers.values()):
                if link.status == "connected":
                    link.send_control({"t": "ping"})
                    if now - link.last_heard > RESTART_SILENCE:
                        self._begin_reconnect(link, f"nothing heard for {RESTART_SILENCE:.0f} s")
                elif link.status == "reconnecting":
                    link.send_control({"t": "ping"})
                    if now - (link.reconnecting_since or now) > RECONNECT_GIVE_UP:
                        self._peer_finished(link, "failed", f"could not reconnect for {RECONNECT_GIVE_UP:.0f} s")
                    else:  # also picks up a failure reported by the connection itself
                        self._begin_reconnect(link, link.failure_reason or "connection failed")
                        if self._session is not None:
                            self._session.mark_pending(3.0, urgent=True)
            if self._audio_fanout is not None and self.config.opus_frame_ms is None:
                # Fewer, bigger audio packets in a big mesh: per-packet work is what costs CPU there.
                live = sum(not link.finished for link in self._peers.values())
                self._audio_fanout.opus_frame_ms = 60 if live > 3 else 20
            if self._session is not None:
                # A silent peer whose presence record also went stale crashed or lost its network.
                self._session.expire_stale()
                # Slots of peers we are connected to need no polling; the rest do.
                for link in list(self._peers.values()):
                    if link.status == "connected":
                        await self._session.watch(link.member, False)
                if not any(link.status in ("discovered", "connecting", "reconnecting")
                           for link in self._peers.values()):
                    self._session.clear_pending()

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            await asyncio.gather(*(link.refresh_stats() for link in list(self._peers.values())
                                   if link.status == "connected"), return_exceptions=True)
            self._changed()

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
        mixer = self._mixer
        peers = []
        for sid, link in self._peers.items():
            level, seconds = mixer.input_stats(sid) if mixer is not None else (0.0, 0.0)
            sink = self._video_sinks.get(sid)
            peers.append(link.snapshot(level, seconds, sink.frames if sink is not None else 0))
        session = self._session
        snapshot = replace(
            self._snapshot,
            push=bool(session and session.push_active),
            status=self._status,
            error=self._error,
            mic=self._mic_state,
            camera=self._camera_state,
            audio_out=self._audio_out_state,
            peers=tuple(peers),
            chat=tuple(self._chat),
            invalid_messages=session.counters.invalid_messages if session else 0,
            notices=tuple(self._notices),
        )
        with self._lock:
            self._snapshot = snapshot
            listeners = list(self._listeners)
        for fn in listeners:
            try:
                fn(snapshot)
            except Exception:
                log.exception("snapshot listener failed")

    @property
    def session(self) -> RoomSession | None:
        """The room session (engine-loop object; for reports and benchmarks)."""
        return self._session


class _Events(RoomEvents):
    """Routes room events into the call (all on the engine loop)."""

    def __init__(self, call: Call) -> None:
        self.call = call

    def member_seen(self, member: Member) -> None:
        self.call._on_member_seen(member)

    def member_gone(self, member: Member, status: str, reason: str) -> None:
        self.call._on_member_gone(member, status, reason)

    def message(self, member: Member, body: dict[str, Any]) -> None:
        self.call._on_message(member, body)

    def invalid(self, reason: str) -> None:
        self.call._on_invalid(reason)

    def settings(self, settings: RoomSettings) -> None:
        self.call._on_room_settings(settings)

    def alive(self, member: Member) -> bool:
        link = self.call._peers.get(member.session_id)
        return link is not None and link.member.key == member.key and link.status == "connected"

    def loop_failed(self, name: str, error: str) -> None:
        self.call._on_loop_failed(name, error)
