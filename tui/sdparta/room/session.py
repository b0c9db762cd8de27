"""One participant's presence in a room: discovery, per-pair messages, push or adaptive polling.

The session knows nothing about WebRTC: it turns registry slots (room/slots.py; protocol.md §2) into
events — a member appeared, left or expired, a message arrived — and sends sealed, signed messages
to one member. Presence content that cannot be used counts as an empty list the next writer replaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sdparta.room.events import RoomEvents, SessionCounters, SessionReports, SessionTiming
from sdparta.room.keys import Identity, RoomKeys
from sdparta.room.presence import fair_list
from sdparta.room.rendezvous import NetworkState, message_body
from sdparta.room.roster import Roster
from sdparta.room.settings import SettingsShare, read_entry_settings, read_settings, write_settings
from sdparta.room.slots import (
    EPOCH_REVISION_LIMIT,
    PairSlots,
    SharedSlots,
    SlotState,
    Transfers,
    opened_or_counted,
)
from sdparta.room.wire import (
    MAX_MEMBERS,
    MAX_PRESENCE_BYTES,
    Member,
    RoomSettings,
    TurnServer,
    decode_presence,
    encode_presence,
    sign_member,
)
from sdparta.store.base import RegistryEntry, Store, StoreError, Subscription
from sdparta.store.crypto import decode_skylink

log = logging.getLogger(__name__)

#: A member that reads unusable presence content (or an abandoned epoch) rewrites the list after a
#: random delay in this range (seconds) instead of waiting for its next re-announce.
HEAL_DELAY_S = (0.1, 1.5)


class RoomSession:
    """Announce ourselves, watch the room, exchange sealed messages with members."""

    def __init__(self, store: Store, keys: RoomKeys, identity: Identity, name: str, session_id: str,
                 events: RoomEvents, *, push: bool = True, timing: SessionTiming | None = None,
                 clock: Callable[[], float] = time.time, share_turn: list[TurnServer] | None = None,
                 share_sfu: dict[str, Any] | None = None) -> None:
        self.store = store
        self.keys = keys
        self.identity = identity
        self.name = name
        self.session_id = session_id
        self.events = events
        self.want_push = push
        self.timing = timing or SessionTiming()
        self.clock = clock
        self.counters = SessionCounters()
        self._reports = SessionReports(self.counters, events, "room", lambda: self._closing)
        # our fields of the room's settings (TURN relays, an SFU entry), merged in on joining
        self.share = SettingsShare(tuple(share_turn or ()), share_sfu)
        self.settings: RoomSettings | None = None  # the newest record read or written (by its signed ts)
        self.push_active = False
        self._transfers = Transfers(store, self.counters)
        self._shared = SharedSlots(self._transfers, keys, self._epoch_moved)
        self._pairs = PairSlots(self._transfers, keys, identity, session_id, self._reports.invalid)
        self._room_keypair = self._shared.keypair
        self._presence = SlotState()
        self._watch_slot: set[tuple[bytes, str]] = set()  # members whose slot we poll
        self._roster = Roster((identity.public_key, session_id), events, self.timing, clock,
                              on_new=self._member_arrived, on_gone=lambda m: self._watch_slot.discard(m.key))
        self._members = self._roster.members  # the roster's table (read here, changed only by the roster)
        self._subscription: Subscription | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._pending_until = 0.0
        self._urgent_until = 0.0
        self._closing = False
        self._settings_reading: asyncio.Task[None] | None = None
        self._settings_lock = asyncio.Lock()  # one settings read or write at a time
        self._settings_read: tuple[bytes, bytes] | None = None  # (data key, skylink) last opened
        self._resharing: asyncio.Task[None] | None = None
        self._presence_lock = asyncio.Lock()
        self._last_presence: list[Member] = []
        self._presence_full = False  # the last list read was at the member limit (a cut, maybe)
        self._heal = asyncio.Event()  # set: rewrite the presence list now (it holds unusable content)

    @property
    def _presence_key(self) -> bytes:
        return self._shared.key("presence")

    @property
    def presence_epoch(self) -> int:
        """The epoch of the presence slot this member reads and writes (protocol.md §2)."""
        return self._shared.epoch["presence"]

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Open push if wanted and read (or share) the room settings, side by side; then read the
        room, announce ourselves and start the loops."""
        await asyncio.gather(self._open_push(), self._settings_on_join())
        await self._update_presence(leaving=False)
        self._tasks.append(asyncio.create_task(self._reports.supervise("poll", self._poll_loop)))
        self._tasks.append(asyncio.create_task(self._reports.supervise("re-announce", self._announce_loop)))
        self._tasks.append(asyncio.create_task(self._reports.supervise("settings", self._settings_loop)))

    async def _open_push(self) -> None:
        if not self.want_push:
            return
        if self._subscription is not None:  # a join retried: the channel of the failed attempt goes
            with contextlib.suppress(Exception):
                await self._subscription.aclose()
            self._subscription, self.push_active = None, False
        try:
            self._subscription = await self.store.open_subscription()
        except StoreError as exc:
            log.info("push unavailable, polling: %s", exc)
            self._subscription = None
        if self._subscription is not None:
            await self._subscription.add(self._room_keypair.public_key, self._presence_key)
            await self._subscription.add(self._room_keypair.public_key, self._shared.key("settings"))
            self.push_active = True
            subscription = self._subscription
            push = self._reports.supervise("push", lambda: self._push_loop(subscription))
            self._tasks.append(asyncio.create_task(push))

    async def _settings_on_join(self) -> None:
        """Share our fields (merged into the room's), or read the room's; settings trouble never
        stops a join."""
        if self.share:
            try:
                await self.share_settings()
            except StoreError as exc:
                log.info("could not share the room settings: %s", exc)
            return
        await self._read_settings()

    async def _read_settings(self, entry: RegistryEntry | None = None) -> None:
        """Read the settings slot (or use a pushed entry) and take a newer record than ours; the blob
        is opened once per content (junk is counted once, not on every re-read)."""
        settings = None
        try:
            async with self._settings_lock:
                if entry is None or entry.revision >= EPOCH_REVISION_LIMIT:
                    entry = await self._shared.live_entry("settings")
                if entry is None or (self._shared.key("settings"), entry.data) == self._settings_read:
                    return
                settings = await read_entry_settings(self._shared, self._transfers, self.keys, entry,
                                                     self._reports.invalid, self._now_ms)
                self._settings_read = (self._shared.key("settings"), entry.data)
        except StoreError as exc:
            log.info("room settings unavailable: %s", exc)
        if settings is not None:
            self._adopt_settings(settings)

    def _adopt_settings(self, settings: RoomSettings) -> None:
        """A record newer than ours (by its signed ts) is the room's: the engine is told of each."""
        if self.settings is not None and settings.ts_ms <= self.settings.ts_ms:
            return
        self.settings = settings
        if settings.sfu_rejected:
            self._reports.invalid(f"room settings: {settings.sfu_rejected} (dropped; the rest is used)")
        self.events.settings(settings)
        if self.share and self.share.missing_from(settings) and not self._closing:
            self._reshare_soon()

    def _reshare_soon(self) -> None:
        """A newer record lacks a field we share (its writer had not seen ours): merge it in again."""
        if self._resharing is not None and not self._resharing.done():
            return
        async def reshare() -> None:
            try:
                await self.share_settings()
            except StoreError as exc:
                log.info("could not share the room settings again: %s", exc)
        self._resharing = asyncio.get_running_loop().create_task(reshare())
        self._tasks = [task for task in self._tasks if not task.done()] + [self._resharing]

    def _reread_settings_soon(self) -> None:
        """A newcomer may have shared settings just before announcing itself (sharers write them
        first): read them again (one read at a time; unchanged content costs one registry read)."""
        if self._closing:
            return
        if self._settings_reading is not None and not self._settings_reading.done():
            return
        self._settings_reading = asyncio.get_running_loop().create_task(self._read_settings())
        self._tasks = [task for task in self._tasks if not task.done()] + [self._settings_reading]

    async def _settings_loop(self) -> None:
        """Re-read the settings slot every ``settings_reread`` s: members converge on the newest
        record even without push and when nobody joins (docs/architecture.md "Shared relay")."""
        while not self._closing:
            await asyncio.sleep(self.timing.settings_reread * random.uniform(0.8, 1.0))
            if not self._closing:
                await self._read_settings()

    async def fetch_settings(self) -> RoomSettings | None:
        """The room's shared settings (room/settings.py); None when there are none or they cannot be used."""
        return await read_settings(self._shared, self._transfers, self.keys, self._reports.invalid, self._now_ms)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def share_settings(self, turn: list[TurnServer] | None = None, *,
                             sfu: dict[str, Any] | None = None) -> None:
        """Merge our fields (``self.share``, or those given) into the room's settings and write them
        (compare-and-set on the revision, merged again on conflict)."""
        share = self.share if turn is None and sfu is None else SettingsShare(tuple(turn or ()), sfu)
        async with self._settings_lock:
            record = await write_settings(self._shared, self._transfers, self.keys, self.identity, share,
                                          self._now_ms, self._reports.invalid,
                                          known=[self.settings, self.events.known_settings()])
        self._adopt_settings(record)

    async def _epoch_moved(self, label: str, old_key: bytes, new_key: bytes) -> None:
        """A shared slot moved to its next epoch: presence revisions start again there (the last good
        list stays and is carried over soon), and push follows."""
        if label == "settings":
            if self._subscription is not None:
                await self._subscription.add(self._room_keypair.public_key, new_key)
                await self._subscription.remove(self._room_keypair.public_key, old_key)
            return
        if label != "presence":
            return
        self._presence = SlotState()
        self._heal.set()
        if self._subscription is not None:
            await self._subscription.add(self._room_keypair.public_key, new_key)
            await self._subscription.remove(self._room_keypair.public_key, old_key)

    async def leave(self) -> None:
        """Say bye to every member we know and take our record out of the presence list."""
        self._closing = True
        if self._presence.revision < 0 and not self._last_presence and not self._members:
            return  # never got as far as reading the room: nothing to take back
        byes = [self.send(member, {"type": "bye"}) for member in list(self._members.values())]
        results = await asyncio.gather(*byes, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                log.info("bye not delivered: %s", result)
        try:
            await self._update_presence(leaving=True)
        except StoreError as exc:
            log.info("could not remove our presence record: %s", exc)

    async def close(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.aclose()

    # ------------------------------------------------------------------ commands
    def members(self) -> list[Member]:
        return list(self._members.values())

    def mark_pending(self, seconds: float = 10.0, *, urgent: bool = False) -> None:
        """Poll fast for a while: a negotiation is waiting on the other side.

        ``urgent`` (an ICE restart) polls fast even with push, each poll bounded in time: the push
        socket and pooled connections may have died with the network and not noticed yet."""
        now = time.monotonic()
        self._pending_until = max(self._pending_until, now + seconds)
        if urgent:
            self._urgent_until = max(self._urgent_until, now + seconds)
        self._wake.set()

    async def room_reachable(self, timeout: float = 1.0) -> bool:
        """Does a portal answer now? (one registry read of the presence slot, bounded)."""
        try:
            await asyncio.wait_for(self.store.get_entry(self._room_keypair.public_key, self._presence_key), timeout)
        except (StoreError, TimeoutError):
            return False
        return True

    def kick(self) -> None:
        """The network may have changed: reopen the push socket now instead of after its backoff."""
        if self._subscription is not None:
            self._subscription.reconnect()

    def clear_pending(self) -> None:
        """Nothing is negotiating any more: let polling back off."""
        self._pending_until = self._urgent_until = 0.0

    async def watch(self, member: Member, active: bool) -> None:
        """Watch (or stop watching) the member's pair slot to us.

        With push the slot is subscribed; without, it is polled while ``active``."""
        key = member.key
        if active:
            self._watch_slot.add(key)
            if self._subscription is not None:
                await self._subscription.add(member.public_key, self._pairs.key(member.session_id, self.session_id))
            await self._read_pair_slot(member)
        else:
            self._watch_slot.discard(key)

    async def send(self, member: Member, body: dict[str, Any]) -> None:
        """Seal, sign and publish ``body`` in our pair slot to ``member`` (newest wins)."""
        await self.publish(member, message_body(self.session_id, self.name, member, int(self.clock() * 1000), body))

    async def publish(self, member: Member, message: dict[str, Any]) -> None:
        """Publish a full message (rendezvous.message_body) in our pair slot to ``member``."""
        await self._pairs.send(member, message)

    @property
    def portal_urls(self) -> list[str]:
        """The portals this session writes to and reads from (a MultiStore's, or the one store's)."""
        return [str(getattr(store, "url", store)) for store in getattr(self.store, "stores", [self.store])]

    def networks(self) -> list[NetworkState]:
        state = "push" if self.push_active else "polling"
        return [NetworkState("portal", url, state, self.counters.sets, self.counters.gets) for url in self.portal_urls]

    # ------------------------------------------------------------------ internals

    def _is_fresh(self, member: Member, margin: float = 0.0) -> bool:
        return self._roster.fresh(member, margin)

    async def _fetch_presence(self, entry: RegistryEntry | None = None) -> list[Member] | None:
        """Read the presence slot (or use a pushed entry); None when unchanged (or not newer)."""
        if entry is None or entry.revision >= EPOCH_REVISION_LIMIT:
            entry = await self._shared.live_entry("presence")
        if entry is None:  # an empty slot: a new room (or a new epoch nobody has written yet)
            return [] if self._presence.revision < 0 and not self._last_presence else None
        if entry.revision <= self._presence.revision:
            return None
        unchanged = entry.data == self._presence.skylink
        members = await self._members_in(entry)
        if not self._remember_presence(entry, members) or unchanged:
            return None
        return members

    async def _members_in(self, entry: RegistryEntry) -> list[Member] | None:
        """The member list stored in exactly this entry; None when it cannot be used (counted): junk
        data, a skyfile the portal no longer has (the room stood empty past the skyfile lifetime), a
        list that does not open. Raises StoreUnavailable only (the portal is down: nothing is known)."""
        if entry.data == self._presence.skylink:
            return list(self._last_presence)
        async def opening() -> tuple[list[Member], int]:
            blob = await self._transfers.download(entry.data, MAX_PRESENCE_BYTES)
            return decode_presence(self.keys, self._room_keypair.public_key, self._presence_key, blob)

        opened = await opened_or_counted(opening(), "presence", self._reports.invalid)
        if opened is None:
            self._heal.set()  # rewrite it soon with the last good list
            return None
        members, rejected = opened
        for _ in range(rejected):
            self._reports.invalid("presence: a member record failed to verify")
        return members

    def _remember_presence(self, entry: RegistryEntry, members: list[Member] | None) -> bool:
        """Keep ``entry``'s list as the latest known, unless a newer one arrived while it was being
        read (push, poll and re-announce read side by side: an older list must never win, or the
        next re-announce would write it back and drop whoever joined in between)."""
        if entry.revision <= self._presence.revision:
            return False
        self._presence.revision = entry.revision
        if members is None:
            return False  # a list that does not open: keep the last good one
        self._presence.skylink = entry.data
        self._last_presence = members
        self._presence_full = len(members) >= MAX_MEMBERS
        return True

    def _apply_presence(self, members: list[Member]) -> None:
        """The list is the portal's whole view: whoever is missing left (roster.py)."""
        self._roster.apply_list(members, may_be_cut=self._presence_full)

    def _member_arrived(self, member: Member) -> None:
        self.mark_pending()
        self._reread_settings_soon()

    def expire_stale(self) -> None:
        """Report members whose record went stale (cheap, local: the engine calls it every second)."""
        self._roster.expire_stale()

    async def _update_presence(self, leaving: bool) -> None:
        """Read-modify-write of the presence list with compare-and-set; retries on conflict."""
        written: list[Member] = []

        async def list_after(entry: RegistryEntry | None, data_key: bytes) -> bytes:
            current = list(self._last_presence)  # an empty slot in a new epoch carries the list on
            if entry is not None:
                # exactly the list this revision holds: what we write next replaces it
                members = await self._members_in(entry)
                self._remember_presence(entry, members)
                # content that cannot be used is replaced by the list we last knew to be good
                current = members if members is not None else list(self._last_presence)
            if not leaving and (entry is None or entry.revision >= self._presence.revision):
                self._apply_presence(current)  # never a list older than one already applied
            written[:] = self._list_to_write(current, leaving)
            blob = encode_presence(self.keys, self._room_keypair.public_key, data_key, written)
            return decode_skylink(await self._transfers.upload(blob))

        async with self._presence_lock:
            signed = await self._shared.compare_and_set("presence", list_after, attempts=12)
            self._remember_presence(signed, written)
            self._heal.clear()  # what we just wrote is usable

    def _list_to_write(self, current: list[Member], leaving: bool) -> list[Member]:
        """The presence list to write (presence.fair_list): our record, then those we hear alive —
        also when a flood cut them out of ``current`` —, then the freshest others."""
        own = None if leaving else sign_member(self.keys, self.identity, self.session_id, self.name,
                                               int(self.clock() * 1000))
        alive_known = [m for m in self._members.values() if self.events.alive(m)]
        return fair_list((self.identity.public_key, self.session_id), own, [*current, *alive_known],
                         self.events.alive, self._is_fresh)

    async def _read_pair_slot(self, member: Member, entry: RegistryEntry | None = None) -> None:
        """Read one member's slot to us and deliver a new message, if any."""
        body = await self._pairs.read(member, entry)
        if body is not None:
            self.events.message(member, body, " / ".join(self.portal_urls))

    async def _push_loop(self, subscription: Subscription) -> None:
        async for entry in subscription.updates():
            try:
                await self._on_pushed(entry)
            except StoreError as exc:
                log.info("push handling failed: %s", exc)
            except Exception:  # a bug in one update must not end push delivery
                log.exception("push handling crashed")

    async def _on_pushed(self, entry: RegistryEntry) -> None:
        if entry.public_key == self._room_keypair.public_key and entry.data_key == self._presence_key:
            members = await self._fetch_presence(entry)
            if members is not None:
                self._apply_presence(members)
            return
        if entry.public_key == self._room_keypair.public_key and entry.data_key == self._shared.key("settings"):
            await self._read_settings(entry)
            return
        for member in list(self._members.values()):
            if member.public_key == entry.public_key and entry.data_key == self._pairs.key(
                    member.session_id, self.session_id):
                await self._read_pair_slot(member, entry)
                return

    async def _poll_once(self) -> None:
        """Presence and watched pair slots, side by side: one failing read must not hide the others."""
        async def presence() -> None:
            members = await self._fetch_presence()
            if members is not None:
                self._apply_presence(members)

        watched = [m for m in self._members.values() if m.key in self._watch_slot]
        await asyncio.gather(self._guarded(presence()),
                             *(self._guarded(self._read_pair_slot(m)) for m in watched))
        self.expire_stale()

    async def _guarded(self, coro: Awaitable[None]) -> None:
        try:
            await coro
        except StoreError as exc:
            log.info("store read failed: %s", exc)

    async def _poll_loop(self) -> None:
        interval = self.timing.poll_fast
        while not self._closing:
            urgent = time.monotonic() < self._urgent_until
            try:
                if urgent:  # a request stuck on a connection the network change killed is abandoned
                    await asyncio.wait_for(self._poll_once(), self.timing.poll_urgent_timeout)
                else:
                    await self._poll_once()
            except (StoreError, TimeoutError) as exc:
                log.info("poll failed: %s", exc)
            if urgent:
                interval = self.timing.poll_fast
            elif self.push_active:
                interval = self.timing.poll_push
            elif time.monotonic() < self._pending_until:
                interval = self.timing.poll_fast
            else:
                interval = min(self.timing.poll_slow, max(interval, self.timing.poll_fast) * 2)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)

    async def _announce_loop(self) -> None:
        failed = False
        while not self._closing:
            # while the portal is unreachable, retry soon: the record must be fresh again as soon
            # as the network is back, before the others take us for gone
            period = self.timing.reannounce_retry if failed else self.timing.reannounce
            with contextlib.suppress(TimeoutError):  # or sooner: the slot holds something unusable
                await asyncio.wait_for(self._heal.wait(), period * random.uniform(0.8, 1.0))
            if self._heal.is_set():
                self._heal.clear()
                await asyncio.sleep(random.uniform(*HEAL_DELAY_S))  # members reading one junk write spread out
            if self._closing:
                return
            try:
                await asyncio.wait_for(self._update_presence(leaving=False), self.timing.reannounce)
                failed = False
            except (StoreError, TimeoutError) as exc:
                log.info("re-announce failed: %s", exc)
                failed = True
            self.expire_stale()
