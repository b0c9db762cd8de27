"""The room's shared settings (protocol.md §5a): a TURN relay and/or an SFU shared with everyone
holding the password, one signed record, the newest (by its signed ``ts``) is the room's.

Writers merge: a member sharing an SFU keeps the TURN relay someone else shared and vice versa —
each field is taken from the newest record that carries it, then the writer's own fields replace
theirs. Readers take the newest record whole, so the room agrees on one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sdparta.room.keys import Identity, RoomKeys
from sdparta.room.slots import SharedSlots, Transfers, opened_or_counted
from sdparta.room.wire import (
    MAX_SETTINGS_BYTES,
    MAX_SETTINGS_TS,
    RoomSettings,
    TurnServer,
    check_sfu_entry,
    decode_settings,
    encode_settings,
)
from sdparta.store.base import RegistryEntry
from sdparta.store.crypto import decode_skylink

#: A record dated further ahead of our clock than this is not taken (seconds): members' clocks agree
#: within seconds (NTP), and one password holder must not pin the room's settings for ever with a
#: timestamp no honest writer can beat.
MAX_FUTURE_S = 600


def from_the_future(settings: RoomSettings, now_ms: int) -> str | None:
    """Why ``settings`` are not taken (dated too far ahead), or None."""
    ahead = settings.ts_ms - now_ms
    if ahead > MAX_FUTURE_S * 1000:
        return f"room settings dated {ahead // 1000} s ahead of our clock (not taken)"
    return None


@dataclass(frozen=True)
class SettingsShare:
    """What one member puts into the room's settings: its TURN relays and/or an SFU entry (empty /
    None: that field is not ours, the room's stays)."""

    turn: tuple[TurnServer, ...] = ()
    sfu: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.sfu is not None:
            check_sfu_entry(self.sfu)

    def __bool__(self) -> bool:
        return bool(self.turn) or self.sfu is not None

    def missing_from(self, settings: RoomSettings) -> bool:
        """Does ``settings`` lack a field we share (dropped by a writer that had not seen ours: two
        members sharing at once on a relay, where there is no compare-and-set)? A field someone
        replaced with a value of theirs is not missing: the newest writer wins."""
        return (bool(self.turn) and not settings.turn) or (self.sfu is not None and settings.sfu is None)


def newest(records: Iterable[RoomSettings | None]) -> RoomSettings | None:
    """The room's settings among several read: the newest signed ``ts`` (ties: the first)."""
    best: RoomSettings | None = None
    for record in records:
        if record is not None and (best is None or record.ts_ms > best.ts_ms):
            best = record
    return best


def merged(records: Iterable[RoomSettings | None], share: SettingsShare, author: Identity,
           now_ms: int) -> RoomSettings:
    """The record a writer writes: each field from the newest known record that carries it, ours
    over theirs, signed by us at a ``ts`` newer than every record known (also when our clock is
    behind the last writer's), so every reader takes it."""
    known = sorted((r for r in records if r is not None), key=lambda r: r.ts_ms, reverse=True)
    turn = share.turn or next((r.turn for r in known if r.turn), ())
    sfu = share.sfu if share.sfu is not None else next((r.sfu for r in known if r.sfu is not None), None)
    ts_ms = min(MAX_SETTINGS_TS, max([now_ms, *(r.ts_ms + 1 for r in known)]))
    return RoomSettings(author.public_key, ts_ms, tuple(turn), sfu)


async def read_entry_settings(shared: SharedSlots, transfers: Transfers, keys: RoomKeys, entry: RegistryEntry,
                              invalid: Callable[[str], None], now_ms: Callable[[], int]) -> RoomSettings | None:
    """The settings stored in exactly this entry of the settings slot; None when they cannot be
    used (junk, a blob the portal no longer has, dated too far ahead: counted through ``invalid``).
    Raises StoreUnavailable only."""
    async def opening() -> RoomSettings:
        blob = await transfers.download(entry.data, MAX_SETTINGS_BYTES)
        return decode_settings(keys, shared.keypair.public_key, shared.key("settings"), blob)

    settings = await opened_or_counted(opening(), "room settings", invalid)
    if settings is not None and (reason := from_the_future(settings, now_ms())) is not None:
        invalid(reason)
        return None
    return settings


async def read_settings(shared: SharedSlots, transfers: Transfers, keys: RoomKeys,
                        invalid: Callable[[str], None], now_ms: Callable[[], int]) -> RoomSettings | None:
    """The room's settings, verified; None when there are none or they cannot be used (counted
    through ``invalid``). Raises StoreUnavailable only."""
    entry = await shared.live_entry("settings")
    if entry is None:
        return None
    return await read_entry_settings(shared, transfers, keys, entry, invalid, now_ms)


async def write_settings(shared: SharedSlots, transfers: Transfers, keys: RoomKeys, author: Identity,
                         share: SettingsShare, now_ms: Callable[[], int], invalid: Callable[[str], None],
                         known: Iterable[RoomSettings | None] = ()) -> RoomSettings:
    """Merge our fields into the settings the slot holds (and those ``known`` from elsewhere: another
    network) and write the result, compare-and-set on the revision: on conflict the newer content is
    read and merged again, so two members sharing at once both end up in the record."""
    others = list(known)
    written: list[RoomSettings] = []
    sealed: dict[tuple[bytes, bytes], tuple[bytes, RoomSettings]] = {}  # (data key, content read) → written

    async def settings_for(entry: RegistryEntry | None, data_key: bytes) -> bytes:
        slot = entry.data if entry is not None else b""
        if (data_key, slot) not in sealed:
            current = (await read_entry_settings(shared, transfers, keys, entry, invalid, now_ms)
                       if entry is not None else None)
            record = merged([current, *others], share, author, now_ms())
            blob = encode_settings(keys, author, shared.keypair.public_key, data_key, record.turn, record.ts_ms,
                                   sfu=record.sfu)
            sealed[(data_key, slot)] = (decode_skylink(await transfers.upload(blob)), record)
        skylink, written[:] = sealed[(data_key, slot)][0], [sealed[(data_key, slot)][1]]
        return skylink

    await shared.compare_and_set("settings", settings_for, attempts=6)
    return written[0]
