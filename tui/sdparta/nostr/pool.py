"""Several relays as one: publish to all, one merged subscription stream de-duplicated by event id.

One relay down, refused or dead changes nothing for the others: a publish returns as soon as one
relay has accepted (the rest finish in the background and are counted per relay), relays that are
dead or refuse us are skipped at once, and every relay keeps its own reconnect loop. Each delivered
event names the relay that delivered it first ("which network carried this message").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sdparta.nostr.connection import DEFAULT_TIMEOUTS, RelayTimeouts
from sdparta.nostr.event import Event
from sdparta.nostr.relay import Relay
from sdparta.nostr.state import EventTooLarge, PublishResult, PublishStatus, RelayState, RelayStatus, SubscriptionLimit

#: Event ids remembered for de-duplication (per subscription).
SEEN_IDS = 20_000
#: Undelivered events kept per subscription; a reader this far behind loses the oldest (counted).
MAX_QUEUED = 10_000


@dataclass(frozen=True, slots=True)
class Received:
    """An event seen for the first time on any relay of the pool."""

    sub_id: str
    event: Event
    relay: str  # the URL that delivered it first


@dataclass
class PoolPublishResult:
    """Per-relay outcomes known when the publish returned; ``pending`` relays were still answering."""

    event_id: str
    results: dict[str, PublishResult] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return any(r.ok for r in self.results.values())

    @property
    def accepted_by(self) -> list[str]:
        return [url for url, r in self.results.items() if r.ok]


class PoolSubscription:
    """One merged, de-duplicated stream for one subscription id across every relay of the pool."""

    def __init__(self, pool: RelayPool, sub_id: str, filters: list[dict[str, Any]]) -> None:
        self.pool, self.sub_id, self.filters = pool, sub_id, filters
        self._queue: asyncio.Queue[Received | None] = asyncio.Queue()
        self.eose_from: set[str] = set()
        self._eose_changed = asyncio.Event()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.dropped = 0
        self.closed = False

    def _put(self, item: Received) -> None:
        if item.event.id in self._seen:
            return
        self._seen[item.event.id] = None
        if len(self._seen) > SEEN_IDS:
            self._seen.popitem(last=False)
        if self._queue.qsize() >= MAX_QUEUED:
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(item)

    def _eose(self, url: str) -> None:
        self.eose_from.add(url)
        self._eose_changed.set()

    async def events(self) -> AsyncIterator[Received]:
        """Every new event in arrival order until :meth:`close`."""
        while True:
            item = await self._queue.get()
            if item is None:
                return
            yield item

    def get_nowait(self) -> Received | None:
        try:
            item = self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None
        if item is None:
            self._queue.put_nowait(None)
        return item

    async def wait_stored(self, timeout: float) -> bool:
        """Wait until every open relay has sent its stored events (EOSE); False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            open_urls = {r.url for r in self.pool.relays.values() if r.is_open}
            if self.eose_from and open_urls <= self.eose_from:
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._eose_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._eose_changed.wait(), min(remaining, 0.25))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool._unsubscribe(self.sub_id)
            self._queue.put_nowait(None)


class RelayPool:
    """Relays by URL (duplicates merged; invalid URLs kept as DEAD entries so their status is visible)."""

    def __init__(self, urls: Iterable[str], *, timeouts: RelayTimeouts = DEFAULT_TIMEOUTS,
                 on_state: Callable[[RelayStatus], None] | None = None,
                 on_crash: Callable[[str, str], None] | None = None, **relay_options: Any) -> None:
        self.relays: dict[str, Relay] = {}
        for url in urls:
            relay = Relay(url, on_event=self._on_event, on_eose=self._on_eose, on_state=on_state,
                          on_crash=on_crash, timeouts=timeouts, **relay_options)
            self.relays.setdefault(relay.url, relay)
        if not self.relays:
            raise ValueError("a relay pool needs at least one relay URL")
        self.timeouts = timeouts
        self._subs: dict[str, PoolSubscription] = {}
        self._background: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        for relay in self.relays.values():
            await relay.start()

    async def close(self) -> None:
        for sub in list(self._subs.values()):
            sub.close()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*(relay.close() for relay in self.relays.values()), return_exceptions=True)

    def status(self) -> list[RelayStatus]:
        return [relay.status() for relay in self.relays.values()]

    async def wait_any_open(self, timeout: float) -> bool:
        """True once at least one relay is open (False after ``timeout`` or when none ever will be)."""
        waits = [asyncio.ensure_future(r.wait_open(timeout)) for r in self.relays.values()]
        try:
            for fut in asyncio.as_completed(waits):
                if await fut:
                    return True
            return False
        finally:
            for w in waits:
                w.cancel()

    # ------------------------------------------------------------------ incoming
    def _on_event(self, sub_id: str, event: Event, url: str) -> None:
        sub = self._subs.get(sub_id)
        if sub is not None:
            sub._put(Received(sub_id, event, url))

    def _on_eose(self, sub_id: str, url: str) -> None:
        sub = self._subs.get(sub_id)
        if sub is not None:
            sub._eose(url)

    # ------------------------------------------------------------------ subscriptions
    def subscribe(self, sub_id: str, filters: Sequence[Mapping[str, Any]]) -> PoolSubscription:
        """One subscription on every relay (a relay that cannot take it is skipped, as if down)."""
        if sub_id in self._subs:
            self._subs.pop(sub_id).close()
        sub = PoolSubscription(self, sub_id, [dict(f) for f in filters])
        self._subs[sub_id] = sub
        errors = []
        for relay in self.relays.values():
            try:
                relay.subscribe(sub_id, sub.filters)
            except (SubscriptionLimit, EventTooLarge) as exc:  # that relay only (bad ids/filters raise)
                errors.append(exc)
        if len(errors) == len(self.relays):
            self._subs.pop(sub_id, None)
            raise errors[0]
        return sub

    def _unsubscribe(self, sub_id: str) -> None:
        self._subs.pop(sub_id, None)
        for relay in self.relays.values():
            relay.close_subscription(sub_id)

    # ------------------------------------------------------------------ publishing
    async def publish(self, event: Event, *, timeout: float | None = None, wait_all: bool = False) -> PoolPublishResult:
        """Publish to every usable relay. Returns when one accepted (or all finished, with ``wait_all``).

        Raises EventTooLarge only when the event fits no relay at all."""
        result = PoolPublishResult(event.id)
        tasks: dict[asyncio.Task[PublishResult], str] = {}
        too_large: list[EventTooLarge] = []
        for url, relay in self.relays.items():
            if relay.state in (RelayState.DEAD, RelayState.REFUSED, RelayState.CLOSED):
                result.results[url] = PublishResult(url, event.id, _skipped(relay.state), relay.reason or "")
                continue
            try:
                relay.check_fits(event)
            except EventTooLarge as exc:
                too_large.append(exc)
                result.results[url] = PublishResult(url, event.id, PublishStatus.TOO_LARGE, str(exc))
                continue
            tasks[asyncio.ensure_future(relay.publish(event, timeout=timeout))] = url
        if too_large and len(too_large) == len(self.relays):
            raise too_large[0]
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                result.results[tasks[task]] = task.result()
            if not wait_all and result.ok:
                break
        for task in pending:  # finish in the background; their outcome is in each relay's counters
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            task.add_done_callback(_consume)
        result.pending = {tasks[t] for t in pending}
        return result


def _skipped(state: RelayState) -> PublishStatus:
    return {RelayState.REFUSED: PublishStatus.REFUSED, RelayState.CLOSED: PublishStatus.CLOSED}.get(
        state, PublishStatus.TIMEOUT)


def _consume(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" for a background publish
