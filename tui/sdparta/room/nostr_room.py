"""One participant's presence in a room over Nostr relays (docs/protocol.md §8).

The same room protocol as the portal session (room/session.py) — identity-signed member records,
the same sealed and signed pair messages and settings, the same member table (room/roster.py) —
mapped onto NIP-01 events: each member publishes its own addressable record (no compare-and-set
needed), one subscription per relay brings the room's records and the messages addressed to us,
and everything is ordered by the sealed content's own timestamps, never by arrival (relays replay
old versions of addressable events, and ephemeral or expired ones too).

Load is bounded (Trystero's endless 5 s announces got it blocked): our record is refreshed every
``reannounce`` seconds (60: about one event per minute per relay in a steady room), faster only
while a pair negotiates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from sdparta.nostr.event import Event, NostrKey
from sdparta.nostr.pool import PoolSubscription, RelayPool
from sdparta.nostr.state import EventTooLarge, RelayState
from sdparta.room.events import RoomEvents, SessionCounters, SessionReports, SessionTiming
from sdparta.room.keys import Identity, RoomKeys
from sdparta.room.nostr_wire import (
    APP_KIND,
    MAX_PRESENCE_RECORD_BYTES,
    RoomTags,
    b64,
    decode_presence_record,
    encode_presence_record,
    unb64,
)
from sdparta.room.rendezvous import NetworkState, message_body
from sdparta.room.roster import Roster
from sdparta.room.settings import SettingsShare, from_the_future, merged
from sdparta.room.wire import (
    MAX_MESSAGE_BYTES,
    MAX_SETTINGS_BYTES,
    Member,
    RoomSettings,
    TurnServer,
    WireError,
    decode_message,
    decode_settings,
    encode_message,
    encode_settings,
)
from sdparta.store.base import StoreError, StoreUnavailable

log = logging.getLogger(__name__)

#: Relay timing: a record lives 150 s (a crashed member is gone 90–150 s after the crash, unless its
#: connection says so first), refreshed every 60 s, every 5 s while a pair negotiates.
#: Merges of our shared fields back into the room's settings in a row, at most (relays: no CAS).
RESHARE_ROUNDS = 3
NOSTR_TIMING = SessionTiming(reannounce=60.0, reannounce_retry=5.0, ttl=150.0)
#: Messages from authors whose presence record has not arrived yet (one subscription brings both,
#: in any order): kept this many, then the oldest is dropped.
MAX_UNMATCHED = 64
#: Records older than this many seconds are not asked for (relays keep old events for ever).
SINCE_MARGIN_S = 30
#: Joining waits this long for a relay to open, and then for the relays' stored events (EOSE).
CONNECT_WAIT_S = 6.0
STORED_WAIT_S = 3.0
#: Settings records kept per room (the newest, one per publisher): what a sharer merges into.
MAX_SETTINGS_RECORDS = 16


class NostrRoom:
    """Announce ourselves on relays, follow the room's records, exchange sealed messages."""

    def __init__(self, relays: RelayPool, keys: RoomKeys, identity: Identity, name: str, session_id: str,
                 events: RoomEvents, *, timing: SessionTiming | None = None, clock: Callable[[], float] = time.time,
                 share_turn: list[TurnServer] | None = None, share_sfu: dict[str, Any] | None = None,
                 nostr_key: NostrKey | None = None) -> None:
        self.relays = relays
        self.keys = keys
        self.identity = identity
        self.name = name
        self.session_id = session_id
        self.events = events
        self.timing = timing or NOSTR_TIMING
        self.clock = clock
        # our fields of the room's settings (TURN relays, an SFU entry), merged in on joining
        self.share = SettingsShare(tuple(share_turn or ()), share_sfu)
        self.nostr_key = nostr_key or NostrKey.generate()
        self.counters = SessionCounters()
        self._reports = SessionReports(self.counters, events, "relay", lambda: self._closing)
        self.settings: RoomSettings | None = None  # the newest record seen (by its signed ts)
        self._settings_records: dict[str, RoomSettings] = {}  # newest per publishing Nostr key (merge source)
        self._resharing: asyncio.Task[None] | None = None
        self._settings_shared = False  # our fields went out once (a reshare only follows that)
        self.tags = RoomTags(keys)
        self.roster = Roster((identity.public_key, session_id), events, self.timing, clock,
                             on_new=self._member_arrived)
        self._authors: dict[str, tuple[bytes, str]] = {}  # Nostr pubkey → member key (from its record)
        self._unmatched: deque[tuple[Event, str]] = deque(maxlen=MAX_UNMATCHED)  # (event, relay)
        self._last_message_ts: dict[tuple[bytes, str], int] = {}
        self._pending_until = 0.0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._sub: PoolSubscription | None = None
        self._started = False
        self._closing = False

    # ------------------------------------------------------------------ lifecycle
    @property
    def push_active(self) -> bool:
        return any(status.state == RelayState.OPEN for status in self.relays.status())

    async def start(self) -> None:
        """Connect, subscribe and take in what the relays hold (so the room's settings and members are
        known before we announce), share or read the settings, announce ourselves, re-announce."""
        await self.relays.start()
        if not await self.relays.wait_any_open(CONNECT_WAIT_S):
            raise StoreUnavailable(f"no Nostr relay can be used ({self._relay_summary()})")
        if self._sub is None:
            since = int(self.clock()) - int(self.timing.ttl) - SINCE_MARGIN_S
            self._sub = self.relays.subscribe(f"sdparta-{self.session_id}", [
                {"kinds": [APP_KIND], "#x": [self.tags.room, self.tags.to(self.session_id)], "since": since},
                # the settings tag ORed with our own: a filter no other member sends, because
                # relays may answer an identical filter from a cache (@nostr-relay/core keeps one
                # for 1 s, so a member joining right after the settings were shared read none)
                {"kinds": [APP_KIND], "#x": [self.tags.settings, self.tags.to(self.session_id)], "limit": 16},
            ])
            self._tasks.append(asyncio.create_task(self._reports.supervise("events", self._read_loop)))
            await self._sub.wait_stored(STORED_WAIT_S)
        if self.share:
            await self.share_settings()
        await self._announce()
        if not self._started:
            self._started = True
            self._tasks.append(asyncio.create_task(self._reports.supervise("re-announce", self._announce_loop)))

    def _relay_summary(self) -> str:
        return "; ".join(f"{s.url}: {s.state}{f' ({s.reason})' if s.reason else ''}" for s in self.relays.status())

    async def _read_loop(self) -> None:
        assert self._sub is not None
        async for item in self._sub.events():
            try:
                self._on_event(item.event, item.relay)
            except Exception:  # a bug with one event must not end delivery (counted, logged)
                log.exception("relay event handling crashed")
                self._reports.invalid("relay: an event could not be handled (a bug)")


    async def leave(self) -> None:
        """Bye to every member, then replace our record with a leaving one (replays of older records
        cannot bring us back: they are older than the goodbye)."""
        self._closing = True
        if not self._started:
            return
        await asyncio.gather(*(self.send(m, {"type": "bye"}) for m in self.roster.list()), return_exceptions=True)
        with contextlib.suppress(StoreError):
            await self._announce(leaving=True)

    async def close(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        with contextlib.suppress(Exception):
            await self.relays.close()

    # ------------------------------------------------------------------ commands
    def members(self) -> list[Member]:
        return self.roster.list()

    async def send(self, member: Member, body: dict[str, Any]) -> None:
        await self.publish(member, message_body(self.session_id, self.name, member, int(self.clock() * 1000), body))

    async def publish(self, member: Member, message: dict[str, Any]) -> None:
        """Our newest message to ``member``: one addressable event per pair (newest replaces it)."""
        data_key = self.tags.pair_key(self.session_id, member.session_id)
        blob = encode_message(self.keys, self.identity, data_key, message)
        await self._publish(data_key.hex(), self.tags.to(member.session_id), b64(blob))

    async def watch(self, member: Member, active: bool) -> None:
        """Nothing to do: the subscription already brings every message addressed to us."""

    def mark_pending(self, seconds: float = 10.0, *, urgent: bool = False) -> None:
        """Re-announce fast for a while: a member that missed our record gets another soon."""
        self._pending_until = max(self._pending_until, time.monotonic() + seconds)
        if urgent:
            self.kick()

    def clear_pending(self) -> None:
        self._pending_until = 0.0

    def kick(self) -> None:
        """The network may have changed: reconnect every relay that is not open now."""
        for relay in self.relays.relays.values():
            if not relay.is_open:
                relay.reconnect()

    async def room_reachable(self, timeout: float = 1.0) -> bool:
        return self.push_active

    def expire_stale(self) -> None:
        self.roster.expire_stale()

    def networks(self) -> list[NetworkState]:
        states = []
        for status in self.relays.status():
            c = status.counters
            reasons = {**c["rejected"], **c["invalid_reasons"]}
            state = f"{status.state}: {status.reason}" if status.reason else str(status.state)
            states.append(NetworkState("relay", status.url, state, c["events_sent"], c["events_received"],
                                       sum(c["rejected"].values()) + c["invalid_dropped"],
                                       tuple(sorted(reasons.items()))))
        return states

    async def share_settings(self, turn: list[TurnServer] | None = None, *,
                             sfu: dict[str, Any] | None = None) -> None:
        """Merge our fields (``self.share``, or those given) into the settings the relays hold (called
        after their stored events arrived) and publish the result as our settings record."""
        share = self.share if turn is None and sfu is None else SettingsShare(tuple(turn or ()), sfu)
        record = merged([*self._settings_records.values(), self.settings, self.events.known_settings()], share,
                        self.identity, int(self.clock() * 1000))
        settings_key = self.keys.data_key("nostr", "settings")
        blob = encode_settings(self.keys, self.identity, bytes.fromhex(self.nostr_key.pubkey), settings_key,
                               record.turn, record.ts_ms, sfu=record.sfu)
        await self._publish(self.tags.settings, self.tags.settings, b64(blob))
        self._settings_shared = True
        self._adopt_settings(record)
        # a newer record that lacks our field may have arrived while ours was on its way (then ours
        # is not the newest, and the check in _adopt_settings ran before our fields were out)
        self._reshare_if_dropped()

    # ------------------------------------------------------------------ publishing
    async def _announce(self, *, leaving: bool = False) -> None:
        blob = encode_presence_record(self.keys, self.identity, self.session_id,
                                      bytes.fromhex(self.nostr_key.pubkey), self.name,
                                      int(self.clock() * 1000), leaving=leaving)
        await self._publish(self.tags.presence_d(self.session_id), self.tags.room, b64(blob))

    async def _publish(self, d_tag: str, x_tag: str, content: str) -> None:
        """Sign and send the next version of one of our addressable records (its ``created_at`` grows
        per ``d`` tag: NostrKey.addressable)."""
        event = self.nostr_key.addressable(d_tag, content, [("x", x_tag)], created_at=int(self.clock()))
        try:
            result = await self.relays.publish(event)
        except EventTooLarge as exc:
            raise StoreError(f"a signalling message is too large for every relay: {exc}") from exc
        if not result.ok:
            reasons = "; ".join(f"{r.url}: {r.status}{f' {r.message}' if r.message else ''}"
                                for r in result.results.values())
            raise StoreUnavailable(f"no relay stored the event ({reasons or 'no relay usable'})")

    async def _announce_loop(self) -> None:
        failed = False
        while not self._closing:
            fast = failed or time.monotonic() < self._pending_until
            period = self.timing.reannounce_retry if fast else self.timing.reannounce
            await asyncio.sleep(period * random.uniform(0.8, 1.0))
            if self._closing:
                return
            try:
                await self._announce()
                failed = False
            except StoreError as exc:
                log.info("relay re-announce failed: %s", exc)
                failed = True
            self.roster.expire_stale()

    # ------------------------------------------------------------------ receiving
    def _member_arrived(self, member: Member) -> None:
        self.mark_pending()


    def _on_event(self, event: Event, relay: str) -> None:
        """One verified event from one relay (the pool checked its id and signature)."""
        if event.pubkey == self.nostr_key.pubkey or event.kind != APP_KIND:
            return
        d_tag, x_tag = event.tag("d"), event.tag("x")
        if d_tag is None or x_tag is None:
            self._reports.invalid("relay: an event without our tags")
            return
        try:
            if x_tag == self.tags.room:
                self._on_presence(event, d_tag)
            elif x_tag == self.tags.to(self.session_id):
                self._on_message(event, d_tag, relay)
            elif x_tag == self.tags.settings:
                self._on_settings(event)
        except WireError as exc:
            self._reports.invalid(f"relay: {exc}")

    def _on_presence(self, event: Event, d_tag: str) -> None:
        record = decode_presence_record(self.keys, bytes.fromhex(event.pubkey), d_tag,
                                        unb64(event.content, MAX_PRESENCE_RECORD_BYTES))
        if record.member is None:
            self.roster.depart(record.key, record.ts_ms)
            return
        self._authors[event.pubkey] = record.key
        self.roster.record(record.member)
        for waiting in [w for w in self._unmatched if w[0].pubkey == event.pubkey]:
            self._unmatched.remove(waiting)
            d = waiting[0].tag("d")
            if d is not None:
                self._on_message(waiting[0], d, waiting[1])

    def _on_message(self, event: Event, d_tag: str, via: str) -> None:
        author = self._authors.get(event.pubkey)
        member = self.roster.members.get(author) if author is not None else None
        if member is None:  # its presence record is on its way (or it is a stranger): wait a little
            if all(e.id != event.id for e, _ in self._unmatched):
                self._unmatched.append((event, via))
            return
        data_key = self.tags.pair_key(member.session_id, self.session_id)
        if d_tag != data_key.hex():
            raise WireError("message d tag is not this pair's")
        body = decode_message(self.keys, member.public_key, data_key, unb64(event.content, MAX_MESSAGE_BYTES))
        if body["from"] != member.session_id or body["to"] != self.session_id:
            raise WireError("message addressed to another session (replayed?)")
        ts = body.get("ts")
        if not isinstance(ts, int) or ts <= self._last_message_ts.get(member.key, -1):
            return  # a relay replaying an older (or the same) message: newest wins
        self._last_message_ts[member.key] = ts
        self.events.message(member, body, via)

    def _on_settings(self, event: Event) -> None:
        settings = decode_settings(self.keys, bytes.fromhex(event.pubkey), self.keys.data_key("nostr", "settings"),
                                   unb64(event.content, MAX_SETTINGS_BYTES))
        if (reason := from_the_future(settings, int(self.clock() * 1000))) is not None:
            raise WireError(reason)
        known = self._settings_records.get(event.pubkey)
        if known is not None and settings.ts_ms <= known.ts_ms:
            return  # a relay replaying an older (or the same) record of this publisher
        self._settings_records[event.pubkey] = settings
        if len(self._settings_records) > MAX_SETTINGS_RECORDS:  # keep the newest (what a merge reads)
            oldest = min(self._settings_records, key=lambda k: self._settings_records[k].ts_ms)
            del self._settings_records[oldest]
        self._adopt_settings(settings)

    def _adopt_settings(self, settings: RoomSettings) -> None:
        """A record newer than ours (by its signed ts, never by arrival) is the room's: the engine
        is told of each; one that dropped a field we share (its writer had not seen ours: relays have
        no compare-and-set) gets it merged in again."""
        if self.settings is not None and settings.ts_ms <= self.settings.ts_ms:
            return
        self.settings = settings
        if settings.sfu_rejected:
            self._reports.invalid(f"relay: room settings: {settings.sfu_rejected} (dropped; the rest is used)")
        self.events.settings(settings)
        self._reshare_if_dropped()

    def _dropped(self) -> bool:
        """The room's newest settings lack a field we shared (and that went out)."""
        return (bool(self.share) and self._settings_shared and self.settings is not None
                and self.share is not None and self.share.missing_from(self.settings) and not self._closing)

    def _reshare_if_dropped(self) -> None:
        if self._dropped() and (self._resharing is None or self._resharing.done()):
            self._resharing = asyncio.get_running_loop().create_task(self._reshare())
            self._tasks = [task for task in self._tasks if not task.done()] + [self._resharing]

    async def _reshare(self) -> None:
        """Merge our fields in again until the newest record has them (bounded: a record dropping
        them may arrive while our merged one is on its way, and this task is the one that retries)."""
        for _ in range(RESHARE_ROUNDS):
            try:
                await self.share_settings()
            except StoreError as exc:
                log.info("could not share the room settings again: %s", exc)
                return
            if not self._dropped():
                return
