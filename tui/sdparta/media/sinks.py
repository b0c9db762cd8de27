"""Media sinks: one audio mixer for all peers → device or WAV file, and a latest-frame video slot."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import struct
import threading
import time
from collections import deque
from pathlib import Path
from typing import Protocol

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from sdparta.media.sources import AUDIO_RATE, ensure_alsa_config

log = logging.getLogger(__name__)

BLOCK = AUDIO_RATE // 50  # 20 ms
MAX_BUFFER = AUDIO_RATE // 2  # keep at most 0.5 s per input: latency over completeness


class AudioOutput(Protocol):
    """Where the mixed audio goes (mono s16 at 48 kHz, 20 ms blocks)."""

    def write(self, samples: np.ndarray) -> None: ...
    def close(self) -> None: ...


class NullOutput:
    def write(self, samples: np.ndarray) -> None:
        pass

    def close(self) -> None:
        pass


class WavFileOutput:
    """A WAV file whose header is kept valid while writing, so even a killed process leaves a
    readable recording."""

    def __init__(self, path: str | Path, sample_rate: int = AUDIO_RATE) -> None:
        self.path = Path(path)
        self.sample_rate = sample_rate
        self._file = self.path.open("w+b")
        self._data_bytes = 0
        self._last_patch = 0.0
        self._write_header()

    def _write_header(self) -> None:
        self._file.seek(0)
        self._file.write(b"RIFF" + struct.pack("<I", 36 + self._data_bytes) + b"WAVE")
        self._file.write(b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, self.sample_rate, self.sample_rate * 2, 2, 16))
        self._file.write(b"data" + struct.pack("<I", self._data_bytes))
        self._file.seek(0, 2)

    def write(self, samples: np.ndarray) -> None:
        self._file.write(samples.astype("<i2").tobytes())
        self._data_bytes += samples.size * 2
        now = time.monotonic()
        if now - self._last_patch > 1.0:
            self._last_patch = now
            self._write_header()
            self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._write_header()
            self._file.close()


class DeviceOutput:
    """The sound card through PyAV (PulseAudio or ALSA)."""

    def __init__(self, device: str | None = None) -> None:
        ensure_alsa_config()
        errors = []
        self.container = None
        for fmt in ("pulse", "alsa"):
            try:
                self.container = av.open(device or "default", "w", format=fmt)
                break
            except Exception as exc:
                errors.append(f"{fmt}: {exc}")
        if self.container is None:
            raise OSError("no audio output device (" + "; ".join(errors) + ")")
        self.stream = self.container.add_stream("pcm_s16le", rate=AUDIO_RATE)
        self.stream.layout = "mono"
        self._pts = 0

    def write(self, samples: np.ndarray) -> None:
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1).astype(np.int16), format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        self._pts += samples.size
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.container.close()


def open_audio_output(spec: str) -> tuple[AudioOutput, str]:
    """``device`` | ``none`` | ``path.wav`` → (output, state) with state device|wav|none|missing."""
    if spec in ("", "none"):
        return NullOutput(), "none"
    if spec == "device":
        try:
            output = DeviceOutput()
            output.write(np.zeros(BLOCK, dtype=np.int16))  # opening can succeed and the first write fail
        except Exception as exc:
            log.info("no audio output: %s", exc)
            return NullOutput(), "missing"
        return output, "device"
    return WavFileOutput(spec), "wav"


class _Input:
    def __init__(self) -> None:
        self.buffer: deque[np.ndarray] = deque()
        self.buffered = 0
        self.level = 0.0
        self.level_at = 0.0
        self.seconds = 0.0
        self.resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE)


class AudioMixer:
    """Sums every peer's audio into one output, paced by the clock in 20 ms blocks."""

    def __init__(self, output: AudioOutput) -> None:
        self.output = output
        self._inputs: dict[str, _Input] = {}
        self._task: asyncio.Task[None] | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def consume(self, key: str, track: MediaStreamTrack) -> None:
        """Read a remote track until it ends, buffering mono 48 kHz samples for the mixer."""
        entry = self._inputs.setdefault(key, _Input())
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            for out in entry.resampler.resample(frame):
                samples = out.to_ndarray().reshape(-1).astype(np.int16)
                entry.buffer.append(samples)
                entry.buffered += samples.size
                while entry.buffered > MAX_BUFFER and entry.buffer:
                    entry.buffered -= entry.buffer.popleft().size
                entry.seconds += samples.size / AUDIO_RATE
                rms = float(np.sqrt(np.mean((samples.astype(np.float32) / 32768) ** 2))) if samples.size else 0.0
                entry.level, entry.level_at = rms, time.monotonic()

    def remove_input(self, key: str) -> None:
        entry = self._inputs.get(key)
        if entry is not None:
            entry.buffer.clear()
            entry.buffered = 0
            entry.level = 0.0

    def input_stats(self, key: str) -> tuple[float, float]:
        """(current level 0..1, seconds received) of one input."""
        entry = self._inputs.get(key)
        if entry is None:
            return 0.0, 0.0
        level = entry.level if time.monotonic() - entry.level_at < 0.5 else 0.0
        return level, entry.seconds

    def _take(self, entry: _Input) -> np.ndarray:
        out = np.zeros(BLOCK, dtype=np.int32)
        filled = 0
        while filled < BLOCK and entry.buffer:
            head = entry.buffer[0]
            n = min(BLOCK - filled, head.size)
            out[filled : filled + n] = head[:n]
            filled += n
            if n == head.size:
                entry.buffer.popleft()
            else:
                entry.buffer[0] = head[n:]
        entry.buffered -= filled
        return out

    async def _run(self) -> None:
        start = time.monotonic()
        blocks = 0
        while True:
            blocks += 1
            delay = start + blocks * BLOCK / AUDIO_RATE - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -1.0:
                start, blocks = time.monotonic(), 0
            mixed = np.zeros(BLOCK, dtype=np.int32)
            for entry in list(self._inputs.values()):
                mixed += self._take(entry)
            try:
                self.output.write(np.clip(mixed, -32768, 32767).astype(np.int16))
            except Exception as exc:
                log.warning("audio output failed, muting output: %s", exc)
                self.output = NullOutput()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.output.close()


class VideoSink:
    """Keeps only the newest frame of a track (converted to RGB lazily, on read)."""

    def __init__(self) -> None:
        self.frames = 0
        self._frame: av.VideoFrame | None = None
        self._rgb: tuple[int, np.ndarray] | None = None
        self._lock = threading.Lock()

    async def consume(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            with self._lock:
                self._frame = frame
                self.frames += 1

    def latest(self) -> tuple[int, np.ndarray] | None:
        """(sequence number, H×W×3 uint8 RGB) of the newest frame; safe from any thread."""
        with self._lock:
            frame, seq, cached = self._frame, self.frames, self._rgb
        if frame is None:
            return None
        if cached is not None and cached[0] == seq:
            return cached
        rgb = frame.to_ndarray(format="rgb24")
        with self._lock:
            self._rgb = (seq, rgb)
        return seq, rgb
