"""A Skynet-portal-API-compatible server on aiohttp + SQLite.

Endpoints (the subset signalling needs, shaped like skyd/skynet-js expect):
``HEAD|GET /``, ``GET|POST /skynet/registry``, ``POST /skynet/skyfile``, ``GET|HEAD /<skylink>``,
``GET /skynet/registry/subscription`` (websocket push), CORS everywhere.
Every bad request gets a 4xx JSON ``{"message": …}``; an invalid write never touches stored data.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
from aiohttp import WSMsgType, web

from sdparta.portal.db import PortalDB
from sdparta.store.base import MAX_ENTRY_DATA, InvalidEntry, RegistryEntry
from sdparta.store.crypto import MAX_REVISION, decode_skylink, skylink_for_content, verify_entry

log = logging.getLogger(__name__)

MAX_REGISTRY_BODY = 4096
MAX_WS_MESSAGE = 1024
MAX_SUBSCRIPTIONS_PER_SOCKET = 1024
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Authorization, Skynet-Api-Key",
    "Access-Control-Expose-Headers": "skynet-skylink, skynet-portal-api, skynet-file-metadata, Content-Length",
}

Slot = tuple[bytes, bytes]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status, headers=CORS_HEADERS)


def _parse_hex(value: Any, length: int, what: str) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"{what} is not valid hex") from None
    if len(raw) != length:
        raise ValueError(f"{what} must be {length} bytes")
    return raw


def _parse_pubkey(value: Any) -> bytes:
    if not isinstance(value, str) or not value.startswith("ed25519:"):
        raise ValueError("publickey must look like ed25519:<64 hex digits>")
    return _parse_hex(value[len("ed25519:"):], 32, "publickey")


def _parse_byte_array(value: Any, what: str, max_len: int) -> bytes:
    """skynet-js sends bytes as JSON arrays of numbers (and some clients as hex)."""
    if isinstance(value, str):
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raise ValueError(f"{what} is not valid hex") from None
    elif isinstance(value, list) and all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255
                                         for b in value):
        raw = bytes(value)
    else:
        raise ValueError(f"{what} must be an array of bytes")
    if len(raw) > max_len:
        raise ValueError(f"{what} is too long ({len(raw)} > {max_len} bytes)")
    return raw


def _entry_json(entry: RegistryEntry) -> dict[str, Any]:
    return {"data": entry.data.hex(), "revision": entry.revision, "signature": entry.signature.hex(), "type": 1}


@dataclass
class PortalOptions:
    subscription: bool = True
    max_blob_bytes: int = 4 * 1024 * 1024
    quota_bytes: int = 1024 * 1024 * 1024
    blob_ttl_s: float = 24 * 3600


class Portal:
    """Request handlers bound to one database."""

    def __init__(self, db: PortalDB, options: PortalOptions) -> None:
        self.db = db
        self.options = options
        self.url = ""
        self._subscribers: dict[Slot, set[web.WebSocketResponse]] = defaultdict(set)
        self.requests = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.options.max_blob_bytes + 64 * 1024,
                              middlewares=[self._middleware])
        app.router.add_get("/", self.root)
        app.router.add_get("/skynet/registry", self.registry_get)
        app.router.add_post("/skynet/registry", self.registry_post)
        app.router.add_post("/skynet/skyfile", self.skyfile_post)
        if self.options.subscription:
            app.router.add_get("/skynet/registry/subscription", self.subscription)
        app.router.add_route("OPTIONS", "/{tail:.*}", self.preflight)
        app.router.add_get("/{skylink:[A-Za-z0-9_-]+}", self.skylink_get)  # also answers HEAD
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests += 1
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status >= 400:
                return _error(exc.status, exc.reason or "request refused")
            raise
        except Exception:  # the portal never crashes on a request
            log.exception("portal handler failed")
            return _error(500, "internal error (the request was not applied)")
        if not isinstance(response, web.WebSocketResponse):
            response.headers.update(CORS_HEADERS)
        return response

    async def preflight(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers=CORS_HEADERS)

    async def root(self, request: web.Request) -> web.Response:
        return web.json_response({"name": "sdparta portal", "subscription": self.options.subscription},
                                 headers={"skynet-portal-api": self.url})

    async def registry_get(self, request: web.Request) -> web.Response:
        try:
            public_key = _parse_pubkey(request.query.get("publickey"))
            data_key = _parse_hex(request.query.get("datakey"), 32, "datakey")
        except ValueError as exc:
            return _error(400, str(exc))
        entry = await asyncio.to_thread(self.db.get_entry, public_key, data_key)
        if entry is None:
            return _error(404, "no registry entry for this public key and data key")
        return web.json_response(_entry_json(entry))

    async def registry_post(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_REGISTRY_BODY:
            return _error(400, "registry request too large")
        raw = await request.content.read(MAX_REGISTRY_BODY + 1)
        if len(raw) > MAX_REGISTRY_BODY:
            return _error(400, "registry request too large")
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            pk = body.get("publickey")
            if not isinstance(pk, dict) or pk.get("algorithm") != "ed25519":
                raise ValueError("publickey must be {\"algorithm\": \"ed25519\", \"key\": [32 bytes]}")
            public_key = _parse_byte_array(pk.get("key"), "publickey.key", 32)
            if len(public_key) != 32:
                raise ValueError("publickey.key must be 32 bytes")
            data_key = _parse_hex(body.get("datakey"), 32, "datakey")
            revision = body.get("revision")
            if isinstance(revision, str) and revision.isdigit():
                revision = int(revision)
            if not isinstance(revision, int) or isinstance(revision, bool) or not 0 <= revision <= MAX_REVISION:
                raise ValueError("revision must be an unsigned 64-bit integer")
            data = _parse_byte_array(body.get("data"), "data", 1 << 12)
            signature = _parse_byte_array(body.get("signature"), "signature", 64)
        except (ValueError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _error(400, f"malformed registry entry: {exc}")
        if len(data) > MAX_ENTRY_DATA:
            return _error(400, f"registry data too big ({len(data)} > {MAX_ENTRY_DATA} bytes)")
        entry = RegistryEntry(public_key, data_key, data, revision, signature)
        if not verify_entry(entry):
            return _error(400, "invalid signature for this registry entry")
        stored = await asyncio.to_thread(self.db.set_entry, entry)
        if not stored:
            return _error(400, "revision number must be greater than the stored revision")
        await self._notify(entry)
        return web.Response(status=204)

    async def skyfile_post(self, request: web.Request) -> web.Response:
        limit = self.options.max_blob_bytes
        if request.content_length is not None and request.content_length > limit + 64 * 1024:
            return _error(413, f"upload too large (limit {limit} bytes)")
        try:
            reader = await request.multipart()
        except (AssertionError, ValueError, KeyError) as exc:
            return _error(400, f"expected multipart/form-data with a 'file' field ({exc})")
        content: bytes | None = None
        while True:
            try:
                part = await reader.next()
            except ValueError as exc:
                return _error(400, f"malformed multipart body: {exc}")
            if part is None:
                break
            if getattr(part, "name", None) != "file":
                continue
            chunks: list[bytes] = []
            size = 0
            while chunk := await part.read_chunk(64 * 1024):  # type: ignore[union-attr]
                size += len(chunk)
                if size > limit:
                    return _error(413, f"upload too large (limit {limit} bytes)")
                chunks.append(chunk)
            content = b"".join(chunks)
            break
        if content is None:
            return _error(400, "multipart field 'file' is missing")
        skylink = skylink_for_content(content)
        if not await asyncio.to_thread(self.db.put_blob, skylink, content, self.options.quota_bytes):
            return _error(507, "the portal's storage quota is full; try later or another portal")
        raw = decode_skylink(skylink)
        return web.json_response({"skylink": skylink, "merkleroot": raw[2:].hex(),
                                  "bitfield": int.from_bytes(raw[:2], "little")})

    async def skylink_get(self, request: web.Request) -> web.Response:
        skylink = request.match_info["skylink"]
        try:
            decode_skylink(skylink)
        except InvalidEntry as exc:
            return _error(400, str(exc))
        content = await asyncio.to_thread(self.db.get_blob, skylink)
        if content is None:
            return _error(404, "no skyfile with this skylink (expired or never uploaded)")
        return web.Response(body=content, content_type="application/octet-stream",
                            headers={"skynet-skylink": skylink, "skynet-portal-api": self.url})

    # ---------------------------------------------------------------- push
    async def subscription(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=20, max_msg_size=MAX_WS_MESSAGE)
        await ws.prepare(request)
        slots: set[Slot] = set()
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    if msg.type == WSMsgType.ERROR:
                        break
                    continue
                try:
                    body = json.loads(msg.data)
                    if not isinstance(body, dict):
                        raise ValueError("expected a JSON object")
                    action = body.get("action")
                    slot = (_parse_pubkey(body.get("pubkey")), _parse_hex(body.get("datakey"), 32, "datakey"))
                except (ValueError, json.JSONDecodeError) as exc:
                    await ws.send_json({"error": f"bad subscription request: {exc}"})
                    continue
                if action == "subscribe":
                    if len(slots) >= MAX_SUBSCRIPTIONS_PER_SOCKET:
                        await ws.send_json({"error": "too many subscriptions on one socket"})
                        continue
                    slots.add(slot)
                    self._subscribers[slot].add(ws)
                    entry = await asyncio.to_thread(self.db.get_entry, *slot)
                    if entry is not None:
                        await ws.send_json(self._push_json(entry))
                elif action == "unsubscribe":
                    slots.discard(slot)
                    self._subscribers[slot].discard(ws)
                else:
                    await ws.send_json({"error": f"unknown action {action!r}"})
        finally:
            for slot in slots:
                self._subscribers[slot].discard(ws)
                if not self._subscribers[slot]:
                    del self._subscribers[slot]
        return ws

    @staticmethod
    def _push_json(entry: RegistryEntry) -> dict[str, Any]:
        return {"pubkey": "ed25519:" + entry.public_key.hex(), "datakey": entry.data_key.hex(),
                **_entry_json(entry)}

    async def _notify(self, entry: RegistryEntry) -> None:
        sockets = list(self._subscribers.get((entry.public_key, entry.data_key), ()))
        if not sockets:
            return
        payload = self._push_json(entry)
        for ws in sockets:
            with contextlib.suppress(Exception):
                await ws.send_json(payload)

    async def sweep(self) -> None:
        """Expire old blobs periodically."""
        while True:
            await asyncio.sleep(min(600.0, max(1.0, self.options.blob_ttl_s / 10)))
            removed = await asyncio.to_thread(self.db.expire_blobs, self.options.blob_ttl_s)
            if removed:
                log.info("expired %d skyfiles", removed)


@dataclass
class RunningPortal:
    url: str
    portal: Portal
    runner: web.AppRunner
    sweeper: asyncio.Task[None]

    async def stop(self) -> None:
        self.sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.sweeper
        await self.runner.cleanup()
        self.portal.db.close()


def default_data_path() -> Path:
    return Path(platformdirs.user_data_dir("sdparta")) / "portal.sqlite3"


async def start_portal(host: str = "127.0.0.1", port: int = 0, data: str | Path | None = None,
                       options: PortalOptions | None = None) -> RunningPortal:
    """Start serving in the running loop; ``port=0`` picks a free port (see ``.url``)."""
    db = PortalDB(Path(data) if data else default_data_path())
    portal = Portal(db, options or PortalOptions())
    runner = web.AppRunner(portal.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server  # the bound socket tells the real port when port=0
    bound_port = server.sockets[0].getsockname()[1] if server is not None and server.sockets else port
    shown_host = f"[{host}]" if ":" in host else host
    portal.url = f"http://{shown_host}:{bound_port}"
    return RunningPortal(portal.url, portal, runner, asyncio.create_task(portal.sweep()))


def run_portal(host: str = "127.0.0.1", port: int = 8787, data: str | None = None, subscription: bool = True,
               max_blob_bytes: int = 4 * 1024 * 1024, quota_bytes: int = 1024**3,
               blob_ttl_s: float = 24 * 3600) -> int:
    """Serve until SIGINT/SIGTERM; the first line printed is the URL."""
    options = PortalOptions(subscription, max_blob_bytes, quota_bytes, blob_ttl_s)

    async def main() -> None:
        try:
            running = await start_portal(host, port, data, options)
        except OSError as exc:
            print(f"cannot listen on {host}:{port}: {exc} (try another --port)", file=sys.stderr)
            raise SystemExit(1) from exc
        print(running.url, flush=True)
        print(f"sdparta portal: data {Path(data) if data else default_data_path()}, "
              f"push {'on' if subscription else 'off'}, max skyfile {max_blob_bytes} bytes", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await running.stop()

    asyncio.run(main())
    return 0
