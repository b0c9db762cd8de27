"""The room's wire format: sealed envelopes, signed message bodies, the presence list.

See docs/protocol.md for the byte layout and test vectors.  Everything read from the network
goes through :func:`open_envelope` / :func:`decode_presence` / :func:`decode_message`, which bound
sizes, authenticate, and raise :class:`WireError` on anything off.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sdparta import safe_json
from sdparta.room.keys import Identity, RoomKeys, verify_signature

MAGIC = b"SDP1"
NONCE_LEN = 12
SIG_LEN = 64
MAX_MESSAGE_BYTES = 64 * 1024  # one signalling message (an SDP is a few KiB)
MAX_PRESENCE_BYTES = 128 * 1024
MAX_MEMBERS = 64
MAX_NAME_CHARS = 48
MESSAGE_TYPES = frozenset({"offer", "answer", "bye"})
#: Our JSON bodies nest three levels deep at most; anything deeper is not one of ours.
MAX_JSON_DEPTH = 8
_SID_RE = re.compile(r"^[0-9a-f]{16}$")
_HEX_RE = re.compile(r"[0-9a-fA-F]*")


class WireError(ValueError):
    """A blob or message failed to open, verify or validate (dropped and counted, never fatal)."""


def load_json(raw: bytes, what: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Room JSON from the network (bounded nesting, see safe_json); every failure is a WireError."""
    try:
        return safe_json.loads(raw, max_depth=max_depth, what=what)
    except safe_json.JSONError as exc:
        raise WireError(str(exc)) from exc


def is_version_1(body: Any) -> bool:
    """``body`` is an object whose ``v`` is the number 1 — read as the page reads it (JSON ``1`` and
    ``1.0`` alike, never ``true``, which Python's ``True == 1`` would let through)."""
    version = body.get("v") if isinstance(body, dict) else None
    return isinstance(version, (int, float)) and not isinstance(version, bool) and version == 1


def strict_hex(value: Any, nbytes: int, what: str) -> bytes:
    """Exactly ``nbytes`` bytes written as hex digits, nothing else (``bytes.fromhex`` also takes spaces
    between bytes, which the page refuses: the two would disagree on a record)."""
    if not isinstance(value, str) or len(value) != 2 * nbytes or not _HEX_RE.fullmatch(value):
        raise WireError(f"{what} is not {nbytes} bytes of hex")
    return bytes.fromhex(value)


def _aad(keys: RoomKeys, kind: bytes, slot_public_key: bytes, data_key: bytes) -> bytes:
    return b"sdparta/v1/" + kind + b"\x00" + keys.room_id + slot_public_key + data_key


def seal(keys: RoomKeys, kind: bytes, slot_public_key: bytes, data_key: bytes, plaintext: bytes,
         nonce: bytes | None = None) -> bytes:
    """AES-256-GCM with the slot (public key + data key) bound as associated data, so a sealed
    blob cannot be replayed into another slot or room."""
    nonce = nonce if nonce is not None else os.urandom(NONCE_LEN)
    ciphertext = AESGCM(keys.seal_key).encrypt(nonce, plaintext, _aad(keys, kind, slot_public_key, data_key))
    return MAGIC + nonce + ciphertext


def open_sealed(keys: RoomKeys, kind: bytes, slot_public_key: bytes, data_key: bytes, blob: bytes,
                max_size: int) -> bytes:
    """Inverse of :func:`seal`; raises WireError for anything that is not ours."""
    if len(blob) > max_size:
        raise WireError(f"sealed blob too large ({len(blob)} > {max_size} bytes)")
    if len(blob) < len(MAGIC) + NONCE_LEN + 16 or not blob.startswith(MAGIC):
        raise WireError("not an sdparta v1 envelope")
    nonce = blob[len(MAGIC) : len(MAGIC) + NONCE_LEN]
    try:
        return AESGCM(keys.seal_key).decrypt(
            nonce, blob[len(MAGIC) + NONCE_LEN :], _aad(keys, kind, slot_public_key, data_key)
        )
    except InvalidTag as exc:
        raise WireError(_UNOPENED.get(kind, "envelope does not open for this slot")) from exc


#: Why a sealed blob in one of the room's slots does not open. The slots are found through the room's
#: keys, so "wrong password" is never the cause: the blob was sealed for another slot (copied there),
#: or written by a faulty or hostile member.
_UNOPENED = {
    b"msg": "message was sealed for another slot (copied from another member's pair slot: a replay), "
            "or is corrupt",
    b"presence": "presence list does not open for this room's presence slot (junk or a list copied from "
                 "another slot, written by a faulty or hostile member)",
    b"settings": "room settings do not open for this room's settings slot (junk or copied from another slot)",
}


def _message_signing_bytes(keys: RoomKeys, data_key: bytes, body: bytes) -> bytes:
    return b"sdparta/v1/msg\x00" + keys.room_id + data_key + body


def encode_message(keys: RoomKeys, author: Identity, data_key: bytes, body: dict[str, Any],
                   nonce: bytes | None = None) -> bytes:
    """Sign ``body`` with the author's identity and seal it for the author's pair slot."""
    raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    signature = author.sign(_message_signing_bytes(keys, data_key, raw))
    return seal(keys, b"msg", author.public_key, data_key, signature + raw, nonce)


def decode_message(keys: RoomKeys, author_public_key: bytes, data_key: bytes, blob: bytes) -> dict[str, Any]:
    """Open, verify and validate one pair-slot message."""
    plain = open_sealed(keys, b"msg", author_public_key, data_key, blob, MAX_MESSAGE_BYTES)
    signature, raw = plain[:SIG_LEN], plain[SIG_LEN:]
    if not verify_signature(author_public_key, signature, _message_signing_bytes(keys, data_key, raw)):
        raise WireError("message signature does not verify")
    body = load_json(raw, "message body")
    if not is_version_1(body):
        raise WireError("message body has an unknown version")
    if not isinstance(body.get("type"), str) or body["type"] not in MESSAGE_TYPES:
        raise WireError(f"unknown message type {str(body.get('type'))[:40]!r}")
    if not isinstance(body.get("name", ""), str):
        raise WireError("message field 'name' is not text")
    for field in ("from", "to"):
        if not isinstance(body.get(field), str) or not _SID_RE.fullmatch(body[field]):
            raise WireError(f"message field {field!r} is not a session id")
    if not isinstance(body.get("gen", 0), int) or isinstance(body.get("gen", 0), bool):
        raise WireError("message field 'gen' is not an integer")
    if body["type"] in ("offer", "answer") and not isinstance(body.get("sdp"), str):
        raise WireError("offer/answer without an SDP")
    return body


@dataclass(frozen=True, slots=True)
class Member:
    """One participant as announced in the presence list (signed by its own identity)."""

    public_key: bytes
    session_id: str
    name: str
    ts_ms: int
    signature: bytes

    @property
    def key(self) -> tuple[bytes, str]:
        return (self.public_key, self.session_id)


def _presence_signing_bytes(keys: RoomKeys, public_key: bytes, session_id: str, name: str, ts_ms: int) -> bytes:
    return (b"sdparta/v1/presence\x00" + keys.room_id + public_key + session_id.encode()
            + ts_ms.to_bytes(8, "big") + name.encode())


def sign_member(keys: RoomKeys, identity: Identity, session_id: str, name: str, ts_ms: int) -> Member:
    name = clean_name(name)
    signature = identity.sign(_presence_signing_bytes(keys, identity.public_key, session_id, name, ts_ms))
    return Member(identity.public_key, session_id, name, ts_ms, signature)


def clean_name(name: str) -> str:
    """Display names are short single-line printable text (no space left at the end by the cut:
    a name that does not read back as itself would make its member invisible)."""
    cleaned = "".join(ch for ch in name if ch.isprintable()).strip()[:MAX_NAME_CHARS].rstrip()
    return cleaned or "anonymous"


def readable_name(name: object) -> bool:
    """A name as a record may carry it: what :func:`clean_name` makes, also with characters this
    Python's Unicode database does not know yet (category Cn: a newer emoji a browser signed), so a
    member is never dropped for our Unicode version; the UI cleans names for display anyway."""
    return (isinstance(name, str) and 0 < len(name) <= MAX_NAME_CHARS and name == name.strip()
            and all(ch.isprintable() or unicodedata.category(ch) == "Cn" for ch in name))


def encode_presence(keys: RoomKeys, slot_public_key: bytes, data_key: bytes, members: list[Member],
                    nonce: bytes | None = None) -> bytes:
    """Seal the presence list."""
    body = {
        "v": 1,
        "members": [
            {"pk": m.public_key.hex(), "sid": m.session_id, "name": m.name, "ts": m.ts_ms,
             "sig": m.signature.hex()}
            for m in members
        ],
    }
    raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    return seal(keys, b"presence", slot_public_key, data_key, raw, nonce)


def decode_presence(keys: RoomKeys, slot_public_key: bytes, data_key: bytes,
                    blob: bytes) -> tuple[list[Member], int]:
    """Open the presence list; returns the valid members and how many records were rejected."""
    raw = open_sealed(keys, b"presence", slot_public_key, data_key, blob, MAX_PRESENCE_BYTES)
    body = load_json(raw, "presence list")
    if not is_version_1(body) or not isinstance(body.get("members"), list):
        raise WireError("presence list has an unknown shape")
    members: list[Member] = []
    rejected = 0
    for record in body["members"][: MAX_MEMBERS * 2]:
        try:
            member = _decode_member(keys, record)
        except (WireError, KeyError, TypeError, ValueError):
            rejected += 1
            continue
        members.append(member)
    return members[:MAX_MEMBERS], rejected


def _decode_member(keys: RoomKeys, record: Any) -> Member:
    if not isinstance(record, dict):
        raise WireError("member record is not an object")
    public_key = strict_hex(record["pk"], 32, "member public key")
    signature = strict_hex(record["sig"], SIG_LEN, "member signature")
    session_id, name, ts_ms = record["sid"], record["name"], record["ts"]
    if not isinstance(session_id, str) or not _SID_RE.fullmatch(session_id):
        raise WireError("bad session id")
    if not readable_name(name):
        raise WireError("bad name")
    if not isinstance(ts_ms, int) or isinstance(ts_ms, bool) or not 0 <= ts_ms < 2**63:
        raise WireError("bad timestamp")
    if not verify_signature(public_key, signature, _presence_signing_bytes(keys, public_key, session_id,
                                                                          name, ts_ms)):
        raise WireError("member record signature does not verify")
    return Member(public_key, session_id, name, ts_ms, signature)


# ---------------------------------------------------------------------- room settings
MAX_SETTINGS_BYTES = 8 * 1024
MAX_ROOM_TURN = 4
_TURN_URL_RE = re.compile(r"^turns?:[A-Za-z0-9.\-\[\]:]{1,200}(\?transport=(udp|tcp))?$")
#: The room's SFU entry is carried, not interpreted, here (the engine validates it with
#: sdparta.sfu.settings.parse_sfu_entry): a JSON object of at most this many bytes (canonical JSON)…
MAX_SFU_ENTRY_BYTES = 2048
#: … nesting at most this deep (the object itself is level 1; a Janus entry is flat).
MAX_SFU_ENTRY_DEPTH = 2
#: Settings timestamps stay within JavaScript's safe integers (the browser page orders them too).
MAX_SETTINGS_TS = 2**53 - 1


@dataclass(frozen=True, slots=True)
class TurnServer:
    """A TURN relay as shared in the room (long-term credential)."""

    url: str
    username: str
    credential: str


@dataclass(frozen=True, slots=True)
class RoomSettings:
    """Settings one participant shared with everyone holding the password (last writer wins: the
    record with the newest signed ``ts_ms`` is the room's)."""

    author: bytes  # the sharer's identity public key (who signed this record)
    ts_ms: int
    turn: tuple[TurnServer, ...]
    #: The room's SFU entry as carried (a bounded JSON object), or None: the room is a mesh.
    sfu: dict[str, Any] | None = None
    #: Why an ``sfu`` value in the record was dropped by the room's bounds (the rest is kept), if one was.
    sfu_rejected: str | None = dataclasses.field(default=None, compare=False)


def _depth(value: Any) -> int:
    """Container nesting of decoded JSON (already bounded by load_json, so the recursion is too)."""
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def check_sfu_entry(value: Any) -> dict[str, Any]:
    """The room's bounds on a carried SFU entry (not its meaning): a JSON object, ≤ MAX_SFU_ENTRY_BYTES
    as canonical JSON, nesting ≤ MAX_SFU_ENTRY_DEPTH. Raises WireError naming what is off."""
    if not isinstance(value, dict):
        raise WireError(f"the room's SFU entry is not an object ({type(value).__name__})")
    if _depth(value) > MAX_SFU_ENTRY_DEPTH:
        raise WireError(f"the room's SFU entry nests deeper than {MAX_SFU_ENTRY_DEPTH} levels")
    size = len(canonical_json(value))
    if size > MAX_SFU_ENTRY_BYTES:
        raise WireError(f"the room's SFU entry is {size} bytes, more than {MAX_SFU_ENTRY_BYTES}")
    return value


def _settings_signing_bytes(keys: RoomKeys, data_key: bytes, raw: bytes) -> bytes:
    return b"sdparta/v1/settings\x00" + keys.room_id + data_key + raw


def settings_body(author: Identity, turn: list[TurnServer] | tuple[TurnServer, ...], ts_ms: int,
                  sfu: dict[str, Any] | None = None) -> bytes:
    """The canonical settings body; ``sfu`` is present only when the room names one (so a TURN-only
    record is byte-identical to what readers before the SFU entry wrote and read)."""
    body: dict[str, Any] = {"v": 1, "author": author.public_key.hex(), "ts": ts_ms,
                            "turn": [{"url": t.url, "username": t.username, "credential": t.credential} for t in turn]}
    if sfu is not None:
        body["sfu"] = check_sfu_entry(sfu)
    return canonical_json(body)


def encode_settings(keys: RoomKeys, author: Identity, slot_public_key: bytes, data_key: bytes,
                    turn: list[TurnServer] | tuple[TurnServer, ...], ts_ms: int, nonce: bytes | None = None, *,
                    sfu: dict[str, Any] | None = None) -> bytes:
    """Sign the settings with the author's identity and seal them for the room's settings slot."""
    raw = settings_body(author, turn, ts_ms, sfu)
    signature = author.sign(_settings_signing_bytes(keys, data_key, raw))
    return seal(keys, b"settings", slot_public_key, data_key, signature + raw, nonce)


def decode_settings(keys: RoomKeys, slot_public_key: bytes, data_key: bytes, blob: bytes) -> RoomSettings:
    """Open, verify and validate the room settings; raises WireError for anything off. An ``sfu``
    value outside the room's bounds does not void the record: it is dropped (``sfu_rejected`` says
    why, the reader counts it) and the TURN part stays usable."""
    plain = open_sealed(keys, b"settings", slot_public_key, data_key, blob, MAX_SETTINGS_BYTES)
    signature, raw = plain[:SIG_LEN], plain[SIG_LEN:]
    body = load_json(raw, "room settings")
    try:
        author = strict_hex(body["author"], 32, "settings author")
        ts_ms, records = body["ts"], body["turn"]
    except (KeyError, TypeError, ValueError) as exc:
        raise WireError("room settings are malformed") from exc
    if (not is_version_1(body) or not isinstance(ts_ms, int) or isinstance(ts_ms, bool)
            or not 0 <= ts_ms <= MAX_SETTINGS_TS or not isinstance(records, list)):
        raise WireError("room settings have an unknown shape")
    if not verify_signature(author, signature, _settings_signing_bytes(keys, data_key, raw)):
        raise WireError("room settings signature does not verify")
    turn: list[TurnServer] = []
    for record in records[:MAX_ROOM_TURN]:
        if not isinstance(record, dict):
            raise WireError("a room TURN entry is not an object")
        url, user, credential = record.get("url"), record.get("username"), record.get("credential")
        if not isinstance(url, str) or not _TURN_URL_RE.fullmatch(url):
            raise WireError("a room TURN entry has an invalid URL")
        if not isinstance(user, str) or not isinstance(credential, str) or len(user) > 256 or len(credential) > 256:
            raise WireError("a room TURN entry has invalid credentials")
        turn.append(TurnServer(url, user, credential))
    sfu, rejected = None, None
    if body.get("sfu") is not None:
        try:
            sfu = check_sfu_entry(body["sfu"])
        except WireError as exc:
            rejected = str(exc)
    return RoomSettings(author, ts_ms, tuple(turn), sfu, rejected)
