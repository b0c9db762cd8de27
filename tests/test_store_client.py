"""Store clients against real portals: single, several (one down, one stale, one lying), SkyDB."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from sdparta.portal.server import RunningPortal, start_portal
from sdparta.store import MultiStore, PortalClient, StoreUnavailable, open_store
from sdparta.store.base import InvalidEntry, RevisionConflict
from sdparta.store.crypto import KeyPair, hash_data_key, sign_entry
from sdparta.store.skydb import get_json, set_json
from support.procs import free_port

KEY = KeyPair.from_seed("client-test")
DK = hash_data_key("slot")


@pytest.fixture
async def two_portals(tmp_path: Path) -> AsyncIterator[tuple[RunningPortal, RunningPortal]]:
    a = await start_portal("127.0.0.1", 0, tmp_path / "a.sqlite3")
    b = await start_portal("127.0.0.1", 0, tmp_path / "b.sqlite3")
    yield a, b
    await a.stop()
    await b.stop()


async def test_portal_client_round_trip(two_portals: tuple[RunningPortal, RunningPortal]) -> None:
    client = PortalClient(two_portals[0].url)
    try:
        assert await client.get_entry(KEY.public_key, DK) is None
        await client.set_entry(sign_entry(KEY, DK, b"x", 1))
        with pytest.raises(RevisionConflict):
            await client.set_entry(sign_entry(KEY, DK, b"y", 1))
        entry = await client.get_entry(KEY.public_key, DK)
        assert entry is not None and entry.data == b"x" and entry.revision == 1
        link = await client.upload_blob(b"content")
        assert await client.download_blob(link) == b"content"
        with pytest.raises(InvalidEntry):
            await client.download_blob(link, max_size=3)
    finally:
        await client.aclose()


async def test_multi_store_takes_highest_revision_and_survives_a_dead_portal(
        two_portals: tuple[RunningPortal, RunningPortal]) -> None:
    a, b = two_portals
    only_a, only_b = PortalClient(a.url), PortalClient(b.url)
    await only_a.set_entry(sign_entry(KEY, DK, b"old", 1))
    await only_b.set_entry(sign_entry(KEY, DK, b"new", 5))
    dead = f"http://127.0.0.1:{free_port()}"
    store = MultiStore([PortalClient(dead), only_a, only_b])
    try:
        entry = await store.get_entry(KEY.public_key, DK)
        assert entry is not None and entry.data == b"new" and entry.revision == 5
        await store.set_entry(sign_entry(KEY, DK, b"newer", 6))  # the dead one fails, the others take it
        for client in (only_a, only_b):
            got = await client.get_entry(KEY.public_key, DK)
            assert got is not None and got.data == b"newer"
        link = await store.upload_blob(b"both")
        assert await only_b.download_blob(link) == b"both"
    finally:
        await store.aclose()
    all_dead = open_store([dead, f"http://127.0.0.1:{free_port()}"])
    try:
        with pytest.raises(StoreUnavailable, match="unreachable"):
            await all_dead.get_entry(KEY.public_key, DK)
    finally:
        await all_dead.aclose()


async def test_forged_entry_from_a_lying_portal_is_rejected(two_portals: tuple[RunningPortal, RunningPortal]) -> None:
    """A portal that returns a high revision with a bad signature is ignored in favour of the honest one."""
    honest = PortalClient(two_portals[0].url)
    await honest.set_entry(sign_entry(KEY, DK, b"true", 2))
    forged = sign_entry(KeyPair.from_seed("mallory"), DK, b"forged", 99)

    async def liar(request: web.Request) -> web.Response:
        return web.json_response({"data": forged.data.hex(), "revision": 99, "signature": forged.signature.hex()})

    app = web.Application()
    app.router.add_get("/skynet/registry", liar)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    lying = PortalClient(f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(InvalidEntry, match="signature"):
            await lying.get_entry(KEY.public_key, DK)
        entry = await MultiStore([lying, honest]).get_entry(KEY.public_key, DK)
        assert entry is not None and entry.data == b"true"
    finally:
        await lying.aclose()
        await honest.aclose()
        await runner.cleanup()


async def test_skydb_json_round_trip(two_portals: tuple[RunningPortal, RunningPortal]) -> None:
    store = PortalClient(two_portals[0].url)
    keypair = KeyPair.from_seed("skydb-seed")
    try:
        assert await get_json(store, keypair.public_key, "greeting") is None
        assert await set_json(store, keypair, "greeting", {"hello": "world"}) == 0
        assert await set_json(store, keypair, "greeting", {"hello": "again"}) == 1
        assert await get_json(store, keypair.public_key, "greeting") == ({"hello": "again"}, 1)
        entry = await store.get_entry(keypair.public_key, hash_data_key("greeting"))
        assert entry is not None and len(entry.data) == 34  # raw skylink, as skynet-js stores it
    finally:
        await store.aclose()


async def run_cli(*args: str) -> tuple[int, str, str]:
    """Run the CLI without blocking the loop that serves the in-process portal."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "sdparta", "skydb", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_skydb_cli_interoperates_with_library(two_portals: tuple[RunningPortal, RunningPortal]) -> None:
    url = two_portals[1].url
    code, _, err = await run_cli("set", "--portal", url, "--seed", "cli-seed", "k", '{"n": [1, 2]}')
    assert code == 0, err
    store = PortalClient(url)
    try:
        assert await get_json(store, KeyPair.from_seed("cli-seed").public_key, "k") == ({"n": [1, 2]}, 0)
        await set_json(store, KeyPair.from_seed("cli-seed"), "k", "from library")
    finally:
        await store.aclose()
    code, out, _ = await run_cli("get", "--portal", url, "--seed", "cli-seed", "k")
    assert code == 0 and out.strip() == '"from library"'
    code, _, err = await run_cli("get", "--portal", url, "--seed", "cli-seed", "missing")
    assert code == 1 and "no value" in err
    code, _, err = await run_cli("set", "--portal", url, "--seed", "s", "k", "{bad")
    assert code == 2 and "not valid JSON" in err
