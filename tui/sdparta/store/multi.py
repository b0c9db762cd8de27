"""Several portals as one store: write to all, read from all, keep the highest valid revision.

Entries are signed, so a portal can withhold or serve stale data but never forge: a read takes
the highest revision that verifies, and any reachable portal suffices.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sdparta.store.base import (
    RegistryEntry,
    RevisionConflict,
    Store,
    StoreError,
    StoreUnavailable,
    Subscription,
)


class MultiSubscription:
    """Merges the push channels of the portals that have one."""

    def __init__(self, subscriptions: list[Subscription]) -> None:
        self._subs = subscriptions
        self._queue: asyncio.Queue[RegistryEntry] = asyncio.Queue(maxsize=10_000)
        self._seen: dict[tuple[bytes, bytes], int] = {}
        self._tasks = [asyncio.create_task(self._pump(s)) for s in subscriptions]

    async def _pump(self, sub: Subscription) -> None:
        async for entry in sub.updates():
            slot = (entry.public_key, entry.data_key)
            if self._seen.get(slot, -1) >= entry.revision:
                continue  # the same update from a second portal
            self._seen[slot] = entry.revision
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(entry)

    async def add(self, public_key: bytes, data_key: bytes) -> None:
        await asyncio.gather(*(s.add(public_key, data_key) for s in self._subs))

    async def remove(self, public_key: bytes, data_key: bytes) -> None:
        await asyncio.gather(*(s.remove(public_key, data_key) for s in self._subs))

    async def updates(self) -> AsyncIterator[RegistryEntry]:
        while True:
            yield await self._queue.get()

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*(s.aclose() for s in self._subs), return_exceptions=True)


class MultiStore:
    """A :class:`Store` over several stores."""

    def __init__(self, stores: Sequence[Store]) -> None:
        if not stores:
            raise ValueError("MultiStore needs at least one store")
        self.stores = list(stores)

    async def _all(self, calls: list[Any]) -> list[Any]:
        return list(await asyncio.gather(*calls, return_exceptions=True))

    @staticmethod
    def _fail(results: list[Any], what: str) -> StoreError:
        errors = [r for r in results if isinstance(r, BaseException)]
        detail = "; ".join(str(e) for e in errors[:3])
        if all(isinstance(e, StoreUnavailable) for e in errors):
            return StoreUnavailable(f"no portal could {what}: {detail}")
        return StoreError(f"no portal could {what}: {detail}")

    async def get_entry(self, public_key: bytes, data_key: bytes) -> RegistryEntry | None:
        results = await self._all([s.get_entry(public_key, data_key) for s in self.stores])
        entries = [r for r in results if isinstance(r, RegistryEntry)]
        if entries:
            return max(entries, key=lambda e: e.revision)
        if any(r is None for r in results):
            return None
        raise self._fail(results, "read the registry")

    async def set_entry(self, entry: RegistryEntry) -> None:
        results = await self._all([s.set_entry(entry) for s in self.stores])
        if any(r is None for r in results):
            return
        if any(isinstance(r, RevisionConflict) for r in results):
            raise next(r for r in results if isinstance(r, RevisionConflict))
        raise self._fail(results, "write the registry")

    async def upload_blob(self, data: bytes) -> str:
        results = await self._all([s.upload_blob(data) for s in self.stores])
        links = [r for r in results if isinstance(r, str)]
        if links:
            return links[0]
        raise self._fail(results, "store the skyfile")

    async def download_blob(self, skylink: str, max_size: int = 4 * 1024 * 1024) -> bytes:
        errors: list[Any] = []
        for store in self.stores:
            try:
                return await store.download_blob(skylink, max_size=max_size)
            except StoreError as exc:
                errors.append(exc)
        raise self._fail(errors, "serve the skyfile")

    async def open_subscription(self) -> Subscription | None:
        results = await self._all([s.open_subscription() for s in self.stores])
        subs = [r for r in results if r is not None and not isinstance(r, BaseException)]
        return MultiSubscription(subs) if subs else None

    async def aclose(self) -> None:
        await self._all([s.aclose() for s in self.stores])
