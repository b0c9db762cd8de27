"""SkyDB v1 JSON, interoperable with skynet-js 4.x ``db.getJSON`` / ``db.setJSON`` / ``db.deleteJSON``.

Layout (what skynet-js writes and reads):
- the value is wrapped as ``{"_data": value, "_v": 2}`` and uploaded as a skyfile (skynet-js names
  the file ``dk:<hex of the UTF-8 data key>``, type application/json);
- the registry entry under (public key, ``hashDataKey(key)``) holds the raw 34-byte skylink, at
  revision previous + 1 (0 for a new key);
- 34 zero bytes mark a deleted value; 46 bytes are a legacy base64 skylink string; a skyfile without
  ``_data``/``_v`` is legacy (pre-v4) JSON returned as is.
skynet-js only accepts JSON objects as values; sdparta accepts any JSON value (a superset).
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from sdparta import safe_json
from sdparta.store.base import InvalidEntry, Store, StoreError
from sdparta.store.crypto import (
    MAX_REVISION,
    SKYLINK_LEN,
    SKYLINK_RAW_LEN,
    KeyPair,
    decode_skylink,
    encode_skylink,
    hash_data_key,
    sign_entry,
)

MAX_JSON_BYTES = 1024 * 1024
JSON_RESPONSE_VERSION = 2
DELETION_ENTRY_DATA = bytes(SKYLINK_RAW_LEN)


class SkyDBValue(NamedTuple):
    """A value read from SkyDB and the registry revision it was read at."""

    data: Any
    revision: int


def _public_key(keypair_or_pubkey: KeyPair | bytes) -> bytes:
    if isinstance(keypair_or_pubkey, KeyPair):
        return keypair_or_pubkey.public_key
    if isinstance(keypair_or_pubkey, bytes | bytearray) and len(keypair_or_pubkey) == 32:
        return bytes(keypair_or_pubkey)
    raise ValueError("expected a KeyPair or a 32-byte ed25519 public key")


def _data_link(data: bytes) -> str | None:
    """The skylink in an entry's data (raw or legacy base64), None for the deletion marker."""
    if data == DELETION_ENTRY_DATA:
        return None
    if len(data) == SKYLINK_RAW_LEN:
        return encode_skylink(data)
    if len(data) == SKYLINK_LEN:
        try:
            link = data.decode("ascii")
        except UnicodeDecodeError:
            link = ""
        decode_skylink(link)  # raises InvalidEntry when it is not a skylink
        return link
    raise InvalidEntry(f"registry entry data is {len(data)} bytes, not a skylink (not SkyDB data)")


async def get_json(store: Store, keypair_or_pubkey: KeyPair | bytes, data_key: str) -> SkyDBValue | None:
    """(value, revision), or None when the key was never set or was deleted."""
    entry = await store.get_entry(_public_key(keypair_or_pubkey), hash_data_key(data_key))
    if entry is None:
        return None
    link = _data_link(entry.data)
    if link is None:
        return None
    raw = await store.download_blob(link, max_size=MAX_JSON_BYTES)
    try:
        wrapped = safe_json.loads(raw)
    except safe_json.JSONError as exc:
        raise InvalidEntry(f"SkyDB skyfile for {data_key!r} is not JSON") from exc
    if isinstance(wrapped, dict) and "_data" in wrapped and "_v" in wrapped:
        return SkyDBValue(wrapped["_data"], entry.revision)
    return SkyDBValue(wrapped, entry.revision)  # legacy (pre skynet-js v4) JSON


def _next_revision(current: int | None) -> int:
    revision = 0 if current is None else current + 1
    if revision > MAX_REVISION:
        raise StoreError("this SkyDB entry already has the maximum revision; it cannot be updated")
    return revision


def encode_json(value: Any) -> bytes:
    """``JSON.stringify({_data: value, _v: 2})`` byte for byte (compact, UTF-8)."""
    try:
        text = json.dumps({"_data": value, "_v": JSON_RESPONSE_VERSION}, separators=(",", ":"),
                          ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"value cannot be stored as JSON: {exc}") from exc
    return text.encode("utf-8")


async def set_json(store: Store, keypair: KeyPair, data_key: str, value: Any) -> int:
    """Store ``value`` under ``data_key``; returns the new revision (previous + 1, or 0).

    Two writers racing on one key get RevisionConflict from the portal for the loser, who may
    re-read and retry (the registry write is compare-and-set on the revision).
    """
    blob = encode_json(value)
    if len(blob) > MAX_JSON_BYTES:
        raise StoreError(f"value is {len(blob)} bytes as JSON; SkyDB values here are limited to {MAX_JSON_BYTES}")
    hashed = hash_data_key(data_key)
    current = await store.get_entry(keypair.public_key, hashed)
    revision = _next_revision(current.revision if current else None)
    skylink = await store.upload_blob(blob)
    await store.set_entry(sign_entry(keypair, hashed, decode_skylink(skylink), revision))
    return revision


async def delete_json(store: Store, keypair: KeyPair, data_key: str) -> int | None:
    """skynet-js ``deleteJSON``: write the deletion marker; returns its revision (None if never set)."""
    hashed = hash_data_key(data_key)
    current = await store.get_entry(keypair.public_key, hashed)
    if current is None:
        return None
    revision = _next_revision(current.revision)
    await store.set_entry(sign_entry(keypair, hashed, DELETION_ENTRY_DATA, revision))
    return revision


__all__ = ["DELETION_ENTRY_DATA", "SkyDBValue", "delete_json", "encode_json", "get_json", "set_json"]
