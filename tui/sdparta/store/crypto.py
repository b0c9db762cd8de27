"""Skynet registry cryptography, byte-compatible with skynet-js 4.x (checked against its vectors).

What skynet-js 4.3.0 does, and what this module reproduces:

- ``genKeyPairFromSeed(seed)``: sjcl ``misc.pbkdf2(seed, "", 1000, 256)``, i.e.
  PBKDF2-HMAC-SHA256 over the UTF-8 seed, empty salt, 1000 iterations, 32 bytes; those bytes are the
  ed25519 seed (tweetnacl ``sign.keyPair.fromSeed``).
- ``encodeNumber`` / ``encodeBigintAsUint64``: 8 bytes, little endian.
- ``encodePrefixedBytes(b)`` = ``encodeNumber(len(b)) || b``; ``encodeUtf8String(s)`` is the same over
  the UTF-8 bytes.
- ``hashDataKey(key)`` = blake2b-256(``encodeUtf8String(key)``).
- ``hashRegistryEntry`` = blake2b-256(hashed data key (32) || ``encodePrefixedBytes(data)`` ||
  ``encodeBigintAsUint64(revision)``); the entry signature is ed25519 over that 32-byte hash.
- skylinks: 34 raw bytes (2-byte little-endian bitfield + 32-byte root) as 46 characters of unpadded
  base64url. sdparta's portal uses blake2b-256 of the content as the root (bitfield 0), so a client
  can check every download against the link it asked for.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sdparta.store.base import MAX_ENTRY_DATA, InvalidEntry, RegistryEntry

SKYLINK_RAW_LEN = 34
SKYLINK_LEN = 46
_SKYLINK_RE = re.compile(r"^[A-Za-z0-9_-]{46}$")
#: Bitfield of a version-1 skylink for the whole file at offset 0 (what sdparta's portal issues).
SKYLINK_V1_BITFIELD = 0
#: Registry revisions are uint64 (skynet-js ``MAX_REVISION``).
MAX_REVISION = 2**64 - 1
PUBLIC_KEY_LEN = 32
DATA_KEY_LEN = 32
SIGNATURE_LEN = 64
#: skynet-js ``genKeyPairFromSeed`` parameters.
SEED_PBKDF2_ITERATIONS = 1000
SEED_PBKDF2_SALT = b""


class KeyPair:
    """An ed25519 keypair as skynet-js uses it (``publicKey`` = 32 raw bytes)."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public_key: bytes = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @classmethod
    def from_seed(cls, seed: str) -> KeyPair:
        """skynet-js ``genKeyPairFromSeed``: the same seed string gives the same keys in a browser."""
        derived = hashlib.pbkdf2_hmac("sha256", seed.encode("utf-8"), SEED_PBKDF2_SALT,
                                      SEED_PBKDF2_ITERATIONS, 32)
        return cls(Ed25519PrivateKey.from_private_bytes(derived))

    @classmethod
    def from_private_bytes(cls, seed: bytes) -> KeyPair:
        """From a raw 32-byte ed25519 seed (e.g. one derived by the room protocol)."""
        if len(seed) != 32:
            raise ValueError(f"an ed25519 seed has 32 bytes, not {len(seed)}")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def generate(cls) -> KeyPair:
        return cls(Ed25519PrivateKey.generate())

    @property
    def private_bytes(self) -> bytes:
        """The raw 32-byte ed25519 seed (keep it secret)."""
        return self._private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                           serialization.NoEncryption())

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def save(self, path: str | Path) -> None:
        """Write the seed as 64 hex digits, mode 0600, atomically (a crash never leaves half a key)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(self.private_bytes.hex() + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | Path) -> KeyPair:
        """Read a key written by :meth:`save`; a malformed file is a ValueError naming the file."""
        raw = Path(path).read_bytes()
        try:
            seed = bytes.fromhex(raw.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            seed = b""
        if len(seed) != 32:
            raise ValueError(f"{path} is not an sdparta key file (64 hex digits)")
        return cls.from_private_bytes(seed)

    @classmethod
    def load_or_create(cls, path: str | Path) -> KeyPair:
        """The key at ``path``, generated and saved there (0600) the first time."""
        if Path(path).exists():
            return cls.load(path)
        keypair = cls.generate()
        keypair.save(path)
        return keypair


def is_slot(public_key: bytes, data_key: bytes) -> bool:
    """Are these a 32-byte public key and a 32-byte hashed data key?"""
    return len(public_key) == PUBLIC_KEY_LEN and len(data_key) == DATA_KEY_LEN


def check_slot(public_key: bytes, data_key: bytes) -> None:
    """ValueError unless (public_key, data_key) names a registry slot: a caller's bug, not bad data."""
    if not is_slot(public_key, data_key):
        raise ValueError("a slot is a 32-byte public key and a 32-byte hashed data key")


def parse_revision(value: Any, problem: str = "registry answer has no valid uint64 revision") -> int:
    """A uint64 revision from JSON: a number or (skyd) a decimal string; InvalidEntry(problem) otherwise.

    Portal and client read revisions the same way; each names the problem in its own terms."""
    if isinstance(value, str) and value.isdigit() and len(value) <= 20:
        value = int(value)
    if type(value) is not int or not 0 <= value <= MAX_REVISION:
        raise InvalidEntry(problem)
    return value


def encode_number(value: int) -> bytes:
    """skynet-js ``encodeBigintAsUint64``: 8 bytes little endian."""
    if not 0 <= value <= MAX_REVISION:
        raise InvalidEntry(f"{value} does not fit in an unsigned 64-bit integer")
    return value.to_bytes(8, "little")


def encode_prefixed_bytes(data: bytes) -> bytes:
    """skynet-js ``encodePrefixedBytes``: 8-byte little-endian length, then the bytes."""
    return len(data).to_bytes(8, "little") + bytes(data)


def hash_data_key(key: str) -> bytes:
    """skynet-js ``hashDataKey``: the 32-byte data key the registry is actually keyed by."""
    return hashlib.blake2b(encode_prefixed_bytes(key.encode("utf-8")), digest_size=32).digest()


def hash_registry_entry(data_key_hash: bytes, data: bytes, revision: int) -> bytes:
    """skynet-js ``hashRegistryEntry`` for an already hashed data key: what the signature covers."""
    if len(data_key_hash) != DATA_KEY_LEN:
        raise InvalidEntry(f"a hashed data key has {DATA_KEY_LEN} bytes, not {len(data_key_hash)}")
    return hashlib.blake2b(bytes(data_key_hash) + encode_prefixed_bytes(data) + encode_number(revision),
                           digest_size=32).digest()


def sign_entry(keypair: KeyPair, data_key_hash: bytes, data: bytes, revision: int) -> RegistryEntry:
    """A signed registry entry for a hashed 32-byte data key."""
    signature = keypair.sign(hash_registry_entry(data_key_hash, data, revision))
    return RegistryEntry(keypair.public_key, bytes(data_key_hash), bytes(data), revision, signature)


def verify_entry(entry: RegistryEntry, max_data: int = MAX_ENTRY_DATA) -> bool:
    """True when the entry is well-formed (sizes, revision range) and its signature is valid."""
    if (not isinstance(entry.revision, int) or isinstance(entry.revision, bool)
            or not 0 <= entry.revision <= MAX_REVISION
            or len(entry.public_key) != PUBLIC_KEY_LEN or len(entry.data_key) != DATA_KEY_LEN
            or len(entry.signature) != SIGNATURE_LEN or len(entry.data) > max_data):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(bytes(entry.public_key)).verify(
            bytes(entry.signature), hash_registry_entry(entry.data_key, entry.data, entry.revision))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def encode_skylink(raw: bytes) -> str:
    """34 raw bytes → 46 characters of unpadded base64url (skynet-js ``encodeSkylinkBase64``)."""
    if len(raw) != SKYLINK_RAW_LEN:
        raise InvalidEntry(f"a skylink has {SKYLINK_RAW_LEN} bytes, not {len(raw)}")
    return base64.urlsafe_b64encode(bytes(raw)).decode("ascii").rstrip("=")


def decode_skylink(skylink: str) -> bytes:
    """46-character base64url → 34 bytes; refuses anything else, including non-canonical encodings
    (46 characters carry 4 spare bits, which must be zero so that one link has one spelling)."""
    if not isinstance(skylink, str) or not _SKYLINK_RE.match(skylink):
        raise InvalidEntry("a skylink is 46 characters of base64url (A-Z a-z 0-9 - _)")
    try:
        raw = base64.urlsafe_b64decode(skylink + "==")
    except (binascii.Error, ValueError) as exc:
        raise InvalidEntry(f"skylink is not valid base64url: {exc}") from None
    if len(raw) != SKYLINK_RAW_LEN or encode_skylink(raw) != skylink:
        raise InvalidEntry("skylink is not canonical base64url")
    return raw


def skylink_for_content(data: bytes) -> str:
    """The content-addressed skylink sdparta's portal gives ``data``: bitfield 0 + blake2b-256 root."""
    root = hashlib.blake2b(data, digest_size=32).digest()
    return encode_skylink(SKYLINK_V1_BITFIELD.to_bytes(2, "little") + root)


def content_matches(skylink: str, data: bytes) -> bool:
    """True when ``data`` is what a content-addressed sdparta skylink names."""
    return skylink_for_content(data) == skylink
