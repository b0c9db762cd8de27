"""Store clients against real portals on 127.0.0.1: single, several (down, stale, lying), push, SkyDB,
and the in-memory store that upper layers test against."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from sdparta.portal.server import RunningPortal, start_portal
from sdparta.store import (
    InvalidEntry,
    MemoryStore,
    MultiStore,
    PortalClient,
    RegistryEntry,
    RevisionConflict,
    StoreError,
    StoreUnavailable,
    open_store,
)
from sdparta.store.crypto import KeyPair, encode_skylink, hash_data_key, sign_entry, skylink_for_content
from sdparta.store.skydb import DELETION_ENTRY_DATA, delete_json, encode_json, get_json, set_json
from support.procs import free_port

KEY = KeyPair.from_seed("client-test")
DK = hash_data_key("slot")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def two_portals(tmp_path: Path) -> AsyncIterator[tuple[RunningPortal, RunningPortal]]:
    a = await start_portal("127.0.0.1", 0, tmp_path / "a.sqlite3")
    b = await start_portal("127.0.0.1", 0, tmp_path / "b.sqlite3")
    yield a, b
    await a.stop()
    await b.stop()


@pytest.fixture
async def fake_portal() -> AsyncIterator[Callable[[dict[tuple[str, str], Handler]], Awaitable[str]]]:
    """A tiny misbehaving portal: ``await fake_portal({("GET", "/skynet/registry"): handler})`` → URL."""
    runners: list[web.AppRunner] = []

    async def make(routes: dict[tuple[str, str], Handler]) -> str:
        app = web.Application()
        for (method, path), handler in routes.items():
            app.router.add_route(method, path, handler)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield make
    for runner in runners:
        await runner.cleanup()


def entry_answer(entry: RegistryEntry) -> dict[str, Any]:
    return {"data": entry.data.hex(), "revision": entry.revision, "signature": entry.signature.hex(), "type": 1}


async def next_update(sub: Any, timeout: float = 5.0) -> RegistryEntry:
    return await asyncio.wait_for(anext(aiter(sub.updates())), timeout)


# ---------------------------------------------------------------------- one portal
async def test_portal_client_round_trip(two_portals: tuple[RunningPortal, RunningPortal]) -> None:
    client = PortalClient(two_portals[0].url + "/")
    try:
        assert await client.get_entry(KEY.public_key, DK) is None
        await client.set_entry(sign_entry(KEY, DK, b"x", 1))
        with pytest.raises(RevisionConflict, match="revision"):
            await client.set_entry(sign_entry(KEY, DK, b"y", 1))
        with pytest.raises(StoreError, match="too big") as info:
            await client.set_entry(sign_entry(KEY, DK, bytes(114), 2))
        assert not isinstance(info.value, RevisionConflict)
        entry = await client.get_entry(KEY.public_key, DK)
        assert entry is not None and entry.data == b"x" and entry.revision == 1
        link = await client.upload_blob(b"content")
        assert link == skylink_for_content(b"content")
        assert await client.download_blob(link) == b"content"
        with pytest.raises(InvalidEntry, match=r"over 3 bytes|of 7 bytes"):
            await client.download_blob(link, max_size=3)
        with pytest.raises(StoreError, match="not on portal"):
            await client.download_blob(skylink_for_content(b"absent"))
        with pytest.raises(InvalidEntry):
            await client.download_blob("../../etc/passwd")
    finally:
        await client.aclose()


async def test_open_store_validates_urls() -> None:
    for bad in ([], ["ftp://x"], ["127.0.0.1:8787"], ["http://"], ["http://h/?q=1"]):
        with pytest.raises(ValueError, match="portal"):
            open_store(bad)
    single = open_store(["http://127.0.0.1:1", "http://127.0.0.1:1/"])  # duplicates are dropped
    several = open_store(["http://127.0.0.1:1", "http://127.0.0.1:2"])
    assert isinstance(single, PortalClient) and isinstance(several, MultiStore)
    await single.aclose()
    await several.aclose()


async def test_unreachable_and_overloaded_portals_are_unavailable(fake_portal: Any) -> None:
    async def overloaded(request: web.Request) -> web.Response:
        return web.json_response({"message": "busy"}, status=503)

    async def refuses(request: web.Request) -> web.Response:
        return web.json_response({"message": "entry is not allowed here"}, status=400)

    url = await fake_portal({("GET", "/skynet/registry"): overloaded, ("POST", "/skynet/registry"): refuses})
    dead = PortalClient(f"http://127.0.0.1:{free_port()}", timeout=2)
    busy = PortalClient(url)
    try:
        with pytest.raises(StoreUnavailable, match=r"unreachable.*sdparta portal"):
            await dead.get_entry(KEY.public_key, DK)
        with pytest.raises(StoreUnavailable, match=r"503.*busy"):
            await busy.get_entry(KEY.public_key, DK)
        with pytest.raises(StoreError, match="entry is not allowed here") as info:
            await busy.set_entry(sign_entry(KEY, DK, b"x", 1))
        assert not isinstance(info.value, StoreUnavailable | RevisionConflict)
    finally:
        await dead.aclose()
        await busy.aclose()


# ---------------------------------------------------------------------- lying portals
async def test_forged_entry_from_a_lying_portal_is_rejected(
        two_portals: tuple[RunningPortal, RunningPortal], fake_portal: Any) -> None:
    """A high revision with a bad signature, or an entry of another slot, is ignored in favour of
    the honest portal."""
    honest = PortalClient(two_portals[0].url)
    await honest.set_entry(sign_entry(KEY, DK, b"true", 2))
    forged = sign_entry(KeyPair.from_seed("mallory"), DK, b"forged", 99)
    replayed = sign_entry(KEY, hash_data_key("another slot"), b"replayed", 98)  # validly signed elsewhere

    async def forger(request: web.Request) -> web.Response:
        return web.json_response(entry_answer(forged))

    async def replayer(request: web.Request) -> web.Response:
        return web.json_response(entry_answer(replayed))

    lying = PortalClient(await fake_portal({("GET", "/skynet/registry"): forger}))
    replaying = PortalClient(await fake_portal({("GET", "/skynet/registry"): replayer}))
    try:
        with pytest.raises(InvalidEntry, match="signature"):
            await lying.get_entry(KEY.public_key, DK)
        with pytest.raises(InvalidEntry, match="signature"):
            await replaying.get_entry(KEY.public_key, DK)
        entry = await MultiStore([lying, replaying, honest]).get_entry(KEY.public_key, DK)
        assert entry is not None and entry.data == b"true" and entry.revision == 2
    finally:
        for client in (lying, replaying, honest):
            await client.aclose()


async def test_oversized_or_garbage_answers_are_bounded(fake_portal: Any) -> None:
    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # no Content-Length: the client must stop reading by itself
        await response.prepare(request)
        for _ in range(1000):
            await response.write(b" " * 65536)
        return response

    async def garbage(request: web.Request) -> web.Response:
        return web.Response(text="<html>not json</html>")

    big = PortalClient(await fake_portal({("GET", "/skynet/registry"): huge, ("GET", "/{link}"): huge}))
    junk = PortalClient(await fake_portal({("GET", "/skynet/registry"): garbage}))
    try:
        with pytest.raises(InvalidEntry, match="over 4096 bytes"):
            await big.get_entry(KEY.public_key, DK)
        with pytest.raises(InvalidEntry, match="over 1000 bytes"):
            await big.download_blob(skylink_for_content(b"x"), max_size=1000)
        with pytest.raises(InvalidEntry, match="not JSON"):
            await junk.get_entry(KEY.public_key, DK)
    finally:
        await big.aclose()
        await junk.aclose()


async def test_wrong_blob_content_or_skylink_is_rejected(
        two_portals: tuple[RunningPortal, RunningPortal], fake_portal: Any) -> None:
    link = skylink_for_content(b"genuine")

    async def swap(request: web.Request) -> web.Response:
        return web.Response(body=b"swapped content")

    async def wrong_link(request: web.Request) -> web.Response:
        return web.json_response({"skylink": link})

    liar = PortalClient(await fake_portal({("GET", "/{link}"): swap, ("POST", "/skynet/skyfile"): wrong_link}))
    honest = PortalClient(two_portals[0].url)
    try:
        assert await honest.upload_blob(b"genuine") == link
        with pytest.raises(InvalidEntry, match="does not match"):
            await liar.download_blob(link)
        with pytest.raises(InvalidEntry, match="does not name"):
            await liar.upload_blob(b"something else")
        assert await MultiStore([liar, honest]).download_blob(link) == b"genuine"
    finally:
        await liar.aclose()
        await honest.aclose()


# ---------------------------------------------------------------------- several portals
async def test_multi_store_takes_highest_revision_survives_a_dead_portal_and_repairs(
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
        await store.wait_repairs()  # read-repair copied the newer signed entry to the stale portal
        repaired = await only_a.get_entry(KEY.public_key, DK)
        assert repaired is not None and repaired.revision == 5
        await store.set_entry(sign_entry(KEY, DK, b"newer", 6))  # the dead one fails, the others take it
        for client in (only_a, only_b):
            got = await client.get_entry(KEY.public_key, DK)
            assert got is not None and got.data == b"newer"
        link = await store.upload_blob(b"both")
        assert await only_a.download_blob(link) == b"both" and await only_b.download_blob(link) == b"both"
        assert await store.download_blob(link) == b"both"  # the dead portal is first and skipped
    finally:
        await store.aclose()
    all_dead = open_store([dead, f"http://127.0.0.1:{free_port()}"])
    try:
        with pytest.raises(StoreUnavailable, match="unreachable"):
            await all_dead.get_entry(KEY.public_key, DK)
        with pytest.raises(StoreUnavailable):
            await all_dead.set_entry(sign_entry(KEY, DK, b"x", 1))
    finally:
        await all_dead.aclose()


async def test_multi_store_conflicts_must_be_proven(
        two_portals: tuple[RunningPortal, RunningPortal], fake_portal: Any) -> None:
    a, b = (PortalClient(p.url) for p in two_portals)

    async def claims_conflict(request: web.Request) -> web.Response:
        return web.json_response({"message": "revision number must be greater"}, status=400)

    async def has_nothing(request: web.Request) -> web.Response:
        return web.json_response({"message": "not found"}, status=404)

    liar = PortalClient(await fake_portal({("POST", "/skynet/registry"): claims_conflict,
                                           ("GET", "/skynet/registry"): has_nothing}))
    store = MultiStore([liar, a, b])
    try:
        # a portal that claims a conflict but shows no newer entry cannot block the write
        await store.set_entry(sign_entry(KEY, DK, b"one", 1))
        assert (await b.get_entry(KEY.public_key, DK)).data == b"one"  # type: ignore[union-attr]
        # the same entry again: the portals that already have it count as success
        await store.set_entry(sign_entry(KEY, DK, b"one", 1))
        # a real, newer entry on one portal is a conflict even though the other accepts the write
        await b.set_entry(sign_entry(KEY, DK, b"someone else", 7))
        with pytest.raises(RevisionConflict, match="re-read"):
            await store.set_entry(sign_entry(KEY, DK, b"mine", 2))
        with pytest.raises(RevisionConflict):
            await MultiStore([a, b]).set_entry(sign_entry(KEY, DK, b"stale", 1))
    finally:
        await store.aclose()


# ---------------------------------------------------------------------- push
async def test_portal_subscription_pushes_verified_updates_and_reconnects(tmp_path: Path) -> None:
    data = tmp_path / "push.sqlite3"
    portal = await start_portal("127.0.0.1", 0, data)
    port = int(portal.url.rsplit(":", 1)[1])
    client, writer = PortalClient(portal.url), PortalClient(portal.url)
    sub = await client.open_subscription()
    assert sub is not None
    try:
        await writer.set_entry(sign_entry(KEY, DK, b"first", 1))
        await sub.add(KEY.public_key, DK)
        first = await next_update(sub)  # current value on subscribe
        assert (first.data, first.revision) == (b"first", 1)
        await writer.set_entry(sign_entry(KEY, DK, b"second", 2))
        assert (await next_update(sub)).data == b"second"
        # the portal restarts on the same port: the subscription reconnects and re-subscribes
        await portal.stop()
        await asyncio.wait_for(_wait_cleared(sub.connected), 5)
        portal = await start_portal("127.0.0.1", port, data)
        await writer.set_entry(sign_entry(KEY, DK, b"after restart", 3))
        pushed = await next_update(sub, timeout=15)
        assert (pushed.data, pushed.revision) == (b"after restart", 3)
        assert sub.reconnects >= 1
    finally:
        await sub.aclose()
        await client.aclose()
        await writer.aclose()
        await portal.stop()


async def _wait_cleared(event: asyncio.Event) -> None:
    while event.is_set():
        await asyncio.sleep(0.02)


async def test_forged_push_is_dropped(fake_portal: Any) -> None:
    good = sign_entry(KEY, DK, b"good", 4)
    forged = sign_entry(KeyPair.from_seed("mallory"), DK, b"forged", 9)
    other_slot = sign_entry(KEY, hash_data_key("not subscribed"), b"unasked", 1)

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive_json()  # the subscribe
        for entry in (forged, other_slot, good):
            await ws.send_json({"pubkey": "ed25519:" + KEY.public_key.hex(), "datakey": entry.data_key.hex(),
                                **entry_answer(entry)})
        await ws.receive()
        return ws

    client = PortalClient(await fake_portal({("GET", "/skynet/registry/subscription"): ws_handler}))
    sub = await client.open_subscription()
    assert sub is not None
    try:
        await sub.add(KEY.public_key, DK)
        assert await next_update(sub) == good
        assert sub.rejected == 1
    finally:
        await sub.aclose()
        await client.aclose()


async def test_no_push_is_detected_once(tmp_path: Path, fake_portal: Any) -> None:
    portal = await start_portal("127.0.0.1", 0, tmp_path / "plain.sqlite3", subscription=False)
    client = PortalClient(portal.url)
    try:
        assert await client.open_subscription() is None
        await portal.stop()  # remembered: no second probe even though the portal is gone now
        assert await client.open_subscription() is None
    finally:
        await client.aclose()
    down = PortalClient(f"http://127.0.0.1:{free_port()}")
    try:
        assert await down.open_subscription() is None  # down is not "no push": probed again later
        assert down._push_supported is None
    finally:
        await down.aclose()


async def test_multi_subscription_merges_and_deduplicates(two_portals: tuple[RunningPortal, RunningPortal]) -> None:
    a, b = (PortalClient(p.url) for p in two_portals)
    store = MultiStore([a, b])
    sub = await store.open_subscription()
    assert sub is not None
    try:
        await sub.add(KEY.public_key, DK)
        await store.set_entry(sign_entry(KEY, DK, b"to both", 1))  # pushed by both portals, delivered once
        await b.set_entry(sign_entry(KEY, DK, b"only b", 2))
        first, second = await next_update(sub), await next_update(sub)
        assert [(first.data, first.revision), (second.data, second.revision)] == [(b"to both", 1), (b"only b", 2)]
    finally:
        await sub.aclose()
        await store.aclose()


# ---------------------------------------------------------------------- memory store
async def test_memory_store_applies_the_portal_rules_and_pushes() -> None:
    store = MemoryStore(max_blob_bytes=100)
    sub = await store.open_subscription()
    assert sub is not None
    await store.set_entry(sign_entry(KEY, DK, b"v1", 1))
    await sub.add(KEY.public_key, DK)
    assert (await next_update(sub)).data == b"v1"
    with pytest.raises(RevisionConflict):
        await store.set_entry(sign_entry(KEY, DK, b"v1 again", 1))
    with pytest.raises(StoreError, match="too big"):
        await store.set_entry(sign_entry(KEY, DK, bytes(114), 2))
    bad = sign_entry(KEY, DK, b"x", 2)
    with pytest.raises(StoreError, match="signature"):
        await store.set_entry(RegistryEntry(bad.public_key, bad.data_key, b"y", 2, bad.signature))
    await store.set_entry(sign_entry(KEY, DK, b"v2", 2))
    assert (await next_update(sub)).data == b"v2"
    link = await store.upload_blob(b"blob")
    assert link == skylink_for_content(b"blob") and await store.download_blob(link) == b"blob"
    with pytest.raises(StoreError, match="too large"):
        await store.upload_blob(bytes(101))
    store.available = False
    with pytest.raises(StoreUnavailable):
        await store.get_entry(KEY.public_key, DK)
    assert store.calls["set_entry"] == 5
    await sub.aclose()
    assert await MemoryStore(push=False).open_subscription() is None


async def test_multi_store_over_memory_stores_with_an_outage() -> None:
    up, down = MemoryStore(name="up"), MemoryStore(name="down")
    store = MultiStore([down, up])
    down.available = False
    await store.set_entry(sign_entry(KEY, DK, b"while down", 1))
    down.available = True
    got = await store.get_entry(KEY.public_key, DK)
    assert got is not None and got.data == b"while down"
    await store.wait_repairs()
    assert (KEY.public_key, DK) in down.entries  # caught up by read-repair


# ---------------------------------------------------------------------- SkyDB
async def test_skydb_json_round_trip(two_portals: tuple[RunningPortal, RunningPortal]) -> None:
    store = PortalClient(two_portals[0].url)
    keypair = KeyPair.from_seed("skydb-seed")
    try:
        assert await get_json(store, keypair.public_key, "greeting") is None
        assert await set_json(store, keypair, "greeting", {"hello": "world"}) == 0
        assert await set_json(store, keypair, "greeting", {"hello": "again", "ü": [1.5, None]}) == 1
        assert await get_json(store, keypair, "greeting") == ({"hello": "again", "ü": [1.5, None]}, 1)
        entry = await store.get_entry(keypair.public_key, hash_data_key("greeting"))
        assert entry is not None and len(entry.data) == 34  # the raw skylink, as skynet-js stores it
        blob = await store.download_blob(encode_skylink(entry.data))
        assert json.loads(blob) == {"_data": {"hello": "again", "ü": [1.5, None]}, "_v": 2}
        assert await delete_json(store, keypair, "greeting") == 2
        assert await get_json(store, keypair, "greeting") is None
        assert (await store.get_entry(keypair.public_key, hash_data_key("greeting"))).data == DELETION_ENTRY_DATA  # type: ignore[union-attr]
        with pytest.raises(StoreError, match="JSON"):
            await set_json(store, keypair, "bad", float("nan"))
    finally:
        await store.aclose()


def test_skydb_encoding_matches_json_stringify() -> None:
    assert encode_json({"a": [1, "é"], "b": None}) == '{"_data":{"a":[1,"é"],"b":null},"_v":2}'.encode()


async def test_skydb_reads_legacy_layouts() -> None:
    """Pre-v4 skynet-js stored the base64 skylink string (46 bytes) and unwrapped JSON."""
    store = MemoryStore()
    keypair = KeyPair.from_seed("legacy")
    link = await store.upload_blob(b'{"old": true}')
    await store.set_entry(sign_entry(keypair, hash_data_key("k"), link.encode(), 3))
    assert await get_json(store, keypair.public_key, "k") == ({"old": True}, 3)
    await store.set_entry(sign_entry(keypair, hash_data_key("k"), b"short", 4))
    with pytest.raises(InvalidEntry, match="not a skylink"):
        await get_json(store, keypair.public_key, "k")
