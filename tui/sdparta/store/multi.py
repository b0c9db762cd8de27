"""Several portals as one store: write to all, read from all, keep the highest valid revision.

Entries are signed, so a portal can withhold or serve stale data but never forge one: a read takes
the highest revision that verifies, and any reachable portal suffices. Because a portal could also
*claim* a revision conflict to block writers, a conflict only counts when that portal can show a
signed entry at least as new as ours (``set_entry``). Stale or empty portals are repaired in the
background with the newest entry a read found (read-repair), so a portal that lost its database
catches up without anyone re-writing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, TypeVar

from sdparta.store.base import (
    DEFAULT_MAX_BLOB,
    RegistryEntry,
    RevisionConflict,
    Slot,
    Store,
    StoreError,
    StoreUnavailable,
    Subscription,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Downloads ask the next portal if the current one has not answered after this long (hedging).
DOWNLOAD_HEDGE_S = 0.4
#: At most this many read-repair writes in flight; more are skipped (a later read repairs them).
MAX_REPAIRS_IN_FLIGHT = 32


class UpdateMailbox:
    """Pending pushed entries: the newest per slot, in arrival order, never older than one already
    delivered. A slow reader therefore sees the latest state of every slot instead of an unbounded
    backlog, and the same update arriving from two portals (or again after a re-subscribe) is
    delivered once."""

    def __init__(self) -> None:
        self._pending: dict[Slot, RegistryEntry] = {}
        self._delivered: dict[Slot, int] = {}
        self._event = asyncio.Event()
        self._closed = False

    def put(self, entry: RegistryEntry) -> bool:
        """Queue ``entry`` unless its slot already has that revision or a newer one."""
        slot = (entry.public_key, entry.data_key)
        pending = self._pending.get(slot)
        if self._closed or entry.revision <= self._delivered.get(slot, -1) or (
                pending is not None and pending.revision >= entry.revision):
            return False
        self._pending[slot] = entry  # keeps the slot's place in line: no starvation
        self._event.set()
        return True

    def forget(self, slot: Slot) -> None:
        """After an unsubscribe: a later subscribe delivers the slot's value again."""
        self._pending.pop(slot, None)
        self._delivered.pop(slot, None)

    def close(self) -> None:
        self._closed = True
        self._event.set()

    @property
    def closed(self) -> bool:
        return self._closed

    async def updates(self) -> AsyncIterator[RegistryEntry]:
        while True:
            while not self._pending:
                if self._closed:
                    return
                self._event.clear()
                await self._event.wait()
            if self._closed:
                return
            slot = next(iter(self._pending))
            entry = self._pending.pop(slot)
            self._delivered[slot] = entry.revision
            yield entry


class MultiSubscription:
    """Merges the push channels of the portals that have one (each update delivered once)."""

    def __init__(self, subscriptions: list[Subscription]) -> None:
        self._subs = subscriptions
        self._mailbox = UpdateMailbox()
        self._tasks = [asyncio.create_task(self._pump(s)) for s in subscriptions]

    async def _pump(self, sub: Subscription) -> None:
        try:
            async for entry in sub.updates():
                self._mailbox.put(entry)
        except Exception:  # one broken channel must not end the others
            log.exception("a portal's push channel failed")

    async def add(self, public_key: bytes, data_key: bytes) -> None:
        await asyncio.gather(*(s.add(public_key, data_key) for s in self._subs), return_exceptions=True)

    async def remove(self, public_key: bytes, data_key: bytes) -> None:
        self._mailbox.forget((public_key, data_key))
        await asyncio.gather(*(s.remove(public_key, data_key) for s in self._subs), return_exceptions=True)

    def updates(self) -> AsyncIterator[RegistryEntry]:
        return self._mailbox.updates()

    def reconnect(self) -> None:
        for sub in self._subs:
            sub.reconnect()

    async def aclose(self) -> None:
        self._mailbox.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(s.aclose() for s in self._subs), return_exceptions=True)


def _describe(errors: Sequence[BaseException]) -> str:
    return "; ".join(str(e) or type(e).__name__ for e in errors[:4])


class MultiStore:
    """A :class:`~sdparta.store.base.Store` over several stores (usually one PortalClient per portal)."""

    def __init__(self, stores: Sequence[Store]) -> None:
        if not stores:
            raise ValueError("MultiStore needs at least one store")
        self.stores = list(stores)
        self._repairs: set[asyncio.Task[None]] = set()

    @staticmethod
    async def _all(calls: Sequence[Awaitable[T]]) -> list[T | BaseException]:
        """Run in parallel; programming errors still propagate, store errors come back as values."""
        results = await asyncio.gather(*calls, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, StoreError):
                raise result
        return list(results)

    # ------------------------------------------------------------------ registry
    async def get_entry(self, public_key: bytes, data_key: bytes) -> RegistryEntry | None:
        """The highest valid revision any reachable portal has; portals that are down or return
        garbage are skipped. StoreUnavailable only when no portal gave a usable answer."""
        results = await self._all([s.get_entry(public_key, data_key) for s in self.stores])
        entries = [r for r in results if isinstance(r, RegistryEntry)]
        errors = [r for r in results if isinstance(r, BaseException)]
        if not entries and len(errors) == len(results):
            raise StoreUnavailable(f"no portal could read the registry: {_describe(errors)}")
        if not entries:
            return None
        # Equal revisions with different content are possible after a split write; every reader
        # must pick the same one, so break ties on the signature bytes.
        best = max(entries, key=lambda e: (e.revision, e.signature))
        stale = [s for s, r in zip(self.stores, results, strict=True)
                 if r is None or (isinstance(r, RegistryEntry) and r.revision < best.revision)]
        for store in stale:
            self._repair(store, best)
        return best

    def _repair(self, store: Store, entry: RegistryEntry) -> None:
        """Copy a newer signed entry to a portal that lacks it, in the background."""
        if len(self._repairs) >= MAX_REPAIRS_IN_FLIGHT:
            return

        async def run() -> None:
            with contextlib.suppress(StoreError):
                await store.set_entry(entry)

        task = asyncio.create_task(run())
        self._repairs.add(task)
        task.add_done_callback(self._repairs.discard)

    async def wait_repairs(self) -> None:
        """Wait for background read-repairs (tests, clean shutdown)."""
        while self._repairs:
            await asyncio.gather(*list(self._repairs), return_exceptions=True)

    async def set_entry(self, entry: RegistryEntry) -> None:
        """Write to every store in parallel.

        Succeeds when at least one store took the entry and no store proved a conflict. A conflict
        is proved when that store shows a valid entry with a revision >= ours (other than ours):
        the caller must then re-read and retry, otherwise readers (who take the highest revision)
        would never see this write. A store that claims a conflict but cannot show such an entry
        is treated as a failed write, so one lying portal cannot block writers.
        """
        results = await self._all([s.set_entry(entry) for s in self.stores])
        succeeded = sum(1 for r in results if r is None)
        claimed = [(s, r) for s, r in zip(self.stores, results, strict=True) if isinstance(r, RevisionConflict)]
        proven: list[RevisionConflict] = []
        if claimed:
            shown = await self._all([s.get_entry(entry.public_key, entry.data_key) for s, _ in claimed])
            for (_store, conflict), current in zip(claimed, shown, strict=True):
                if not isinstance(current, RegistryEntry) or current.revision < entry.revision:
                    continue  # unproven claim (or a read error): ignore it
                if current.revision == entry.revision and current.signature == entry.signature:
                    succeeded += 1  # the portal already had exactly this entry (e.g. a retry)
                    continue
                proven.append(conflict)
        if proven:
            raise RevisionConflict(f"{proven[0]} (a newer entry exists; re-read and retry)")
        if succeeded:
            return
        errors = [r for r in results if isinstance(r, BaseException)]
        if all(isinstance(e, StoreUnavailable) for e in errors):
            raise StoreUnavailable(f"no portal could write the registry: {_describe(errors)}")
        raise StoreError(f"no portal accepted the registry write: {_describe(errors)}")

    # ------------------------------------------------------------------ blobs
    async def upload_blob(self, data: bytes) -> str:
        """Upload to every store; the skylink of the first that succeeded (they are content
        addressed, so all sdparta portals return the same one)."""
        results = await self._all([s.upload_blob(data) for s in self.stores])
        links = [r for r in results if isinstance(r, str)]
        if links:
            return links[0]
        errors = [r for r in results if isinstance(r, BaseException)]
        if all(isinstance(e, StoreUnavailable) for e in errors):
            raise StoreUnavailable(f"no portal could store the skyfile: {_describe(errors)}")
        raise StoreError(f"no portal accepted the skyfile: {_describe(errors)}")

    async def download_blob(self, skylink: str, max_size: int = DEFAULT_MAX_BLOB) -> bytes:
        """The first verified content. Stores are asked in order; the next one is also asked when
        the current one fails or is slow (hedged after DOWNLOAD_HEDGE_S), so a black-holed portal
        costs a fraction of a second, not a timeout."""
        pending: set[asyncio.Task[bytes]] = set()
        errors: list[BaseException] = []
        queue = list(self.stores)
        try:
            while queue or pending:
                if queue:
                    pending.add(asyncio.create_task(queue.pop(0).download_blob(skylink, max_size=max_size)))
                done, pending = await asyncio.wait(pending, timeout=DOWNLOAD_HEDGE_S if queue else None,
                                                   return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    exc = task.exception()
                    if exc is None:
                        return task.result()
                    if not isinstance(exc, StoreError):
                        raise exc
                    errors.append(exc)
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        if errors and all(isinstance(e, StoreUnavailable) for e in errors):
            raise StoreUnavailable(f"no portal could serve skyfile {skylink}: {_describe(errors)}")
        raise StoreError(f"no portal could serve skyfile {skylink}: {_describe(errors)}")

    # ------------------------------------------------------------------ push
    async def open_subscription(self) -> Subscription | None:
        """Merged push of every store that offers it; None when none does (then poll).

        When this is cancelled (a join stopped half-way) or one store fails with a bug, the channels
        that did open are closed before the error propagates: nobody else holds them."""
        tasks = [asyncio.ensure_future(s.open_subscription()) for s in self.stores]
        try:
            results: list[Any] = await asyncio.gather(*tasks, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException) and not isinstance(result, StoreError):
                    raise result
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            opened = [t.result() for t in tasks if not t.cancelled() and t.exception() is None]
            await asyncio.gather(*(s.aclose() for s in opened if s is not None), return_exceptions=True)
            raise
        subs = [r for r in results if r is not None and not isinstance(r, BaseException)]
        return MultiSubscription(subs) if subs else None

    async def aclose(self) -> None:
        for task in list(self._repairs):
            task.cancel()
        await asyncio.gather(*list(self._repairs), return_exceptions=True)
        await asyncio.gather(*(s.aclose() for s in self.stores), return_exceptions=True)
