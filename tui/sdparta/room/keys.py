"""Room keys (from room name + password) and participant identities.

Every key is derived with primitives a browser has in WebCrypto (PBKDF2-SHA256, HKDF-SHA256,
HMAC-SHA256, AES-256-GCM, Ed25519), so a web page can implement the same protocol.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
import secrets
import unicodedata
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: identity files are not locked
    fcntl = None  # type: ignore[assignment]

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


#: A second (third, …) concurrent session of one account takes the next free identity file:
#: identity.key, identity-2.key, …, identity-16.key — the same one each run while the others run.
MAX_IDENTITY_PROFILES = 16


class IdentityLock:
    """An exclusive ``flock`` on ``<identity file>.lock``, held while one session uses that identity.

    Two sessions of one identity show one fingerprint, which defeats comparing fingerprints out of
    band; the lock tells a second session to take another identity. The OS drops the lock when the
    process ends however it ends (a crash or SIGKILL never leaves a stale lock behind)."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    @classmethod
    def try_acquire(cls, key_path: Path) -> IdentityLock | None:
        """The lock for ``key_path``, or None when another running session holds it. Where the file
        system cannot lock (no fcntl, ENOLCK), a lock that guards nothing is returned."""
        lock_path = key_path.with_name(key_path.name + ".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)  # not inherited by child processes
        if fcntl is None:
            return cls(fd, lock_path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                return None
            # locking unsupported here (e.g. some network file systems): behave as before locks existed
        return cls(fd, lock_path)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def profile_path(path: Path, n: int) -> Path:
    """Profile ``n`` of the identity file ``path``: 1 is ``path`` itself, 2 is ``identity-2.key``…"""
    return path if n == 1 else path.with_name(f"{path.stem}-{n}{path.suffix}")


@dataclass
class ClaimedIdentity:
    """The identity a session runs with, the file it came from and the lock held on it."""

    identity: Identity
    path: Path | None  # None: a fresh identity for this session only (every profile was in use)
    lock: IdentityLock | None  # None: not locked (shared with another session, or no file)
    notice: tuple[str, str] | None = None  # (severity, text) to tell the user, if anything is unusual

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()


def claim_identity(path: Path, *, profiles: bool) -> ClaimedIdentity:
    """Load (or create) the identity at ``path`` and lock it for this session.

    With ``profiles`` (the user's default identity), a session that finds ``path`` in use by another
    running session takes the first free of ``identity-2.key``, ``identity-3.key``…, so a second
    terminal has a distinct fingerprint, the same one every time it is the second. Without (a file
    the user named), the file is used even when it is in use: the user asked for that identity."""
    candidates = [profile_path(path, n) for n in range(1, MAX_IDENTITY_PROFILES + 1)] if profiles else [path]
    for candidate in candidates:
        lock = IdentityLock.try_acquire(candidate)
        if lock is None:
            continue
        try:
            identity = Identity.load_or_create(candidate)
        except BaseException:
            lock.release()
            raise
        notice = None
        if candidate != path:
            notice = ("warning", f"another sdparta session is using {path.name}, so this one uses "
                                 f"{candidate.name}: your fingerprint here is {identity.fingerprint}")
        return ClaimedIdentity(identity, candidate, lock, notice)
    if not profiles:
        identity = Identity.load_or_create(path)
        return ClaimedIdentity(identity, path, None, (
            "warning", f"{path} is also in use by another running session: both show the fingerprint "
                       f"{identity.fingerprint}"))
    identity = Identity.generate()
    return ClaimedIdentity(identity, None, None, (
        "warning", f"{path.name} and its {MAX_IDENTITY_PROFILES - 1} profiles are all in use: this session "
                   f"uses a fresh identity for this call only, fingerprint {identity.fingerprint}"))


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
