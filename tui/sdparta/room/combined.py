"""One room over several networks at once: write to all, read from all, de-duplicate.

Each network (a portal session, a relay session) keeps its own view; this merges them for the
engine. A member is seen when the first network sees it and gone only when no network holds it any
more (a portal that went down lets its records go stale while a relay still carries them: nothing
changes for the call). A pair message arrives once even when every network delivers it, and never
after a newer one from the same member (networks deliver in any order).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from sdparta.room.events import RoomEvents, SessionCounters
from sdparta.room.rendezvous import NetworkState, Rendezvous, message_body
from sdparta.room.wire import Member, RoomSettings
from sdparta.store.base import StoreError

log = logging.getLogger(__name__)

#: Message digests remembered per member to drop the copies other networks deliver.
SEEN_PER_MEMBER = 32
#: A network that failed to join is tried again this often (seconds) while the others carry the room.
REJOIN_DELAY_S = (2.0, 30.0)


class _NetworkEvents(RoomEvents):
    """The events of one network, handed to the room that combines them."""

    def __init__(self, room: CombinedRoom, index: int) -> None:
        self.room = room
        self.index = index

    def member_seen(self, member: Member) -> None:
        self.room._seen(self.index, member)

    def member_gone(self, member: Member, status: str, reason: str) -> None:
        self.room._gone(self.index, member, status, reason)

    def message(self, member: Member, body: dict[str, Any], via: str = "") -> None:
        self.room._message(self.index, member, body, via)

    def invalid(self, reason: str) -> None:
        self.room.events.invalid(reason)

    def settings(self, settings: RoomSettings) -> None:
        self.room._settings(settings)

    def known_settings(self) -> RoomSettings | None:
        return self.room.settings

    def alive(self, member: Member) -> bool:
        return self.room.events.alive(member)

    def loop_failed(self, name: str, error: str) -> None:
        self.room.events.loop_failed(name, error)


def _digest(body: dict[str, Any]) -> bytes:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).digest()


class CombinedRoom:
    """A :class:`Rendezvous` made of several (each built with the events it must report to)."""

    def __init__(self, makers: Sequence[Callable[[RoomEvents], Rendezvous]], events: RoomEvents, *,
                 session_id: str, name: str, clock: Callable[[], float] = time.time) -> None:
        if not makers:
            raise ValueError("a room needs at least one network")
        self.events = events
        self.session_id = session_id
        self.name = name
        self.clock = clock
        self.parts: list[Rendezvous] = [make(_NetworkEvents(self, i)) for i, make in enumerate(makers)]
        self.settings: RoomSettings | None = None
        self._holders: dict[tuple[bytes, str], set[int]] = {}
        self._newest: dict[tuple[bytes, str], Member] = {}
        self._delivered: dict[tuple[bytes, str], deque[bytes]] = {}
        self._last_ts: dict[tuple[bytes, str], int] = {}
        self._joined: set[int] = set()
        self._rejoin: asyncio.Task[None] | None = None
        self._closing = False

    # ------------------------------------------------------------------ merged views
    @property
    def counters(self) -> SessionCounters:
        total = SessionCounters()
        for part in self.parts:
            for f in dataclasses.fields(SessionCounters):
                if f.name == "invalid_reasons":
                    for reason, n in part.counters.invalid_reasons.items():
                        total.invalid_reasons[reason] = total.invalid_reasons.get(reason, 0) + n
                else:
                    setattr(total, f.name, getattr(total, f.name) + getattr(part.counters, f.name))
        return total

    @property
    def push_active(self) -> bool:
        return any(part.push_active for part in self.parts)

    def members(self) -> list[Member]:
        return list(self._newest.values())

    def networks(self) -> list[NetworkState]:
        return [state for part in self.parts for state in part.networks()]

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Join on every network side by side; one is enough (the rest are retried in the background).
        Raises the first network's error when none can be reached."""
        pending = [i for i in range(len(self.parts)) if i not in self._joined]
        results = await asyncio.gather(*(self.parts[i].start() for i in pending), return_exceptions=True)
        errors: list[BaseException] = []
        for i, result in zip(pending, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, StoreError | OSError | TimeoutError):
                    raise result
                errors.append(result)
            else:
                self._joined.add(i)
        if not self._joined:
            raise errors[0] if isinstance(errors[0], StoreError) else StoreError(str(errors[0]))
        if len(self._joined) < len(self.parts) and self._rejoin is None:
            self._rejoin = asyncio.get_running_loop().create_task(self._rejoin_loop())

    async def _rejoin_loop(self) -> None:
        delay = REJOIN_DELAY_S[0]
        while not self._closing and len(self._joined) < len(self.parts):
            await asyncio.sleep(delay)
            for i in [i for i in range(len(self.parts)) if i not in self._joined]:
                try:
                    await self.parts[i].start()
                except (StoreError, OSError, TimeoutError) as exc:
                    log.info("network %d still cannot be joined: %s", i, exc)
                else:
                    self._joined.add(i)
            delay = min(delay * 2, REJOIN_DELAY_S[1])

    async def leave(self) -> None:
        self._closing = True
        await asyncio.gather(*(part.leave() for part in self.parts), return_exceptions=True)

    async def close(self) -> None:
        self._closing = True
        if self._rejoin is not None:
            self._rejoin.cancel()
            await asyncio.gather(self._rejoin, return_exceptions=True)
        await asyncio.gather(*(part.close() for part in self.parts), return_exceptions=True)

    # ------------------------------------------------------------------ commands
    async def send(self, member: Member, body: dict[str, Any]) -> None:
        await self.publish(member, message_body(self.session_id, self.name, member, int(self.clock() * 1000), body))

    async def publish(self, member: Member, message: dict[str, Any]) -> None:
        """The same message on every network; delivered if one network took it."""
        results = await asyncio.gather(*(part.publish(member, message) for part in self.parts),
                                       return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if len(errors) == len(results):
            raise errors[0] if isinstance(errors[0], StoreError) else StoreError(str(errors[0]))
        for error in errors:
            log.info("one network did not take the message: %s", error)

    async def watch(self, member: Member, active: bool) -> None:
        await asyncio.gather(*(part.watch(member, active) for part in self.parts), return_exceptions=True)

    def mark_pending(self, seconds: float = 10.0, *, urgent: bool = False) -> None:
        for part in self.parts:
            part.mark_pending(seconds, urgent=urgent)

    def clear_pending(self) -> None:
        for part in self.parts:
            part.clear_pending()

    def kick(self) -> None:
        for part in self.parts:
            part.kick()

    async def room_reachable(self, timeout: float = 1.0) -> bool:
        results = await asyncio.gather(*(part.room_reachable(timeout) for part in self.parts))
        return any(results)

    def expire_stale(self) -> None:
        for part in self.parts:
            part.expire_stale()

    # ------------------------------------------------------------------ merging events
    def _seen(self, index: int, member: Member) -> None:
        holders = self._holders.setdefault(member.key, set())
        first = not holders
        holders.add(index)
        known = self._newest.get(member.key)
        if known is None or member.ts_ms > known.ts_ms:
            self._newest[member.key] = member
        if first:
            self.events.member_seen(member)

    def _gone(self, index: int, member: Member, status: str, reason: str) -> None:
        holders = self._holders.get(member.key)
        if holders is None:
            return
        holders.discard(index)
        if holders:
            return  # another network still carries it
        del self._holders[member.key]
        newest = self._newest.pop(member.key, member)
        self._delivered.pop(member.key, None)
        self._last_ts.pop(member.key, None)
        self.events.member_gone(newest, status, reason)

    def _message(self, index: int, member: Member, body: dict[str, Any], via: str = "") -> None:
        """Deliver each message once, and never one older than a message already delivered."""
        ts = body.get("ts")
        if isinstance(ts, int) and ts < self._last_ts.get(member.key, -1):
            return
        digest = _digest(body)
        seen = self._delivered.setdefault(member.key, deque(maxlen=SEEN_PER_MEMBER))
        if digest in seen:
            return
        seen.append(digest)
        if isinstance(ts, int):
            self._last_ts[member.key] = ts
        self.events.message(self._newest.get(member.key, member), body, via)

    def _settings(self, settings: RoomSettings) -> None:
        """The newest record any network brings (by its signed ts) is the room's: told once each
        (every network delivers the same record)."""
        if self.settings is None or settings.ts_ms > self.settings.ts_ms:
            self.settings = settings
            self.events.settings(settings)
