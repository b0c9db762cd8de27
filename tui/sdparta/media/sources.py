"""Synthetic local media as aiortc tracks (a moving test pattern and a tone), and the on/off switch
that mutes any source without renegotiation.

Video is produced as yuv420p at the source: one frame shared by several VP8 encoders through
``MediaRelay`` must not need conversion, because PyAV's converter is not thread-safe (DESIGN §7).
Every source paces itself by the monotonic clock, so an encoder (or a test) can never run ahead of
real time, and stamps frames from a sample/frame counter so pts never jump.

The device sources (camera, microphone) live in :mod:`sdparta.media.devices`.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import time
import zlib
from dataclasses import dataclass

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

__all__ = [
    "AUDIO_RATE",
    "TONE_RANGE_HZ",
    "VIDEO_CLOCK",
    "AudioSourceSpec",
    "Pacer",
    "SwitchableTrack",
    "TestPatternTrack",
    "ToneTrack",
    "VideoSourceSpec",
    "black_frame",
    "parse_audio_source",
    "parse_video_source",
    "silent_frame",
]

VIDEO_CLOCK = 90_000  # RTP video clock; aiortc's encoders convert from any time base
AUDIO_RATE = 48_000
#: Behind schedule by more than this (process suspended, loop starved): restart the schedule
#: instead of emitting a burst of frames to catch up.
MAX_LAG_S = 1.0

#: Frequencies a ``tone:HZ`` source may have: audible, and well below the Nyquist frequency.
TONE_RANGE_HZ = (20.0, 20_000.0)
DEFAULT_TONE_HZ = 440.0


# ---------------------------------------------------------------------------- source specs
# One parser per kind of source, used both by the command line (to refuse a bad --audio/--video
# before anything starts) and by the engine when it opens the source: they can never disagree.
@dataclass(frozen=True)
class AudioSourceSpec:
    """What ``--audio`` asked for: ``mic``, ``tone`` (with its frequency) or ``none``."""

    kind: str  # mic | tone | none
    frequency_hz: float = DEFAULT_TONE_HZ


@dataclass(frozen=True)
class VideoSourceSpec:
    """What ``--video`` asked for: ``camera`` (any, or one ``/dev/videoN``), ``pattern`` or ``none``."""

    kind: str  # camera | pattern | none
    device: str | None = None


def parse_audio_source(spec: str) -> AudioSourceSpec:
    """``mic`` | ``tone`` | ``tone:HZ`` | ``none``; ValueError says what is wrong and what would do."""
    text = spec.strip()
    if text in ("mic", "none"):
        return AudioSourceSpec(text)
    if text == "tone":
        return AudioSourceSpec("tone")
    if text.startswith("tone:"):
        value = text.partition(":")[2]
        try:
            hz = float(value)
        except ValueError:
            raise ValueError(f"the tone frequency {value!r} is not a number (e.g. tone:440)") from None
        low, high = TONE_RANGE_HZ
        if not low <= hz <= high:  # also refuses nan and inf
            raise ValueError(f"a tone of {value} Hz is outside {low:g}–{high:g} Hz (e.g. tone:440)")
        return AudioSourceSpec("tone", hz)
    raise ValueError("not an audio source (expected mic, tone:HZ such as tone:440, or none)")


def parse_video_source(spec: str) -> VideoSourceSpec:
    """``camera`` | ``camera:/dev/videoN`` | ``pattern`` | ``none``; ValueError says what would do."""
    text = spec.strip()
    if text in ("camera", "pattern", "none"):
        return VideoSourceSpec(text)
    if text.startswith("camera:"):
        device = text.partition(":")[2]
        if not device.startswith("/dev/"):
            raise ValueError(f"camera device {device!r} is not a device path (e.g. camera:/dev/video0)")
        return VideoSourceSpec("camera", device)
    raise ValueError("not a video source (expected camera, camera:/dev/videoN, pattern or none)")


# BT.601 limited-range Y, U, V of 75 % colour bars: white, yellow, cyan, green, magenta, red, blue, black.
_BARS_YUV = np.array(
    [[180, 128, 128], [162, 44, 142], [131, 156, 44], [112, 72, 58],
     [84, 184, 198], [65, 100, 212], [35, 212, 114], [16, 128, 128]],
    dtype=np.uint8,
)


class Pacer:
    """Real-time schedule: the n-th call returns at ``start + n × period`` (the first at once)."""

    def __init__(self, period_s: float) -> None:
        if period_s <= 0:
            raise ValueError("period must be positive")
        self.period_s = period_s
        self._start: float | None = None
        self._count = -1

    async def wait(self) -> int:
        """Sleep until the next slot and return its index (0, 1, 2, …)."""
        self._count += 1
        now = time.monotonic()
        if self._start is None:
            self._start = now
            return self._count
        delay = self._start + self._count * self.period_s - now
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -MAX_LAG_S:
            self._start = now - self._count * self.period_s
        return self._count


def _plane_view(plane: av.video.plane.VideoPlane) -> np.ndarray:
    """A writable (height, width) numpy view of a plane, skipping its line padding."""
    rows = np.frombuffer(plane, dtype=np.uint8, count=plane.line_size * plane.height)
    return rows.reshape(plane.height, plane.line_size)[:, : plane.width]


def _even(value: int, name: str) -> int:
    if value < 2:
        raise ValueError(f"{name} must be at least 2, got {value}")
    return value - value % 2


class TestPatternTrack(MediaStreamTrack):
    """A moving test pattern: scrolling colour bars over a grey ramp, with a bouncing box.

    The bar order, scroll speed, box colour and box path derive from ``label``, so peers in a demo
    are told apart at a glance.  Frames are yuv420p; each one costs a few plane copies."""

    kind = "video"
    __test__ = False  # not a pytest test class despite the name

    def __init__(self, width: int = 160, height: int = 120, fps: int = 15, label: str = "") -> None:
        super().__init__()
        self.width, self.height = _even(width, "width"), _even(height, "height")
        self.fps = max(1, int(fps))
        self.label = label
        seed = zlib.crc32(label.encode())
        self._pacer = Pacer(1 / self.fps)
        self._time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self._y, self._u, self._v = self._background(seed)
        # Scroll 1–3 luma pixels per frame, always an even amount so the chroma planes follow exactly.
        self._scroll = 2 * (1 + seed % 3)
        self._box = max(2, (min(self.width, self.height) // 4) & ~1)
        hue = (seed >> 8) % 360
        self._box_yuv = _hue_to_yuv(hue)
        self._box_speed = (2 + (seed >> 16) % 3, 1 + (seed >> 20) % 3)  # luma px per frame, x and y

    def _background(self, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        w, h = self.width, self.height
        bars = np.roll(_BARS_YUV, seed % len(_BARS_YUV), axis=0)
        col = np.arange(w) * len(bars) // w
        ramp_rows = max(2, (h // 4) & ~1)
        y = np.empty((h, w), dtype=np.uint8)
        y[: h - ramp_rows] = bars[col, 0]
        y[h - ramp_rows :] = np.linspace(16, 235, w).astype(np.uint8)
        u = np.empty((h // 2, w // 2), dtype=np.uint8)
        v = np.empty_like(u)
        u[:] = bars[col[::2], 1]
        v[:] = bars[col[::2], 2]
        u[(h - ramp_rows) // 2 :] = 128
        v[(h - ramp_rows) // 2 :] = 128
        return y, u, v

    def _box_position(self, n: int) -> tuple[int, int]:
        """Top-left corner of the box at frame n: a triangle-wave bounce inside the frame."""
        def bounce(travel: int, speed: int) -> int:
            if travel <= 0:
                return 0
            t = (n * speed) % (2 * travel)
            return t if t <= travel else 2 * travel - t

        x = bounce(self.width - self._box, self._box_speed[0]) & ~1
        y = bounce(self.height - self._box, self._box_speed[1]) & ~1
        return x, y

    def render(self, n: int) -> av.VideoFrame:
        """Frame ``n`` of the pattern (no pacing; the pattern is a pure function of n)."""
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        shift = (n * self._scroll) % self.width
        bx, by = self._box_position(n)
        size = self._box
        for plane, src, value, sub in zip(frame.planes, (self._y, self._u, self._v), self._box_yuv,
                                          (1, 2, 2), strict=True):
            dst = _plane_view(plane)
            s = shift // sub
            width = src.shape[1]
            dst[:, : width - s] = src[:, s:]
            dst[:, width - s :] = src[:, :s]
            dst[by // sub : (by + size) // sub, bx // sub : (bx + size) // sub] = value
        frame.pts = n * VIDEO_CLOCK // self.fps
        frame.time_base = self._time_base
        return frame

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        n = await self._pacer.wait()
        if self.readyState != "live":  # stopped while we slept
            raise MediaStreamError
        return self.render(n)


def _hue_to_yuv(hue: int) -> tuple[int, int, int]:
    """A saturated colour of the given hue as BT.601 limited-range Y, U, V."""
    h = hue / 60
    x = 1 - abs(h % 2 - 1)
    r, g, b = [(1, x, 0), (x, 1, 0), (0, 1, x), (0, x, 1), (x, 0, 1), (1, 0, x)][int(h) % 6]
    y = 16 + 65.481 * r + 128.553 * g + 24.966 * b
    u = 128 - 37.797 * r - 74.203 * g + 112.0 * b
    v = 128 + 112.0 * r - 93.786 * g - 18.214 * b
    return round(y), round(u), round(v)


class ToneTrack(MediaStreamTrack):
    """A continuous-phase sine as s16 frames of ``frame_ms``, paced by the clock.

    Tests and bots send it so the far end can prove, by FFT, that audio came through intact."""

    kind = "audio"

    def __init__(self, frequency_hz: float = 440.0, sample_rate: int = AUDIO_RATE, channels: int = 1,
                 frame_ms: int = 20, amplitude: float = 0.3) -> None:
        super().__init__()
        if channels not in (1, 2):
            raise ValueError("channels must be 1 or 2")
        if not 0 <= amplitude <= 1:
            raise ValueError("amplitude must be within 0..1")
        if not 0 < frequency_hz < sample_rate / 2:
            raise ValueError("frequency must be between 0 and the Nyquist frequency")
        self.frequency_hz, self.sample_rate, self.channels = frequency_hz, sample_rate, channels
        self.amplitude = amplitude
        self.samples = sample_rate * frame_ms // 1000
        if self.samples < 1:
            raise ValueError("frame_ms is too short for this sample rate")
        self._layout = "mono" if channels == 1 else "stereo"
        self._pacer = Pacer(self.samples / sample_rate)
        self._time_base = fractions.Fraction(1, sample_rate)
        self._step = 2 * math.pi * frequency_hz / sample_rate
        self._phase = 0.0  # kept in [0, 2π) so precision does not degrade over a long call

    def render(self, n: int) -> av.AudioFrame:
        """The next frame of the tone, stamped as frame ``n`` (no pacing)."""
        angles = self._phase + self._step * np.arange(self.samples)
        self._phase = (self._phase + self._step * self.samples) % (2 * math.pi)
        mono = np.round(np.sin(angles) * (self.amplitude * 32767)).astype(np.int16)
        data = np.repeat(mono, self.channels).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(data, format="s16", layout=self._layout)
        frame.sample_rate = self.sample_rate
        frame.pts = n * self.samples
        frame.time_base = self._time_base
        return frame

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        n = await self._pacer.wait()
        if self.readyState != "live":
            raise MediaStreamError
        return self.render(n)


def silent_frame(like: av.AudioFrame) -> av.AudioFrame:
    """Digital silence with the format, layout, length and timing of ``like``."""
    silent = av.AudioFrame(format=like.format.name, layout=like.layout.name, samples=like.samples)
    for plane in silent.planes:
        plane.update(bytes(plane.buffer_size))
    silent.sample_rate = like.sample_rate
    silent.pts, silent.time_base = like.pts, like.time_base
    return silent


def black_frame(like: av.VideoFrame) -> av.VideoFrame:
    """A black yuv420p frame with the size and timing of ``like``."""
    black = av.VideoFrame(like.width, like.height, "yuv420p")
    for index, plane in enumerate(black.planes):
        _plane_view(plane)[:] = 16 if index == 0 else 128
    black.pts, black.time_base = like.pts, like.time_base
    return black


class SwitchableTrack(MediaStreamTrack):
    """Wraps any source so it can be muted / turned off without renegotiation.

    The source keeps being read while disabled, so the timing stays the source's and a live
    device's queue cannot pile up stale frames; only the content is replaced: silence for audio,
    black for video.  Stopping the wrapper stops the source."""

    def __init__(self, source: MediaStreamTrack, enabled: bool = True) -> None:
        super().__init__()
        self.kind = source.kind
        self.source = source
        self._enabled = enabled

    @property
    def enabled(self) -> bool:
        return self._enabled

    def set_enabled(self, enabled: bool) -> None:
        """Switch content on or off; takes effect from the next frame."""
        self._enabled = bool(enabled)

    async def recv(self) -> av.AudioFrame | av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self.source.recv()
        if self._enabled:
            return frame
        if isinstance(frame, av.AudioFrame):
            return silent_frame(frame)
        if isinstance(frame, av.VideoFrame):
            return black_frame(frame)
        return frame  # an encoded packet (not produced by our sources): pass through

    def stop(self) -> None:
        super().stop()
        self.source.stop()

