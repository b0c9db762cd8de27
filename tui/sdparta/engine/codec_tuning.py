"""Opus and VP8 settings aiortc does not expose, per call.

aiortc fixes Opus at 96 kbit/s stereo and lets VP8 climb to 1.5 Mbit/s whatever the resolution;
it creates its encoders through ``aiortc.codecs.get_encoder``, which looks the classes up in that
module, and VP8's limits are module constants. There is no per-connection knob, so sdparta installs
(once per process) encoder classes that read the settings *in force on the thread that creates
them*: aiortc creates an encoder on the event loop that runs the sender, and every ``Call`` runs its
own loop on its own thread, which declares its settings with :func:`use`. Several calls with
different settings in one process each get their own (``tests/test_engine_codecs.py``).

Encoders made on a thread where no call declared settings use the process default set by
:func:`configure_opus` / :func:`configure_vp8`, or aiortc's own behaviour if neither was called.

This module is the one place that reaches into aiortc's codec internals (the encoder lookup and
VP8's name-mangled target bitrate); aiortc is pinned in pyproject.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

import aiortc.codecs as codecs
import aiortc.codecs.opus as opus
import aiortc.codecs.vpx as vpx
from av import AudioResampler, CodecContext

from sdparta.engine import defaults

_AIORTC_OPUS = opus.OpusEncoder
_AIORTC_VP8 = vpx.Vp8Encoder
# aiortc's own VP8 limits, read before anything could change them
_VP8_MIN, _VP8_START, _VP8_MAX = vpx.MIN_BITRATE, vpx.DEFAULT_BITRATE, vpx.MAX_BITRATE


@dataclass(frozen=True, slots=True)
class CodecSettings:
    """The encoder settings of one call."""

    opus_bitrate: int = defaults.OPUS_BITRATE
    opus_channels: int = defaults.OPUS_CHANNELS
    vp8_max_bitrate: int = defaults.VP8_MAX_BITRATE

    def __post_init__(self) -> None:
        if not 6000 <= self.opus_bitrate <= 510000:
            raise ValueError("Opus bitrate must be between 6000 and 510000 bit/s")
        if self.opus_channels not in (1, 2):
            raise ValueError("Opus channels must be 1 or 2")

    def open_opus(self, frame_samples: int = opus.SAMPLES_PER_FRAME) -> tuple[CodecContext, AudioResampler]:
        """A libopus encoder with these settings and a resampler cutting audio into ``frame_samples``."""
        layout = "mono" if self.opus_channels == 1 else "stereo"
        codec = CodecContext.create("libopus", "w")
        codec.bit_rate = self.opus_bitrate
        codec.format = "s16"
        codec.layout = layout
        # constrained VBR keeps the rate near the setting (plain VBR overshoots on tonal input)
        codec.options = {"application": "voip", "vbr": "constrained",
                         "frame_duration": str(frame_samples * 1000 // opus.SAMPLE_RATE)}
        codec.sample_rate = opus.SAMPLE_RATE
        codec.time_base = opus.TIME_BASE
        resampler = AudioResampler(format="s16", layout=layout, rate=opus.SAMPLE_RATE, frame_size=frame_samples)
        return codec, resampler

    @property
    def vp8_limits(self) -> tuple[int, int, int]:
        """(lowest, starting, highest) VP8 target bitrate for aiortc's own encoder."""
        cap = self.vp8_max_bitrate
        return (min(_VP8_MIN, max(cap // 4, 20_000)), min(_VP8_START, max(cap // 2, 25_000)), max(cap, 30_000))


_local = threading.local()
_process_default: CodecSettings | None = None  # for threads no call declared settings on
_install_lock = threading.Lock()


def use(settings: CodecSettings) -> None:
    """Encoders aiortc creates on the current thread from now on use ``settings``."""
    _install()
    _local.settings = settings


def in_force() -> CodecSettings | None:
    """The settings encoders created on this thread get (None: aiortc's own)."""
    return getattr(_local, "settings", None) or _process_default


def open_opus_encoder(frame_samples: int = opus.SAMPLES_PER_FRAME) -> tuple[CodecContext, AudioResampler]:
    """An Opus encoder with the settings in force on this thread (defaults if none)."""
    return (in_force() or CodecSettings()).open_opus(frame_samples)


def configure_opus(bitrate: int = defaults.OPUS_BITRATE, channels: int = defaults.OPUS_CHANNELS) -> None:
    """The process default's Opus settings (encoders made outside any call)."""
    global _process_default
    _process_default = replace(_process_default or CodecSettings(), opus_bitrate=bitrate, opus_channels=channels)
    _install()


def configure_vp8(max_bitrate: int = defaults.VP8_MAX_BITRATE) -> None:
    """The process default's VP8 cap (encoders made outside any call)."""
    global _process_default
    _process_default = replace(_process_default or CodecSettings(), vp8_max_bitrate=max_bitrate)
    _install()


class TunedOpusEncoder(_AIORTC_OPUS):
    """aiortc's encoder with the bitrate and channel layout in force where it is created."""

    def __init__(self) -> None:
        super().__init__()
        settings = in_force()
        if settings is not None:
            self.codec, self.resampler = settings.open_opus()


class TunedVp8Encoder(_AIORTC_VP8):
    """aiortc's encoder, its target bitrate kept within the limits in force where it is created."""

    def __init__(self) -> None:
        super().__init__()
        settings = in_force()
        self._limits = settings.vp8_limits if settings is not None else (_VP8_MIN, _VP8_START, _VP8_MAX)
        self._set_target(self._limits[1])

    def _set_target(self, bitrate: int) -> None:
        low, _, high = self._limits
        # aiortc keeps the target in a name-mangled attribute that encode() also reads directly
        self._Vp8Encoder__target_bitrate = max(low, min(bitrate, high))

    @property
    def target_bitrate(self) -> int:
        return self._Vp8Encoder__target_bitrate  # type: ignore[no-any-return]

    @target_bitrate.setter
    def target_bitrate(self, bitrate: int) -> None:
        self._set_target(bitrate)


def _install() -> None:
    with _install_lock:
        codecs.OpusEncoder = TunedOpusEncoder  # type: ignore[misc]  # get_encoder looks them up here
        codecs.Vp8Encoder = TunedVp8Encoder  # type: ignore[misc]
