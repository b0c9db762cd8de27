"""Skynet registry cryptography, byte-compatible with skynet-js 4.x.

- ``genKeyPairFromSeed``: PBKDF2-HMAC-SHA256(seed, salt "", 1000 rounds, 32 bytes) → ed25519 seed.
- ``hashDataKey``: blake2b-256 of the UTF-8 key prefixed with its length (8 bytes, little endian).
- entry hash: blake2b-256(hashed data key || len(data) u64le || data || revision u64le); the entry
  signature is ed25519 over that hash.
- skylinks: 34 raw bytes (2-byte bitfield + 32-byte root) as 46 characters of unpadded base64url.
  sdparta's portal uses blake2b-256 of the content as the root, so downloads can be verified.
"""

from __future__ import annotations

import base64
import hashlib
import re

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sdparta.store.base import InvalidEntry, RegistryEntry

SKYLINK_RAW_LEN = 34
SKYLINK_LEN = 46
_SKYLINK_RE = re.compile(r"^[A-Za-z0-9_-]{46}$")
#: Bitfield of a version-1 skylink for the whole file at offset 0 (sdparta's portal).
SKYLINK_V1_BITFIELD = 0
MAX_REVISION = 2**64 - 1


class KeyPair:
    """An ed25519 keypair as skynet-js uses it."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public_key: bytes = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @classmethod
    def from_seed(cls, seed: str) -> KeyPair:
        """skynet-js ``genKeyPairFromSeed``."""
        derived = hashlib.pbkdf2_hmac("sha256", seed.encode("utf-8"), b"", 1000, 32)
        return cls(Ed25519PrivateKey.from_private_bytes(derived))

    @classmethod
    def from_private_bytes(cls, seed: bytes) -> KeyPair:
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def generate(cls) -> KeyPair:
        return cls(Ed25519PrivateKey.generate())

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)


def encode_prefixed_bytes(data: bytes) -> bytes:
    return len(data).to_bytes(8, "little") + data


def hash_data_key(key: str) -> bytes:
    """skynet-js ``hashDataKey``."""
    return hashlib.blake2b(encode_prefixed_bytes(key.encode("utf-8")), digest_size=32).digest()


def hash_registry_entry(data_key: bytes, data: bytes, revision: int) -> bytes:
    """skynet-js ``hashRegistryEntry`` for an already hashed data key."""
    if not 0 <= revision <= MAX_REVISION:
        raise InvalidEntry("revision out of range")
    return hashlib.blake2b(data_key + encode_prefixed_bytes(data) + revision.to_bytes(8, "little"),
                           digest_size=32).digest()


def sign_entry(keypair: KeyPair, data_key: bytes, data: bytes, revision: int) -> RegistryEntry:
    """A signed registry entry for a hashed 32-byte data key."""
    signature = keypair.sign(hash_registry_entry(data_key, data, revision))
    return RegistryEntry(keypair.public_key, data_key, data, revision, signature)


def verify_entry(entry: RegistryEntry, max_data: int = 113) -> bool:
    """True when the entry is well-formed and its signature is valid."""
    if (len(entry.public_key) != 32 or len(entry.data_key) != 32 or len(entry.signature) != 64
            or len(entry.data) > max_data or not 0 <= entry.revision <= MAX_REVISION):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(entry.public_key).verify(
            entry.signature, hash_registry_entry(entry.data_key, entry.data, entry.revision))
    except Exception:
        return False
    return True


def encode_skylink(raw: bytes) -> str:
    if len(raw) != SKYLINK_RAW_LEN:
        raise InvalidEntry(f"a skylink has {SKYLINK_RAW_LEN} bytes, not {len(raw)}")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_skylink(skylink: str) -> bytes:
    if not isinstance(skylink, str) or not _SKYLINK_RE.match(skylink):
        raise InvalidEntry("a skylink is 46 characters of base64url")
    return base64.urlsafe_b64decode(skylink + "==")


def skylink_for_content(data: bytes) -> str:
    """The content-addressed skylink sdparta's portal gives ``data``."""
    root = hashlib.blake2b(data, digest_size=32).digest()
    return encode_skylink(SKYLINK_V1_BITFIELD.to_bytes(2, "little") + root)


def content_matches(skylink: str, data: bytes) -> bool:
    """True when ``data`` is what a content-addressed sdparta skylink names."""
    return skylink_for_content(data) == skylink
