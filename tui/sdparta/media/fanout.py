"""Encode each local source once and give every peer connection the same packets.

aiortc encodes per sender: in a mesh of N every frame is encoded N−1 times, which is what makes a
mesh of 8 CPU-bound on two cores. A sender whose track yields ``av.Packet`` instead of frames only
packs it into RTP, so one encoder per source feeds them all. The price: one bitrate for everyone
(no per-receiver congestion control) and keyframes on a timer and when someone new subscribes,
instead of on each receiver's request.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.video.frame import PictureType

log = logging.getLogger(__name__)

VIDEO_TIME_BASE = fractions.Fraction(1, 90000)
OPUS_TIME_BASE = fractions.Fraction(1, 48000)
QUEUE_PACKETS = 8  # per subscriber: a slow sender drops the oldest packets instead of growing memory


class EncodedTrack(MediaStreamTrack):
    """One sender's view of a fan-out: the shared packets, in order."""

    def __init__(self, fanout: EncodedFanout) -> None:
        super().__init__()
        self.kind = fanout.kind
        self._fanout = fanout
        self._queue: deque[av.Packet] = deque(maxlen=QUEUE_PACKETS)
        self._ready = asyncio.Event()

    def put(self, packet: av.Packet) -> None:
        self._queue.append(packet)
        self._ready.set()

    async def recv(self) -> av.Packet:  # type: ignore[override]
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()

    def stop(self) -> None:
        super().stop()
        self._ready.set()
        self._fanout.unsubscribe(self)


class EncodedFanout:
    """One encoder for one source (VP8 or Opus), its packets copied to every subscriber."""

    def __init__(self, source: MediaStreamTrack, *, video_bitrate: int = 200_000, fps: int = 15,
                 keyframe_interval_s: float = 2.0,
                 open_opus: Callable[[int], tuple[Any, Any]] | None = None, opus_frame_ms: int = 20) -> None:
        self.kind = source.kind
        self._source = source
        self._subscribers: list[EncodedTrack] = []
        self._task: asyncio.Task[None] | None = None
        self._video_bitrate = video_bitrate
        self._fps = fps
        self._keyframe_interval_s = keyframe_interval_s
        self._keyframe_every = max(1, round(keyframe_interval_s * fps))  # in sent frames, set at each open
        #: send every n-th source frame (a big room: fewer packets and frames for every receiver, whose
        #: per-packet work is what costs CPU); the bitrate shrinks with it, so each frame keeps its size
        self.video_stride = 1
        self._open_stride = 1
        self._source_frames = 0
        self._want_keyframe = True
        self._frames = 0
        self._video: av.CodecContext | None = None
        # Opus: (encoder, resampler) for a frame size, from the engine (bitrate/channels are its settings)
        self._open_opus = open_opus
        self.opus_frame_ms = opus_frame_ms  # may change while running (bigger frames: fewer packets)
        self._opus: tuple[int, Any, Any] | None = None
        self._audio_pts = 0  # continuous across frame-size changes, so RTP timestamps only grow
        self.encoded = 0

    def subscribe(self) -> EncodedTrack:
        track = EncodedTrack(self)
        self._subscribers.append(track)
        self._want_keyframe = True  # the newcomer can decode from the next frame on
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        return track

    def unsubscribe(self, track: EncodedTrack) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(track)

    def request_keyframe(self) -> None:
        self._want_keyframe = True

    async def stop(self) -> None:
        for track in list(self._subscribers):
            track.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                frame = await self._source.recv()
            except MediaStreamError:
                return
            if not self._subscribers:
                continue  # nobody to send to: skip the encoding too
            if self.kind == "video":
                self._source_frames += 1
                if self._source_frames % max(1, self.video_stride):
                    continue  # not sent at this room size: skip the encoding too
            try:
                if self.kind == "audio":  # ~0.1 ms per Opus frame: a thread hand-off would cost more
                    packets = self._encode_audio(frame)
                else:
                    packets = await loop.run_in_executor(None, self._encode, frame)
            except (ValueError, av.FFmpegError) as exc:  # one bad frame must not end the stream
                log.warning("%s fan-out: cannot encode a frame: %s", self.kind, exc)
                continue
            for packet in packets:
                self.encoded += 1
                for track in list(self._subscribers):
                    track.put(packet)

    def _encode(self, frame: Any) -> list[av.Packet]:
        if self.kind == "audio":
            return self._encode_audio(frame)
        stride = max(1, self.video_stride)
        if (self._video is None or (self._video.width, self._video.height) != (frame.width, frame.height)
                or stride != self._open_stride):
            self._video, self._open_stride = self._open_vp8(frame.width, frame.height, stride), stride
            self._keyframe_every = max(1, round(self._keyframe_interval_s * self._fps / stride))
            self._want_keyframe = True
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        self._frames += 1
        if self._want_keyframe or self._frames % self._keyframe_every == 0:
            frame.pict_type = PictureType.I
            self._want_keyframe = False
        else:
            frame.pict_type = PictureType.NONE
        return list(self._video.encode(frame))

    def _encode_audio(self, frame: av.AudioFrame) -> list[av.Packet]:
        samples = 48 * self.opus_frame_ms
        if self._opus is None or self._opus[0] != samples:
            if self._open_opus is None:
                raise ValueError("no Opus encoder factory given")
            self._opus = (samples, *self._open_opus(samples))
        _, encoder, resampler = self._opus
        packets = []
        for chunk in resampler.resample(frame):
            for packet in encoder.encode(chunk):
                packet.pts, packet.time_base = self._audio_pts, OPUS_TIME_BASE
                self._audio_pts += samples
                packets.append(packet)
        return packets

    def _open_vp8(self, width: int, height: int, stride: int = 1) -> av.CodecContext:
        context = av.CodecContext.create("libvpx", "w")
        context.width, context.height, context.pix_fmt = width, height, "yuv420p"
        context.time_base = VIDEO_TIME_BASE
        context.framerate = fractions.Fraction(self._fps, stride)
        context.bit_rate = self._video_bitrate // stride
        # One thread: libvpx's worker threads spin while they wait for work, so at 15 paced frames a
        # second two threads cost ~6 ms of CPU per 160×120 frame against ~0.9 ms for one (measured).
        context.thread_count = 1
        # realtime, no lookahead (one packet per frame), resilient to loss
        context.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0",
                           "error-resilient": "1", "auto-alt-ref": "0"}
        return context
