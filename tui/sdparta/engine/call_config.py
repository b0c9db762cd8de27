"""What a call needs; the CLI and the UI fill it from settings and flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from aiortc import RTCIceServer

from sdparta.engine import defaults
from sdparta.engine.codec_tuning import CodecSettings
from sdparta.room.events import SessionTiming
from sdparta.room.keys import Identity, RoomKeys
from sdparta.sfu.settings import SfuEntry
from sdparta.store.base import Store


@dataclass
class CallConfig:
    """Everything a call needs; the CLI and the UI fill it from settings and flags."""

    room: str
    portals: list[str]
    relays: list[str] = field(default_factory=list)  # Nostr relays (with the portals, if any)
    # neither portals nor relays named: 3 of defaults.PUBLIC_RELAYS, chosen by the room's keys
    public_relays: bool = False
    password: str = ""
    name: str = "anonymous"
    identity: Identity | None = None  # None: a fresh identity for this call
    identity_path: Path | None = None  # load/create the identity here (takes precedence), locked while the call runs
    # The user's default identity: when another running session holds identity_path, take the next
    # free profile (identity-2.key, …) instead of showing the same fingerprint twice (room/keys.py).
    identity_profiles: bool = False
    video: str = "pattern"  # pattern | camera | none
    audio: str = "tone:440"  # tone:HZ | mic | none
    audio_out: str = "none"  # device | none | path/to/file.wav
    audio_only: bool = False
    opus_bitrate: int = defaults.OPUS_BITRATE
    opus_channels: int = defaults.OPUS_CHANNELS
    video_width: int = defaults.VIDEO_WIDTH
    video_height: int = defaults.VIDEO_HEIGHT
    fps: int = defaults.FPS
    video_max_bitrate: int = defaults.VP8_MAX_BITRATE
    shared_encoding: bool = True  # encode each source once for all peers (see media/fanout.py)
    opus_frame_ms: int | None = None  # 20/40/60; None: 20 ms, 60 ms with more than 3 remotes (fewer packets)
    ice_servers: list[RTCIceServer] = field(default_factory=list)
    relay_only: bool = False
    share_turn: bool = False  # put our TURN relay into the room's sealed settings for everyone
    share_sfu: SfuEntry | None = None  # name this SFU in the room's sealed settings
    sfu_at: int = defaults.SFU_AT  # move onto the room's SFU at this many members (0: never)
    sfu_hold_s: float = defaults.SFU_HOLD_S  # small this long before going back to the mesh
    connect_timeout: float = defaults.CONNECT_TIMEOUT
    push: bool = True
    timing: SessionTiming | None = None
    relay_timing: SessionTiming | None = None  # the Nostr room's timers (room/nostr_room.py NOSTR_TIMING)
    store: Store | None = None  # inject a store (unit tests); default: open_store(portals)
    room_keys: RoomKeys | None = None  # pre-derived keys (benchmarks; skips the slow KDF)

    @property
    def codecs(self) -> CodecSettings:
        """This call's encoder settings (ValueError when out of range)."""
        return CodecSettings(self.opus_bitrate, self.opus_channels, self.video_max_bitrate)
