"""Who is in the room: the member table every network's session keeps the same way.

A network reports what it knows in one of two shapes — a whole list (a portal's presence slot:
whoever is missing has left) or one member's own record at a time (a Nostr relay: a member leaves
by replacing its record with a leaving one) — and the roster turns both into the same events for the
engine: seen, left, gone (stopped announcing). Freshness is the members' own signed timestamps,
never the network's order of delivery.
"""

from __future__ import annotations

from collections.abc import Callable

from sdparta.room.events import RoomEvents, SessionTiming
from sdparta.room.wire import Member

CLOCK_SKEW_S = 10.0  # members' clocks may disagree this much (protocol.md: NTP, a few seconds)
STALE_REASON = "stopped announcing (crashed or lost its network)"
LEFT_REASON = "left the room"

#: Goodbyes remembered (to ignore replays of older records); a room has at most a few dozen members.
MAX_DEPARTED = 512

MemberKey = tuple[bytes, str]


class Roster:
    """The members we know, freshest record each; reports arrivals and departures once."""

    def __init__(self, own: MemberKey, events: RoomEvents, timing: SessionTiming, clock: Callable[[], float],
                 *, on_new: Callable[[Member], None] = lambda m: None,
                 on_gone: Callable[[Member], None] = lambda m: None) -> None:
        self.own = own
        self.events = events
        self.timing = timing
        self.clock = clock
        self.on_new = on_new
        self.on_gone = on_gone
        self.members: dict[MemberKey, Member] = {}
        self._departed: dict[MemberKey, int] = {}  # key → ts of the record that said goodbye (bounded)

    def fresh(self, member: Member, margin: float = 0.0) -> bool:
        """Refreshed within the TTL (less ``margin`` seconds)."""
        return self.clock() * 1000 - member.ts_ms <= (self.timing.ttl - margin) * 1000

    def list(self) -> list[Member]:
        return list(self.members.values())

    # ------------------------------------------------------------------ a whole list (portal)
    def apply_list(self, members: list[Member], *, may_be_cut: bool = False) -> None:
        """A network's complete current list: members missing from it have left (or, if our copy of
        their record went stale first, are gone). ``may_be_cut``: the list was at its size limit, so
        a missing fresh member may only have been cut (a flood): only a bye or staleness says gone."""
        listed: dict[MemberKey, Member] = {}
        for member in members:
            if member.key != self.own and self.fresh(member):
                listed[member.key] = member
        for key, member in list(self.members.items()):
            if key in listed or (may_be_cut and self.fresh(member)):
                continue
            if self.fresh(member, margin=CLOCK_SKEW_S):
                self._drop(member, "left", LEFT_REASON)
            else:  # a writer whose clock runs a little ahead dropped it as stale before we did
                self._drop(member, "gone", STALE_REASON)
        for member in listed.values():
            self.record(member)

    # ------------------------------------------------------------------ one record at a time (relays)
    def record(self, member: Member) -> bool:
        """One member's record: a newer one refreshes it, a new session is an arrival; an older
        record than one we have (a relay replaying) changes nothing. True for an arrival."""
        if member.key == self.own or not self.fresh(member):
            return False
        if self._departed.get(member.key, -1) >= member.ts_ms:
            return False  # older than its goodbye: a replay
        known = self.members.get(member.key)
        if known is not None and known.ts_ms >= member.ts_ms:
            return False
        self.members[member.key] = member
        if known is None:
            self.on_new(member)
            self.events.member_seen(member)
            return True
        return False

    def depart(self, key: MemberKey, ts_ms: int) -> None:
        """The member said goodbye with a record signed at ``ts_ms``: it has left, and records older
        than that one (replayed by a relay) never bring it back."""
        self._departed[key] = max(ts_ms, self._departed.pop(key, -1))
        while len(self._departed) > MAX_DEPARTED:  # oldest goodbye first (dicts keep insertion order)
            del self._departed[next(iter(self._departed))]
        known = self.members.get(key)
        if known is not None and known.ts_ms <= ts_ms:
            self._drop(known, "left", LEFT_REASON)

    def expire_stale(self) -> None:
        """Report members whose record went stale (cheap, local: the engine calls it every second)."""
        for member in list(self.members.values()):
            if not self.fresh(member):
                self._drop(member, "gone", STALE_REASON)

    def _drop(self, member: Member, status: str, reason: str) -> None:
        del self.members[member.key]
        self.on_gone(member)
        self.events.member_gone(member, status, reason)
