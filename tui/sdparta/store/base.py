"""The storage interface the room protocol is written against.

Everything above ``sdparta.store`` sees only this module: a registry of signed, revisioned
key/value slots plus content-addressed blobs, optionally with push notifications.  Backends
(one Skynet portal over HTTP, several portals at once, an in-memory store for unit tests) all
implement :class:`Store`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

#: Skynet limits the data of one registry entry to 113 bytes.
MAX_ENTRY_DATA = 113
#: The largest skyfile: what sdparta's portal accepts by default and what a download reads at most
#: unless the caller says otherwise.
DEFAULT_MAX_BLOB = 4 * 1024 * 1024

#: A registry slot: (32-byte ed25519 public key, 32-byte hashed data key).
Slot = tuple[bytes, bytes]


class StoreError(Exception):
    """A store operation failed; the message says what to do next."""


class StoreUnavailable(StoreError):
    """No portal could be reached (network error, timeout, 5xx)."""


class RevisionConflict(StoreError):
    """A registry write was refused because its revision is not higher than the stored one."""


class InvalidEntry(StoreError):
    """Data from the network failed validation (bad signature, bad size, bad hash)."""


@dataclass(frozen=True, slots=True)
class RegistryEntry:
    """One signed registry slot value.

    ``data_key`` is the *hashed* data key (32 bytes, skynet-js ``hashDataKey``); the signature
    is ed25519 by ``public_key`` over ``hash_registry_entry(data_key, data, revision)``.
    """

    public_key: bytes
    data_key: bytes
    data: bytes
    revision: int
    signature: bytes


@runtime_checkable
class Subscription(Protocol):
    """A push channel for registry updates (Skynet's registry subscription websocket)."""

    async def add(self, public_key: bytes, data_key: bytes) -> None:
        """Start receiving updates of this slot."""

    async def remove(self, public_key: bytes, data_key: bytes) -> None:
        """Stop receiving updates of this slot."""

    def updates(self) -> AsyncIterator[RegistryEntry]:
        """Yield every pushed entry, already signature-verified, until closed."""

    def reconnect(self) -> None:
        """The network may have changed: reopen the channel now (it re-subscribes every slot)."""

    async def aclose(self) -> None:
        """Close the channel."""


@runtime_checkable
class Store(Protocol):
    """Registry + blob storage.  Reads verify signatures and hashes; bad data raises InvalidEntry
    or is skipped, never returned."""

    async def get_entry(self, public_key: bytes, data_key: bytes) -> RegistryEntry | None:
        """The newest valid entry of a slot, or None when the slot is empty."""

    async def set_entry(self, entry: RegistryEntry) -> None:
        """Store a signed entry; raises RevisionConflict when its revision does not grow."""

    async def upload_blob(self, data: bytes) -> str:
        """Store bytes, return their 46-character base64url skylink."""

    async def download_blob(self, skylink: str, max_size: int = ...) -> bytes:
        """Fetch bytes by skylink; the content is checked against the skylink's hash."""

    async def open_subscription(self) -> Subscription | None:
        """A push channel, or None when no reachable backend supports one (then poll)."""

    async def aclose(self) -> None:
        """Release connections."""
