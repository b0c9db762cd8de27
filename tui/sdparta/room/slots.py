"""The registry slots a room lives in, as mechanics: the shared slots under the room keypair
(presence, settings — epochs and compare-and-set) and each member's own pair slots (sealed, signed
messages, newest wins). What the slots *mean* is the session's business (room/session.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sdparta.room.events import SessionCounters
from sdparta.room.keys import Identity, RoomKeys
from sdparta.room.wire import MAX_MESSAGE_BYTES, Member, WireError, decode_message, encode_message
from sdparta.store.base import RegistryEntry, RevisionConflict, Store, StoreError, StoreUnavailable
from sdparta.store.crypto import KeyPair, decode_skylink, encode_skylink, sign_entry

log = logging.getLogger(__name__)

#: A shared slot whose revision reached this is abandoned for the next epoch's slot: no honest room
#: gets there (10^11 years of writes at 6/s), but one write of 2^64-1 would freeze the slot for ever.
EPOCH_REVISION_LIMIT = 2**63
#: Epochs a reader walks at most (each abandoned epoch costs one registry read per join).
MAX_EPOCHS = 32
SHARED_LABELS = ("presence", "settings")


def slot_data_key(keys: RoomKeys, label: str, epoch: int) -> bytes:
    """The data key of the room's ``label`` slot ("presence" or "settings") in ``epoch``; epoch 0 is
    the plain ``data_key(label)``."""
    return keys.data_key(label) if epoch == 0 else keys.data_key(label, f"epoch-{epoch}")


T = TypeVar("T")


async def opened_or_counted(opening: Awaitable[T], what: str, invalid: Callable[[str], None]) -> T | None:
    """Await the download and decoding of a slot's content. Content that cannot be used (junk, a
    missing or mismatched blob, a body that does not open) is counted through ``invalid`` and is
    None; StoreUnavailable passes through: the portal is only unreachable now, so nothing is known
    and nothing must be overwritten."""
    try:
        return await opening
    except (WireError, StoreError) as exc:
        if isinstance(exc, StoreUnavailable):
            raise
        invalid(f"{what}: {exc}")
    return None


@dataclass
class SlotState:
    """The newest revision (and skylink) of a slot read so far."""

    revision: int = -1
    skylink: bytes = b""


class Transfers:
    """Blob uploads and downloads through the store, counted."""

    def __init__(self, store: Store, counters: SessionCounters) -> None:
        self.store = store
        self.counters = counters

    async def upload(self, blob: bytes) -> str:
        self.counters.uploads += 1
        return await self.store.upload_blob(blob)

    async def download(self, raw_skylink: bytes, max_size: int) -> bytes:
        self.counters.downloads += 1
        return await self.store.download_blob(encode_skylink(raw_skylink), max_size=max_size)


class SharedSlots:
    """The room's shared slots under the room keypair, written by every member: the live entry of
    each (walking past abandoned epochs) and read-modify-write with compare-and-set."""

    def __init__(self, transfers: Transfers, keys: RoomKeys,
                 on_move: Callable[[str, bytes, bytes], Awaitable[None]]) -> None:
        self.store = transfers.store
        self.counters = transfers.counters
        self.keys = keys
        self.keypair = KeyPair.from_private_bytes(keys.presence_seed)
        self.epoch = dict.fromkeys(SHARED_LABELS, 0)
        self._on_move = on_move  # (label, old data key, new data key), after an epoch move

    def key(self, label: str) -> bytes:
        """The data key of ``label``'s slot in its current epoch."""
        return slot_data_key(self.keys, label, self.epoch[label])

    async def live_entry(self, label: str) -> RegistryEntry | None:
        """Read ``label``'s slot in its current epoch, moving on past abandoned epochs (a revision at
        or above EPOCH_REVISION_LIMIT): the entry to read and to write after."""
        for _ in range(MAX_EPOCHS):
            epoch = self.epoch[label]
            self.counters.gets += 1
            entry = await self.store.get_entry(self.keypair.public_key, slot_data_key(self.keys, label, epoch))
            if entry is None or entry.revision < EPOCH_REVISION_LIMIT:
                if epoch == self.epoch[label]:
                    return entry
                continue  # another reader moved on meanwhile: read the epoch it moved to
            await self._next_epoch(label, epoch)
        raise StoreError(f"the room's {label} slots are exhausted ({MAX_EPOCHS} epochs written at absurd "
                         "revisions by a hostile member): use another room name or password")

    async def _next_epoch(self, label: str, exhausted: int) -> None:
        """Abandon epoch ``exhausted`` for the next one; nothing to do when a concurrent reader (push,
        poll, re-announce) already moved past it."""
        if exhausted != self.epoch[label]:
            return
        old_key = self.key(label)
        self.epoch[label] += 1
        self.counters.epoch_moves += 1
        log.warning("room %s slot exhausted: moving to epoch %d", label, self.epoch[label])
        await self._on_move(label, old_key, self.key(label))

    async def compare_and_set(self, label: str, make: Callable[[RegistryEntry | None, bytes], Awaitable[bytes]],
                              attempts: int) -> RegistryEntry:
        """Read ``label``'s live entry, ``make(entry, data_key)`` the raw data to follow it, write it at
        revision + 1; the portal refuses a revision that does not grow, so on conflict read again
        (jittered backoff). Returns the entry written."""
        for attempt in range(attempts):
            entry = await self.live_entry(label)
            data_key = self.key(label)
            data = await make(entry, data_key)
            signed = sign_entry(self.keypair, data_key, data, entry.revision + 1 if entry is not None else 0)
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


class PairSlots:
    """Our pair slots to each member (under our identity key) and theirs to us: send the newest
    message, read theirs once per new revision and skylink."""

    def __init__(self, transfers: Transfers, keys: RoomKeys, identity: Identity, session_id: str,
                 invalid: Callable[[str], None]) -> None:
        self.transfers = transfers
        self.store = transfers.store
        self.counters = transfers.counters
        self.keys = keys
        self.identity = identity
        self.session_id = session_id
        self._keypair = KeyPair.from_private_bytes(identity.seed)
        self._invalid = invalid
        self.incoming: dict[tuple[bytes, str], SlotState] = {}
        self._outgoing_revision: dict[tuple[bytes, str], int] = {}

    def key(self, from_sid: str, to_sid: str) -> bytes:
        return self.keys.data_key("pair", from_sid, to_sid)

    async def send(self, member: Member, message: dict[str, Any]) -> None:
        """Seal, sign and publish ``message`` in our pair slot to ``member`` (newest wins)."""
        data_key = self.key(self.session_id, member.session_id)
        skylink = await self.transfers.upload(encode_message(self.keys, self.identity, data_key, message))
        revision = self._outgoing_revision.get(member.key, -1) + 1
        self._outgoing_revision[member.key] = revision
        self.counters.sets += 1
        await self.store.set_entry(sign_entry(self._keypair, data_key, decode_skylink(skylink), revision))

    async def read(self, member: Member, entry: RegistryEntry | None = None) -> dict[str, Any] | None:
        """The member's new message to us, if any (verified and addressed to us); problems are
        counted as invalid. Raises StoreUnavailable only (then the message is read again next time)."""
        data_key = self.key(member.session_id, self.session_id)
        state = self.incoming.setdefault(member.key, SlotState())
        if entry is None:
            self.counters.gets += 1
            entry = await self.store.get_entry(member.public_key, data_key)
        if entry is None or entry.revision <= state.revision:
            return None
        before = (state.revision, state.skylink)
        state.revision = entry.revision
        if entry.data == state.skylink:
            return None
        state.skylink = entry.data

        async def opening() -> dict[str, Any]:
            blob = await self.transfers.download(entry.data, MAX_MESSAGE_BYTES)
            return decode_message(self.keys, member.public_key, data_key, blob)

        try:
            body = await opened_or_counted(opening(), "message", self._invalid)
        except StoreUnavailable:
            if state.revision == entry.revision:  # unreachable now: read this message again next time
                state.revision, state.skylink = before
            raise
        if body is None:
            return None
        if state.revision != entry.revision:
            return None  # a newer message was read meanwhile (newest wins: this one is already stale)
        if body["from"] != member.session_id or body["to"] != self.session_id:
            self._invalid("message: addressed to another session (replayed?)")
            return None
        return body
