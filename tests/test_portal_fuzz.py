"""Bounded fuzzing of every portal endpoint over real HTTP on 127.0.0.1 (hypothesis, ~3,000 requests).

Whatever arrives from the network, the portal answers below 500, stays up, and a valid write and
read still work afterwards. The portal runs in its own thread and loop (as in production it has its
own process), so the sync hypothesis tests drive it through plain blocking clients.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdparta.portal.options import PortalOptions
from sdparta.portal.server import RunningPortal, start_portal
from sdparta.store.crypto import KeyPair, hash_data_key, sign_entry, skylink_for_content

KEY = KeyPair.from_seed("fuzz")
DK = hash_data_key("fuzz-slot")
pytestmark = pytest.mark.filterwarnings("ignore::aiohttp.multipart.BadContentDispositionHeader")
FUZZ = settings(max_examples=400, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


class ThreadPortal:
    """A portal serving from a background thread's event loop."""

    def __init__(self, data: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-portal", daemon=True)
        self.thread.start()
        # tiny quotas and blob size so the fuzzer reaches the limits too
        options = PortalOptions(max_blob_bytes=16 * 1024, quota_bytes=4 * 1024 * 1024,
                                max_subscriptions_per_socket=16)
        self.running: RunningPortal = self.run(start_portal("127.0.0.1", 0, data, options))
        self.url = self.running.url
        self.port = int(self.url.rsplit(":", 1)[1])

    def run(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.run(self.running.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadPortal]:
    p = ThreadPortal(tmp_path_factory.mktemp("fuzz") / "fuzz.sqlite3")
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture(scope="module")
def http(portal: ThreadPortal) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=portal.url, timeout=30) as client:
        yield client


def valid_body(data: bytes, revision: int, data_key: bytes = DK) -> dict[str, Any]:
    entry = sign_entry(KEY, data_key, data, revision)
    return {"publickey": {"algorithm": "ed25519", "key": list(entry.public_key)}, "datakey": data_key.hex(),
            "revision": revision, "data": list(entry.data), "signature": list(entry.signature)}


def check(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400 and response.request.method != "HEAD":
        assert isinstance(response.json()["message"], str)  # every refusal says why, as JSON


def raw_exchange(portal: ThreadPortal, request: bytes) -> bytes:
    """Send bytes as they are (no client library tidying them) and read the answer's status line."""
    with socket.create_connection(("127.0.0.1", portal.port), timeout=30) as s:
        s.sendall(request)
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while b"\r\n" not in answer and (chunk := s.recv(4096)):
            answer += chunk
    return answer


# -------------------------------------------------------------------------- strategies
text = st.text(max_size=80)
hexish = st.text(alphabet="0123456789abcdefABCDEFxz:-", max_size=140)
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                      st.floats(allow_nan=False), text)
json_value = st.recursive(json_leaf, lambda kids: st.lists(kids, max_size=6)
                          | st.dictionaries(st.text(max_size=10), kids, max_size=6), max_leaves=30)
FIELDS = ("publickey", "datakey", "revision", "data", "signature", "type")


@st.composite
def mutated_entry(draw: st.DrawFn) -> Any:
    """A valid skynet-js body with some fields replaced by junk of any type, or removed."""
    body: dict[str, Any] = valid_body(draw(st.binary(max_size=120)), draw(st.integers(0, 2**64 - 1)))
    for field in draw(st.lists(st.sampled_from(FIELDS), max_size=3, unique=True)):
        if draw(st.booleans()):
            body.pop(field, None)
        else:
            body[field] = draw(st.one_of(json_value, st.integers(min_value=-(2**80), max_value=2**80),
                                         st.lists(st.integers(-300, 300), max_size=70), hexish))
    return body


@given(st.dictionaries(st.sampled_from(["publickey", "datakey", "x", ""]), st.one_of(text, hexish), max_size=4),
       st.booleans())
@FUZZ
def test_registry_get_params(http: httpx.Client, params: dict[str, str], prefix: bool) -> None:
    if prefix and "publickey" in params:
        params["publickey"] = "ed25519:" + params["publickey"]
    check(http.get("/skynet/registry", params=params))


@given(st.one_of(mutated_entry(), json_value))
@FUZZ
def test_registry_post_json(http: httpx.Client, body: Any) -> None:
    check(http.post("/skynet/registry", content=json.dumps(body).encode()))


@given(st.one_of(st.binary(max_size=600),
                 st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
                 st.integers(1, 1000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
                 st.integers(300, 5000).map(lambda n: b'{"revision": 1' + b"0" * n + b"}")))
@settings(FUZZ, max_examples=250)
def test_registry_post_raw_bytes(http: httpx.Client, body: bytes) -> None:
    check(http.post("/skynet/registry", content=body, headers={"content-type": "application/json"}))


@st.composite
def multipart_body(draw: st.DrawFn) -> tuple[str, bytes]:
    boundary = draw(st.text(alphabet="abcXYZ019-'()+_,./:=?", min_size=1, max_size=70))
    b = boundary.encode()
    parts = []
    for _ in range(draw(st.integers(0, 12))):
        name = draw(st.sampled_from(["file", "other", "", 'fi"le', "file\r\nX: y"]))
        headers = draw(st.sampled_from([
            f'Content-Disposition: form-data; name="{name}"; filename="f"',
            f"Content-Disposition: form-data; name={name}", "Content-Type: multipart/mixed; boundary=inner",
            "X-Junk: " + "x" * draw(st.integers(0, 9000)), ""]))
        parts.append(b"--" + b + b"\r\n" + headers.encode("utf-8", "replace") + b"\r\n\r\n"
                     + draw(st.binary(max_size=draw(st.sampled_from([16, 17 * 1024])))) + b"\r\n")
    body = b"".join(parts) + (b"--" + b + b"--\r\n" if draw(st.booleans()) else b"")
    if draw(st.booleans()) and body:  # mutate: truncate or flip bytes
        cut = draw(st.integers(0, len(body)))
        body = body[:cut] + draw(st.binary(max_size=20)) + body[cut + 1:]
    return boundary, body


@given(multipart_body(), st.booleans())
@settings(FUZZ, max_examples=400)
def test_skyfile_uploads(http: httpx.Client, upload: tuple[str, bytes], declared: bool) -> None:
    boundary, body = upload
    content_type = f"multipart/form-data; boundary={boundary}" if declared else "multipart/form-data"
    r = http.post("/skynet/skyfile", content=body, headers={"content-type": content_type})
    check(r)
    if r.status_code == 200:
        assert set(r.json()) == {"skylink", "merkleroot", "bitfield"}


@given(st.one_of(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-",
                         min_size=40, max_size=50), text),
       st.sampled_from(["", "/", "/x", "/a/b"]), st.sampled_from(["GET", "HEAD"]))
@FUZZ
def test_skylink_gets(http: httpx.Client, link: str, tail: str, method: str) -> None:
    check(http.request(method, "/" + urllib.parse.quote(link, safe="") + tail))


@given(st.one_of(
    st.binary(min_size=1, max_size=300).map(lambda b: b.replace(b"\r\n\r\n", b"")),
    st.tuples(st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"G\x00T", b""]),
              st.binary(max_size=80), st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/9", b""]),
              st.lists(st.binary(max_size=60), max_size=5))
    .map(lambda t: t[0] + b" /" + t[1] + b" " + t[2] + b"\r\n" + b"\r\n".join(t[3]) + b"\r\n\r\n")))
@settings(FUZZ, max_examples=300)
def test_raw_request_heads(portal: ThreadPortal, request: bytes) -> None:
    answer = raw_exchange(portal, request)
    if answer:
        assert not answer.startswith(b"HTTP/1.1 5"), answer[:200]


@given(st.lists(st.one_of(
    st.builds(lambda a, p, d: json.dumps({"action": a, "pubkey": p, "datakey": d}),
              st.sampled_from(["subscribe", "unsubscribe", "dance", ""]),
              st.one_of(st.just("ed25519:" + KEY.public_key.hex()), hexish, json_value),
              st.one_of(st.just(DK.hex()), hexish, json_value)),
    json_value.map(json.dumps), st.text(max_size=1500), st.binary(max_size=100)), min_size=1, max_size=25))
@settings(FUZZ, max_examples=60)
def test_websocket_messages(portal: ThreadPortal, messages: list[str | bytes]) -> None:
    async def session() -> None:
        async with aiohttp.ClientSession() as s, s.ws_connect(portal.url + "/skynet/registry/subscription") as ws:
            for message in messages:
                if ws.closed:
                    break  # over the message size limit: the portal closed this socket, as documented
                if isinstance(message, bytes):
                    await ws.send_bytes(message)
                else:
                    await ws.send_str(message)
            await ws.close()

    portal.run(session())


def test_still_serving_after_the_fuzz(http: httpx.Client, portal: ThreadPortal) -> None:
    """Runs last in this module (pytest keeps file order): the portal survived everything above."""
    assert http.get("/").status_code == 200
    final = hash_data_key("after the fuzz")
    assert http.post("/skynet/registry", json=valid_body(b"after the fuzz", 7, final)).status_code == 204
    got = http.get("/skynet/registry", params={"publickey": "ed25519:" + KEY.public_key.hex(),
                                                "datakey": final.hex()}).json()
    assert bytes.fromhex(got["data"]) == b"after the fuzz" and got["revision"] == 7
    r = http.post("/skynet/skyfile", files={"file": ("f", b"still here")})
    assert r.status_code == 200 and r.json()["skylink"] == skylink_for_content(b"still here")
    assert http.get("/" + r.json()["skylink"]).content == b"still here"
