"""The portal over real HTTP on 127.0.0.1: every endpoint, every kind of bad input, push, persistence."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from sdparta.portal.options import PortalOptions
from sdparta.portal.server import RunningPortal, start_portal
from sdparta.store.crypto import KeyPair, hash_data_key, sign_entry, skylink_for_content
from support.procs import start_portal as start_portal_process

KEY = KeyPair.from_seed("portal-test")
DK = hash_data_key("slot")
DK2 = hash_data_key("other-slot")


def entry_json(data: bytes, revision: int, keypair: KeyPair = KEY, data_key: bytes = DK) -> dict[str, Any]:
    """The body skynet-js 4.x posts for an entry."""
    entry = sign_entry(keypair, data_key, data, revision)
    return {"publickey": {"algorithm": "ed25519", "key": list(entry.public_key)}, "datakey": data_key.hex(),
            "revision": revision, "data": list(entry.data), "signature": list(entry.signature)}


def get_params(keypair: KeyPair = KEY, data_key: bytes = DK) -> dict[str, str]:
    return {"publickey": "ed25519:" + keypair.public_key.hex(), "datakey": data_key.hex()}


def subscribe_msg(data_key: bytes = DK, action: str = "subscribe") -> dict[str, str]:
    return {"action": action, "pubkey": "ed25519:" + KEY.public_key.hex(), "datakey": data_key.hex()}


async def stored_data(http: httpx.AsyncClient, data_key: bytes = DK) -> str | None:
    r = await http.get("/skynet/registry", params=get_params(data_key=data_key))
    return r.json()["data"] if r.status_code == 200 else None


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[RunningPortal]:
    portal = await start_portal("127.0.0.1", 0, tmp_path / "p.sqlite3",
                                PortalOptions(max_blob_bytes=64 * 1024, quota_bytes=200 * 1024,
                                              max_subscriptions_per_socket=3))
    yield portal
    await portal.stop()


@pytest.fixture
async def http(running: RunningPortal) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=running.url, timeout=10) as client:
        yield client


async def test_root_announces_portal_api(http: httpx.AsyncClient, running: RunningPortal) -> None:
    head = await http.head("/")
    assert head.status_code == 200 and head.headers["skynet-portal-api"] == running.url
    root = await http.get("/")
    assert root.headers["skynet-portal-api"] == running.url
    assert root.json()["subscription"] is True and root.json()["max_entry_data"] == 113


async def test_registry_set_get_and_revision_rules(http: httpx.AsyncClient) -> None:
    r = await http.get("/skynet/registry", params=get_params())
    assert r.status_code == 404 and "no registry entry" in r.json()["message"]
    assert (await http.post("/skynet/registry", json=entry_json(b"one", 1))).status_code == 204
    got = (await http.get("/skynet/registry", params=get_params())).json()
    assert got == {"data": b"one".hex(), "revision": 1, "signature": sign_entry(KEY, DK, b"one", 1).signature.hex(),
                   "type": 1}
    for revision in (1, 0):  # equal and lower revisions are refused
        r = await http.post("/skynet/registry", json=entry_json(b"two", revision))
        assert r.status_code == 400 and "revision" in r.json()["message"]
        assert "stored revision 1" in r.json()["message"]
    assert await stored_data(http) == b"one".hex()
    assert (await http.post("/skynet/registry", json=entry_json(b"two", 2))).status_code == 204
    assert await stored_data(http) == b"two".hex()


async def test_full_uint64_revision_range(http: httpx.AsyncClient) -> None:
    """Revisions are compared as uint64 (not as signed or as floats) and round-trip exactly."""
    for revision in (2**53 + 1, 2**63, 2**64 - 2, 2**64 - 1):
        assert (await http.post("/skynet/registry", json=entry_json(b"r", revision))).status_code == 204
        assert (await http.get("/skynet/registry", params=get_params())).json()["revision"] == revision
    assert (await http.post("/skynet/registry", json=entry_json(b"r", 2**63))).status_code == 400


async def test_go_style_public_key_and_hex_bytes_are_accepted(http: httpx.AsyncClient) -> None:
    body = entry_json(b"go", 3)
    body["publickey"] = "ed25519:" + KEY.public_key.hex()
    body["data"] = bytes(body["data"]).hex()
    body["type"] = 1
    assert (await http.post("/skynet/registry", json=body)).status_code == 204
    assert await stored_data(http) == b"go".hex()


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda body: {**body, key: value}


@pytest.mark.parametrize("mutate, fragment", [
    (_set("data", list(bytes(114))), "too big"),
    (_set("signature", list(bytes(64))), "signature"),
    (_set("signature", list(bytes(63))), "64 bytes"),
    (_set("datakey", "zz" * 32), "hex"),
    (_set("datakey", "ab"), "32 bytes"),
    (_set("datakey", None), "datakey"),
    (_set("revision", -1), "revision"),
    (_set("revision", 2**64), "revision"),
    (_set("revision", 9.0), "revision"),
    (_set("revision", True), "revision"),
    (_set("publickey", {"algorithm": "rsa", "key": []}), "publickey"),
    (_set("publickey", {"algorithm": "ed25519", "key": list(bytes(31))}), "32 bytes"),
    (_set("publickey", "ed25519:1234"), "publickey"),
    (_set("data", [300]), "data"),
    (_set("data", [True]), "data"),
    (_set("data", "xyz"), "hex"),
    (_set("type", 2), "type"),
    (lambda b: [1, 2], "object"),
    (lambda b: {k: v for k, v in b.items() if k != "signature"}, "signature"),
])
async def test_bad_registry_writes_are_refused_and_harmless(
        http: httpx.AsyncClient, mutate: Callable[[dict[str, Any]], Any], fragment: str) -> None:
    assert (await http.post("/skynet/registry", json=entry_json(b"keep", 3))).status_code == 204
    r = await http.post("/skynet/registry", json=mutate(entry_json(b"evil", 9)))
    assert r.status_code == 400
    assert fragment in r.json()["message"]
    assert await stored_data(http) == b"keep".hex()


async def test_entry_signed_by_another_key_or_for_another_slot_is_refused(http: httpx.AsyncClient) -> None:
    forged = entry_json(b"mallory", 5, keypair=KeyPair.from_seed("mallory"))
    forged["publickey"] = entry_json(b"x", 0)["publickey"]  # claims to be KEY
    r = await http.post("/skynet/registry", json=forged)
    assert r.status_code == 400 and "signature" in r.json()["message"]
    moved = entry_json(b"other slot", 5, data_key=DK2)
    moved["datakey"] = DK.hex()  # a valid entry replayed into another slot
    assert (await http.post("/skynet/registry", json=moved)).status_code == 400
    assert await stored_data(http) is None


@pytest.mark.parametrize("body", [
    b"{not json", b"", b"\xff\xfe", b"[" * 2000 + b"]" * 2000, b'{"revision": NaN}', b"null", b'"text"',
    b'{"publickey": "ed25519:' + KEY.public_key.hex().encode() + b'", "datakey": "' + DK.hex().encode()
    + b'", "revision": 1e400, "data": [], "signature": []}',
])
async def test_malformed_bodies_get_400(http: httpx.AsyncClient, body: bytes) -> None:
    r = await http.post("/skynet/registry", content=body[:4096], headers={"content-type": "application/json"})
    assert r.status_code == 400 and "malformed" in r.json()["message"]


async def test_oversized_registry_body_is_413_declared_or_streamed(http: httpx.AsyncClient) -> None:
    r = await http.post("/skynet/registry", content=b"[" + b"1," * 5000 + b"1]")
    assert r.status_code == 413 and "too large" in r.json()["message"]

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the portal must stop reading itself
        for _ in range(100):
            yield b" " * 1024

    r = await http.post("/skynet/registry", content=chunked())
    assert r.status_code == 413


@pytest.mark.parametrize("params", [
    {}, {"publickey": "ed25519:xyz", "datakey": DK.hex()}, {"publickey": KEY.public_key.hex(), "datakey": DK.hex()},
    {"publickey": "ed25519:" + KEY.public_key.hex(), "datakey": DK.hex()[:-2]},
    {"publickey": "ed25519:" + KEY.public_key.hex()},
])
async def test_bad_registry_reads_get_400(http: httpx.AsyncClient, params: dict[str, str]) -> None:
    r = await http.get("/skynet/registry", params=params)
    assert r.status_code == 400 and r.json()["message"]


async def test_concurrent_writes_of_one_revision_store_exactly_one(http: httpx.AsyncClient) -> None:
    """Compare-and-set is atomic: of 20 racing writers at revision 1, one wins."""
    bodies = [entry_json(f"writer {i}".encode(), 1) for i in range(20)]
    codes = [r.status_code for r in await asyncio.gather(*(http.post("/skynet/registry", json=b) for b in bodies))]
    assert sorted(codes) == [204] + [400] * 19
    winner = codes.index(204)
    assert await stored_data(http) == f"writer {winner}".encode().hex()


async def test_unknown_methods_and_paths_answer_json(http: httpx.AsyncClient) -> None:
    r = await http.put("/skynet/registry", json={})
    assert r.status_code == 405 and r.json()["message"]
    r = await http.get("/skynet/nothing/here")
    assert r.status_code == 404 and r.json()["message"]


async def test_skyfile_upload_download_head(http: httpx.AsyncClient, running: RunningPortal) -> None:
    r = await http.post("/skynet/skyfile", files={"file": ("x.bin", b"hello skynet")})
    assert r.status_code == 200
    body = r.json()
    skylink = body["skylink"]
    assert skylink == skylink_for_content(b"hello skynet") and body["bitfield"] == 0
    assert len(body["merkleroot"]) == 64
    got = await http.get(f"/{skylink}")
    assert got.content == b"hello skynet"
    assert got.headers["skynet-skylink"] == skylink
    assert got.headers["skynet-portal-api"] == running.url
    assert got.headers["content-type"] == "application/octet-stream"
    assert got.headers["access-control-allow-origin"] == "*"
    assert "skynet-skylink" in got.headers["access-control-expose-headers"]
    head = await http.head(f"/{skylink}")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(b"hello skynet"))
    assert head.headers["skynet-skylink"] == skylink
    assert (await http.get(f"/{skylink}/")).content == b"hello skynet"


async def test_bad_and_unknown_skylinks(http: httpx.AsyncClient) -> None:
    link = skylink_for_content(b"never uploaded")
    r = await http.get(f"/{link}")
    assert r.status_code == 404 and "no skyfile" in r.json()["message"]
    assert (await http.head(f"/{link}")).status_code == 404
    non_canonical = link[:-1] + {"A": "B", "Q": "R", "g": "h", "w": "x"}[link[-1]]
    for bad in ("not-a-skylink", "A" * 47, non_canonical):
        r = await http.get(f"/{bad}")
        assert r.status_code == 400 and "skylink" in r.json()["message"]


async def test_huge_and_malformed_uploads(http: httpx.AsyncClient) -> None:
    r = await http.post("/skynet/skyfile", files={"file": ("big", bytes(65 * 1024))})
    assert r.status_code == 413 and "too large" in r.json()["message"]
    r = await http.post("/skynet/skyfile", files={"other": ("x", b"1")})
    assert r.status_code == 400 and "'file'" in r.json()["message"]
    r = await http.post("/skynet/skyfile", files={"other": ("x", bytes(70 * 1024)), "file": ("f", b"small")})
    assert r.status_code == 413 and "besides 'file'" in r.json()["message"]
    r = await http.post("/skynet/skyfile", files={"note": ("n", b"hi"), "file": ("f", b"small")})
    assert r.status_code == 200 and r.json()["skylink"] == skylink_for_content(b"small")
    r = await http.post("/skynet/skyfile", content=b"plain body", headers={"content-type": "text/plain"})
    assert r.status_code == 400
    r = await http.post("/skynet/skyfile", content=b"--b\r\ngarbage",
                        headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 400


async def test_declared_huge_upload_is_refused_before_the_body(running: RunningPortal) -> None:
    """A 100 MB Content-Length gets 413 while the client has sent only a few bytes."""
    port = int(running.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST /skynet/skyfile HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: 100000000\r\n\r\n--b\r\n")
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 5)
        assert status.startswith(b"HTTP/1.1 413")
    finally:
        writer.close()


async def test_streamed_upload_is_refused_at_the_limit(running: RunningPortal) -> None:
    """Chunked (no Content-Length): the portal answers 413 as soon as the file passes the limit,
    without waiting for the rest of the body."""
    port = int(running.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST /skynet/skyfile HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: multipart/form-data; boundary=b\r\n\r\n")
        head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n\r\n'
        for chunk in [head] + [bytes(16 * 1024)] * 12:  # 192 KiB of a file, limit 64 KiB, body never ends
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 5)
        assert status.startswith(b"HTTP/1.1 413")
    finally:
        writer.close()
    assert running.portal.db.used_bytes == 0


async def test_quota(http: httpx.AsyncClient) -> None:
    codes = [(await http.post("/skynet/skyfile", files={"file": ("b", bytes([i]) * 60 * 1024)})).status_code
             for i in range(4)]
    assert codes == [200, 200, 200, 507]
    again = await http.post("/skynet/skyfile", files={"file": ("b", bytes([0]) * 60 * 1024)})
    assert again.status_code == 200  # re-uploading stored content needs no new space


async def test_blobs_expire_and_free_the_quota(tmp_path: Path) -> None:
    portal = await start_portal("127.0.0.1", 0, tmp_path / "ttl.sqlite3",
                                PortalOptions(max_blob_bytes=64 * 1024, quota_bytes=100 * 1024, blob_ttl_s=0.5))
    try:
        async with httpx.AsyncClient(base_url=portal.url, timeout=10) as http:
            first = (await http.post("/skynet/skyfile", files={"file": ("a", b"a" * 60 * 1024)})).json()["skylink"]
            assert (await http.get(f"/{first}")).status_code == 200
            assert (await http.post("/skynet/skyfile", files={"file": ("b", b"b" * 60 * 1024)})).status_code == 507
            deadline = time.monotonic() + 10
            while (await http.post("/skynet/skyfile", files={"file": ("b", b"b" * 60 * 1024)})).status_code != 200:
                assert time.monotonic() < deadline, "the expired skyfile never freed its space"
                await asyncio.sleep(0.1)
            assert (await http.get(f"/{first}")).status_code == 404
            assert portal.portal.db.used_bytes == 60 * 1024
    finally:
        await portal.stop()


async def test_cors_preflight(http: httpx.AsyncClient) -> None:
    r = await http.options("/skynet/registry", headers={"Origin": "http://example.test",
                                                        "Access-Control-Request-Method": "POST",
                                                        "Access-Control-Request-Headers": "content-type"})
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "*"
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "content-type" in r.headers["access-control-allow-headers"].lower()
    err = await http.get("/skynet/registry")
    assert err.headers["access-control-allow-origin"] == "*"  # errors are readable by pages too


async def test_subscription_pushes_current_value_and_updates(http: httpx.AsyncClient, running: RunningPortal) -> None:
    assert (await http.post("/skynet/registry", json=entry_json(b"before", 3))).status_code == 204
    async with aiohttp.ClientSession() as session, session.ws_connect(
            running.url + "/skynet/registry/subscription") as ws:
        await ws.send_str("garbage")
        assert "error" in (await ws.receive_json(timeout=5))
        await ws.send_json({"action": "dance", "pubkey": "ed25519:" + KEY.public_key.hex(), "datakey": DK.hex()})
        assert "unknown action" in (await ws.receive_json(timeout=5))["error"]
        await ws.send_json(subscribe_msg())
        current = await ws.receive_json(timeout=5)  # the value at subscribe time: proves registration
        assert current["data"] == b"before".hex() and current["revision"] == 3
        assert (await http.post("/skynet/registry", json=entry_json(b"refused", 3))).status_code == 400
        assert (await http.post("/skynet/registry", json=entry_json(b"pushed", 4))).status_code == 204
        pushed = await ws.receive_json(timeout=5)  # the refused write was not pushed
        assert pushed["data"] == b"pushed".hex() and pushed["revision"] == 4
        assert pushed["pubkey"] == "ed25519:" + KEY.public_key.hex() and pushed["datakey"] == DK.hex()
        assert pushed["signature"] == sign_entry(KEY, DK, b"pushed", 4).signature.hex()
        # after unsubscribing from DK, a write to DK is not pushed: the next message is DK2's
        await ws.send_json(subscribe_msg(DK, "unsubscribe"))
        await ws.send_json(subscribe_msg(DK2))
        assert (await http.post("/skynet/registry", json=entry_json(b"silent", 5))).status_code == 204
        assert (await http.post("/skynet/registry", json=entry_json(b"other", 1, data_key=DK2))).status_code == 204
        assert (await ws.receive_json(timeout=5))["datakey"] == DK2.hex()


async def test_subscription_limits(running: RunningPortal) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(
            running.url + "/skynet/registry/subscription") as ws:
        for i in range(4):  # the fixture allows 3 per socket
            await ws.send_json(subscribe_msg(hash_data_key(f"k{i}")))
        assert "too many subscriptions" in (await ws.receive_json(timeout=5))["error"]
        await ws.send_str("x" * 5000)  # over the message size limit: the portal closes the socket
        msg = await ws.receive(timeout=5)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
    async with httpx.AsyncClient() as client:  # and it is still serving
        assert (await client.get(running.url + "/")).status_code == 200


async def test_no_subscription_mode_has_no_websocket(tmp_path: Path) -> None:
    portal = await start_portal("127.0.0.1", 0, tmp_path / "plain.sqlite3", subscription=False)
    try:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await session.ws_connect(portal.url + "/skynet/registry/subscription")
            assert info.value.status == 404
    finally:
        await portal.stop()


def test_restart_keeps_entries_and_skyfiles(tmp_path: Path) -> None:
    data = tmp_path / "persist.sqlite3"
    first = start_portal_process(data)
    try:
        assert httpx.post(first.url + "/skynet/registry", json=entry_json(b"durable", 11)).status_code == 204
        link = httpx.post(first.url + "/skynet/skyfile", files={"file": ("f", b"blob")}).json()["skylink"]
    finally:
        first.stop()
    assert first.proc.returncode == 0  # SIGTERM is a clean shutdown
    second = start_portal_process(data)
    try:
        got = httpx.get(second.url + "/skynet/registry", params=get_params()).json()
        assert got["data"] == b"durable".hex() and got["revision"] == 11
        assert httpx.get(f"{second.url}/{link}").content == b"blob"
        assert httpx.post(second.url + "/skynet/registry", json=entry_json(b"stale", 11)).status_code == 400
    finally:
        second.stop()


def test_portal_prints_url_first_then_a_summary(tmp_path: Path) -> None:
    proc = start_portal_process(tmp_path / "u.sqlite3", subscription=False)
    try:
        assert proc.url.startswith("http://127.0.0.1:")
        assert proc.proc.stdout is not None
        summary = proc.proc.stdout.readline()
        assert "sdparta portal" in summary and "push off" in summary
        assert httpx.get(proc.url + "/").json()["subscription"] is False
    finally:
        proc.stop()
