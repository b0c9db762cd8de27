"""Local media sources as aiortc tracks: test pattern and tone (tests, demo, no devices) and the
real camera/microphone through PyAV when present.

Video is produced as yuv420p at the source: one frame shared by several VP8 encoders through
MediaRelay must not need conversion (PyAV's converter is not thread-safe; DESIGN §7).
"""

from __future__ import annotations

import asyncio
import fractions
import glob
import logging
import math
import os
import time
from dataclasses import dataclass

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90_000
AUDIO_RATE = 48_000


class _Pacer:
    """Real-time pacing by the monotonic clock (sinks and encoders must not run ahead)."""

    def __init__(self, period: float) -> None:
        self.period = period
        self.start: float | None = None
        self.count = 0

    async def wait(self) -> int:
        if self.start is None:
            self.start = time.monotonic()
        else:
            self.count += 1
            delay = self.start + self.count * self.period - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -1.0:  # fell far behind (suspended?): resync instead of bursting
                self.start = time.monotonic() - self.count * self.period
        return self.count


class TestPatternTrack(MediaStreamTrack):
    """A moving test pattern: colour bars scrolling under a bouncing box, different per label."""

    kind = "video"
    __test__ = False  # not a pytest test class despite the name

    def __init__(self, width: int = 160, height: int = 120, fps: int = 15, label: str = "") -> None:
        super().__init__()
        self.width, self.height, self.fps = width - width % 2, height - height % 2, max(1, fps)
        self._pacer = _Pacer(1 / self.fps)
        seed = sum(label.encode()) % 97
        bars = np.array([[235, 128, 128], [210, 16, 146], [170, 166, 16], [145, 54, 34],
                         [106, 202, 222], [81, 90, 240], [41, 240, 110], [16, 128, 128]], dtype=np.uint8)
        bars = np.roll(bars, seed % 8, axis=0)
        cols = (np.arange(self.width) * 8 // self.width)
        self._y = np.ascontiguousarray(np.tile(bars[cols, 0], (self.height, 1)))
        self._u = np.ascontiguousarray(np.tile(bars[cols[::2], 1], (self.height // 2, 1)))
        self._v = np.ascontiguousarray(np.tile(bars[cols[::2], 2], (self.height // 2, 1)))
        self._speed = 1 + seed % 3

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        n = await self._pacer.wait()
        shift = (n * self._speed) % self.width
        y = np.roll(self._y, shift, axis=1)
        u = np.roll(self._u, shift // 2, axis=1)
        v = np.roll(self._v, shift // 2, axis=1)
        box = max(4, self.height // 4)
        bx = int((math.sin(n / 9) + 1) / 2 * (self.width - box)) & ~1
        by = int((math.cos(n / 7) + 1) / 2 * (self.height - box)) & ~1
        y[by : by + box, bx : bx + box] = 235
        u[by // 2 : (by + box) // 2, bx // 2 : (bx + box) // 2] = 128
        v[by // 2 : (by + box) // 2, bx // 2 : (bx + box) // 2] = 128
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        for plane, data in zip(frame.planes, (y, u, v), strict=True):
            _fill_plane(plane, data)
        frame.pts = int(n * VIDEO_CLOCK / self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        return frame


def _fill_plane(plane: av.video.plane.VideoPlane, data: np.ndarray) -> None:
    """Copy rows into a plane that may be padded (line_size ≥ width)."""
    height, width = data.shape
    if plane.line_size == width:
        plane.update(np.ascontiguousarray(data).tobytes())
        return
    padded = np.zeros((height, plane.line_size), dtype=np.uint8)
    padded[:, :width] = data
    plane.update(padded.tobytes())


class ToneTrack(MediaStreamTrack):
    """A continuous-phase sine, s16 mono 48 kHz in 20 ms frames."""

    kind = "audio"

    def __init__(self, frequency_hz: float = 440.0, sample_rate: int = AUDIO_RATE, channels: int = 1,
                 frame_ms: int = 20, amplitude: float = 0.3) -> None:
        super().__init__()
        self.frequency_hz, self.sample_rate, self.channels = frequency_hz, sample_rate, channels
        self.samples = sample_rate * frame_ms // 1000
        self.amplitude = amplitude
        self._pacer = _Pacer(self.samples / sample_rate)
        self._phase = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        n = await self._pacer.wait()
        t = (np.arange(self.samples) + self._phase) / self.sample_rate
        self._phase += self.samples
        wave = (np.sin(2 * np.pi * self.frequency_hz * t) * self.amplitude * 32767).astype(np.int16)
        data = np.repeat(wave, self.channels).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(data, format="s16", layout="mono" if self.channels == 1 else "stereo")
        frame.sample_rate = self.sample_rate
        frame.pts = n * self.samples
        frame.time_base = fractions.Fraction(1, self.sample_rate)
        return frame


class Switchable(MediaStreamTrack):
    """Wraps a source so it can be muted / turned off without renegotiation.

    Disabled audio becomes silence with the same timing; disabled video becomes black frames."""

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.kind = source.kind
        self.source = source
        self.enabled = True

    def set_enabled(self, enabled: bool) -> None:
        self.enabled = enabled

    async def recv(self) -> av.AudioFrame | av.VideoFrame:
        frame = await self.source.recv()
        if self.enabled:
            return frame
        if isinstance(frame, av.AudioFrame):
            silent = av.AudioFrame(format=frame.format.name, layout=frame.layout.name, samples=frame.samples)
            for plane in silent.planes:
                plane.update(bytes(plane.buffer_size))
            silent.sample_rate, silent.pts, silent.time_base = frame.sample_rate, frame.pts, frame.time_base
            return silent
        black = av.VideoFrame(frame.width, frame.height, "yuv420p")
        for i, plane in enumerate(black.planes):
            plane.update(bytes([16 if i == 0 else 128]) * plane.buffer_size)
        black.pts, black.time_base = frame.pts, frame.time_base
        return black

    def stop(self) -> None:
        super().stop()
        self.source.stop()


@dataclass
class DeviceResult:
    """A device track, or None and the reason it is missing (never an exception)."""

    track: MediaStreamTrack | None
    error: str | None = None


def ensure_alsa_config() -> None:
    """PyAV's bundled ALSA looks for its config under a vendored path; point it at the system's."""
    if "ALSA_CONFIG_PATH" not in os.environ and os.path.exists("/usr/share/alsa/alsa.conf"):
        os.environ["ALSA_CONFIG_PATH"] = "/usr/share/alsa/alsa.conf"


def open_camera(device: str | None = None, width: int = 160, height: int = 120, fps: int = 15) -> DeviceResult:
    """The v4l2 camera via aiortc's MediaPlayer, converted to yuv420p at our size."""
    path = device or next(iter(sorted(glob.glob("/dev/video*"))), None)
    if path is None or not os.path.exists(path):
        return DeviceResult(None, f"no camera found ({path or '/dev/video*'} does not exist)")
    try:
        from aiortc.contrib.media import MediaPlayer

        player = MediaPlayer(path, format="v4l2", options={"video_size": f"{width}x{height}",
                                                             "framerate": str(fps)})
    except Exception as exc:
        return DeviceResult(None, f"cannot open camera {path}: {exc}")
    if player.video is None:
        return DeviceResult(None, f"{path} offers no video")
    return DeviceResult(_Yuv420Track(player.video, width, height), None)


class _Yuv420Track(MediaStreamTrack):
    """Reformat a device's frames once, at the source."""

    kind = "video"

    def __init__(self, source: MediaStreamTrack, width: int, height: int) -> None:
        super().__init__()
        self.source, self.width, self.height = source, width, height

    async def recv(self) -> av.VideoFrame:
        frame = await self.source.recv()
        out = frame.reformat(width=self.width, height=self.height, format="yuv420p")
        out.pts, out.time_base = frame.pts, frame.time_base
        return out

    def stop(self) -> None:
        super().stop()
        self.source.stop()


def open_microphone(device: str | None = None) -> DeviceResult:
    """The microphone via PyAV: PulseAudio when available, else ALSA ``default``."""
    ensure_alsa_config()
    from aiortc.contrib.media import MediaPlayer

    errors = []
    for fmt in ("pulse", "alsa"):
        try:
            player = MediaPlayer(device or "default", format=fmt)
        except Exception as exc:
            errors.append(f"{fmt}: {exc}")
            continue
        if player.audio is not None:
            return DeviceResult(player.audio, None)
    return DeviceResult(None, "no microphone (" + "; ".join(errors) + ")")
