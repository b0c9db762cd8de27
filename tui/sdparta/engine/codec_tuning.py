"""Opus and VP8 settings aiortc does not expose (it fixes Opus at 96 kbit/s stereo and lets VP8
climb to 1.5 Mbit/s whatever the resolution).  Process-wide: one call per process."""

from __future__ import annotations

import aiortc.codecs as codecs
import aiortc.codecs.opus as opus
import aiortc.codecs.vpx as vpx
from av import AudioResampler, CodecContext

_ORIGINAL_OPUS = opus.OpusEncoder
OPUS_SETTINGS = {"bitrate": 32000, "channels": 1}  # the last configure_opus() call (read by the fan-out)


def open_opus_encoder(frame_samples: int = opus.SAMPLES_PER_FRAME) -> tuple[CodecContext, AudioResampler]:
    """A libopus encoder with our settings and a resampler cutting audio into ``frame_samples``."""
    bitrate, channels = OPUS_SETTINGS["bitrate"], OPUS_SETTINGS["channels"]
    layout = "mono" if channels == 1 else "stereo"
    codec = CodecContext.create("libopus", "w")
    codec.bit_rate = bitrate
    codec.format = "s16"
    codec.layout = layout
    # constrained VBR keeps the rate near the setting (plain VBR overshoots on tonal input)
    codec.options = {"application": "voip", "vbr": "constrained",
                     "frame_duration": str(frame_samples * 1000 // opus.SAMPLE_RATE)}
    codec.sample_rate = opus.SAMPLE_RATE
    codec.time_base = opus.TIME_BASE
    resampler = AudioResampler(format="s16", layout=layout, rate=opus.SAMPLE_RATE, frame_size=frame_samples)
    return codec, resampler


def configure_opus(bitrate: int = 32000, channels: int = 1) -> None:
    """Make every Opus encoder created from now on use ``bitrate`` bit/s and ``channels``."""
    if not 6000 <= bitrate <= 510000:
        raise ValueError("Opus bitrate must be between 6000 and 510000 bit/s")
    if channels not in (1, 2):
        raise ValueError("Opus channels must be 1 or 2")
    OPUS_SETTINGS.update(bitrate=bitrate, channels=channels)

    class TunedOpusEncoder(_ORIGINAL_OPUS):
        """aiortc's encoder with our bitrate and channel layout."""

        def __init__(self) -> None:
            super().__init__()
            self.codec, self.resampler = open_opus_encoder()

    codecs.OpusEncoder = TunedOpusEncoder  # type: ignore[misc]  # get_encoder looks it up here


def configure_vp8(max_bitrate: int = 300_000) -> None:
    """Cap VP8's bitrate (aiortc's module constants are the only knob)."""
    vpx.MAX_BITRATE = max(max_bitrate, 30_000)
    vpx.MIN_BITRATE = min(vpx.MIN_BITRATE, max(max_bitrate // 4, 20_000))
    vpx.DEFAULT_BITRATE = min(vpx.DEFAULT_BITRATE, max(max_bitrate // 2, 25_000))
