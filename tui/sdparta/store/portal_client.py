"""The Skynet portal HTTP API as a :class:`~sdparta.store.base.Store` (httpx + aiohttp websocket)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx

from sdparta.store.base import (
    InvalidEntry,
    RegistryEntry,
    RevisionConflict,
    StoreError,
    StoreUnavailable,
)
from sdparta.store.crypto import content_matches, verify_entry

log = logging.getLogger(__name__)

MAX_REGISTRY_RESPONSE = 4096
DEFAULT_MAX_BLOB = 4 * 1024 * 1024


def _parse_entry(public_key: bytes, data_key: bytes, body: Any) -> RegistryEntry:
    """Validate a registry JSON answer for the slot we asked about, signature included."""
    if not isinstance(body, dict):
        raise InvalidEntry("registry answer is not a JSON object")
    try:
        data = bytes.fromhex(body["data"])
        signature = bytes.fromhex(body["signature"])
        revision = int(body["revision"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidEntry(f"malformed registry answer: {exc}") from exc
    entry = RegistryEntry(public_key, data_key, data, revision, signature)
    if not verify_entry(entry):
        raise InvalidEntry("registry entry signature does not verify (portal is lying or broken)")
    return entry


class PortalSubscription:
    """The portal's registry subscription websocket; reconnects and re-subscribes on drops."""

    def __init__(self, url: str) -> None:
        self.ws_url = url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + \
            "/skynet/registry/subscription"
        self._slots: set[tuple[bytes, bytes]] = set()
        self._queue: asyncio.Queue[RegistryEntry | None] = asyncio.Queue(maxsize=10_000)
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closed = False

    async def connect(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=5))
        self._ws = await self._session.ws_connect(self.ws_url, heartbeat=20, max_msg_size=64 * 1024)
        self._connected.set()
        self._task = asyncio.create_task(self._reader())

    async def _send(self, action: str, public_key: bytes, data_key: bytes) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            return  # re-subscribed on reconnect
        with contextlib.suppress(Exception):
            await ws.send_json({"action": action, "pubkey": "ed25519:" + public_key.hex(),
                                "datakey": data_key.hex()})

    async def add(self, public_key: bytes, data_key: bytes) -> None:
        if (public_key, data_key) in self._slots:
            return
        self._slots.add((public_key, data_key))
        await self._send("subscribe", public_key, data_key)

    async def remove(self, public_key: bytes, data_key: bytes) -> None:
        self._slots.discard((public_key, data_key))
        await self._send("unsubscribe", public_key, data_key)

    async def updates(self) -> AsyncIterator[RegistryEntry]:
        while True:
            entry = await self._queue.get()
            if entry is None:
                return
            yield entry

    async def _reader(self) -> None:
        delay = 0.5
        while not self._closed:
            ws = self._ws
            if ws is not None:
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        continue
                    self._handle(msg.data)
                delay = 0.5
            if self._closed or self._session is None:
                break
            await asyncio.sleep(delay)  # dropped: reconnect and re-subscribe
            delay = min(delay * 2, 10)
            try:
                self._ws = await self._session.ws_connect(self.ws_url, heartbeat=20, max_msg_size=64 * 1024)
                for public_key, data_key in list(self._slots):
                    await self._send("subscribe", public_key, data_key)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                log.info("subscription reconnect failed: %s", exc)
                self._ws = None
        self._queue.put_nowait(None)

    def _handle(self, raw: str) -> None:
        if len(raw) > 64 * 1024:
            return
        try:
            body = json.loads(raw)
            pubkey = body["pubkey"]
            if not isinstance(pubkey, str) or not pubkey.startswith("ed25519:"):
                return
            public_key = bytes.fromhex(pubkey[8:])
            data_key = bytes.fromhex(body["datakey"])
            entry = _parse_entry(public_key, data_key, body)
        except (InvalidEntry, KeyError, TypeError, ValueError, json.JSONDecodeError):
            return  # a push we did not ask for or cannot verify is ignored
        if (public_key, data_key) in self._slots:
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(entry)

    async def aclose(self) -> None:
        self._closed = True
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._session is not None:
            await self._session.close()
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)


class PortalClient:
    """One portal."""

    def __init__(self, url: str, *, http: httpx.AsyncClient | None = None, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=32))
        self._push_supported: bool | None = None

    def _unavailable(self, exc: Exception) -> StoreUnavailable:
        return StoreUnavailable(f"portal {self.url} is unreachable ({type(exc).__name__}: {exc}); "
                                "check the URL or start one with `sdparta portal`")

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self.http.request(method, self.url + path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from exc
        if response.status_code >= 500:
            raise StoreUnavailable(f"portal {self.url} answered {response.status_code}: {_message(response)}")
        return response

    async def get_entry(self, public_key: bytes, data_key: bytes) -> RegistryEntry | None:
        response = await self._request("GET", "/skynet/registry",
                                       params={"publickey": "ed25519:" + public_key.hex(), "datakey": data_key.hex()})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise StoreError(f"portal {self.url} refused the registry read: {_message(response)}")
        if len(response.content) > MAX_REGISTRY_RESPONSE:
            raise InvalidEntry(f"portal {self.url} sent an oversized registry answer")
        try:
            body = response.json()
        except ValueError as exc:
            raise InvalidEntry(f"portal {self.url} sent a registry answer that is not JSON") from exc
        return _parse_entry(public_key, data_key, body)

    async def set_entry(self, entry: RegistryEntry) -> None:
        body = {"publickey": {"algorithm": "ed25519", "key": list(entry.public_key)},
                "datakey": entry.data_key.hex(), "revision": entry.revision,
                "data": list(entry.data), "signature": list(entry.signature)}
        response = await self._request("POST", "/skynet/registry", json=body)
        if response.status_code in (200, 204):
            return
        message = _message(response)
        if response.status_code == 400 and "revision" in message.lower():
            raise RevisionConflict(message)
        raise StoreError(f"portal {self.url} refused the registry write: {message}")

    async def upload_blob(self, data: bytes) -> str:
        response = await self._request("POST", "/skynet/skyfile",
                                       files={"file": ("blob", data, "application/octet-stream")})
        if response.status_code != 200:
            raise StoreError(f"portal {self.url} refused the upload: {_message(response)}")
        try:
            skylink = response.json()["skylink"]
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidEntry(f"portal {self.url} sent a malformed upload answer") from exc
        if not isinstance(skylink, str) or len(skylink) != 46:
            raise InvalidEntry(f"portal {self.url} returned an invalid skylink")
        return skylink

    async def download_blob(self, skylink: str, max_size: int = DEFAULT_MAX_BLOB) -> bytes:
        try:
            async with self.http.stream("GET", f"{self.url}/{skylink}") as response:
                if response.status_code == 404:
                    raise StoreError(f"skyfile {skylink} not found on {self.url}")
                if response.status_code >= 500:
                    raise StoreUnavailable(f"portal {self.url} answered {response.status_code}")
                if response.status_code != 200:
                    raise StoreError(f"portal {self.url} refused the download ({response.status_code})")
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > max_size:
                        raise InvalidEntry(f"skyfile {skylink} is larger than {max_size} bytes")
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from exc
        data = b"".join(chunks)
        if not content_matches(skylink, data):
            raise InvalidEntry(f"skyfile from {self.url} does not match its skylink")
        return data

    async def open_subscription(self) -> PortalSubscription | None:
        if self._push_supported is False:
            return None
        subscription = PortalSubscription(self.url)
        try:
            await subscription.connect()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.info("portal %s offers no subscription: %s", self.url, exc)
            self._push_supported = False
            await subscription.aclose()
            return None
        self._push_supported = True
        return subscription

    async def aclose(self) -> None:
        if self._own_http:
            await self.http.aclose()


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            return body["message"][:300]
    except ValueError:
        pass
    return f"HTTP {response.status_code}"
