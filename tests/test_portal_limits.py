"""Issue 8: one hostile client (no password needed) must not take the portal from everyone else.

Every test talks to a real portal over HTTP on 127.0.0.1. "Another client" is a second source
address on loopback (127.0.0.2, still this machine, still a connection to 127.0.0.1), because the
limits are per client address. Timeouts are tested with small configured timeouts and generous
condition waits; nothing asserts on durations.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import subprocess
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from sdparta.portal.clients import client_key
from sdparta.portal.options import PortalOptions
from sdparta.portal.server import RunningPortal, start_portal
from sdparta.store.base import DEFAULT_MAX_BLOB
from sdparta.store.crypto import KeyPair, hash_data_key, sign_entry, skylink_for_content
from support.procs import start_portal as start_portal_process

KEY = KeyPair.from_seed("limits-test")
OTHER = "127.0.0.2"  # a second client on this machine


def entry_json(data: bytes, revision: int, data_key: bytes, keypair: KeyPair = KEY) -> dict[str, Any]:
    entry = sign_entry(keypair, data_key, data, revision)
    return {"publickey": {"algorithm": "ed25519", "key": list(entry.public_key)}, "datakey": data_key.hex(),
            "revision": revision, "data": list(entry.data), "signature": list(entry.signature)}


def get_params(data_key: bytes, keypair: KeyPair = KEY) -> dict[str, str]:
    return {"publickey": "ed25519:" + keypair.public_key.hex(), "datakey": data_key.hex()}


def subscribe_msg(data_key: bytes) -> dict[str, str]:
    return {"action": "subscribe", "pubkey": "ed25519:" + KEY.public_key.hex(), "datakey": data_key.hex()}


def client(portal: RunningPortal, source: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=source)
    return httpx.AsyncClient(base_url=portal.url, timeout=20, transport=transport)


def ws_session(source: str = "127.0.0.1") -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0)))


def port_of(portal: RunningPortal) -> int:
    return int(portal.url.rsplit(":", 1)[1])


async def upload(http: httpx.AsyncClient, content: bytes) -> httpx.Response:
    return await http.post("/skynet/skyfile", files={"file": ("f", content)})


async def eventually(predicate: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    """Condition wait with a generous deadline (CI is a loaded 2-core machine)."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def make_portal(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[RunningPortal]]]:
    started: list[RunningPortal] = []

    async def make(**options: Any) -> RunningPortal:
        portal = await start_portal("127.0.0.1", 0, tmp_path / f"p{len(started)}.sqlite3", PortalOptions(**options))
        started.append(portal)
        return portal

    yield make
    for portal in started:
        await portal.stop()


def test_client_key_groups_ipv6_by_prefix() -> None:
    assert client_key("127.0.0.1") == "127.0.0.1"
    assert client_key("::ffff:10.0.0.7") == "10.0.0.7"
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key(None) == "local"


# ------------------------------------------------------------------------------ 6. skyfile quota
async def test_upload_rate_is_limited_per_client(make_portal: Callable[..., Awaitable[RunningPortal]]) -> None:
    portal = await make_portal(max_blob_bytes=64 * 1024, upload_rate_bytes_s=1024, upload_burst_bytes=200 * 1024)
    async with client(portal) as http, client(portal, OTHER) as other:
        answers = [await upload(http, bytes([i]) * 60 * 1024) for i in range(4)]
        assert [r.status_code for r in answers] == [200, 200, 200, 429]  # a burst passes, a flood does not
        refused = answers[-1]
        assert "uploaded from your address" in refused.json()["message"]
        assert int(refused.headers["retry-after"]) >= 1
        assert (await upload(other, b"another client is not affected")).status_code == 200


async def test_one_client_cannot_take_the_quota(make_portal: Callable[..., Awaitable[RunningPortal]]) -> None:
    portal = await make_portal(max_blob_bytes=64 * 1024, quota_bytes=1024 * 1024, client_quota_bytes=200 * 1024)
    async with client(portal) as http, client(portal, OTHER) as other:
        codes = [(await upload(http, bytes([i]) * 60 * 1024)).status_code for i in range(4)]
        assert codes == [200, 200, 200, 507]
        full = await upload(http, bytes([9]) * 60 * 1024)
        assert full.status_code == 507 and "this client's share" in full.json()["message"]
        assert (await upload(http, bytes([0]) * 60 * 1024)).status_code == 200  # stored content: no new space
        for i in range(3):  # everyone else still writes
            assert (await upload(other, bytes([100 + i]) * 60 * 1024)).status_code == 200


async def test_a_client_over_its_share_replaces_its_own_oldest(
        make_portal: Callable[..., Awaitable[RunningPortal]]) -> None:
    """A room on one host writing presence lists for hours keeps working: its superseded blobs go."""
    portal = await make_portal(max_blob_bytes=64 * 1024, client_quota_bytes=200 * 1024, evict_min_age_s=0)
    async with client(portal) as http:
        links = []
        for i in range(6):
            r = await upload(http, bytes([i]) * 60 * 1024)
            assert r.status_code == 200
            links.append(r.json()["skylink"])
        assert (await http.get(f"/{links[0]}")).status_code == 404
        assert (await http.get(f"/{links[-1]}")).status_code == 200
        assert portal.portal.db.client_bytes("127.0.0.1") <= 200 * 1024


async def test_a_full_quota_is_taken_back_from_the_heaviest_client(
        make_portal: Callable[..., Awaitable[RunningPortal]]) -> None:
    portal = await make_portal(max_blob_bytes=64 * 1024, quota_bytes=400 * 1024, client_quota_bytes=10**9,
                               evict_min_age_s=0)
    async with client(portal) as heavy, client(portal, OTHER) as light:
        heavy_links = [(await upload(heavy, bytes([i]) * 60 * 1024)).json()["skylink"] for i in range(6)]
        assert (await heavy.get(f"/{heavy_links[0]}")).status_code == 200  # the quota is nearly full
        light_blob = b"light" * 12 * 1024
        r = await upload(light, light_blob)
        assert r.status_code == 200
        light_link = r.json()["skylink"]
        assert (await heavy.get(f"/{heavy_links[0]}")).status_code == 404  # the heaviest client's oldest went
        for i in range(6, 12):  # the heavy client goes on, and only ever displaces itself
            assert (await upload(heavy, bytes([i]) * 60 * 1024)).status_code == 200
        assert (await light.get(f"/{light_link}")).content == light_blob
        assert portal.portal.db.used_bytes <= 400 * 1024


async def test_large_skyfiles_leave_room_for_room_sized_ones(
        make_portal: Callable[..., Awaitable[RunningPortal]]) -> None:
    portal = await make_portal(max_blob_bytes=200 * 1024, quota_bytes=1024 * 1024, client_quota_bytes=10**9,
                               small_blob_bytes=16 * 1024)
    async with client(portal) as http:
        codes = [(await upload(http, bytes([i]) * 150 * 1024)).status_code for i in range(7)]
        assert codes[-1] == 507 and codes.count(200) >= 5
        refused = await upload(http, bytes([99]) * 150 * 1024)
        assert "smaller ones are still accepted" in refused.json()["message"]
        for i in range(10):  # presence lists and messages are still written
            assert (await upload(http, f"presence {i}".encode() * 200)).status_code == 200


# ------------------------------------------------------------------------------ 7. descriptors
async def test_a_slow_request_head_is_closed(make_portal: Callable[..., Awaitable[RunningPortal]]) -> None:
    portal = await make_portal(header_timeout_s=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(portal))
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n")  # and never the blank line
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 30) == b""  # closed by the portal
    finally:
        writer.close()


async def test_an_idle_keep_alive_connection_is_closed(make_portal: Callable[..., Awaitable[RunningPortal]]) -> None:
    portal = await make_portal(header_timeout_s=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(portal))
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        await writer.drain()
        assert (await asyncio.wait_for(reader.readline(), 30)).startswith(b"HTTP/1.1 200")
        rest = await asyncio.wait_for(reader.read(), 30)  # the response body, then EOF
        assert b"sdparta portal" in rest
    finally:
        writer.close()


@pytest.mark.parametrize("path, head", [
    ("/skynet/registry", b"Content-Type: application/json\r\nContent-Length: 500\r\n"),
    ("/skynet/skyfile", b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 5000\r\n"),
])
async def test_a_slow_body_gets_408(make_portal: Callable[..., Awaitable[RunningPortal]], path: str,
                                    head: bytes) -> None:
    portal = await make_portal(body_timeout_s=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(portal))
    try:
        writer.write(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: t\r\n" + head + b"\r\n--b\r\n")
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 30)
        assert status.startswith(b"HTTP/1.1 408"), status
        assert b"did not arrive" in await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()


async def test_connections_per_client_are_capped(make_portal: Callable[..., Awaitable[RunningPortal]]) -> None:
    portal = await make_portal(max_connections_per_client=4)
    held = [await asyncio.open_connection("127.0.0.1", port_of(portal)) for _ in range(4)]

    async def counted(n: int) -> bool:
        return portal.portal.connection_count == n

    try:
        await eventually(lambda: counted(4), "4 connections counted")
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(portal))
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        try:
            answer = await asyncio.wait_for(reader.read(), 30)
        except ConnectionResetError:
            answer = b""  # refused before our request was read: the reset may win over the 429
        finally:
            writer.close()
        assert answer == b"" or answer.startswith(b"HTTP/1.1 429"), answer
        if answer:
            assert "too many connections" in json.loads(answer.split(b"\r\n\r\n", 1)[1])["message"]
        async with client(portal, OTHER) as other:  # another client is served meanwhile
            assert (await other.get("/")).status_code == 200
        for _, w in held[:2]:
            w.close()
        await eventually(lambda: counted(2), "closed connections forgotten")
        async with client(portal) as http:
            assert (await http.get("/")).status_code == 200
    finally:
        for _, w in held:
            w.close()


# ------------------------------------------------------------------------------ 8. websockets
async def test_push_sockets_are_capped_per_client(make_portal: Callable[..., Awaitable[RunningPortal]]) -> None:
    portal = await make_portal(max_sockets_per_client=2)
    url = portal.url + "/skynet/registry/subscription"
    async with ws_session() as mine, ws_session(OTHER) as theirs:
        first, second = await mine.ws_connect(url), await mine.ws_connect(url)
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await mine.ws_connect(url)
        assert info.value.status == 429
        async with theirs.ws_connect(url) as ws:  # one client filling its share switches push off for nobody
            await ws.send_json({"action": "dance"})
            assert "error" in await ws.receive_json(timeout=10)
        await first.close()

        async def reconnects() -> bool:
            try:
                ws = await mine.ws_connect(url)
            except aiohttp.WSServerHandshakeError:
                return False
            await ws.close()
            return True

        await eventually(reconnects, "a freed socket slot")
        await second.close()


async def test_default_subscriptions_per_socket_fit_a_room(make_portal: Callable[..., Awaitable[RunningPortal]],
                                                           ) -> None:
    """256 slots per socket: a member of a 64-room needs ~1 + 64; the old 1024 let one socket pin
    a thousand slots (2,048 such sockets pinned ~940 MB)."""
    portal = await make_portal()
    keys = [hash_data_key(f"slot {i}") for i in range(257)]
    async with client(portal) as http, ws_session() as session:
        assert (await http.post("/skynet/registry", json=entry_json(b"first", 1, keys[0]))).status_code == 204
        async with session.ws_connect(portal.url + "/skynet/registry/subscription") as ws:
            for key in keys:
                await ws.send_json(subscribe_msg(key))
            assert (await ws.receive_json(timeout=20))["data"] == b"first".hex()  # slot 0's current value
            assert "limit 256" in (await ws.receive_json(timeout=20))["error"]  # only the 257th is refused


async def test_closed_sockets_leave_nothing_behind(make_portal: Callable[..., Awaitable[RunningPortal]]) -> None:
    portal = await make_portal()
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.take_snapshot()
        async with ws_session() as session:
            sockets = [await session.ws_connect(portal.url + "/skynet/registry/subscription") for _ in range(4)]
            for n, ws in enumerate(sockets):
                for i in range(256):
                    await ws.send_json(subscribe_msg(hash_data_key(f"{n}-{i}")))

            async def all_registered() -> bool:
                return sum(len(s) for s in portal.portal._subscribers.values()) == 4 * 256

            await eventually(all_registered, "1,024 subscriptions registered")
            for ws in sockets:
                await ws.close()

        async def forgotten() -> bool:
            p = portal.portal
            return not p._subscribers and not p._sockets and not p._sockets_by_client

        await eventually(forgotten, "closed sockets forgotten")
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    kept = sum(stat.size_diff for stat in after.compare_to(before, "filename")
               if "sdparta/portal" in stat.traceback[0].filename)
    assert kept < 64 * 1024, f"{kept} bytes still held by the portal after every socket closed"


# ------------------------------------------------------------------------------ 9. multipart
async def test_many_multipart_parts_are_refused_early(make_portal: Callable[..., Awaitable[RunningPortal]]) -> None:
    portal = await make_portal()
    fields = b"".join(b'--b\r\nContent-Disposition: form-data; name="x"\r\n\r\n\r\n' for _ in range(5000))
    body = fields + b'--b\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\nreal\r\n--b--\r\n'
    async with client(portal) as http:
        r = await http.post("/skynet/skyfile", content=body,
                            headers={"content-type": "multipart/form-data; boundary=b"})
        assert r.status_code == 400 and "too many multipart parts" in r.json()["message"]
        ok = await http.post("/skynet/skyfile", files={"note": ("n", b"hi"), "file": ("f", b"real")})
        assert ok.status_code == 200 and ok.json()["skylink"] == skylink_for_content(b"real")


# ------------------------------------------------------------------------------ 10. registry
async def test_new_registry_slots_are_rate_limited_updates_are_not(
        make_portal: Callable[..., Awaitable[RunningPortal]]) -> None:
    portal = await make_portal(registry_insert_rate=0.001, registry_insert_burst=3)
    keys = [hash_data_key(f"slot {i}") for i in range(5)]
    async with client(portal) as http, client(portal, OTHER) as other:
        for key in keys[:3]:
            assert (await http.post("/skynet/registry", json=entry_json(b"new", 0, key))).status_code == 204
        refused = await http.post("/skynet/registry", json=entry_json(b"new", 0, keys[3]))
        assert refused.status_code == 429
        assert "new registry entries" in refused.json()["message"] and int(refused.headers["retry-after"]) >= 1
        assert (await http.get("/skynet/registry", params=get_params(keys[3]))).status_code == 404
        for revision in range(1, 60):  # a room re-announcing and negotiating: updates are never limited
            body = entry_json(b"update %d" % revision, revision, keys[revision % 3])
            assert (await http.post("/skynet/registry", json=body)).status_code == 204
        stale = await http.post("/skynet/registry", json=entry_json(b"old", 1, keys[1]))
        assert stale.status_code == 400 and "revision" in stale.json()["message"]  # not mistaken for an insert
        assert (await other.post("/skynet/registry", json=entry_json(b"new", 0, keys[3]))).status_code == 204


async def test_registry_entries_expire_when_not_written(make_portal: Callable[..., Awaitable[RunningPortal]]) -> None:
    portal = await make_portal(registry_ttl_s=1)
    key, fresh = hash_data_key("stale"), hash_data_key("fresh")
    async with client(portal) as http:
        assert (await http.post("/skynet/registry", json=entry_json(b"old", 5, key))).status_code == 204

        async def gone() -> bool:
            absent = (await http.get("/skynet/registry", params=get_params(key))).status_code == 404
            return absent and portal.portal.db.entry_count() == 0  # and the sweeper deleted it

        await eventually(gone, "the entry to expire and be swept")
        assert (await http.post("/skynet/registry", json=entry_json(b"again", 1, key))).status_code == 204
        assert (await http.get("/skynet/registry", params=get_params(key))).json()["revision"] == 1
        # an entry that keeps being written never expires
        for revision in range(8):
            assert (await http.post("/skynet/registry", json=entry_json(b"live", revision, fresh))).status_code == 204
            await asyncio.sleep(0.3)
            assert (await http.get("/skynet/registry", params=get_params(fresh))).status_code == 200


# ------------------------------------------------------------------------------ 12. JSON nesting
async def test_a_deeply_nested_registry_body_is_400(make_portal: Callable[..., Awaitable[RunningPortal]]) -> None:
    """The largest registry body, all ``[``, is refused by the nesting bound before the parser could
    recurse into it: a 400 that says so (never a RecursionError or a 500), and the portal goes on."""
    portal = await make_portal()
    key = hash_data_key("nested body")
    async with client(portal) as http:
        r = await http.post("/skynet/registry", content=b"[" * 4096, headers={"content-type": "application/json"})
        assert r.status_code == 400
        assert "malformed" in r.json()["message"] and "nests deeper" in r.json()["message"]
        assert (await http.post("/skynet/registry", json=entry_json(b"still works", 1, key))).status_code == 204


async def test_a_deeply_nested_websocket_message_is_an_error_reply(
        make_portal: Callable[..., Awaitable[RunningPortal]]) -> None:
    """A subscription message of nothing but ``[`` gets an error message; the socket and the portal
    stay usable."""
    portal = await make_portal()
    key = hash_data_key("nested message")
    async with client(portal) as http, ws_session() as session:
        assert (await http.post("/skynet/registry", json=entry_json(b"current", 1, key))).status_code == 204
        async with session.ws_connect(portal.url + "/skynet/registry/subscription") as ws:
            await ws.send_str("[" * 1000)
            error = (await ws.receive_json(timeout=20))["error"]
            assert "bad subscription request" in error and "nests deeper" in error
            await ws.send_json(subscribe_msg(key))  # the same socket still subscribes
            assert (await ws.receive_json(timeout=20))["data"] == b"current".hex()
        assert (await http.get("/skynet/registry", params=get_params(key))).status_code == 200


def test_the_portal_accepts_the_skyfiles_clients_read() -> None:
    """The portal's default skyfile limit and the client's default download bound are one size."""
    assert PortalOptions().max_blob_bytes == DEFAULT_MAX_BLOB


# ------------------------------------------------------------------------------ 11. logs
async def test_a_client_leaving_mid_body_is_one_log_line(make_portal: Callable[..., Awaitable[RunningPortal]],
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    portal = await make_portal()
    for path in ("/skynet/skyfile", "/skynet/registry"):
        _, writer = await asyncio.open_connection("127.0.0.1", port_of(portal))
        writer.write(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: t\r\nContent-Length: 3000\r\n"
                     b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n"
                     b'Content-Disposition: form-data; name="file"; filename="f"\r\n\r\npartial')
        await writer.drain()
        writer.close()

    async def both_logged() -> bool:
        return sum("went away" in r.getMessage() for r in caplog.records) >= 2

    await eventually(both_logged, "the disconnects to be logged")
    assert not [r for r in caplog.records if r.exc_info or "handler failed" in r.getMessage()]
    async with client(portal) as http:
        assert (await http.get("/")).status_code == 200


async def test_malformed_requests_are_short_rate_limited_lines(
        make_portal: Callable[..., Awaitable[RunningPortal]], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    portal = await make_portal()
    garbage = [b"GET / HTTP/1.1\r\nBad Header Line " + b"x" * 2000 + b"\r\n\r\n",
               b"GET / HTTX/9.9\r\n\r\n", b"GET /" + b"\x01" * 300 + b" HTTP/1.1\r\n\r\n",
               b"POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n"]
    for i in range(60):
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(portal))
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" + garbage[i % len(garbage)])  # 2nd request on a connection
        await writer.drain()
        with contextlib.suppress(ConnectionError):  # the portal answers 400 and closes
            await asyncio.wait_for(reader.read(), 30)
        writer.close()
    lines = [r for r in caplog.records if r.name.startswith(("aiohttp", "sdparta"))]
    assert lines, "malformed requests are logged"
    assert not [r for r in lines if r.exc_info], "no tracebacks for a client's malformed request"
    assert all(len(r.getMessage()) < 400 for r in lines)
    assert len(lines) <= 12  # a burst of 10, then rate-limited
    async with client(portal) as http:
        assert (await http.get("/")).status_code == 200


# ------------------------------------------------------------------------------ the command
def test_portal_command_takes_limit_flags(tmp_path: Path) -> None:
    proc = start_portal_process(tmp_path / "flags.sqlite3", extra=[
        "--registry-inserts-per-s", "0.001", "--registry-insert-burst", "1", "--max-sockets-per-client", "3",
        "--upload-rate-kb", "64", "--registry-ttl-days", "7"])
    try:
        root = httpx.get(proc.url + "/").json()
        assert root["limits"]["max_sockets_per_client"] == 3
        assert root["limits"]["upload_rate_bytes_s"] == 64 * 1024
        assert root["registry_ttl_s"] == 7 * 86400
        first = httpx.post(proc.url + "/skynet/registry", json=entry_json(b"a", 0, hash_data_key("a")))
        second = httpx.post(proc.url + "/skynet/registry", json=entry_json(b"b", 0, hash_data_key("b")))
        assert (first.status_code, second.status_code) == (204, 429)
        assert "new registry entries" in second.json()["message"]
    finally:
        proc.stop()
    bad = subprocess.run([sys.executable, "-m", "sdparta", "portal", "--port", "0", "--data",
                          str(tmp_path / "bad.sqlite3"), "--registry-inserts-per-s", "0"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "must be positive" in bad.stderr and "Traceback" not in bad.stderr


# ------------------------------------------------------------------------------ behind a reverse proxy
async def test_behind_a_trusted_proxy_limits_apply_to_the_forwarded_client(
        make_portal: Callable[..., Awaitable[RunningPortal]]) -> None:
    """Behind a TLS reverse proxy (the README's VPS setup) every request comes from the proxy: with
    --trusted-proxy its clients are told apart by the address it appends to X-Forwarded-For; a client
    cannot pick its own address by sending the header, and from anyone else the header is ignored."""
    portal = await make_portal(registry_insert_rate=0.001, registry_insert_burst=1, trusted_proxies=("127.0.0.1",))
    keys = [hash_data_key(f"proxied {i}") for i in range(6)]

    def via(client_ip: str, claimed: str = "") -> dict[str, str]:
        return {"X-Forwarded-For": f"{claimed + ', ' if claimed else ''}{client_ip}"}

    async with client(portal) as proxy, client(portal, OTHER) as direct:
        ok = await proxy.post("/skynet/registry", json=entry_json(b"a", 0, keys[0]), headers=via("198.51.100.1"))
        assert ok.status_code == 204
        again = await proxy.post("/skynet/registry", json=entry_json(b"a", 0, keys[1]), headers=via("198.51.100.1"))
        assert again.status_code == 429  # the same forwarded client is limited...
        other = await proxy.post("/skynet/registry", json=entry_json(b"b", 0, keys[2]), headers=via("198.51.100.2"))
        assert other.status_code == 204  # ...another one behind the same proxy is not
        # the left part of the header is what the client claimed: it does not make a new client
        spoofed = await proxy.post("/skynet/registry", json=entry_json(b"c", 0, keys[3]),
                                   headers=via("198.51.100.1", claimed="203.0.113.9"))
        assert spoofed.status_code == 429
        # not a trusted proxy: its header is ignored, it is one client however it labels requests
        first = await direct.post("/skynet/registry", json=entry_json(b"d", 0, keys[4]), headers=via("198.51.100.3"))
        second = await direct.post("/skynet/registry", json=entry_json(b"d", 0, keys[5]), headers=via("198.51.100.4"))
        assert (first.status_code, second.status_code) == (204, 429)


def test_a_trusted_proxy_must_be_an_address() -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        PortalOptions(trusted_proxies=("proxy.example",)).check()
