"""The room's records as Nostr events carry them (docs/protocol.md §8).

Everything a relay stores is opaque: tags are room-keyed HMACs, ``content`` is the room's sealed
envelope (room/wire.py) in base64. A session publishes under a Nostr key of its own; its presence
record is signed by its identity *together with that Nostr key*, so the record is valid only under
the key that published it — a relay or another member cannot re-publish it as someone else, and a
leaving record from that key is the member's own goodbye.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from sdparta.room.keys import Identity, RoomKeys, verify_signature
from sdparta.room.wire import (
    SIG_LEN,
    Member,
    WireError,
    clean_name,
    is_version_1,
    load_json,
    open_sealed,
    readable_name,
    seal,
    strict_hex,
)

#: NIP-78 application data: an addressable kind, one record per (author, ``d`` tag).
APP_KIND = 30078
#: Sealed presence records are small; the bound keeps a hostile event cheap to reject.
MAX_PRESENCE_RECORD_BYTES = 2048
_SID_CHARS = frozenset("0123456789abcdef")


def _hex(raw: bytes) -> str:
    return raw.hex()


@dataclass(frozen=True, slots=True)
class RoomTags:
    """The room's opaque tag values (hex of HMACs under the room's tag key)."""

    keys: RoomKeys

    @property
    def room(self) -> str:
        """``#x`` of every presence record of the room: one filter finds all members."""
        return _hex(self.keys.data_key("nostr", "room"))

    @property
    def settings(self) -> str:
        return _hex(self.keys.data_key("nostr", "settings"))

    def to(self, session_id: str) -> str:
        """``#x`` of the pair messages addressed to one session (each reads only its own)."""
        return _hex(self.keys.data_key("nostr", "to", session_id))

    def presence_d(self, session_id: str) -> str:
        return _hex(self.presence_key(session_id))

    def presence_key(self, session_id: str) -> bytes:
        return self.keys.data_key("nostr", "presence", session_id)

    def pair_key(self, from_sid: str, to_sid: str) -> bytes:
        """The same data key as the portal's pair slot: a pair message is sealed identically."""
        return self.keys.data_key("pair", from_sid, to_sid)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def unb64(text: str, max_bytes: int) -> bytes:
    if len(text) > (max_bytes * 4) // 3 + 4:
        raise WireError(f"event content too large (over {max_bytes} bytes)")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise WireError("event content is not base64") from exc


def _presence_signing_bytes(keys: RoomKeys, public_key: bytes, session_id: str, nostr_key: bytes,
                            name: str, ts_ms: int) -> bytes:
    return (b"sdparta/v1/nostr-presence\x00" + keys.room_id + public_key + session_id.encode() + nostr_key
            + ts_ms.to_bytes(8, "big") + name.encode())


@dataclass(frozen=True, slots=True)
class PresenceRecord:
    """What one presence event says: the member is here (``member``) or has left (``member`` None)."""

    public_key: bytes  # the member's identity
    session_id: str
    ts_ms: int
    member: Member | None

    @property
    def key(self) -> tuple[bytes, str]:
        return (self.public_key, self.session_id)


def encode_presence_record(keys: RoomKeys, identity: Identity, session_id: str, nostr_key: bytes, name: str,
                           ts_ms: int, *, leaving: bool = False, nonce: bytes | None = None) -> bytes:
    """Seal our presence (or leaving) record for the event published under ``nostr_key`` (32 bytes)."""
    name = clean_name(name)
    signature = identity.sign(_presence_signing_bytes(keys, identity.public_key, session_id, nostr_key, name,
                                                      ts_ms))
    body = {"v": 1, "pk": identity.public_key.hex(), "sid": session_id, "name": name, "ts": ts_ms,
            "sig": signature.hex(), "left": leaving}
    raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    return seal(keys, b"nostr-presence", nostr_key, RoomTags(keys).presence_key(session_id), raw, nonce)


def decode_presence_record(keys: RoomKeys, nostr_key: bytes, d_tag: str, blob: bytes) -> PresenceRecord:
    """Open one presence event's content; raises WireError unless it is a valid record of the session
    the ``d`` tag names, signed for exactly this Nostr key."""
    tags = RoomTags(keys)
    body = _open_presence(keys, nostr_key, d_tag, blob)  # the AAD binds it to this key and d tag
    try:
        public_key, sig = strict_hex(body["pk"], 32, "member public key"), strict_hex(body["sig"], SIG_LEN, "signature")
        session_id, name, ts_ms, left = body["sid"], body["name"], body["ts"], body["left"]
    except (KeyError, TypeError, ValueError) as exc:
        raise WireError("presence record is malformed") from exc
    if not isinstance(session_id, str) or len(session_id) != 16 or not set(session_id) <= _SID_CHARS:
        raise WireError("bad session id")
    if tags.presence_d(session_id) != d_tag:
        raise WireError("presence record is for another session than its d tag")
    if not readable_name(name) or not isinstance(left, bool):
        raise WireError("bad name or flag")
    if not isinstance(ts_ms, int) or isinstance(ts_ms, bool) or not 0 <= ts_ms < 2**63:
        raise WireError("bad timestamp")
    if not verify_signature(
            public_key, sig, _presence_signing_bytes(keys, public_key, session_id, nostr_key, name, ts_ms)):
        raise WireError("presence record signature does not verify (not this member's, or not for this key)")
    member = None if left else Member(public_key, session_id, name, ts_ms, sig)
    return PresenceRecord(public_key, session_id, ts_ms, member)


def _open_presence(keys: RoomKeys, nostr_key: bytes, d_tag: str, blob: bytes) -> dict[str, Any]:
    try:
        data_key = bytes.fromhex(d_tag)
    except ValueError as exc:
        raise WireError("presence d tag is not hex") from exc
    if len(data_key) != 32:
        raise WireError("presence d tag has the wrong length")
    raw = open_sealed(keys, b"nostr-presence", nostr_key, data_key, blob, MAX_PRESENCE_RECORD_BYTES)
    body = load_json(raw, "presence record")
    if not is_version_1(body):
        raise WireError("presence record has an unknown version")
    return body
