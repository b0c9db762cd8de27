"""The engine's default settings, written once: ``CallConfig``, the codec tuning and the CLI's
settings layer (``config.py``) all take them from here."""

from __future__ import annotations

OPUS_BITRATE = 32000  # bit/s (aiortc alone: 96 000 stereo)
OPUS_CHANNELS = 1
VP8_MAX_BITRATE = 300_000  # bit/s (aiortc alone climbs to 1.5 Mbit/s at any resolution)
CONNECT_TIMEOUT = 20.0  # s: a pair not connected by then has failed (aiortc alone may wait minutes)
VIDEO_WIDTH = 160
VIDEO_HEIGHT = 120
FPS = 15
