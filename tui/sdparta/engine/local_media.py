"""This machine's media in a call: what it sends (microphone or tone, camera or test pattern,
each behind an on/off switch, encoded once for all peers) and what it plays (one mixer for every
peer's audio, a latest-frame slot per peer's video)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiortc import RTCPeerConnection, RTCRtpSender
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from sdparta.engine.codec_tuning import CodecSettings
from sdparta.engine.peer import PeerLink
from sdparta.media import devices, sinks, sources
from sdparta.media.devices import DeviceResult
from sdparta.media.fanout import EncodedFanout

if TYPE_CHECKING:
    from sdparta.engine.call_config import CallConfig


#: A sender whose track was taken off (the track, and the task that drains it meanwhile).
PausedSender = tuple[RTCRtpSender, MediaStreamTrack, "asyncio.Task[None]"]


def video_stride_for(remotes: int) -> int:
    """Send every n-th video frame to a room with ``remotes`` others: the full rate up to 7 (a mesh of
    8 gets ≥ 95 % of its frames on two cores, docs/benchmarks.md), half up to 11, a third beyond. Each
    of them decodes every feed: a room of 10 at full rate wants ~6 cores of aiortc receivers
    (measured; docs/janus.md "Capacity")."""
    return 1 if remotes <= 7 else 2 if remotes <= 11 else 3


def sfu_key(session_id: str) -> str:
    """The mixer input of a peer's audio received through the SFU (its mesh audio is ``session_id``)."""
    return f"{session_id}/sfu"


async def _drain(track: MediaStreamTrack) -> None:
    """Read and drop a paused sender's track: a shared-encoder or relay view must not pile up."""
    with contextlib.suppress(MediaStreamError):
        while True:
            await track.recv()


class LocalMedia:
    """Opened once per call on the engine loop; ``add_to`` puts it on every new connection."""

    def __init__(self, config: CallConfig, codecs: CodecSettings, notice: Callable[[str, str], None]) -> None:
        self.config = config
        self.codecs = codecs
        self._notice = notice
        self._relay = MediaRelay()
        self.audio_switch: sources.SwitchableTrack | None = None
        self.video_switch: sources.SwitchableTrack | None = None
        self.audio_fanout: EncodedFanout | None = None
        self.video_fanout: EncodedFanout | None = None
        self.local_view: sinks.VideoSink | None = None
        self.mixer: sinks.AudioMixer | None = None
        self.video_sinks: dict[str, sinks.VideoSink] = {}  # per remote session id
        self.mic = "off"  # on | muted | missing | off
        self.camera = "off"  # on | off | missing | pattern
        self.audio_out = "none"  # device | wav | none | missing
        self.tasks: list[asyncio.Task[Any]] = []

    # ------------------------------------------------------------------ opening
    def open(self) -> None:
        cfg = self.config
        audio: MediaStreamTrack | None = None
        audio_spec = sources.parse_audio_source(cfg.audio)  # the parser the command line checked with
        if audio_spec.kind == "tone":
            audio = sources.ToneTrack(frequency_hz=audio_spec.frequency_hz)
            self.mic = "on"
        elif audio_spec.kind == "mic":
            audio, self.mic = self._device(devices.open_microphone(), "microphone", "Others will not hear you.")
        if audio is not None:
            self.audio_switch = sources.SwitchableTrack(audio)
            if cfg.shared_encoding:
                self.audio_fanout = EncodedFanout(self._relay.subscribe(self.audio_switch, buffered=True),
                                                  open_opus=self.codecs.open_opus,
                                                  opus_frame_ms=cfg.opus_frame_ms or 20)
        video: MediaStreamTrack | None = None
        if not cfg.audio_only:
            video_spec = sources.parse_video_source(cfg.video)
            if video_spec.kind == "pattern":
                video = sources.TestPatternTrack(cfg.video_width, cfg.video_height, cfg.fps, label=cfg.name)
                self.camera = "pattern"
            elif video_spec.kind == "camera":
                camera = devices.open_camera(video_spec.device, cfg.video_width, cfg.video_height, cfg.fps)
                video, self.camera = self._device(camera, "camera", "Others see your identicon.")
        if video is not None:
            self.video_switch = sources.SwitchableTrack(video)
            if cfg.shared_encoding:
                self.video_fanout = EncodedFanout(self._relay.subscribe(self.video_switch, buffered=False),
                                                  video_bitrate=min(cfg.video_max_bitrate, 250_000), fps=cfg.fps)
            self.local_view = sinks.VideoSink()
            self.tasks.append(asyncio.create_task(
                self.local_view.consume(self._relay.subscribe(self.video_switch, buffered=False))))
        output, self.audio_out = sinks.open_audio_output(cfg.audio_out)
        if self.audio_out == "missing":
            self._notice("warning", _no_output_notice(cfg.audio_out, getattr(output, "reason", None)))
        self.mixer = sinks.AudioMixer(output)
        self.mixer.start()

    def _device(self, result: DeviceResult, what: str, consequence: str) -> tuple[MediaStreamTrack | None, str]:
        """A device that opened ("on"), or its absence as a state and a notice — never a crash."""
        if result.track is None:
            self._notice("warning", f"no {what}: {result.error}. {consequence}")
            return None, "missing"
        return result.track, "on"

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.mixer is not None:
            await self.mixer.close()
        for fanout in (self.audio_fanout, self.video_fanout):
            if fanout is not None:
                await fanout.stop()
        for track in (self.audio_switch, self.video_switch):
            if track is not None:
                track.stop()

    # ------------------------------------------------------------------ switching
    def set_mic_muted(self, muted: bool) -> bool:
        """Mute or unmute (silence, no renegotiation); False when there is no microphone to switch."""
        if self.audio_switch is None:
            return False
        self.audio_switch.set_enabled(not muted)
        self.mic = "muted" if muted else "on"
        return True

    def set_camera(self, on: bool) -> bool:
        """Camera on or off (black frames, no renegotiation); False when there is no video to switch."""
        if self.video_switch is None:
            return False
        self.video_switch.set_enabled(on)
        self.camera = ("pattern" if self.config.video == "pattern" else "on") if on else "off"
        return True

    def state_message(self) -> dict[str, Any]:
        """What the peers are told about our media (over the data channel)."""
        return {"t": "state", "name": self.config.name, "muted": self.mic != "on",
                "camera_off": self.camera not in ("on", "pattern"), "audio_only": self.config.audio_only}

    def tune_for_room(self, remotes: int) -> None:
        """Fewer packets in a big room, mesh or SFU: every receiver's per-packet work is what costs CPU
        there (aiortc spends ~9 % of a core per received audio+video feed at full rate). Audio goes
        in 60 ms packets above 3 others; video at full rate up to 7 others, then half, then a third
        above 11 — a terminal tile among so many needs no more (``video_stride_for``)."""
        if self.audio_fanout is not None and self.config.opus_frame_ms is None:
            self.audio_fanout.opus_frame_ms = 60 if remotes > 3 else 20
        if self.video_fanout is not None:
            self.video_fanout.video_stride = video_stride_for(remotes)

    # ------------------------------------------------------------------ per connection
    def add_to(self, pc: RTCPeerConnection, offering: bool) -> None:
        """Attach our tracks; the offering side also creates receive-only transceivers for what we do
        not send, the answering side of an audio-only call declines video."""
        if self.audio_switch is not None:
            self._add_source(pc, "audio", self.audio_fanout, self.audio_switch, buffered=True)
        elif offering:
            pc.addTransceiver("audio", direction="recvonly")
        if not self.config.audio_only:
            if self.video_switch is not None:
                self._add_source(pc, "video", self.video_fanout, self.video_switch, buffered=False)
            elif offering:
                pc.addTransceiver("video", direction="recvonly")
        elif not offering:
            for transceiver in pc.getTransceivers():
                if transceiver.kind == "video":
                    transceiver.direction = "inactive"

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

    def receive(self, link: PeerLink, pc: RTCPeerConnection, track: MediaStreamTrack) -> None:
        """A peer's track: audio into the mixer, video into its latest-frame slot."""
        sid = link.member.session_id
        if track.kind == "audio" and self.mixer is not None:
            link.track_task(pc, asyncio.create_task(self.mixer.consume(sid, track)))
        elif track.kind == "video":
            sink = self.video_sinks.setdefault(sid, sinks.VideoSink())
            link.track_task(pc, asyncio.create_task(sink.consume(track)))

    def forget(self, session_id: str) -> None:
        """The peer is over: its audio leaves the mix."""
        if self.mixer is not None:
            self.mixer.remove_input(session_id)

    def peer_figures(self, session_id: str) -> tuple[float, float, int]:
        """(audio level, audio seconds, video frames) received from a peer, by the mesh and the SFU."""
        level = seconds = 0.0
        if self.mixer is not None:
            for key in (session_id, sfu_key(session_id)):
                key_level, key_seconds = self.mixer.input_stats(key)
                level, seconds = max(level, key_level), seconds + key_seconds
        sink = self.video_sinks.get(session_id)
        return level, seconds, sink.frames if sink is not None else 0

    # ------------------------------------------------------------------ the room's SFU
    def sfu_tracks(self, *, audio_only: bool) -> list[MediaStreamTrack]:
        """Our sources once more, for the SFU's connection (the same shared encoders as the pairs)."""
        tracks: list[MediaStreamTrack] = []
        for kind, switch, fanout in (("audio", self.audio_switch, self.audio_fanout),
                                     ("video", self.video_switch, self.video_fanout)):
            if switch is None or (kind == "video" and (audio_only or self.config.audio_only)):
                continue
            tracks.append(fanout.subscribe() if fanout is not None
                          else self._relay.subscribe(switch, buffered=kind == "audio"))
        return tracks

    def pause_sending(self, pc: RTCPeerConnection, kinds: tuple[str, ...] = ("audio", "video")) -> list[PausedSender]:
        """Stop sending our media of ``kinds`` on ``pc`` (the peer receives it through the SFU; an
        AudioBridge carries audio only); the data channel and the connection stay. The tracks are
        kept, drained, for :meth:`resume_sending`."""
        paused: list[PausedSender] = []
        for sender in pc.getSenders():
            track = sender.track
            if track is None or track.kind not in kinds:
                continue
            sender.replaceTrack(None)
            paused.append((sender, track, asyncio.get_running_loop().create_task(_drain(track))))
        return paused

    def resume_sending(self, pc: RTCPeerConnection, paused: list[PausedSender]) -> None:
        """Send on ``pc`` again what :meth:`pause_sending` stopped (video from its next keyframe)."""
        for sender, track, drain in paused:
            drain.cancel()
            if track.readyState == "live" and sender in pc.getSenders():
                sender.replaceTrack(track)
            else:
                track.stop()
        if self.video_fanout is not None:
            self.video_fanout.request_keyframe()


def _no_output_notice(spec: str, reason: str | None) -> str:
    """Why nothing will be heard, and the fix. Only ``join`` (and the demo, which runs join) plays to
    the sound card — a bot records to ``--record-audio`` or nowhere — so the flag to name is
    ``--audio-out``. A file that cannot be written is refused by the command line before the call;
    here it can only have become unwritable since, so its own error is the message."""
    try:
        device = sinks.parse_audio_output(spec).kind == "device"
    except ValueError:  # a file (or an unknown output): the reason says what is wrong with it
        device = False
    if device:
        cause = f" ({reason})" if reason else ""
        return (f"no audio output device{cause}: you will not hear the others — use --audio-out FILE.wav to "
                "record instead, --audio-out none to silence this, or fix ALSA/Pulse")
    return f"{reason or f'cannot use audio output {spec!r}'}: you will not hear the others"
