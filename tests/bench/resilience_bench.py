"""Issue 8's recovery figures: how long a room takes to heal after a member writes junk into presence
(finding 2) and after a flood of fake member records (finding 4).

Real portal process, real RoomSessions over HTTP with the product's timing (re-announce ~10 s, TTL
50 s); no WebRTC (presence is what is measured). Usage: python tests/bench/resilience_bench.py
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_tables import Row

from sdparta.room.keys import Identity, RoomKeys
from sdparta.room.session import RoomEvents, RoomSession
from sdparta.room.slots import slot_data_key
from sdparta.room.wire import MAX_MEMBERS, Member, encode_presence, sign_member
from sdparta.store import KeyPair, PortalClient, decode_skylink, sign_entry
from sdparta.store.crypto import MAX_REVISION
from support.procs import start_portal

ROOM_SIZE = 4


class _Quiet(RoomEvents):
    """Events of a bench member: only who is seen matters."""


async def _room(url: str, keys: RoomKeys, size: int, tag: str) -> list[RoomSession]:
    sessions = [RoomSession(PortalClient(url), keys, Identity.generate(), f"{tag}{i}", f"{i + 1:016x}", _Quiet())
                for i in range(size)]
    for session in sessions:
        await session.start()
    deadline = time.monotonic() + 60
    while not all(len(s.members()) == size - 1 for s in sessions):
        if time.monotonic() > deadline:
            raise RuntimeError("bench room did not form")
        await asyncio.sleep(0.05)
    return sessions


async def _close(sessions: list[RoomSession]) -> None:
    for session in sessions:
        await session.close()
        await session.store.aclose()


async def _listed(probe: RoomSession) -> list[Member] | None:
    """The valid list the room's presence slot holds now (None while it is unusable)."""
    entry = await probe._shared.live_entry("presence")
    if entry is None:
        return None
    probe._presence.skylink = b""  # always download: the probe measures the slot, not a cache
    return await probe._members_in(entry)


async def _sign_into_presence(client: PortalClient, keys: RoomKeys, data: bytes, revision: int | None = None) -> None:
    pair = KeyPair.from_private_bytes(keys.presence_seed)
    data_key = slot_data_key(keys, "presence", 0)
    current = await client.get_entry(pair.public_key, data_key)
    revision = revision if revision is not None else (current.revision + 1 if current else 0)
    await client.set_entry(sign_entry(pair, data_key, data, revision))


async def _recovery_after_junk(url: str, revision: int | None, run: int) -> float:
    keys = RoomKeys.derive(f"bench-junk-{revision}-{run}", "pw", iterations=1000)
    sessions = await _room(url, keys, ROOM_SIZE, "m")
    attacker = PortalClient(url)
    probe = RoomSession(PortalClient(url), keys, Identity.generate(), "probe", "f" * 16, _Quiet())
    try:
        await _sign_into_presence(attacker, keys, b"0123456789", revision)
        start = time.monotonic()
        real = {s.name for s in sessions}
        while True:
            listed = await _listed(probe)
            if listed is not None and real <= {m.name for m in listed}:
                return time.monotonic() - start
            if time.monotonic() - start > 120:
                raise RuntimeError("the room did not recover from junk in 120 s")
            await asyncio.sleep(0.05)
    finally:
        await _close(sessions)
        await attacker.aclose()
        await probe.store.aclose()


async def _flood(url: str, run: int, attack_s: float = 20.0) -> tuple[float, float]:
    """(newcomer sees every real member during the flood, s; list free of fakes after it stopped, s)."""
    keys = RoomKeys.derive(f"bench-flood-{run}", "pw", iterations=1000)
    sessions = await _room(url, keys, ROOM_SIZE, "m")
    attacker = PortalClient(url)
    pair = KeyPair.from_private_bytes(keys.presence_seed)
    fakes = [Identity.generate() for _ in range(MAX_MEMBERS)]
    stop = asyncio.Event()

    async def flood() -> None:
        while not stop.is_set():
            now = int(time.time() * 1000)
            records = [sign_member(keys, f, f"{0xf000 + i:016x}", f"fake{i}", now) for i, f in enumerate(fakes)]
            blob = encode_presence(keys, pair.public_key, slot_data_key(keys, "presence", 0), records)
            with contextlib.suppress(Exception):  # a conflict with a member's write: next round
                await _sign_into_presence(attacker, keys, decode_skylink(await attacker.upload_blob(blob)))
            await asyncio.sleep(5.0)

    attack = asyncio.create_task(flood())
    newcomer = RoomSession(PortalClient(url), keys, Identity.generate(), "newcomer", "e" * 16, _Quiet())
    probe = RoomSession(PortalClient(url), keys, Identity.generate(), "probe", "f" * 16, _Quiet())
    try:
        await asyncio.sleep(6.0)  # the flood is in place
        start = time.monotonic()
        await newcomer.start()
        real = {s.name for s in sessions}
        while not real <= {m.name for m in newcomer.members()}:
            if time.monotonic() - start > 60:
                raise RuntimeError("the newcomer never saw the real members")
            await asyncio.sleep(0.05)
        seen_after = time.monotonic() - start
        await asyncio.sleep(max(0.0, attack_s - (time.monotonic() - start)))
        stop.set()
        await attack
        stopped = time.monotonic()
        while True:
            listed = await _listed(probe)
            if listed is not None and not any(m.name.startswith("fake") for m in listed):
                return seen_after, time.monotonic() - stopped
            if time.monotonic() - stopped > 180:
                raise RuntimeError("fakes still listed 180 s after the flood stopped")
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        await newcomer.close()
        await newcomer.store.aclose()
        await _close(sessions)
        await attacker.aclose()
        await probe.store.aclose()


def bench_recovery(rows: list[Row], runs: int = 3) -> None:
    """Append the recovery rows (medians of ``runs``) to ``rows``."""
    with tempfile.TemporaryDirectory() as tmp:
        portal = start_portal(Path(tmp) / "portal.sqlite3")
        try:
            for label, revision in (("10 junk bytes", None), ("a write at revision 2^64−1", MAX_REVISION)):
                times = [asyncio.run(_recovery_after_junk(portal.url, revision, run)) for run in range(runs)]
                rows.append((f"room of {ROOM_SIZE}: recovery after {label} in presence",
                             f"{statistics.median(times):.1f} s",
                             f"median of {runs}, worst {max(times):.1f} s; target ≤ one re-announce (~10 s)"))
            floods = [asyncio.run(_flood(portal.url, run)) for run in range(runs)]
            seen = [f[0] for f in floods]
            cleared = [f[1] for f in floods]
            rows.append((f"room of {ROOM_SIZE} under a flood of {MAX_MEMBERS} fakes re-signed every 5 s: "
                         "newcomer sees every real member", f"{statistics.median(seen):.2f} s",
                         f"median of {runs}, worst {max(seen):.2f} s"))
            rows.append(("… fakes gone from the list after the flood stops", f"{statistics.median(cleared):.0f} s",
                         f"median of {runs}; bound: presence TTL 50 s + one re-announce"))
        finally:
            portal.stop()


if __name__ == "__main__":
    table: list[Row] = []
    bench_recovery(table, runs=int(sys.argv[1]) if len(sys.argv) > 1 else 3)
    for row in table:
        print(" | ".join(row))
