"""Room keys (from room name + password) and participant identities.

Every key is derived with primitives a browser has in WebCrypto (PBKDF2-SHA256, HKDF-SHA256,
HMAC-SHA256, AES-256-GCM, Ed25519), so a web page can implement the same protocol.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

PROTOCOL_VERSION = 1
#: PBKDF2 iterations: slow enough to make guessing a room name+password expensive (~0.3 s here),
#: fast enough to join quickly.  Part of the wire format (docs/protocol.md).
KDF_ITERATIONS = 600_000
KDF_SALT = b"sdparta/room/v1"


def _normalize(text: str) -> bytes:
    return unicodedata.normalize("NFC", text).encode("utf-8")


@dataclass(frozen=True)
class RoomKeys:
    """The secrets everyone holding the room name and password can compute."""

    seal_key: bytes  # AES-256-GCM key for every message of the room
    tag_key: bytes  # HMAC key turning labels into opaque registry data keys
    presence_seed: bytes  # ed25519 seed of the shared presence slot's keypair
    room_id: bytes  # 16 bytes, public within the room; binds signatures to this room

    @classmethod
    def derive(cls, room: str, password: str = "", iterations: int = KDF_ITERATIONS) -> RoomKeys:
        """PBKDF2 over ``room NUL password`` then HKDF-Expand per purpose."""
        if not room.strip():
            raise ValueError("the room name must not be empty")
        secret = _normalize(room) + b"\x00" + _normalize(password)
        master = hashlib.pbkdf2_hmac("sha256", secret, KDF_SALT, iterations, 32)

        def expand(label: bytes, length: int = 32) -> bytes:
            return HKDFExpand(hashes.SHA256(), length, label).derive(master)

        return cls(
            seal_key=expand(b"sdparta/v1/seal"),
            tag_key=expand(b"sdparta/v1/tag"),
            presence_seed=expand(b"sdparta/v1/presence"),
            room_id=expand(b"sdparta/v1/room-id", 16),
        )

    def data_key(self, *parts: str) -> bytes:
        """An opaque 32-byte registry data key for a label (the portal learns nothing from it)."""
        return hmac.new(self.tag_key, "/".join(parts).encode(), hashlib.sha256).digest()


def fingerprint(public_key: bytes) -> str:
    """Short, human-comparable key fingerprint: 4 groups of 4 hex digits of SHA-256."""
    digest = hashlib.sha256(public_key).hexdigest()[:16]
    return ":".join(digest[i : i + 4] for i in range(0, 16, 4))


class Identity:
    """A participant's persistent ed25519 keypair."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public_key: bytes = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.seed: bytes = private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )

    @classmethod
    def generate(cls) -> Identity:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def load_or_create(cls, path: Path) -> Identity:
        """Load the identity at ``path`` or create it there (mode 0600)."""
        if path.exists():
            raw = path.read_bytes().strip()
            try:
                seed = bytes.fromhex(raw.decode("ascii"))
            except (UnicodeDecodeError, ValueError) as exc:
                raise ValueError(f"{path} is not an sdparta identity file (64 hex digits)") from exc
            if len(seed) != 32:
                raise ValueError(f"{path} is not an sdparta identity file (64 hex digits)")
            return cls.from_seed(seed)
        identity = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(identity.seed.hex() + "\n")
        return identity

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is a valid ed25519 signature of ``message`` by ``public_key``."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except Exception:
        return False
    return True


def new_session_id() -> str:
    """A random per-join session id (16 hex digits)."""
    return secrets.token_hex(8)
