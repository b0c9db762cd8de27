"""Where the mixed audio goes: nothing, a WAV file or the sound card — and the one parser of a
user's choice of output (``--audio-out`` / ``--record-audio``), used by the command line to refuse a
bad choice before anything starts and by :func:`open_audio_output` when the call opens it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from sdparta.media.devices import AudioDevice, open_output_device

log = logging.getLogger(__name__)

__all__ = [
    "AudioOutput",
    "AudioOutputSpec",
    "DeviceOutput",
    "NullOutput",
    "WavFileOutput",
    "open_audio_output",
    "parse_audio_output",
]

AUDIO_RATE = 48_000
#: Header rewrite + flush interval of a WAV recording: a killed process loses at most this much.
WAV_SYNC_S = 0.5


class AudioOutput(Protocol):
    """Where the mixed audio goes: s16 blocks shaped (frames, channels), in real time.

    ``timeline``: the output is a recording of the call's time (a file), so a mixer that fell behind
    writes every block it owes instead of skipping ahead — a sound card must not get a burst, a WAV
    must not lose the seconds a starved process slept through."""

    timeline: bool

    def write(self, block: np.ndarray) -> None: ...
    def close(self) -> None: ...


class NullOutput:
    """Discards audio; ``reason`` says why there is no real output (shown to the user)."""

    timeline = False

    def __init__(self, reason: str | None = None) -> None:
        self.reason = reason
        self.blocks_written = 0

    def write(self, block: np.ndarray) -> None:
        self.blocks_written += 1

    def close(self) -> None:
        pass


class WavFileOutput:
    """A 16-bit PCM WAV recording that stays readable while being written.

    The stdlib ``wave`` writer patches the RIFF/data sizes on demand; we do it (and flush) every
    ``WAV_SYNC_S`` and on close, so another process can read the file meanwhile and a killed
    process still leaves a valid file with everything but the last half second."""

    timeline = True

    def __init__(self, path: str | Path, sample_rate: int = AUDIO_RATE, channels: int = 1) -> None:
        self.path = Path(path)
        self.sample_rate, self.channels = sample_rate, channels
        self.frames_written = 0
        self._file = self.path.open("wb")
        try:
            # Both stay open for the recording's lifetime; close() ends them.
            self._wav = wave.open(self._file, "wb")  # noqa: SIM115
            self._wav.setnchannels(channels)
            self._wav.setsampwidth(2)
            self._wav.setframerate(sample_rate)
            self._wav.writeframes(b"")  # header now, so even an empty recording is a valid file
            self._file.flush()
        except BaseException:
            self._file.close()
            raise
        self._last_sync = time.monotonic()
        self._closed = False

    def write(self, block: np.ndarray) -> None:
        if self._closed:
            raise ValueError(f"{self.path}: recording is closed")
        data = np.asarray(block, dtype="<i2")
        if data.ndim != 2 or data.shape[1] != self.channels:
            data = data.reshape(-1, self.channels)
        self._wav.writeframesraw(data.tobytes())
        self.frames_written += data.shape[0]
        now = time.monotonic()
        if now - self._last_sync >= WAV_SYNC_S:
            self.sync()
            self._last_sync = now

    def sync(self) -> None:
        """Rewrite the header for what has been written so far and push it to the OS."""
        if not self._closed:
            self._wav.writeframes(b"")  # patches the RIFF and data sizes
            self._file.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._wav.close()  # final header patch; does not close a file object it was given
        finally:
            self._file.close()


class DeviceOutput:
    """The sound card through PyAV (Pulse or ALSA), written from its own thread.

    A sound card write blocks while the card's buffer is full; that must never stall the event
    loop that also runs ICE and RTP, so writes go through a short queue (oldest dropped when the
    card falls behind) to a writer thread.  A device error surfaces on the next ``write``."""

    timeline = False

    def __init__(self, device: str | None = None, sample_rate: int = AUDIO_RATE, channels: int = 1,
                 queue_blocks: int = 10) -> None:
        self._device: AudioDevice = open_output_device(device, sample_rate, channels)  # OSError if missing
        self.name = self._device.name
        self.sample_rate, self.channels = sample_rate, channels
        self.error: str | None = None
        self.dropped = 0
        self.blocks_written = 0
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=queue_blocks)
        self._thread = threading.Thread(target=self._run, name="audio-out", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while (block := self._queue.get()) is not None:
                self._device.write(block)
                self.blocks_written += 1
        except Exception as exc:
            self.error = f"{self.name}: {exc}"
            log.warning("audio output failed: %s", self.error)
        finally:
            self._device.close()

    def _put(self, item: np.ndarray | None) -> None:
        while True:
            try:
                self._queue.put_nowait(item)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()
                    self.dropped += 1

    def write(self, block: np.ndarray) -> None:
        if self.error is not None:
            raise OSError(self.error)
        if not self._thread.is_alive():
            raise OSError(f"{self.name}: output is closed")
        self._put(np.array(block, dtype=np.int16, copy=True))

    def close(self) -> None:
        if self._thread.is_alive():
            self._put(None)
            self._thread.join(timeout=2.0)


@dataclass(frozen=True)
class AudioOutputSpec:
    """Where received audio should go: ``device`` (``name`` None = the default card), ``none`` or
    ``wav`` (``path``)."""

    kind: str  # device | none | wav
    name: str | None = None
    path: Path | None = None


def parse_audio_output(spec: str) -> AudioOutputSpec:
    """``device`` | ``device:NAME`` (e.g. ``device:hw:1``, ``device:null``) | ``none`` (or empty) |
    ``FILE.wav``. For a file, its directory must exist and be writable (and the path must not be a
    directory). ValueError says what is wrong; the command line shows it before anything starts,
    and :func:`open_audio_output` parses with this same function."""
    text = spec.strip()
    if text in ("", "none"):
        return AudioOutputSpec("none")
    if text == "device" or text.startswith("device:"):
        return AudioOutputSpec("device", name=text.partition(":")[2] or None)
    if not text.lower().endswith(".wav"):
        raise ValueError("not an audio output (expected device, device:NAME, none or FILE.wav)")
    path = Path(text).expanduser()
    folder = path.parent
    if path.is_dir():
        raise ValueError("that is a directory: name a WAV file in it")
    if not folder.is_dir():
        raise ValueError(f"the directory {folder} does not exist (create it, or record elsewhere)")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ValueError("cannot write there (permission denied): record elsewhere")
    return AudioOutputSpec("wav", path=path)


def open_audio_output(spec: str, sample_rate: int = AUDIO_RATE, channels: int = 1) -> tuple[AudioOutput, str]:
    """Turn a user's choice (see :func:`parse_audio_output`) into an output and a state word; never
    raises for a missing device or an unwritable file. States: ``device`` | ``wav`` | ``none`` |
    ``missing``; when ``missing`` the output is a :class:`NullOutput` whose ``reason`` says why."""
    try:
        wanted = parse_audio_output(spec)
    except ValueError as exc:
        return NullOutput(f"audio output {spec.strip()}: {exc}"), "missing"
    if wanted.kind == "none":
        return NullOutput(), "none"
    if wanted.kind == "device":
        try:
            return DeviceOutput(wanted.name, sample_rate, channels), "device"
        except OSError as exc:
            log.info("%s", exc)
            return NullOutput(str(exc)), "missing"
    assert wanted.path is not None
    try:
        return WavFileOutput(wanted.path, sample_rate, channels), "wav"
    except OSError as exc:
        return NullOutput(f"cannot write {spec.strip()}: {exc.strerror or exc}"), "missing"
