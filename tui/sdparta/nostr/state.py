"""What a relay connection reports: its state, counters, publish outcomes and errors.

Everything here is plain data that a UI, a bot report or ``doctor`` reads synchronously
(:meth:`Relay.status` returns a frozen :class:`RelayStatus`), so none of them needs the loop.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from sdparta.nostr.info import RelayInfo, RelayLimits


class RelayState(StrEnum):
    CONNECTING = "connecting"
    OPEN = "open"
    BACKING_OFF = "backing-off"  # the connection failed or dropped; retried after a growing delay
    DEAD = "dead"  # several attempts in a row failed: skipped by the pool, still retried at the slowest pace
    REFUSED = "refused"  # the relay said blocked/restricted/auth-required/pow (or NIP-11 did): not used again
    CLOSED = "closed"  # closed by us


class PublishStatus(StrEnum):
    ACCEPTED = "accepted"  # OK true
    DUPLICATE = "duplicate"  # the relay already had it: as good as accepted
    RATE_LIMITED = "rate-limited"  # held back, re-sent by the relay client after an exponential backoff
    REJECTED = "rejected"  # OK false for this event (invalid:, error:, …); the relay stays in use
    REFUSED = "refused"  # the relay refuses us (see RelayState.REFUSED)
    TIMEOUT = "timeout"  # not connected in time, or no OK in time: a failure
    TOO_LARGE = "too-large"  # beyond this relay's limits: never sent (the pool's per-relay outcome)
    CLOSED = "closed"

    @property
    def ok(self) -> bool:
        return self in (PublishStatus.ACCEPTED, PublishStatus.DUPLICATE)


@dataclass(frozen=True, slots=True)
class PublishResult:
    url: str
    event_id: str
    status: PublishStatus
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status.ok


class RelayError(Exception):
    """A relay operation cannot be done as asked; the message says why."""


class EventTooLarge(RelayError, ValueError):
    """The event (or REQ) exceeds the relay's NIP-11 limits or ours: it is not sent."""


class SubscriptionLimit(RelayError):
    """More subscriptions than the relay allows (NIP-11 ``max_subscriptions``)."""


@dataclass
class RelayCounters:
    """Per-relay counts since the client was created (mutable inside the client; copied out frozen)."""

    events_sent: int = 0  # EVENT messages written (re-sends included)
    accepted: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # OK false / CLOSED by prefix
    ok_timeouts: int = 0
    events_received: int = 0  # verified events delivered
    invalid_dropped: int = 0
    invalid_reasons: Counter[str] = field(default_factory=Counter)
    unrequested: int = 0  # events for no subscription of ours, or not matching its filters
    malformed: int = 0  # messages that are not NIP-01 relay messages
    oversized: int = 0  # messages beyond our size bound (the connection is dropped)
    notices: int = 0
    reconnects: int = 0
    connect_failures: int = 0
    subscriptions_sent: int = 0  # REQ messages written (re-sends on reconnect included)
    closed_subscriptions: int = 0
    handler_errors: int = 0  # our own bugs while handling a message (reported, never silent)

    def frozen(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            out[name] = MappingProxyType(dict(value)) if isinstance(value, Counter) else value
        return out


@dataclass(frozen=True, slots=True)
class RelayStatus:
    """One relay as it is now. ``reason`` explains REFUSED/DEAD/BACKING_OFF; ``counters`` is a copy."""

    url: str
    state: RelayState
    reason: str | None
    counters: MappingProxyType[str, Any]
    info: RelayInfo | None
    limits: RelayLimits
    subscriptions: tuple[str, ...]
    pending_retries: int
    last_notice: str | None

    @property
    def usable(self) -> bool:
        """Worth publishing to now (the pool skips the others at once)."""
        return self.state in (RelayState.OPEN, RelayState.CONNECTING, RelayState.BACKING_OFF)
