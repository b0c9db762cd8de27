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

#: Used only when neither a portal nor a relay is configured (real use with no server of one's own;
#: tests and the demo always name their own). Each room picks 3 of these by its keys
#: (room/networks.py public_relays), so all its members meet on the same ones; dead entries are
#: skipped fast and the rest carry the room. The public list churns (damus.io announced its shutdown
#: for July 2026 and is left out): keep it short and update it here.
PUBLIC_RELAYS = (
    "wss://nos.lol/",
    "wss://relay.primal.net/",
    "wss://relay.nostr.band/",
    "wss://nostr.mom/",
    "wss://relay.snort.social/",
    "wss://offchain.pub/",
    "wss://nostr.oxtr.dev/",
    "wss://relay.nostr.bg/",
)
PUBLIC_RELAYS_PER_ROOM = 3
PUBLIC_STUN = ("stun:stun.l.google.com:19302",)

#: A room that names an SFU moves onto it at this many members (us included). Each member's uplink in a
#: mesh is N−1 copies of its streams (~330 kbit/s each with video at the defaults): at 4 that is ~1 Mbit/s,
#: past what many home uplinks and phones hold alongside everything else, while the SFU sends one copy
#: whatever N. Below it the mesh is better: no server sees the media (Janus decrypts it) and no extra hop.
#: Jitsi moves at 3; 4 keeps the common 1:1 and 1:2 calls end-to-end encrypted.
SFU_AT = 4
#: Back to the mesh only after the room stayed below SFU_AT members this long (no flapping).
SFU_HOLD_S = 30.0
