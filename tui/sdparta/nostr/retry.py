"""Backoff delays and the queue of events held back while a relay says ``rate-limited:``."""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Hashable

from sdparta.nostr.event import Event, kind_class

#: Held-back events per relay; beyond this the oldest is dropped (a room re-announces anyway).
MAX_HELD_BACK = 64


class Backoff:
    """Exponential delays with ±25 % jitter (peers that failed together must not retry in lockstep).
    ``until`` is free for the owner to record the end of the current hold-back (loop time)."""

    def __init__(self, first: float, maximum: float, factor: float = 2.0) -> None:
        self.first, self.maximum, self.factor = first, maximum, factor
        self._current = first
        self.until = 0.0

    def next(self) -> float:
        delay = self._current
        self._current = min(self._current * self.factor, self.maximum)
        return delay * random.uniform(0.75, 1.25)

    def reset(self) -> None:
        self._current = self.first
        self.until = 0.0


def supersede_key(event: Event) -> Hashable:
    """Events that replace each other on a relay share a key: only the newest of them is worth sending."""
    cls = kind_class(event.kind)
    if cls == "addressable":
        return event.address
    if cls == "replaceable":
        return (event.kind, event.pubkey)
    return event.id


class RetryQueue:
    """Events waiting to be re-sent, oldest first; a newer version of a record replaces the older one."""

    def __init__(self, maximum: int = MAX_HELD_BACK) -> None:
        self._events: OrderedDict[Hashable, Event] = OrderedDict()
        self.maximum = maximum
        self.dropped = 0

    def put(self, event: Event) -> None:
        key = supersede_key(event)
        old = self._events.get(key)
        if old is not None and old.created_at > event.created_at:
            return
        self._events[key] = event
        while len(self._events) > self.maximum:
            self._events.popitem(last=False)
            self.dropped += 1

    def pop(self) -> Event:
        return self._events.popitem(last=False)[1]

    def clear(self) -> None:
        self._events.clear()

    def __len__(self) -> int:
        return len(self._events)
