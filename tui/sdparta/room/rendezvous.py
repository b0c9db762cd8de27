"""The seam between the room protocol and the networks that carry it.

A *rendezvous* is one room as one network carries it: Skynet portals (room/session.py, registry
slots) or Nostr relays (room/nostr_room.py, addressable events). Both speak the same room protocol
— identity-signed member records (room/wire.py), the same sealed and signed pair messages, the same
room settings, the same member table (room/roster.py) — and differ only in how a record reaches the
others. :class:`~sdparta.room.combined.CombinedRoom` runs several at once (write to all, read from
all, de-duplicate) behind the same interface, which is all the engine sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from sdparta.room.events import SessionCounters
from sdparta.room.wire import Member, RoomSettings


@dataclass(frozen=True, slots=True)
class NetworkState:
    """One network endpoint as the user should see it (status bar, ICE panel, bot report)."""

    kind: str  # "portal" | "relay"
    url: str
    state: str  # "push" | "polling" | "open" | "connecting" | "backing off" | "refused: …" | "unreachable"
    sent: int = 0  # events (relay) or registry writes (portal)
    received: int = 0
    rejected: int = 0
    reasons: tuple[tuple[str, int], ...] = ()  # why events were rejected or dropped, counted


def message_body(session_id: str, name: str, member: Member, ts_ms: int, body: dict[str, Any]) -> dict[str, Any]:
    """The full pair message (protocol.md §3) — built once, so every network carries the same bytes and
    the receiver can recognise the copies."""
    return {"v": 1, "from": session_id, "to": member.session_id, "name": name, "ts": ts_ms, **body}


class Rendezvous(Protocol):
    """What the engine needs from a room, whatever network carries it."""

    counters: SessionCounters
    settings: RoomSettings | None

    @property
    def push_active(self) -> bool:
        """Changes arrive as they happen (a subscription), not by polling."""
        ...

    async def start(self) -> None:
        """Join: read the room, announce ourselves, start the background loops. Raises StoreError
        when the network cannot be reached at all (the engine retries)."""

    async def leave(self) -> None:
        """Say bye to every member and take our record back."""

    async def close(self) -> None: ...

    def members(self) -> list[Member]: ...

    async def send(self, member: Member, body: dict[str, Any]) -> None:
        """Seal, sign and deliver ``body`` to ``member`` (newest wins)."""

    async def publish(self, member: Member, message: dict[str, Any]) -> None:
        """Deliver a full message (:func:`message_body`) exactly as given."""

    async def watch(self, member: Member, active: bool) -> None:
        """Expect (or stop expecting) messages from ``member`` soon."""

    def mark_pending(self, seconds: float = 10.0, *, urgent: bool = False) -> None:
        """A negotiation waits on the other side: look for its messages often for a while."""

    def clear_pending(self) -> None: ...

    def kick(self) -> None:
        """The network may have changed: reconnect now instead of after a backoff."""

    async def room_reachable(self, timeout: float = 1.0) -> bool: ...

    def expire_stale(self) -> None: ...

    def networks(self) -> list[NetworkState]: ...
