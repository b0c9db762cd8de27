"""What a room session tells its owner (the engine), how often it acts, and what it counts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sdparta.room.wire import Member, RoomSettings
from sdparta.supervise import supervised


class RoomEvents:
    """Callbacks the engine implements; all are called on the session's event loop."""

    def member_seen(self, member: Member) -> None: ...
    def member_gone(self, member: Member, status: str, reason: str) -> None:
        """``status`` is "left" (taken out of the list) or "gone" (stopped announcing)."""
    def message(self, member: Member, body: dict[str, Any], via: str = "") -> None:
        """A pair message from ``member``; ``via`` names the network that delivered it (a portal's or
        relay's URL) for the user to see."""
    def invalid(self, reason: str) -> None: ...
    def settings(self, settings: RoomSettings) -> None:
        """The room's shared settings (TURN relays, an SFU entry): read on joining, before any member
        is seen, and again with every newer record (by its signed ts) the room's networks bring."""
    def known_settings(self) -> RoomSettings | None:
        """The newest room settings the owner knows from elsewhere (another network of a combined
        room), which a writer merges its own fields into besides what its network holds."""
        return None
    def alive(self, member: Member) -> bool:
        """Is this member heard on a live connection? Such records are kept first when a writer has
        to cut the presence list (a flood of fake records must not push real members out)."""
        return False
    def loop_failed(self, name: str, error: str) -> None:
        """A background loop crashed (a bug): it is restarted; the user should be told."""


@dataclass
class SessionTiming:
    """Protocol timers (seconds)."""

    reannounce: float = 10.0  # refresh our presence record this often
    reannounce_retry: float = 2.0  # after a failed refresh (portal unreachable), try again this soon
    # A record not refreshed for this long is stale. Long enough that a member whose network is down
    # for 30 s is still listed when it comes back (≤ 10 s old at the cut + 30 s + one retry), so its
    # pairs are restarted instead of torn down; a crashed member is gone 40–50 s after the crash.
    ttl: float = 50.0
    poll_fast: float = 0.15  # poll interval while a negotiation is pending
    poll_slow: float = 2.0  # poll interval backs off to this when nothing is pending
    poll_push: float = 15.0  # safety poll of presence when push is in use
    poll_urgent_timeout: float = 2.0  # bound on one poll while a pair reconnects
    # Portals: read the settings slot this often (besides on every new member and its push), so a
    # newer record reaches every member (docs/architecture.md "Shared relay"). Relays push them.
    settings_reread: float = 30.0


@dataclass
class SessionCounters:
    """Requests made and messages rejected, for reports and benchmarks."""

    gets: int = 0
    sets: int = 0
    uploads: int = 0
    downloads: int = 0
    conflicts: int = 0
    epoch_moves: int = 0  # presence/settings slots abandoned for the next epoch
    loop_restarts: int = 0  # background loops that crashed and were restarted
    invalid_messages: int = 0
    invalid_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return self.gets + self.sets + self.uploads + self.downloads

    def invalid(self, reason: str) -> None:
        self.invalid_messages += 1
        self.invalid_reasons[reason] = self.invalid_reasons.get(reason, 0) + 1


class SessionReports:
    """What every network's session reports the same way: rejected input (counted and told to the
    engine) and its background loops (a crash is counted, told, and the loop restarted)."""

    def __init__(self, counters: SessionCounters, events: RoomEvents, network: str,
                 stopping: Callable[[], bool]) -> None:
        self.counters = counters
        self.events = events
        self.network = network  # "room" (portals) or "relay": prefixes a crashed loop's name
        self.stopping = stopping

    def invalid(self, reason: str) -> None:
        self.counters.invalid(reason)
        self.events.invalid(reason)

    async def supervise(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run one of the session's loops for its lifetime (sdparta.supervise.supervised)."""
        def crashed(loop_name: str, error: str) -> None:
            self.counters.loop_restarts += 1
            self.events.loop_failed(f"{self.network} {loop_name}", error)
        await supervised(name, loop, crashed, stopping=self.stopping)
