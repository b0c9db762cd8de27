"""The portal over real HTTP: every endpoint, every kind of bad input, restart persistence."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import httpx
import pytest

from sdparta.portal.server import PortalOptions, RunningPortal, start_portal
from sdparta.store.crypto import KeyPair, hash_data_key, sign_entry, skylink_for_content
from support.procs import start_portal as start_portal_process

KEY = KeyPair.from_seed("portal-test")
DK = hash_data_key("slot")


def entry_json(data: bytes, revision: int, keypair: KeyPair = KEY, data_key: bytes = DK) -> dict:
    entry = sign_entry(keypair, data_key, data, revision)
    return {"publickey": {"algorithm": "ed25519", "key": list(entry.public_key)}, "datakey": data_key.hex(),
            "revision": revision, "data": list(entry.data), "signature": list(entry.signature)}


def get_params(keypair: KeyPair = KEY, data_key: bytes = DK) -> dict[str, str]:
    return {"publickey": "ed25519:" + keypair.public_key.hex(), "datakey": data_key.hex()}


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[RunningPortal]:
    portal = await start_portal("127.0.0.1", 0, tmp_path / "p.sqlite3",
                                PortalOptions(max_blob_bytes=64 * 1024, quota_bytes=200 * 1024))
    yield portal
    await portal.stop()


@pytest.fixture
async def http(running: RunningPortal) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=running.url, timeout=10) as client:
        yield client


async def test_root_announces_portal_api(http: httpx.AsyncClient, running: RunningPortal) -> None:
    head = await http.head("/")
    assert head.status_code == 200
    assert head.headers["skynet-portal-api"] == running.url


async def test_registry_set_get_and_revision_rules(http: httpx.AsyncClient) -> None:
    assert (await http.get("/skynet/registry", params=get_params())).status_code == 404
    assert (await http.post("/skynet/registry", json=entry_json(b"one", 1))).status_code == 204
    got = (await http.get("/skynet/registry", params=get_params())).json()
    assert got == {"data": b"one".hex(), "revision": 1, "signature": got["signature"], "type": 1}
    for revision in (1, 0):  # equal and lower revisions are refused
        r = await http.post("/skynet/registry", json=entry_json(b"two", revision))
        assert r.status_code == 400 and "revision" in r.json()["message"]
    assert (await http.get("/skynet/registry", params=get_params())).json()["data"] == b"one".hex()
    assert (await http.post("/skynet/registry", json=entry_json(b"two", 2))).status_code == 204
    assert (await http.get("/skynet/registry", params=get_params())).json()["data"] == b"two".hex()


@pytest.mark.parametrize("mutate, fragment", [
    (lambda b: {**b, "data": list(bytes(114))}, "too big"),
    (lambda b: {**b, "signature": list(bytes(64))}, "signature"),
    (lambda b: {**b, "datakey": "zz" * 32}, "hex"),
    (lambda b: {**b, "datakey": "ab"}, "32 bytes"),
    (lambda b: {**b, "revision": -1}, "revision"),
    (lambda b: {**b, "publickey": {"algorithm": "rsa", "key": []}}, "publickey"),
    (lambda b: {**b, "data": [300]}, "data"),
    (lambda b: [1, 2], "object"),
])
async def test_bad_registry_writes_are_refused_and_harmless(http: httpx.AsyncClient, mutate, fragment: str) -> None:  # type: ignore[no-untyped-def]
    assert (await http.post("/skynet/registry", json=entry_json(b"keep", 3))).status_code == 204
    bad = mutate(entry_json(b"evil", 9))
    r = await http.post("/skynet/registry", json=bad)
    assert r.status_code == 400
    assert fragment in r.json()["message"]
    assert (await http.get("/skynet/registry", params=get_params())).json()["data"] == b"keep".hex()


async def test_malformed_json_and_oversized_body(http: httpx.AsyncClient) -> None:
    r = await http.post("/skynet/registry", content=b"{not json")
    assert r.status_code == 400 and "malformed" in r.json()["message"]
    r = await http.post("/skynet/registry", content=b"[" + b"1," * 5000 + b"1]")
    assert r.status_code == 400 and "too large" in r.json()["message"]
    r = await http.get("/skynet/registry", params={"publickey": "ed25519:xyz", "datakey": DK.hex()})
    assert r.status_code == 400


async def test_skyfile_upload_download(http: httpx.AsyncClient, running: RunningPortal) -> None:
    r = await http.post("/skynet/skyfile", files={"file": ("x.bin", b"hello skynet")})
    assert r.status_code == 200
    skylink = r.json()["skylink"]
    assert len(skylink) == 46 and skylink == skylink_for_content(b"hello skynet")
    got = await http.get(f"/{skylink}")
    assert got.content == b"hello skynet"
    assert got.headers["skynet-skylink"] == skylink
    assert got.headers["skynet-portal-api"] == running.url
    assert got.headers["access-control-allow-origin"] == "*"
    assert (await http.get("/" + "A" * 46)).status_code == 404
    assert (await http.get("/not-a-skylink")).status_code == 400


async def test_huge_and_malformed_uploads(http: httpx.AsyncClient) -> None:
    r = await http.post("/skynet/skyfile", files={"file": ("big", bytes(65 * 1024))})
    assert r.status_code == 413 and "too large" in r.json()["message"]
    r = await http.post("/skynet/skyfile", files={"other": ("x", b"1")})
    assert r.status_code == 400 and "'file'" in r.json()["message"]
    r = await http.post("/skynet/skyfile", content=b"plain body", headers={"content-type": "text/plain"})
    assert r.status_code == 400


async def test_quota(http: httpx.AsyncClient) -> None:
    codes = [(await http.post("/skynet/skyfile", files={"file": ("b", bytes([i]) * 60 * 1024)})).status_code
             for i in range(4)]
    assert codes[:3] == [200, 200, 200] and codes[3] == 507


async def test_cors_preflight(http: httpx.AsyncClient) -> None:
    r = await http.options("/skynet/registry", headers={"Origin": "http://example.test",
                                                        "Access-Control-Request-Method": "POST"})
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "*"


async def test_subscription_pushes_updates(http: httpx.AsyncClient, running: RunningPortal) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(
            running.url + "/skynet/registry/subscription") as ws:
        await ws.send_str("garbage")
        assert "error" in (await ws.receive_json(timeout=5))
        await ws.send_json({"action": "subscribe", "pubkey": "ed25519:" + KEY.public_key.hex(),
                            "datakey": DK.hex()})
        await asyncio.sleep(0.1)  # let the subscription register before the write
        assert (await http.post("/skynet/registry", json=entry_json(b"pushed", 4))).status_code == 204
        pushed = await ws.receive_json(timeout=5)
        assert pushed["data"] == b"pushed".hex() and pushed["revision"] == 4
        assert pushed["pubkey"] == "ed25519:" + KEY.public_key.hex()


def test_restart_keeps_entries(tmp_path: Path) -> None:
    data = tmp_path / "persist.sqlite3"
    first = start_portal_process(data)
    try:
        assert httpx.post(first.url + "/skynet/registry", json=entry_json(b"durable", 11)).status_code == 204
        link = httpx.post(first.url + "/skynet/skyfile", files={"file": ("f", b"blob")}).json()["skylink"]
    finally:
        first.stop()
    second = start_portal_process(data)
    try:
        got = httpx.get(second.url + "/skynet/registry", params=get_params()).json()
        assert got["data"] == b"durable".hex() and got["revision"] == 11
        assert httpx.get(f"{second.url}/{link}").content == b"blob"
    finally:
        second.stop()


def test_portal_prints_url_first(tmp_path: Path) -> None:
    proc = start_portal_process(tmp_path / "u.sqlite3")
    try:
        assert proc.url.startswith("http://127.0.0.1:")
        assert httpx.get(proc.url + "/").json()["subscription"] is True
    finally:
        proc.stop()
