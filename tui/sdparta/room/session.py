"""One participant's presence in a room: discovery, per-pair slots, push or adaptive polling.

The session knows nothing about WebRTC: it turns registry slots into events (a member appeared,
a member left or expired, a message arrived) and sends sealed, signed messages to one member.

Slots (all data keys are opaque HMACs of the room's tag key, see docs/protocol.md):
- presence: one slot under the room's shared keypair holding a SkyDB-style skylink to the
  sealed member list; written only by read-modify-write with compare-and-set on the revision.
  Content that cannot be used (junk, a blob the portal no longer has) counts as an empty list the
  next writer replaces; a slot whose revision was pushed near 2^64 is abandoned for the next
  *epoch*'s slot (protocol.md §6).
- pair slot ``pair/<from sid>/<to sid>``: under the *sender's identity key*, holds a skylink to
  the sender's latest sealed+signed message to that member.  Only its owner can write it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sdparta.room.keys import Identity, RoomKeys
from sdparta.room.wire import (
    MAX_MEMBERS,
    MAX_MESSAGE_BYTES,
    MAX_PRESENCE_BYTES,
    MAX_SETTINGS_BYTES,
    Member,
    RoomSettings,
    TurnServer,
    WireError,
    decode_message,
    decode_presence,
    decode_settings,
    encode_message,
    encode_presence,
    encode_settings,
    sign_member,
)
from sdparta.store.base import RegistryEntry, RevisionConflict, Store, StoreError, StoreUnavailable, Subscription
from sdparta.store.crypto import KeyPair, decode_skylink, encode_skylink, sign_entry
from sdparta.supervise import supervised

log = logging.getLogger(__name__)

CLOCK_SKEW_S = 10.0  # members' clocks may disagree this much (protocol.md: NTP, a few seconds)
STALE_REASON = "stopped announcing (crashed or lost its network)"
#: A room slot whose revision reached this is abandoned for the next epoch's slot: no honest room
#: gets there (10^11 years of writes at 6/s), but one write of 2^64-1 would freeze the slot for ever.
EPOCH_REVISION_LIMIT = 2**63
#: Epochs a reader walks at most (each abandoned epoch costs one registry read per join).
MAX_EPOCHS = 32
#: A member that reads unusable presence content (or an abandoned epoch) rewrites the list after a
#: random delay in this range (seconds) instead of waiting for its next re-announce.
HEAL_DELAY_S = (0.1, 1.5)
#: Sessions of one identity kept in the list a writer writes (a flood from one key cannot fill it).
MAX_SESSIONS_PER_IDENTITY = 4


def slot_data_key(keys: RoomKeys, label: str, epoch: int) -> bytes:
    """The data key of the room's ``label`` slot ("presence" or "settings") in ``epoch``; epoch 0 is
    the plain ``data_key(label)``."""
    return keys.data_key(label) if epoch == 0 else keys.data_key(label, f"epoch-{epoch}")


def _usable_content_error(exc: StoreError) -> bool:
    """True when a slot's content is unusable (missing blob, junk data), False when the portal is
    only unreachable now (then nothing must be overwritten: we cannot tell what the slot holds)."""
    return not isinstance(exc, StoreUnavailable)


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


@dataclass
class _SlotState:
    revision: int = -1
    skylink: bytes = b""


class RoomEvents:
    """Callbacks the engine implements; all are called on the session's event loop."""

    def member_seen(self, member: Member) -> None: ...
    def member_gone(self, member: Member, status: str, reason: str) -> None:
        """``status`` is "left" (taken out of the list) or "gone" (stopped announcing)."""
    def message(self, member: Member, body: dict[str, Any]) -> None: ...
    def invalid(self, reason: str) -> None: ...
    def settings(self, settings: RoomSettings) -> None:
        """The room's shared settings (TURN relays), read on joining, before any member is seen."""
    def alive(self, member: Member) -> bool:
        """Is this member heard on a live connection? Such records are kept first when a writer has
        to cut the presence list (a flood of fake records must not push real members out)."""
        return False
    def loop_failed(self, name: str, error: str) -> None:
        """A background loop crashed (a bug): it is restarted; the user should be told."""


class RoomSession:
    """Announce ourselves, watch the room, exchange sealed messages with members."""

    def __init__(self, store: Store, keys: RoomKeys, identity: Identity, name: str, session_id: str,
                 events: RoomEvents, *, push: bool = True, timing: SessionTiming | None = None,
                 clock: Callable[[], float] = time.time, share_turn: list[TurnServer] | None = None) -> None:
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
        self.share_turn = share_turn  # write these relays into the room's settings on joining
        self.settings: RoomSettings | None = None
        self.push_active = False
        self._room_keypair = KeyPair.from_private_bytes(keys.presence_seed)
        self._identity_keypair = KeyPair.from_private_bytes(identity.seed)
        self._presence_epoch = 0
        self._settings_epoch = 0
        self._presence = _SlotState()
        self._members: dict[tuple[bytes, str], Member] = {}
        self._incoming: dict[tuple[bytes, str], _SlotState] = {}
        self._outgoing_revision: dict[tuple[bytes, str], int] = {}
        self._watch_slot: set[tuple[bytes, str]] = set()  # members whose slot we poll
        self._subscription: Subscription | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._pending_until = 0.0
        self._urgent_until = 0.0
        self._closing = False
        self._settings_reading: asyncio.Task[None] | None = None
        self._presence_lock = asyncio.Lock()
        self._last_presence: list[Member] = []
        self._presence_full = False  # the last list read was at the member limit (a cut, maybe)
        self._heal = asyncio.Event()  # set: rewrite the presence list now (it holds unusable content)

    @property
    def _presence_key(self) -> bytes:
        return slot_data_key(self.keys, "presence", self._presence_epoch)

    @property
    def _settings_key(self) -> bytes:
        return slot_data_key(self.keys, "settings", self._settings_epoch)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Open push if wanted and read (or share) the room settings, side by side; then read the
        room, announce ourselves and start the loops."""
        await asyncio.gather(self._open_push(), self._settings_on_join())
        await self._update_presence(leaving=False)
        self._tasks.append(asyncio.create_task(self._supervised("poll", self._poll_loop)))
        self._tasks.append(asyncio.create_task(self._supervised("re-announce", self._announce_loop)))

    async def _supervised(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """A room loop for the session's lifetime: a crash (a bug) is counted, reported, restarted."""
        def crashed(loop_name: str, error: str) -> None:
            self.counters.loop_restarts += 1
            self.events.loop_failed(f"room {loop_name}", error)
        await supervised(name, loop, crashed, stopping=lambda: self._closing)

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
            self.push_active = True
            subscription = self._subscription
            self._tasks.append(asyncio.create_task(self._supervised("push", lambda: self._push_loop(subscription))))

    async def _settings_on_join(self) -> None:
        """Share our relays, or take the room's; settings trouble never stops a join."""
        if self.share_turn:
            try:
                await self.share_settings(self.share_turn)
            except StoreError as exc:
                log.info("could not share the room settings: %s", exc)
            if self.settings is not None:
                self.events.settings(self.settings)
            return
        await self._read_settings()

    async def _read_settings(self) -> None:
        """Take the room's settings if there are some (once: the first found wins)."""
        try:
            settings = await self.fetch_settings()
        except StoreError as exc:
            log.info("room settings unavailable: %s", exc)
            return
        if settings is not None and self.settings is None:
            self.settings = settings
            self.events.settings(settings)

    def _reread_settings_soon(self) -> None:
        """A newcomer may have shared a relay just before announcing itself (sharers write the settings
        first): read them again (one read at a time) until we have some."""
        if self.settings is not None or self.share_turn or self._closing:
            return
        if self._settings_reading is not None and not self._settings_reading.done():
            return
        self._settings_reading = asyncio.get_running_loop().create_task(self._read_settings())
        self._tasks = [task for task in self._tasks if not task.done()] + [self._settings_reading]

    async def fetch_settings(self) -> RoomSettings | None:
        """The room's shared settings, verified; None when there are none (or they cannot be used:
        junk, a blob the portal no longer has — counted). Raises StoreUnavailable only."""
        entry = await self._live_entry("settings")
        if entry is None:
            return None
        try:
            blob = await self._download(entry.data, MAX_SETTINGS_BYTES)
            return decode_settings(self.keys, self._room_keypair.public_key, self._settings_key, blob)
        except WireError as exc:
            self._invalid(f"room settings: {exc}")
        except StoreError as exc:
            if not _usable_content_error(exc):
                raise
            self._invalid(f"room settings: {exc}")
        return None

    def _epoch(self, label: str) -> int:
        return self._presence_epoch if label == "presence" else self._settings_epoch

    async def _live_entry(self, label: str) -> RegistryEntry | None:
        """Read the room's ``label`` slot in its current epoch, moving on past abandoned epochs (a
        revision at or above EPOCH_REVISION_LIMIT): the entry to read and to write after."""
        for _ in range(MAX_EPOCHS):
            epoch = self._epoch(label)
            self.counters.gets += 1
            entry = await self.store.get_entry(self._room_keypair.public_key, slot_data_key(self.keys, label, epoch))
            if entry is None or entry.revision < EPOCH_REVISION_LIMIT:
                if epoch == self._epoch(label):
                    return entry
                continue  # another reader moved on meanwhile: read the epoch it moved to
            await self._next_epoch(label, epoch)
        raise StoreError(f"the room's {label} slots are exhausted ({MAX_EPOCHS} epochs written at absurd "
                         "revisions by a hostile member): use another room name or password")

    async def _next_epoch(self, label: str, exhausted: int) -> None:
        """Abandon epoch ``exhausted`` of a room slot for the next one (push follows); nothing to do
        when a concurrent reader (push, poll, re-announce) already moved past it."""
        if exhausted != self._epoch(label):
            return
        self.counters.epoch_moves += 1
        if label == "settings":
            self._settings_epoch += 1
            log.warning("room settings slot exhausted: moving to epoch %d", self._settings_epoch)
            return
        old_key = self._presence_key
        self._presence_epoch += 1
        self._presence = _SlotState()  # revisions start again in the new slot; the last good list stays
        self._heal.set()  # carry the list over into the new slot soon
        log.warning("room presence slot exhausted: moving to epoch %d", self._presence_epoch)
        if self._subscription is not None:
            await self._subscription.add(self._room_keypair.public_key, self._presence_key)
            await self._subscription.remove(self._room_keypair.public_key, old_key)

    async def share_settings(self, turn: list[TurnServer]) -> None:
        """Write the room's settings (compare-and-set on the revision, retried on conflict)."""
        ts_ms = int(self.clock() * 1000)
        sealed: dict[bytes, bytes] = {}  # data key → raw skylink: the blob is bound to its slot (epoch)

        async def settings_for(_entry: RegistryEntry | None, data_key: bytes) -> bytes:
            if data_key not in sealed:
                blob = encode_settings(self.keys, self.identity, self._room_keypair.public_key, data_key, turn, ts_ms)
                sealed[data_key] = decode_skylink(await self._upload(blob))
            return sealed[data_key]

        await self._compare_and_set("settings", settings_for, attempts=6)
        self.settings = RoomSettings(self.identity.public_key, ts_ms, tuple(turn))

    async def _compare_and_set(self, label: str,
                               make: Callable[[RegistryEntry | None, bytes], Awaitable[bytes]],
                               attempts: int) -> RegistryEntry:
        """Read-modify-write of a shared room slot: read its live entry, ``make(entry, data_key)`` the raw
        data to follow it, write it at revision + 1; the portal refuses a revision that does not grow,
        so on conflict read again (jittered backoff). Returns the entry written."""
        for attempt in range(attempts):
            entry = await self._live_entry(label)
            data_key = slot_data_key(self.keys, label, self._epoch(label))
            data = await make(entry, data_key)
            signed = sign_entry(self._room_keypair, data_key, data, entry.revision + 1 if entry is not None else 0)
            try:
                self.counters.sets += 1
                await self.store.set_entry(signed)
            except RevisionConflict:
                self.counters.conflicts += 1
                await asyncio.sleep(random.uniform(0.005, 0.05) * (attempt + 1))
                continue
            return signed
        raise StoreError(f"could not update the room's {label} after {attempts} attempts "
                         "(heavy contention or a misbehaving portal)")

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
            self._incoming.setdefault(key, _SlotState())
            if self._subscription is not None:
                await self._subscription.add(member.public_key, self._pair_key(member.session_id,
                                                                              self.session_id))
            await self._read_pair_slot(member)
        else:
            self._watch_slot.discard(key)

    async def send(self, member: Member, body: dict[str, Any]) -> None:
        """Seal, sign and publish ``body`` in our pair slot to ``member`` (newest wins)."""
        data_key = self._pair_key(self.session_id, member.session_id)
        message = {"v": 1, "from": self.session_id, "to": member.session_id, "name": self.name,
                   "ts": int(self.clock() * 1000), **body}
        blob = encode_message(self.keys, self.identity, data_key, message)
        skylink = await self._upload(blob)
        revision = self._outgoing_revision.get(member.key, -1) + 1
        self._outgoing_revision[member.key] = revision
        entry = sign_entry(self._identity_keypair, data_key, decode_skylink(skylink), revision)
        self.counters.sets += 1
        await self.store.set_entry(entry)

    # ------------------------------------------------------------------ internals
    def _pair_key(self, from_sid: str, to_sid: str) -> bytes:
        return self.keys.data_key("pair", from_sid, to_sid)

    async def _upload(self, blob: bytes) -> str:
        self.counters.uploads += 1
        return await self.store.upload_blob(blob)

    async def _download(self, raw_skylink: bytes, max_size: int) -> bytes:
        self.counters.downloads += 1
        return await self.store.download_blob(encode_skylink(raw_skylink), max_size=max_size)

    def _invalid(self, reason: str) -> None:
        self.counters.invalid_messages += 1
        self.counters.invalid_reasons[reason] = self.counters.invalid_reasons.get(reason, 0) + 1
        self.events.invalid(reason)

    def _is_fresh(self, member: Member, margin: float = 0.0) -> bool:
        """Refreshed within the TTL (less ``margin`` seconds)."""
        return self.clock() * 1000 - member.ts_ms <= (self.timing.ttl - margin) * 1000

    async def _fetch_presence(self, entry: RegistryEntry | None = None) -> list[Member] | None:
        """Read the presence slot (or use a pushed entry); None when unchanged (or not newer)."""
        if entry is None or entry.revision >= EPOCH_REVISION_LIMIT:
            entry = await self._live_entry("presence")
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
        try:
            blob = await self._download(entry.data, MAX_PRESENCE_BYTES)
            members, rejected = decode_presence(self.keys, self._room_keypair.public_key,
                                                self._presence_key, blob)
        except WireError as exc:
            self._invalid(f"presence: {exc}")
            self._heal.set()
            return None
        except StoreError as exc:
            if not _usable_content_error(exc):
                raise
            self._invalid(f"presence: {exc}")
            self._heal.set()
            return None
        for _ in range(rejected):
            self._invalid("presence: a member record failed to verify")
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
        """Emit member_seen / member_gone for the difference to what we knew."""
        listed: dict[tuple[bytes, str], Member] = {}
        for member in members:
            if member.session_id == self.session_id and member.public_key == self.identity.public_key:
                continue
            if self._is_fresh(member):
                listed[member.key] = member
        for key, member in list(self._members.items()):
            if key not in listed and self._presence_full and self._is_fresh(member):
                continue  # a full list may have cut it (a flood): only a bye or staleness says it is gone
            if key not in listed:
                del self._members[key]
                self._watch_slot.discard(key)
                if self._is_fresh(member, margin=CLOCK_SKEW_S):
                    self.events.member_gone(member, "left", "left the room")
                else:  # a writer whose clock runs a little ahead dropped it as stale before we did
                    self.events.member_gone(member, "gone", STALE_REASON)
        for key, member in listed.items():
            known = self._members.get(key)
            self._members[key] = member
            if known is None:
                self.mark_pending()
                self._reread_settings_soon()
                self.events.member_seen(member)

    def expire_stale(self) -> None:
        """Report members whose record went stale (cheap, local: the engine calls it every second)."""
        for key, member in list(self._members.items()):
            if not self._is_fresh(member):
                del self._members[key]
                self._watch_slot.discard(key)
                self.events.member_gone(member, "gone", STALE_REASON)

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
            return decode_skylink(await self._upload(blob))

        async with self._presence_lock:
            signed = await self._compare_and_set("presence", list_after, attempts=12)
            self._remember_presence(signed, written)
            self._heal.clear()  # what we just wrote is usable

    def _list_to_write(self, current: list[Member], leaving: bool) -> list[Member]:
        """The presence list a writer writes, fair under flooding: our own record first, then the
        members we hear on live connections (also when a flood cut them out of ``current``), then the
        freshest others; at most MAX_SESSIONS_PER_IDENTITY sessions per identity, MAX_MEMBERS in all."""
        own = (self.identity.public_key, self.session_id)
        records: dict[tuple[bytes, str], Member] = {}
        alive_known = [m for m in self._members.values() if self.events.alive(m)]
        for member in [*current, *alive_known]:
            known = records.get(member.key)
            if member.key != own and self._is_fresh(member) and (known is None or member.ts_ms > known.ts_ms):
                records[member.key] = member
        alive = {m.key for m in records.values() if self.events.alive(m)}
        ordered = sorted(records.values(), key=lambda m: (m.key not in alive, -m.ts_ms))
        result: list[Member] = []
        if not leaving:
            result.append(sign_member(self.keys, self.identity, self.session_id, self.name,
                                      int(self.clock() * 1000)))
        per_identity: dict[bytes, int] = {self.identity.public_key: 1}
        for member in ordered:
            if len(result) >= MAX_MEMBERS:
                break
            count = per_identity.get(member.public_key, 0)
            if count < MAX_SESSIONS_PER_IDENTITY:
                per_identity[member.public_key] = count + 1
                result.append(member)
        return result

    async def _read_pair_slot(self, member: Member, entry: RegistryEntry | None = None) -> None:
        """Read one member's slot to us and deliver a new message, if any."""
        data_key = self._pair_key(member.session_id, self.session_id)
        state = self._incoming.setdefault(member.key, _SlotState())
        if entry is None:
            self.counters.gets += 1
            entry = await self.store.get_entry(member.public_key, data_key)
        if entry is None or entry.revision <= state.revision:
            return
        before = (state.revision, state.skylink)
        state.revision = entry.revision
        if entry.data == state.skylink:
            return
        state.skylink = entry.data
        try:
            blob = await self._download(entry.data, MAX_MESSAGE_BYTES)
            body = decode_message(self.keys, member.public_key, data_key, blob)
        except WireError as exc:
            self._invalid(f"message: {exc}")
            return
        except StoreError as exc:
            if _usable_content_error(exc):
                self._invalid(f"message: {exc}")
                return
            if state.revision == entry.revision:  # unreachable now: read this message again next time
                state.revision, state.skylink = before
            raise
        if state.revision != entry.revision:
            return  # a newer message was read meanwhile (newest wins: this one is already stale)
        if body["from"] != member.session_id or body["to"] != self.session_id:
            self._invalid("message: addressed to another session (replayed?)")
            return
        self.events.message(member, body)

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
        for member in list(self._members.values()):
            if member.public_key == entry.public_key and entry.data_key == self._pair_key(
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
