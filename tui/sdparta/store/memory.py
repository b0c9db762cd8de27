"""An in-process :class:`~sdparta.store.base.Store` with the portal's rules, for fast unit tests.

One ``MemoryStore`` is one shared "portal": give the same instance to several peers. It applies the
same validation as ``sdparta portal`` (signature, data size, growing revision, blob size, content
addressed skylinks), pushes updates to subscriptions like the websocket does (current value on
subscribe, then every accepted write), counts calls (``calls``) for cost assertions, and can
simulate an outage (``available = False``) or a portal without push (``push=False``).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

from sdparta.store.base import (
    DEFAULT_MAX_BLOB,
    MAX_ENTRY_DATA,
    InvalidEntry,
    RegistryEntry,
    RevisionConflict,
    Slot,
    StoreError,
    StoreUnavailable,
)
from sdparta.store.crypto import check_slot, decode_skylink, skylink_for_content, verify_entry
from sdparta.store.multi import UpdateMailbox


class MemorySubscription:
    """Push channel of a MemoryStore."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self.slots: set[Slot] = set()
        self._mailbox = UpdateMailbox()

    def deliver(self, entry: RegistryEntry) -> None:
        if (entry.public_key, entry.data_key) in self.slots:
            self._mailbox.put(entry)

    async def add(self, public_key: bytes, data_key: bytes) -> None:
        check_slot(public_key, data_key)
        slot = (public_key, data_key)
        if slot in self.slots:
            return
        self.slots.add(slot)
        current = self._store.entries.get(slot)
        if current is not None:
            self._mailbox.put(current)

    async def remove(self, public_key: bytes, data_key: bytes) -> None:
        self.slots.discard((public_key, data_key))
        self._mailbox.forget((public_key, data_key))

    def updates(self) -> AsyncIterator[RegistryEntry]:
        return self._mailbox.updates()

    def reconnect(self) -> None:
        """Nothing to reopen in memory."""

    async def aclose(self) -> None:
        self._mailbox.close()
        self._store._subscriptions.discard(self)


class MemoryStore:
    """Registry + blobs in dicts; same acceptance rules as the portal."""

    def __init__(self, *, push: bool = True, max_blob_bytes: int = DEFAULT_MAX_BLOB, name: str = "memory") -> None:
        self.name = name
        self.push = push
        self.max_blob_bytes = max_blob_bytes
        self.available = True
        self.entries: dict[Slot, RegistryEntry] = {}
        self.blobs: dict[str, bytes] = {}
        self.calls: Counter[str] = Counter()
        self._subscriptions: set[MemorySubscription] = set()

    def __repr__(self) -> str:
        return f"MemoryStore({self.name!r})"

    async def _enter(self, op: str) -> None:
        self.calls[op] += 1
        if not self.available:
            raise StoreUnavailable(f"store {self.name} is unavailable (simulated outage)")
        await asyncio.sleep(0)  # a real store always yields to the loop

    async def get_entry(self, public_key: bytes, data_key: bytes) -> RegistryEntry | None:
        await self._enter("get_entry")
        check_slot(public_key, data_key)
        return self.entries.get((public_key, data_key))

    async def set_entry(self, entry: RegistryEntry) -> None:
        await self._enter("set_entry")
        if len(entry.data) > MAX_ENTRY_DATA:
            raise StoreError(f"store {self.name} refused the registry write: registry data too big "
                             f"({len(entry.data)} > {MAX_ENTRY_DATA} bytes)")
        if not verify_entry(entry):
            raise StoreError(f"store {self.name} refused the registry write: invalid signature for this "
                             "registry entry")
        slot = (entry.public_key, entry.data_key)
        current = self.entries.get(slot)
        if current is not None and entry.revision <= current.revision:
            raise RevisionConflict(f"store {self.name}: revision number must be greater than the stored "
                                   f"revision ({entry.revision} <= {current.revision})")
        self.entries[slot] = entry
        for subscription in list(self._subscriptions):
            subscription.deliver(entry)

    async def upload_blob(self, data: bytes) -> str:
        await self._enter("upload_blob")
        if len(data) > self.max_blob_bytes:
            raise StoreError(f"store {self.name} refused the upload: upload too large "
                             f"(limit {self.max_blob_bytes} bytes)")
        skylink = skylink_for_content(bytes(data))
        self.blobs[skylink] = bytes(data)
        return skylink

    async def download_blob(self, skylink: str, max_size: int = DEFAULT_MAX_BLOB) -> bytes:
        await self._enter("download_blob")
        decode_skylink(skylink)
        data = self.blobs.get(skylink)
        if data is None:
            raise StoreError(f"skyfile {skylink} is not on store {self.name}")
        if len(data) > max_size:
            raise InvalidEntry(f"skyfile {skylink} is larger than {max_size} bytes")
        return data

    async def open_subscription(self) -> MemorySubscription | None:
        await self._enter("open_subscription")
        if not self.push:
            return None
        subscription = MemorySubscription(self)
        self._subscriptions.add(subscription)
        return subscription

    async def aclose(self) -> None:
        """Nothing to release: the data stays for the other peers sharing this instance."""
