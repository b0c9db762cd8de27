"""Camera, microphone and sound-card access through PyAV.

A missing device is a state, never an exception (DESIGN §5): every ``open_*``/``probe_*`` here
returns a result carrying either the device or a human-readable reason.

Capture does not use aiortc's ``MediaPlayer``: its per-track queue is unbounded, so when nobody
reads the track (e.g. ``MediaRelay`` stops pulling while no peer is connected) a live device piles
up frames — memory grows and the next listener hears seconds-old audio.  :class:`CaptureTrack` reads
in its own thread into a short drop-oldest queue (latency over completeness) and converts there
(yuv420p at the requested size, s16 at 48 kHz), so the event loop only hands frames on.

ALSA pitfall (DESIGN §7): PyAV's bundled libasound looks for its configuration under a vendored
build path; :func:`ensure_alsa_config` points it at the system's files.  libasound also prints its
errors straight to file descriptor 2, which would scribble over a full-screen terminal UI; opens
here capture that output and turn it into the reason string instead.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import fractions
import glob
import logging
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

log = logging.getLogger(__name__)

__all__ = [
    "AudioDevice",
    "CaptureTrack",
    "DeviceResult",
    "ProbeResult",
    "audio_backends",
    "ensure_alsa_config",
    "open_camera",
    "open_microphone",
    "open_output_device",
    "probe_audio_output",
]

ALSA_CONFIG_FILE = "/usr/share/alsa/alsa.conf"
ALSA_CONFIG_DIR = "/usr/share/alsa"
CAPTURE_RATE = 48_000
CAPTURE_FRAME = CAPTURE_RATE // 50  # 20 ms, what the Opus encoder wants anyway
VIDEO_CLOCK = 90_000
#: Frames kept for a slow reader: 200 ms of audio, the two newest video frames.
AUDIO_QUEUE = 10
VIDEO_QUEUE = 2


@dataclass(frozen=True)
class DeviceResult:
    """A device track, or None and the reason it is missing (never an exception).

    ``error`` is the cause alone ("no /dev/video* devices", "alsa 'default': cannot find card…"),
    without a "no camera:" prefix: the caller says what is missing, once."""

    track: MediaStreamTrack | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.track is not None


@dataclass(frozen=True)
class ProbeResult:
    """What an output would be used (``name``, e.g. ``alsa:default``) or why there is none."""

    name: str | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.name is not None


def ensure_alsa_config() -> None:
    """Point PyAV's bundled libasound at the system ALSA configuration, unless the user did.

    Without this, opening ``default`` "succeeds" and the first write fails with EIO.  Both
    variables are needed: the top file and the directory its includes are relative to."""
    if "ALSA_CONFIG_PATH" not in os.environ and os.path.isfile(ALSA_CONFIG_FILE):
        os.environ["ALSA_CONFIG_PATH"] = ALSA_CONFIG_FILE
    if "ALSA_CONFIG_DIR" not in os.environ and os.path.isdir(ALSA_CONFIG_DIR):
        os.environ["ALSA_CONFIG_DIR"] = ALSA_CONFIG_DIR


def audio_backends() -> list[str]:
    """PyAV device formats to try for sound, best first (PyAV's wheels ship ALSA but not Pulse)."""
    return [fmt for fmt in ("pulse", "alsa") if fmt in av.formats_available]


_STDERR_LOCK = threading.Lock()
_ALSA_LINE = re.compile(r"^ALSA lib [^(]*\([^)]*\)\s*(?P<msg>.*)$")


@contextlib.contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Collect what native code writes to fd 2 meanwhile (the list is filled on exit).

    Process-wide and brief: only around device opens, serialized by a lock."""
    lines: list[str] = []
    with _STDERR_LOCK:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):
            yield lines  # no usable fd 2 (daemonized): nothing to capture
            return
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield lines
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                lines.extend(sink.read().decode(errors="replace").splitlines())


def _reason(what: str, exc: BaseException, stderr: list[str]) -> str:
    """``what: error`` plus libasound's own first complaint, which names the real cause."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    details = [m.group("msg") for m in map(_ALSA_LINE.match, stderr) if m and m.group("msg")]
    if details:
        text += f" (ALSA: {details[0]})"
    return f"{what}: {text}"


def _open_input(target: str, fmt: str | None, attempts: list[dict[str, str]],
                errors: list[str]) -> av.container.InputContainer | None:
    """Open ``target`` with the first option set that works, recording why each one failed."""
    for options in attempts:
        with _captured_stderr() as stderr:
            try:
                return av.open(target, "r", format=fmt, options=options, timeout=5.0)
            except Exception as exc:  # PyAV raises many types (OSError, ValueError, …)
                failure = exc
        reason = _reason(f"{fmt or 'auto'} {target!r}", failure, stderr)
        if reason not in errors:  # a retry without options usually fails the same way
            errors.append(reason)
    return None


class CaptureTrack(MediaStreamTrack):
    """A live PyAV input as an aiortc track: a reader thread decodes and converts, the loop only
    hands frames on.  The queue keeps the newest few frames; older ones are dropped and counted."""

    def __init__(self, kind: str, container: av.container.InputContainer, stream: av.stream.Stream,
                 convert: Callable[[av.AudioFrame | av.VideoFrame], list[av.AudioFrame | av.VideoFrame]],
                 max_queue: int, name: str) -> None:
        super().__init__()
        self.kind = kind
        self.name = name
        self.dropped = 0
        self.error: str | None = None
        self._container: av.container.InputContainer | None = container
        self._stream = stream
        self._convert = convert
        self._queue: collections.deque[av.AudioFrame | av.VideoFrame] = collections.deque(maxlen=max_queue)
        self._quit = threading.Event()
        self._ended = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[None] | None = None

    async def recv(self) -> av.AudioFrame | av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._thread = threading.Thread(target=self._read, name=f"capture-{self.kind}", daemon=True)
            self._thread.start()
        while not self._queue:
            if self._ended or self.readyState != "live":
                self.stop()
                raise MediaStreamError
            self._waiter = self._loop.create_future()  # type: ignore[union-attr]
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._queue.popleft()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _notify(self) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed at shutdown
                loop.call_soon_threadsafe(self._wake)

    def _read(self) -> None:
        container = self._container
        assert container is not None
        try:
            while not self._quit.is_set():
                try:
                    packet = next(container.demux(self._stream))
                except StopIteration:
                    break
                except av.FFmpegError as exc:
                    if exc.errno == errno.EAGAIN:
                        time.sleep(0.005)
                        continue
                    raise
                for frame in packet.decode():
                    for out in self._convert(frame):
                        if len(self._queue) == self._queue.maxlen:
                            self.dropped += 1
                        self._queue.append(out)
                    self._notify()
        except Exception as exc:
            self.error = f"{self.name}: {exc}"
            log.warning("capture from %s ended: %s", self.name, exc)
        finally:
            self._ended = True
            self._notify()
            self._close_container()

    def _close_container(self) -> None:
        container, self._container = self._container, None
        if container is not None:
            with contextlib.suppress(Exception):
                container.close()

    def stop(self) -> None:
        super().stop()
        self._quit.set()
        self._wake()
        thread = self._thread
        if thread is None:
            self._close_container()  # never started: nobody else will close it
        elif thread is not threading.current_thread():
            # A live read returns within one period (20 ms of audio, one video frame); the thread
            # closes the container itself, so a stuck read cannot race a close from here.
            thread.join(timeout=1.0)


def _video_converter(width: int, height: int) -> Callable[[av.VideoFrame], list[av.VideoFrame]]:
    """Reformat to yuv420p at our size, stamped by capture time on the 90 kHz clock."""
    reformatter = av.video.reformatter.VideoReformatter()
    time_base = fractions.Fraction(1, VIDEO_CLOCK)
    start: list[float] = []

    def convert(frame: av.VideoFrame) -> list[av.VideoFrame]:
        now = time.monotonic()
        if not start:
            start.append(now)
        out = reformatter.reformat(frame, width=width, height=height, format="yuv420p")
        out.pts = int((now - start[0]) * VIDEO_CLOCK)
        out.time_base = time_base
        return [out]

    return convert


def _audio_converter(channels: int) -> Callable[[av.AudioFrame], list[av.AudioFrame]]:
    """Resample to s16 at 48 kHz in 20 ms frames, stamped by a sample counter."""
    layout = "mono" if channels == 1 else "stereo"
    time_base = fractions.Fraction(1, CAPTURE_RATE)
    state = {"resampler": None, "samples": 0}

    def convert(frame: av.AudioFrame) -> list[av.AudioFrame]:
        if state["resampler"] is None:
            state["resampler"] = av.AudioResampler(format="s16", layout=layout, rate=CAPTURE_RATE,
                                                   frame_size=CAPTURE_FRAME)
        frame.pts = None  # device clocks jump; our counter is the timeline
        try:
            frames = state["resampler"].resample(frame)  # type: ignore[attr-defined]
        except ValueError:  # the device changed format mid-stream: start a new resampler
            state["resampler"] = None
            return convert(frame)
        for out in frames:
            out.pts = state["samples"]
            out.time_base = time_base
            state["samples"] += out.samples  # type: ignore[operator]
        return frames

    return convert


def open_camera(device: str | None = None, width: int = 160, height: int = 120, fps: int = 15, *,
                input_format: str = "v4l2") -> DeviceResult:
    """A camera as a yuv420p track at ``width``×``height``; ``DeviceResult(None, reason)`` if missing.

    With no ``device`` the first working ``/dev/video*`` node is used (some nodes are metadata
    only).  The camera is asked for our size and rate; if it refuses, it is opened at its default
    and scaled.  ``input_format`` exists for other PyAV inputs (``lavfi`` test sources, files)."""
    width, height = max(2, width - width % 2), max(2, height - height % 2)
    if input_format in ("v4l2", "video4linux2"):
        if device is None:
            candidates = sorted(glob.glob("/dev/video*"))
            if not candidates:
                return DeviceResult(None, "no /dev/video* devices")
        elif not os.path.exists(device):
            return DeviceResult(None, f"{device} does not exist")
        else:
            candidates = [device]
    else:
        if device is None:
            return DeviceResult(None, f"a {input_format} input needs a device string")
        candidates = [device]
    errors: list[str] = []
    wanted = {"video_size": f"{width}x{height}", "framerate": str(max(1, fps))}
    for candidate in candidates:
        container = _open_input(candidate, input_format, [wanted, {}], errors)
        if container is None:
            continue
        if not container.streams.video:
            container.close()
            errors.append(f"{candidate}: no video stream")
            continue
        stream = container.streams.video[0]
        track = CaptureTrack("video", container, stream, _video_converter(width, height),  # type: ignore[arg-type]
                             VIDEO_QUEUE, candidate)
        return DeviceResult(track, None)
    return DeviceResult(None, "; ".join(errors))


def open_microphone(device: str | None = None, *, channels: int = 1,
                    input_format: str | None = None) -> DeviceResult:
    """The microphone as s16 48 kHz 20 ms frames; Pulse when PyAV has it, else ALSA ``default``.

    ``input_format`` forces one PyAV input (e.g. ``lavfi`` with ``sine=…,arealtime`` in tests)."""
    if channels not in (1, 2):
        raise ValueError("channels must be 1 or 2")
    ensure_alsa_config()
    formats = [input_format] if input_format else audio_backends()
    if not formats:
        return DeviceResult(None, "this PyAV build has neither Pulse nor ALSA input")
    errors: list[str] = []
    wanted = {"sample_rate": str(CAPTURE_RATE), "channels": str(channels)}
    for fmt in formats:
        target = device or "default"
        attempts = [wanted, {}] if fmt in ("pulse", "alsa") else [{}]
        container = _open_input(target, fmt, attempts, errors)
        if container is None:
            continue
        if not container.streams.audio:
            container.close()
            errors.append(f"{fmt} {target!r}: no audio stream")
            continue
        track = CaptureTrack("audio", container, container.streams.audio[0],
                             _audio_converter(channels), AUDIO_QUEUE, f"{fmt}:{target}")  # type: ignore[arg-type]
        return DeviceResult(track, None)
    return DeviceResult(None, "; ".join(errors))


@dataclass
class AudioDevice:
    """An opened sound-card output: the PyAV container, its s16 stream and a display name."""

    container: av.container.OutputContainer
    stream: av.audio.stream.AudioStream
    name: str
    sample_rate: int
    channels: int
    samples_written: int = 0

    def write(self, block: np.ndarray) -> None:
        """Write an s16 block shaped (frames, channels); blocks while the card's buffer is full."""
        layout = "mono" if self.channels == 1 else "stereo"
        data = np.ascontiguousarray(block, dtype=np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(data, format="s16", layout=layout)
        frame.sample_rate = self.sample_rate
        frame.pts = self.samples_written
        frame.time_base = fractions.Fraction(1, self.sample_rate)
        self.samples_written += frame.samples
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.container.close()


def open_output_device(device: str | None = None, sample_rate: int = CAPTURE_RATE,
                       channels: int = 1) -> AudioDevice:
    """Open the sound card for s16 output and prove it by writing 20 ms of silence.

    The proof matters: PyAV opens an ALSA device lazily, so a missing card only shows on the
    first write.  Raises ``OSError`` whose message is the cause alone, e.g. "alsa 'default': cannot
    find card…" (callers turn it into a state and say what is missing)."""
    ensure_alsa_config()
    errors: list[str] = []
    target = device or "default"
    for fmt in audio_backends():
        opened: AudioDevice | None = None
        with _captured_stderr() as stderr:
            try:
                container = av.open(target, "w", format=fmt)
                stream = container.add_stream("pcm_s16le", rate=sample_rate)
                stream.layout = "mono" if channels == 1 else "stereo"  # type: ignore[union-attr]
                opened = AudioDevice(container, stream, f"{fmt}:{target}", sample_rate, channels)  # type: ignore[arg-type]
                opened.write(np.zeros((sample_rate // 50, channels), dtype=np.int16))
            except Exception as exc:
                failure = exc
                if opened is not None:
                    opened.close()
                opened = None
        if opened is not None:
            return opened
        errors.append(_reason(f"{fmt} {target!r}", failure, stderr))
    if not errors:
        errors.append("this PyAV build has neither Pulse nor ALSA output")
    raise OSError("; ".join(errors))


def probe_audio_output(device: str | None = None) -> ProbeResult:
    """Which sound output ``device`` mode would use, or why there is none (writes 20 ms of silence)."""
    try:
        opened = open_output_device(device)
    except OSError as exc:
        return ProbeResult(None, str(exc))
    opened.close()
    return ProbeResult(opened.name, None)
