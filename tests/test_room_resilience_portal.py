"""Issue 8, findings 1–3 end to end: real portal processes, real bot processes, and what a password
holder (or time) leaves in the room's presence slot. Each used to break the room for good."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdparta.room.keys import RoomKeys
from sdparta.room.slots import slot_data_key
from sdparta.room.wire import seal
from sdparta.store import KeyPair, PortalClient, decode_skylink, encode_skylink, sign_entry
from sdparta.store.crypto import MAX_REVISION
from support.procs import BotProcess, PortalProcess, peers_by_name, start_bot, start_portal, wait_for

pytestmark = pytest.mark.integration

PASSWORD = "pw"


@pytest.fixture(scope="module")
def shared_portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PortalProcess]:
    proc = start_portal(tmp_path_factory.mktemp("portal") / "portal.sqlite3")
    try:
        yield proc
    finally:
        proc.stop()


def bot(tmp_path: Path, room: str, url: str, name: str, *extra: str) -> BotProcess:
    return start_bot(tmp_path, room, [url], name, tone=None, video="none", record=False,
                     extra=["--password", PASSWORD, *extra])


def connected(a: BotProcess, b: BotProcess) -> bool:
    return (peers_by_name(a.report()).get(b.name, {}).get("status") == "connected"
            and peers_by_name(b.report()).get(a.name, {}).get("status") == "connected")


def diagnose(*bots: BotProcess) -> str:
    return "\n".join(f"{b.name}: {b.report()}\n  log: {' | '.join(b.log_path.read_text().splitlines()[-10:])}"
                     for b in bots)


def presence_slot(room: str) -> tuple[KeyPair, bytes, RoomKeys]:
    keys = RoomKeys.derive(room, PASSWORD)
    return KeyPair.from_private_bytes(keys.presence_seed), slot_data_key(keys, "presence", 0), keys


async def _write(url: str, room: str, data: bytes | None, revision: int | None = None,
                 sealed_plaintext: bytes | None = None) -> None:
    """Sign ``data`` (or a sealed blob of ``sealed_plaintext``) into the room's presence slot, as
    anyone with the password can."""
    pair, data_key, keys = presence_slot(room)
    client = PortalClient(url)
    try:
        if sealed_plaintext is not None:
            blob = seal(keys, b"presence", pair.public_key, data_key, sealed_plaintext)
            data = decode_skylink(await client.upload_blob(blob))
        current = await client.get_entry(pair.public_key, data_key)
        if revision is None:
            revision = current.revision + 1 if current is not None else 0
        assert data is not None
        await client.set_entry(sign_entry(pair, data_key, data, revision))
    finally:
        await client.aclose()


def ensure_stopped(*bots: BotProcess) -> None:
    for b in bots:
        b.stop()


def test_a_room_left_empty_past_the_skyfile_lifetime_can_be_joined_again(tmp_path: Path) -> None:
    """The last member leaves an empty list; its skyfile expires. Joiners used to fail for ever with
    "skyfile … is not on portal"."""
    room = "expired-room"
    data = tmp_path / "portal.sqlite3"
    short = start_portal(data, extra=["--blob-ttl-hours", "0.001"])  # 3.6 s, swept every second
    try:
        first = bot(tmp_path, room, short.url, "first", "--duration", "2")
        assert first.proc.wait(60) in (0, 3), diagnose(first)
        pair, data_key, _ = presence_slot(room)

        async def presence_blob_gone() -> bool:
            client = PortalClient(short.url)
            try:
                entry = await client.get_entry(pair.public_key, data_key)
                assert entry is not None, "the leaver's empty list was never written"
                try:
                    await client.download_blob(encode_skylink(entry.data))
                except Exception as exc:
                    if "is not on portal" not in str(exc):
                        raise
                else:
                    return False
            finally:
                await client.aclose()
            # expired is not enough: the sweep must have deleted it (a restart with a longer lifetime
            # would serve it again)
            with sqlite3.connect(f"file:{data}?mode=ro", uri=True) as db:
                row = db.execute("SELECT 1 FROM blobs WHERE skylink=?", (encode_skylink(entry.data),)).fetchone()
            return row is None

        wait_for(lambda: asyncio.run(presence_blob_gone()), 60, "the presence skyfile to expire", interval=0.5)
    finally:
        short.stop()
    # the same data with an ordinary lifetime: the slot still names the expired skyfile
    portal = start_portal(data)
    a = bot(tmp_path, room, portal.url, "a")
    b = bot(tmp_path, room, portal.url, "b")
    try:
        wait_for(lambda: connected(a, b), 90, "a and b connected in the expired room",
                 diagnostics=lambda: diagnose(a, b))
    finally:
        ensure_stopped(a, b)
        portal.stop()


JUNK = {
    "10-junk-bytes": dict(data=b"0123456789"),
    "34-bytes-naming-no-skyfile": dict(data=bytes(2) + b"\x07" * 32),
    "revision-2^64-1": dict(data=b"frozen", revision=MAX_REVISION),
    "50000-nested-brackets": dict(data=None, sealed_plaintext=b"[" * 50_000),
}


@pytest.mark.parametrize("junk", list(JUNK), ids=list(JUNK))
def test_a_member_writing_junk_into_presence_does_not_break_the_room(shared_portal: PortalProcess,
                                                                     tmp_path: Path, junk: str) -> None:
    """A member is in the room; someone with the password writes junk into presence; a newcomer joins.
    Both must find each other (the newcomer failed to join, or its engine crashed, and the member
    stopped re-announcing, for good)."""
    room = f"junk-room-{junk}"
    a = bot(tmp_path, room, shared_portal.url, "a")
    b: BotProcess | None = None
    try:
        wait_for(lambda: (a.report() or {}).get("status") == "joined", 60, "a joined",
                 diagnostics=lambda: diagnose(a))
        asyncio.run(_write(shared_portal.url, room, **JUNK[junk]))
        time.sleep(0.5)  # let a's push read the junk before anyone else writes
        b = bot(tmp_path, room, shared_portal.url, "b")
        wait_for(lambda: connected(a, b), 90, "a and b connected past the junk", diagnostics=lambda: diagnose(a, b))
        for member in (a, b):
            log = member.log_path.read_text()
            assert "engine crashed" not in log and "Traceback" not in log, diagnose(member)
        assert (a.report() or {})["invalid_messages"] + (b.report() or {})["invalid_messages"] >= (
            0 if junk == "revision-2^64-1" else 1)  # junk was seen and counted, not ignored silently
    finally:
        ensure_stopped(a, *([b] if b else []))
