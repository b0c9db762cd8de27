"""Media sinks: one audio mixer for all peers → sound card, WAV file or nothing (the outputs are in
:mod:`sdparta.media.audio_out`), and a latest-frame video slot per remote track.

The mixer is paced by the monotonic clock in fixed blocks: ALSA's ``null``/``file`` devices and
WAV files accept data faster than real time, so the output can never be the clock (DESIGN §7).
Each input has its own ring buffer with a small playout delay, so network jitter does not become
clicks, and a latency cap, so a sender whose clock runs fast cannot build up delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

# the outputs live in audio_out; they are part of this module's interface (sinks.open_audio_output …)
from sdparta.media.audio_out import (
    AudioOutput,
    AudioOutputSpec,
    DeviceOutput,
    NullOutput,
    WavFileOutput,
    open_audio_output,
    parse_audio_output,
)

log = logging.getLogger(__name__)

__all__ = [
    "AudioMixer",
    "AudioOutput",
    "AudioOutputSpec",
    "DeviceOutput",
    "InputStats",
    "NullOutput",
    "VideoSink",
    "WavFileOutput",
    "open_audio_output",
    "parse_audio_output",
]

AUDIO_RATE = 48_000
BLOCK_MS = 20
#: How far behind schedule the mixer may fall before it skips ahead instead of catching up (a sound
#: card; a recording, ``AudioOutput.timeline``, always catches up).
MAX_CATCH_UP_S = 0.2
#: Blocks a recording's mixer writes at once when it is behind (1 s of audio per loop pass).
MAX_BURST_BLOCKS = 50


@dataclass(frozen=True)
class InputStats:
    """One mixer input as the UI shows it."""

    level: float  # RMS 0..1 of the last ~100 ms received (0 when nothing arrived lately)
    seconds: float  # audio received so far
    buffered_ms: float  # waiting to be played
    underruns: int  # times the buffer ran dry while playing (gaps heard)
    dropped_ms: float  # audio skipped to keep latency bounded


class _Input:
    """One peer's audio on its way to the mix: resampler, ring buffer, level meter."""

    def __init__(self, sample_rate: int, channels: int, capacity: int, level_window: int) -> None:
        self.sample_rate, self.channels = sample_rate, channels
        self.layout = "mono" if channels == 1 else "stereo"
        self.resampler: av.AudioResampler | None = None
        self.ring = np.zeros((capacity, channels), dtype=np.int16)
        self.read_pos = 0
        self.count = 0  # frames buffered
        self.playing = False  # past the initial playout delay
        self.seconds = 0.0
        self.underruns = 0
        self.dropped = 0
        self.last_received = 0.0
        self._level_window = level_window
        self._level_chunks: deque[tuple[float, int]] = deque()
        self._level_sum = 0.0
        self._level_n = 0

    # -- receiving --------------------------------------------------------------------------
    def feed(self, frame: av.AudioFrame) -> None:
        if self.resampler is None:
            self.resampler = av.AudioResampler(format="s16", layout=self.layout, rate=self.sample_rate)
        try:
            frames = self.resampler.resample(frame)
        except ValueError:  # the sender's format changed mid-stream: rebuild and retry once
            self.resampler = av.AudioResampler(format="s16", layout=self.layout, rate=self.sample_rate)
            frames = self.resampler.resample(frame)
        for out in frames:
            samples = out.to_ndarray().reshape(-1, self.channels)
            self._push(samples)
            self._meter(samples)
            self.seconds += samples.shape[0] / self.sample_rate
        self.last_received = time.monotonic()

    def _push(self, samples: np.ndarray) -> None:
        capacity = self.ring.shape[0]
        n = samples.shape[0]
        if n >= capacity:  # a burst bigger than the whole ring: keep its newest part
            self.dropped += self.count + n - capacity
            samples, n = samples[-capacity:], capacity
            self.read_pos, self.count = 0, 0
        overflow = self.count + n - capacity
        if overflow > 0:
            self._skip(overflow)
        write = (self.read_pos + self.count) % capacity
        first = min(n, capacity - write)
        self.ring[write : write + first] = samples[:first]
        self.ring[: n - first] = samples[first:]
        self.count += n

    def _meter(self, samples: np.ndarray) -> None:
        as_float = samples.astype(np.float32) / 32768
        self._level_chunks.append((float(np.square(as_float).sum()), as_float.size))
        self._level_sum += self._level_chunks[-1][0]
        self._level_n += as_float.size
        while len(self._level_chunks) > 1 and self._level_n - self._level_chunks[0][1] >= self._level_window:
            old_sum, old_n = self._level_chunks.popleft()
            self._level_sum -= old_sum
            self._level_n -= old_n

    def level(self, now: float) -> float:
        if self._level_n == 0 or now - self.last_received > 0.3:
            return 0.0
        return min(1.0, float(np.sqrt(max(self._level_sum, 0.0) / self._level_n)))

    # -- playing ----------------------------------------------------------------------------
    def _skip(self, n: int) -> None:
        n = min(n, self.count)
        self.read_pos = (self.read_pos + n) % self.ring.shape[0]
        self.count -= n
        self.dropped += n

    def take(self, n: int, playout: int, max_latency: int) -> np.ndarray | None:
        """Up to ``n`` frames for this block, or None while (re)filling the playout delay."""
        if not self.playing:
            if self.count < playout:
                return None
            self.playing = True
        if self.count > max_latency:  # sender runs fast or arrived in a burst: drop to the target
            self._skip(self.count - playout)
        got = min(n, self.count)
        capacity = self.ring.shape[0]
        first = min(got, capacity - self.read_pos)
        out = np.concatenate([self.ring[self.read_pos : self.read_pos + first], self.ring[: got - first]])
        self.read_pos = (self.read_pos + got) % capacity
        self.count -= got
        if got < n:
            self.playing = False  # ran dry: wait for the playout delay again instead of stuttering
            self.underruns += 1
        return out


class AudioMixer:
    """Sums every peer's audio into one output, paced by the monotonic clock in 20 ms blocks.

    Use from one event loop: ``start()``, then ``consume(key, track)`` per remote track,
    ``remove_input(key)`` when a peer goes, ``close()`` at the end.  Inputs are resampled to the
    mixer's format whatever arrives (aiortc decodes Opus to s16 stereo 48 kHz)."""

    def __init__(self, output: AudioOutput | None = None, *, sample_rate: int = AUDIO_RATE, channels: int = 1,
                 block_ms: int = BLOCK_MS, playout_ms: int = 60, max_latency_ms: int = 200) -> None:
        if channels not in (1, 2):
            raise ValueError("channels must be 1 or 2")
        self.sample_rate, self.channels = sample_rate, channels
        self.block = sample_rate * block_ms // 1000
        self._playout = sample_rate * playout_ms // 1000
        self._max_latency = max(sample_rate * max_latency_ms // 1000, self._playout + self.block)
        self._capacity = max(sample_rate, 2 * self._max_latency)
        self._output: AudioOutput = output if output is not None else NullOutput()
        self.output_error: str | None = None
        self.blocks_mixed = 0
        self._inputs: dict[str, _Input] = {}
        self._retired: dict[str, float] = {}  # seconds received by inputs since removed
        # Gated inputs are read and dropped (a peer heard through the SFU instead: its mesh track must
        # still be drained); when each last delivered a frame, gated or not (has it come back?).
        self._gated: set[str] = set()
        self._arrived: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self.started_at: float | None = None  # wall clock of the current output's first sample

    @property
    def output(self) -> AudioOutput:
        return self._output

    def set_output(self, output: AudioOutput) -> None:
        """Switch outputs (e.g. start recording); the old one is closed."""
        old, self._output = self._output, output
        self.output_error = None
        if self._task is not None:
            self.started_at = time.time()
        if old is not output:
            old.close()

    def start(self) -> None:
        """Start the paced output loop on the running event loop (idempotent); ``started_at`` is
        then the wall-clock time of the output's first sample (a recording's time zero)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="audio-mixer")

    # -- inputs -----------------------------------------------------------------------------
    def add_input(self, key: str) -> None:
        """Register an input (idempotent); ``consume`` does this itself."""
        self._add(key)

    def _add(self, key: str) -> _Input:
        entry = self._inputs.get(key)
        if entry is None:
            entry = _Input(self.sample_rate, self.channels, self._capacity, self.sample_rate // 10)
            self._inputs[key] = entry
            self._retired.pop(key, None)
        return entry

    def remove_input(self, key: str) -> None:
        """Stop mixing ``key`` (its ``consume`` returns at the next frame); keeps its seconds."""
        entry = self._inputs.pop(key, None)
        self._gated.discard(key)
        self._arrived.pop(key, None)
        if entry is not None:
            self._retired[key] = entry.seconds

    def keys(self) -> list[str]:
        return list(self._inputs)

    def set_gated(self, key: str, gated: bool) -> None:
        """Drop (True) or mix again (False) what ``key`` delivers; its track is read either way."""
        if gated:
            self._gated.add(key)
        else:
            self._gated.discard(key)

    def arrived_since(self, key: str, since: float) -> bool:
        """Did ``key`` deliver a frame (gated or not) after ``since`` (monotonic)?"""
        return self._arrived.get(key, -1.0) > since

    async def consume(self, key: str, track: MediaStreamTrack) -> None:
        """Read a remote audio track until it ends (or the input is removed), buffering its audio."""
        entry = self._add(key)
        warned = False
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if self._inputs.get(key) is not entry:
                return
            self._arrived[key] = time.monotonic()
            if key in self._gated:
                continue
            try:
                entry.feed(frame)
            except (ValueError, av.FFmpegError) as exc:  # one bad frame must not end the input
                if not warned:
                    log.warning("audio input %s: cannot resample a frame: %s", key, exc)
                    warned = True

    def input_stats(self, key: str) -> tuple[float, float]:
        """(level 0..1 of the last ~100 ms, seconds received) of one input; zeros if unknown."""
        entry = self._inputs.get(key)
        if entry is None:
            return 0.0, self._retired.get(key, 0.0)
        return entry.level(time.monotonic()), entry.seconds

    def stats(self) -> dict[str, InputStats]:
        now = time.monotonic()
        rate = self.sample_rate / 1000
        return {key: InputStats(e.level(now), e.seconds, e.count / rate, e.underruns, e.dropped / rate)
                for key, e in self._inputs.items()}

    # -- output -----------------------------------------------------------------------------
    def mix_block(self) -> np.ndarray:
        """The next block: every input's next samples summed with clipping, s16 (frames, channels)."""
        acc = np.zeros((self.block, self.channels), dtype=np.int32)
        for entry in list(self._inputs.values()):
            part = entry.take(self.block, self._playout, self._max_latency)
            if part is not None and part.shape[0]:
                acc[: part.shape[0]] += part
        self.blocks_mixed += 1
        return np.clip(acc, -32768, 32767).astype(np.int16)

    def _write(self, block: np.ndarray) -> None:
        try:
            self._output.write(block)
        except Exception as exc:
            # Losing the sound card mid-call is a state, not a crash: keep mixing (levels, stats).
            self.output_error = str(exc)
            log.warning("audio output failed, continuing without it: %s", exc)
            failed, self._output = self._output, NullOutput(self.output_error)
            with contextlib.suppress(Exception):
                failed.close()

    async def _run(self) -> None:
        period = self.block / self.sample_rate
        start = time.monotonic()
        self.started_at = time.time()
        count = 0
        while True:
            count += 1
            delay = start + count * period - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -MAX_CATCH_UP_S:
                if getattr(self._output, "timeline", False):
                    # a recording gets every block it is owed, now: one per loop pass would never catch
                    # up on a loop whose passes take longer than a block (a big room on two cores)
                    for _ in range(min(int(-delay / period), MAX_BURST_BLOCKS)):
                        self._write(self.mix_block())
                        count += 1
                else:  # starved or suspended: skip ahead rather than burst
                    start = time.monotonic() - count * period
            self._write(self.mix_block())

    async def close(self) -> None:
        """Stop the output loop and close the output (inputs' consumers end with their tracks)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._output.close()


class VideoSink:
    """Keeps only the newest frame of a track, converted to RGB lazily, on read.

    Counting is what happens per frame (cheap); conversion happens at most once per new frame and
    only when a reader (a UI at ≤ 15 fps) asks.  Conversion is serialized: a VideoFrame's
    converter is not thread-safe (DESIGN §7)."""

    def __init__(self) -> None:
        self.frames = 0  # frames received; also the sequence number of the newest
        self.last_frame_at: float | None = None  # monotonic time of the newest frame
        self._frame: av.VideoFrame | None = None
        self._rgb: tuple[int, np.ndarray] | None = None
        self._lock = threading.Lock()  # guards the slot (taken briefly by the loop per frame)
        self._convert_lock = threading.Lock()  # serializes conversions (readers only)
        self._reformatter = av.video.reformatter.VideoReformatter()

    async def consume(self, track: MediaStreamTrack) -> None:
        """Receive frames until the track ends."""
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if not isinstance(frame, av.VideoFrame):
                continue
            with self._lock:
                self._frame = frame
                self.frames += 1
                self.last_frame_at = time.monotonic()

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) of the newest frame."""
        frame = self._frame
        return (frame.width, frame.height) if frame is not None else None

    def latest(self) -> tuple[int, np.ndarray] | None:
        """(sequence number, H×W×3 uint8 RGB, read-only) of the newest frame; safe from any thread."""
        with self._convert_lock:
            with self._lock:
                frame, seq, cached = self._frame, self.frames, self._rgb
            if frame is None:
                return None
            if cached is not None and cached[0] == seq:
                return cached
            rgb = self._reformatter.reformat(frame, format="rgb24").to_ndarray()
            rgb.flags.writeable = False  # shared by every reader of this sequence number
            self._rgb = (seq, rgb)
            return self._rgb
