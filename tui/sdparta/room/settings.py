"""The room's shared settings slot (a TURN relay shared with everyone holding the password)."""

from __future__ import annotations

from collections.abc import Callable

from sdparta.room.keys import Identity, RoomKeys
from sdparta.room.slots import SharedSlots, Transfers, opened_or_counted
from sdparta.room.wire import MAX_SETTINGS_BYTES, RoomSettings, TurnServer, decode_settings, encode_settings
from sdparta.store.base import RegistryEntry
from sdparta.store.crypto import decode_skylink


async def read_settings(shared: SharedSlots, transfers: Transfers, keys: RoomKeys,
                        invalid: Callable[[str], None]) -> RoomSettings | None:
    """The room's settings, verified; None when there are none or they cannot be used (junk, a blob
    the portal no longer has: counted through ``invalid``). Raises StoreUnavailable only."""
    entry = await shared.live_entry("settings")
    if entry is None:
        return None
    async def opening() -> RoomSettings:
        blob = await transfers.download(entry.data, MAX_SETTINGS_BYTES)
        return decode_settings(keys, shared.keypair.public_key, shared.key("settings"), blob)

    return await opened_or_counted(opening(), "room settings", invalid)


async def write_settings(shared: SharedSlots, transfers: Transfers, keys: RoomKeys, author: Identity,
                         turn: list[TurnServer], ts_ms: int) -> RoomSettings:
    """Replace the room's settings (compare-and-set on the revision, retried on conflict)."""
    sealed: dict[bytes, bytes] = {}  # data key → raw skylink: the blob is bound to its slot (epoch)

    async def settings_for(_entry: RegistryEntry | None, data_key: bytes) -> bytes:
        if data_key not in sealed:
            blob = encode_settings(keys, author, shared.keypair.public_key, data_key, turn, ts_ms)
            sealed[data_key] = decode_skylink(await transfers.upload(blob))
        return sealed[data_key]

    await shared.compare_and_set("settings", settings_for, attempts=6)
    return RoomSettings(author.public_key, ts_ms, tuple(turn))
