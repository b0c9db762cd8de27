"""Codec settings belong to the call: aiortc's encoders made on a call's engine thread get that
call's Opus bitrate/channels and VP8 limits, even with several calls in one process."""

from __future__ import annotations

import threading
from fractions import Fraction
from typing import Any

import av
import numpy as np
import pytest
from aiortc.codecs import get_encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from sdparta.engine import codec_tuning, defaults
from sdparta.engine.call_config import CallConfig
from sdparta.engine.codec_tuning import CodecSettings

OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2)
VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000)


def encoders_made_under(settings: CodecSettings) -> dict[str, Any]:
    """What aiortc's get_encoder gives on a thread that declared ``settings`` (as a call's does)."""
    made: dict[str, Any] = {}

    def engine_thread() -> None:
        codec_tuning.use(settings)
        made["opus"], made["vp8"] = get_encoder(OPUS), get_encoder(VP8)

    thread = threading.Thread(target=engine_thread)
    thread.start()
    thread.join(30)
    return made


def test_two_calls_in_one_process_keep_their_own_encoder_settings() -> None:
    low = encoders_made_under(CodecSettings(opus_bitrate=16000, opus_channels=1, vp8_max_bitrate=100_000))
    high = encoders_made_under(CodecSettings(opus_bitrate=64000, opus_channels=2, vp8_max_bitrate=1_000_000))
    assert (low["opus"].codec.bit_rate, low["opus"].codec.layout.name) == (16000, "mono")
    assert (high["opus"].codec.bit_rate, high["opus"].codec.layout.name) == (64000, "stereo")
    # VP8: start at half the cap (at most aiortc's 500 kbit/s), bandwidth estimates clamped to the cap
    assert (low["vp8"].target_bitrate, high["vp8"].target_bitrate) == (50_000, 500_000)
    low["vp8"].target_bitrate = high["vp8"].target_bitrate = 5_000_000
    assert (low["vp8"].target_bitrate, high["vp8"].target_bitrate) == (100_000, 1_000_000)
    low["vp8"].target_bitrate = 1
    assert low["vp8"].target_bitrate == 25_000  # a quarter of the cap, at least 20 kbit/s


def test_the_vp8_encoder_encodes_at_the_calls_target() -> None:
    encoder = encoders_made_under(CodecSettings(vp8_max_bitrate=defaults.VP8_MAX_BITRATE))["vp8"]
    frame = av.VideoFrame.from_ndarray(np.zeros((120, 160, 3), dtype=np.uint8), format="rgb24").reformat(
        format="yuv420p")
    frame.pts, frame.time_base = 0, Fraction(1, 90000)
    payloads, _ = encoder.encode(frame)
    assert payloads
    assert encoder.codec.bit_rate == encoder.target_bitrate == defaults.VP8_MAX_BITRATE // 2


def test_defaults_and_limits() -> None:
    config = CallConfig(room="r", portals=[])
    assert config.codecs == CodecSettings(defaults.OPUS_BITRATE, defaults.OPUS_CHANNELS, defaults.VP8_MAX_BITRATE)
    assert config.connect_timeout == defaults.CONNECT_TIMEOUT
    with pytest.raises(ValueError, match="Opus bitrate"):
        CallConfig(room="r", portals=[], opus_bitrate=100).codecs  # noqa: B018
    with pytest.raises(ValueError, match="Opus channels"):
        CodecSettings(opus_channels=3)
