"""A Skynet-portal-API-compatible server on aiohttp + SQLite (``sdparta portal``).

Endpoints (the subset signalling needs, shaped as skyd answers and skynet-js 4.x sends):

- ``HEAD|GET /``: header ``skynet-portal-api: <url>``; JSON with limits and whether push is on.
- ``GET /skynet/registry?publickey=ed25519:<hex>&datakey=<hex>`` → ``{"data": hex, "revision": n,
  "signature": hex, "type": 1}`` or 404.
- ``POST /skynet/registry`` (skynet-js JSON) → 204; 400 for data > 113 bytes, a revision that does not
  grow (equal included), a bad signature or malformed input; 413 for an oversized body.
- ``POST /skynet/skyfile`` (multipart field ``file``) → ``{"skylink", "merkleroot", "bitfield"}``;
  413 over the blob limit (streamed, never buffered whole), 507 when the quota is full.
- ``GET|HEAD /<46-character skylink>`` with ``skynet-skylink`` and ``skynet-portal-api`` headers.
- ``/skynet/registry/subscription`` websocket (skyd's protocol): ``{"action": "subscribe"|
  "unsubscribe", "pubkey": "ed25519:<hex>", "datakey": hex}``; pushes ``{"pubkey", "datakey", "data",
  "revision", "signature", "type"}`` with the current value on subscribe and on every accepted write.
- CORS on everything (``*``, preflight, skynet-* headers exposed) so browser pages can use it.

Every bad request is a 4xx JSON ``{"message": …}``; an invalid write never touches stored data; a
slow websocket reader is disconnected rather than allowed to hold up writers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import signal
import sqlite3
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
from aiohttp import BodyPartReader, WSMsgType, web
from aiohttp.http_exceptions import HttpProcessingError

from sdparta import __version__
from sdparta.portal.db import PortalDB, QuotaExceeded
from sdparta.store.base import MAX_ENTRY_DATA, InvalidEntry, RegistryEntry
from sdparta.store.crypto import MAX_REVISION, decode_skylink, skylink_for_content, verify_entry

log = logging.getLogger(__name__)

MAX_REGISTRY_BODY = 4096
MULTIPART_OVERHEAD = 64 * 1024
MAX_WS_MESSAGE = 1024
MAX_SUBSCRIPTIONS_PER_SOCKET = 1024
MAX_SOCKETS = 2048
#: Pushes waiting for one socket; a reader this far behind is disconnected (it re-subscribes and
#: gets the current values, so it loses nothing).
SOCKET_QUEUE = 256
SEND_TIMEOUT_S = 10.0
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "skynet-skylink, skynet-portal-api, skynet-file-metadata, "
                                     "Content-Length, Content-Type",
}
PREFLIGHT_HEADERS = {
    **CORS_HEADERS,
    "Access-Control-Allow-Methods": "GET, POST, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Authorization, Skynet-Api-Key, Tus-Resumable",
    "Access-Control-Max-Age": "86400",
}

Slot = tuple[bytes, bytes]


class PortalDataError(Exception):
    """The portal's SQLite file cannot be opened or created."""


class BadRequest(ValueError):
    """A request field is malformed; the message is shown to the client."""


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status, headers=CORS_HEADERS)


def _parse_hex(value: Any, length: int, what: str) -> bytes:
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be a hex string")
    if len(value) != 2 * length:
        raise BadRequest(f"{what} must be {length} bytes ({2 * length} hex digits)")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise BadRequest(f"{what} is not valid hex") from None


def _parse_pubkey_string(value: Any) -> bytes:
    if not isinstance(value, str) or not value.startswith("ed25519:"):
        raise BadRequest("publickey must look like ed25519:<64 hex digits>")
    return _parse_hex(value[len("ed25519:"):], 32, "publickey")


def _parse_byte_array(value: Any, what: str, max_len: int) -> bytes:
    """skynet-js sends bytes as JSON arrays of numbers; hex strings are accepted too."""
    if isinstance(value, str):
        if len(value) > 2 * max_len:
            raise BadRequest(f"{what} is too long (more than {max_len} bytes)")
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise BadRequest(f"{what} is not valid hex") from None
    if not isinstance(value, list):
        raise BadRequest(f"{what} must be an array of bytes")
    if len(value) > max_len:
        raise BadRequest(f"{what} is too long ({len(value)} > {max_len} bytes)")
    if not all(type(b) is int and 0 <= b <= 255 for b in value):
        raise BadRequest(f"{what} must be an array of bytes (integers 0-255)")
    return bytes(value)


def _parse_revision(value: Any) -> int:
    if isinstance(value, str) and value.isdigit() and len(value) <= 20:
        value = int(value)
    if type(value) is not int or not 0 <= value <= MAX_REVISION:
        raise BadRequest("revision must be an unsigned 64-bit integer")
    return value


def parse_registry_post(raw: bytes) -> RegistryEntry:
    """The entry in a skynet-js ``POST /skynet/registry`` body (not yet signature-checked)."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"malformed registry entry: body is not JSON ({exc})") from None
    if not isinstance(body, dict):
        raise BadRequest("malformed registry entry: the body must be a JSON object")
    pk = body.get("publickey")
    if isinstance(pk, str):  # Go clients send SiaPublicKey as "ed25519:<hex>"
        public_key = _parse_pubkey_string(pk)
    elif isinstance(pk, dict) and pk.get("algorithm") == "ed25519":
        public_key = _parse_byte_array(pk.get("key"), "publickey.key", 32)
        if len(public_key) != 32:
            raise BadRequest("publickey.key must be 32 bytes")
    else:
        raise BadRequest('publickey must be {"algorithm": "ed25519", "key": [32 bytes]}')
    if body.get("type", 1) != 1:
        raise BadRequest("only registry entry type 1 is supported")
    data_key = _parse_hex(body.get("datakey"), 32, "datakey")
    revision = _parse_revision(body.get("revision"))
    data = _parse_byte_array(body.get("data"), "data", 1 << 12)
    signature = _parse_byte_array(body.get("signature"), "signature", 64)
    if len(signature) != 64:
        raise BadRequest("signature must be 64 bytes")
    return RegistryEntry(public_key, data_key, data, revision, signature)


def _entry_json(entry: RegistryEntry) -> dict[str, Any]:
    return {"data": entry.data.hex(), "revision": entry.revision, "signature": entry.signature.hex(), "type": 1}


def _push_json(entry: RegistryEntry) -> dict[str, Any]:
    return {"pubkey": "ed25519:" + entry.public_key.hex(), "datakey": entry.data_key.hex(), **_entry_json(entry)}


@dataclass
class PortalOptions:
    subscription: bool = True
    max_blob_bytes: int = 4 * 1024 * 1024
    quota_bytes: int = 1024 * 1024 * 1024
    blob_ttl_s: float = 24 * 3600
    max_sockets: int = MAX_SOCKETS
    max_subscriptions_per_socket: int = MAX_SUBSCRIPTIONS_PER_SOCKET

    def check(self) -> None:
        """ValueError naming the bad option."""
        if self.max_blob_bytes <= 0:
            raise ValueError("the maximum skyfile size must be positive")
        if self.quota_bytes <= 0:
            raise ValueError("the skyfile quota must be positive")
        if self.blob_ttl_s <= 0:
            raise ValueError("the skyfile lifetime must be positive")


class _Subscriber:
    """One websocket: its slots and an outbound queue drained by its own sender task, so a slow
    reader never blocks a writer's POST."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.slots: set[Slot] = set()
        self.queue: asyncio.Queue[RegistryEntry | dict[str, Any] | None] = asyncio.Queue(maxsize=SOCKET_QUEUE)
        self.sent: dict[Slot, int] = {}
        self.task: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[bool] | None = None

    def offer(self, item: RegistryEntry | dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            if self._closing is None:
                log.info("closing a subscription socket that does not keep up")
                self._closing = asyncio.create_task(
                    self.ws.close(code=1008, message=b"too slow; reconnect and re-subscribe"))

    async def run(self) -> None:
        while (item := await self.queue.get()) is not None:
            if isinstance(item, RegistryEntry):
                slot = (item.public_key, item.data_key)
                if slot not in self.slots or item.revision <= self.sent.get(slot, -1):
                    continue  # unsubscribed meanwhile, or already sent something at least as new
                self.sent[slot] = item.revision
                payload = _push_json(item)
            else:
                payload = item
            try:
                await asyncio.wait_for(self.ws.send_json(payload), SEND_TIMEOUT_S)
            except (ConnectionError, RuntimeError, TimeoutError):
                await self.ws.close()
                return


class Portal:
    """Request handlers bound to one database."""

    def __init__(self, db: PortalDB, options: PortalOptions) -> None:
        self.db = db
        self.options = options
        self.url = ""
        self._subscribers: dict[Slot, set[_Subscriber]] = defaultdict(set)
        self._sockets: set[_Subscriber] = set()
        self.requests = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REGISTRY_BODY, middlewares=[self._middleware])
        app.router.add_get("/", self.root)
        app.router.add_get("/skynet/registry", self.registry_get)
        app.router.add_post("/skynet/registry", self.registry_post)
        app.router.add_post("/skynet/skyfile", self.skyfile_post)
        if self.options.subscription:
            app.router.add_get("/skynet/registry/subscription", self.subscription)
        app.router.add_get("/{skylink:[A-Za-z0-9_-]+}", self.skylink_get)  # also answers HEAD
        app.router.add_get("/{skylink:[A-Za-z0-9_-]{46}}/{path:.*}", self.skylink_get)
        app.on_shutdown.append(self._close_sockets)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests += 1
        if request.method == "OPTIONS":  # CORS preflight for any path, before routing decides
            return await self.preflight(request)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status >= 400:
                return _error(exc.status, exc.reason or "request refused")
            raise
        except Exception:  # the portal never crashes on a request
            log.exception("portal handler failed")
            return _error(500, "internal error (the request was not applied)")
        if not response.prepared:
            response.headers.update(CORS_HEADERS)
        return response

    async def preflight(self, request: web.Request) -> web.Response:
        headers = dict(PREFLIGHT_HEADERS)
        asked = request.headers.get("Access-Control-Request-Headers", "")
        if asked and len(asked) < 1024:
            headers["Access-Control-Allow-Headers"] = asked
        return web.Response(status=204, headers=headers)

    async def root(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"name": "sdparta portal", "version": __version__, "subscription": self.options.subscription,
             "max_entry_data": MAX_ENTRY_DATA, "max_skyfile_bytes": self.options.max_blob_bytes,
             "skyfile_ttl_s": self.options.blob_ttl_s},
            headers={"skynet-portal-api": self.url})

    # ---------------------------------------------------------------- registry
    async def registry_get(self, request: web.Request) -> web.Response:
        try:
            public_key = _parse_pubkey_string(request.query.get("publickey"))
            data_key = _parse_hex(request.query.get("datakey"), 32, "datakey")
        except BadRequest as exc:
            return _error(400, str(exc))
        entry = await asyncio.to_thread(self.db.get_entry, public_key, data_key)
        if entry is None:
            return _error(404, "no registry entry for this public key and data key")
        return web.json_response(_entry_json(entry))

    async def registry_post(self, request: web.Request) -> web.Response:
        too_large = f"registry request too large (limit {MAX_REGISTRY_BODY} bytes)"
        if request.content_length is not None and request.content_length > MAX_REGISTRY_BODY:
            return _error(413, too_large)
        raw = b""
        while len(raw) <= MAX_REGISTRY_BODY and (chunk := await request.content.read(MAX_REGISTRY_BODY + 1 - len(raw))):
            raw += chunk
        if len(raw) > MAX_REGISTRY_BODY:
            return _error(413, too_large)
        try:
            entry = parse_registry_post(raw)
        except BadRequest as exc:
            message = str(exc)
            return _error(400, message if message.startswith("malformed") else f"malformed registry entry: {message}")
        if len(entry.data) > MAX_ENTRY_DATA:
            return _error(400, f"registry data too big ({len(entry.data)} > {MAX_ENTRY_DATA} bytes)")
        if not verify_entry(entry):
            return _error(400, "invalid signature for this registry entry")
        if not await asyncio.to_thread(self.db.set_entry, entry):
            stored = await asyncio.to_thread(self.db.get_entry, entry.public_key, entry.data_key)
            have = f" (stored revision {stored.revision})" if stored else ""
            return _error(400, f"revision number must be greater than the stored revision{have}")
        self._notify(entry)
        return web.Response(status=204)

    # ---------------------------------------------------------------- skyfiles
    async def skyfile_post(self, request: web.Request) -> web.Response:
        limit = self.options.max_blob_bytes
        too_large = f"upload too large (limit {limit} bytes)"
        if request.content_length is not None and request.content_length > limit + MULTIPART_OVERHEAD:
            return _error(413, too_large)
        try:
            reader = await request.multipart()
        except (AssertionError, ValueError, KeyError, TypeError) as exc:
            return _error(400, f"expected multipart/form-data with a 'file' field ({exc})")
        content: bytes | None = None
        try:
            other = 0  # bytes of fields other than 'file': read (bounded) and dropped
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    return _error(400, "nested multipart bodies are not supported")
                if part.name != "file":
                    while chunk := await part.read_chunk(16 * 1024):
                        other += len(chunk)
                        if other > MULTIPART_OVERHEAD:
                            return _error(413, f"fields besides 'file' exceed {MULTIPART_OVERHEAD} bytes")
                    continue
                chunks: list[bytes] = []
                size = 0
                while chunk := await part.read_chunk(64 * 1024):
                    size += len(chunk)
                    if size > limit:
                        return _error(413, too_large)
                    chunks.append(chunk)
                content = b"".join(chunks)
                break
        except (ValueError, AssertionError, KeyError, TypeError, HttpProcessingError) as exc:
            return _error(400, f"malformed multipart body: {str(exc).strip()[:200]}")
        if content is None:
            return _error(400, "multipart field 'file' is missing (directory uploads are not supported)")
        skylink = skylink_for_content(content)
        try:
            await asyncio.to_thread(self.db.put_blob, skylink, content, self.options.quota_bytes)
        except QuotaExceeded:
            return _error(507, "the portal's skyfile storage is full; try again after old skyfiles "
                               "expire, or use another portal")
        raw = decode_skylink(skylink)
        return web.json_response({"skylink": skylink, "merkleroot": raw[2:].hex(),
                                  "bitfield": int.from_bytes(raw[:2], "little")})

    async def skylink_get(self, request: web.Request) -> web.Response:
        skylink = request.match_info["skylink"]
        try:
            decode_skylink(skylink)
        except InvalidEntry as exc:
            return _error(400, f"malformed skylink: {exc}")
        if request.match_info.get("path"):
            return _error(404, "this portal serves single files only (no paths inside a skyfile)")
        content = await asyncio.to_thread(self.db.get_blob, skylink, self.options.blob_ttl_s)
        if content is None:
            return _error(404, "no skyfile with this skylink (expired or never uploaded)")
        return web.Response(body=content, content_type="application/octet-stream",
                            headers={"skynet-skylink": skylink, "skynet-portal-api": self.url,
                                     "Cache-Control": "public, max-age=31536000, immutable",
                                     "ETag": f'"{skylink}"'})

    # ---------------------------------------------------------------- push
    async def subscription(self, request: web.Request) -> web.StreamResponse:
        if len(self._sockets) >= self.options.max_sockets:
            return _error(503, "too many subscription sockets on this portal; poll or try later")
        ws = web.WebSocketResponse(heartbeat=20, max_msg_size=MAX_WS_MESSAGE)
        await ws.prepare(request)
        sub = _Subscriber(ws)
        self._sockets.add(sub)
        sub.task = asyncio.create_task(sub.run())
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_ws_message(sub, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    sub.offer({"error": "send JSON text messages"})
        except Exception:  # a broken socket must not take anything else down
            log.exception("subscription socket failed")
        finally:
            self._sockets.discard(sub)
            for slot in sub.slots:
                self._subscribers[slot].discard(sub)
                if not self._subscribers[slot]:
                    del self._subscribers[slot]
            sub.slots.clear()
            sub.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sub.task
        return ws

    async def _on_ws_message(self, sub: _Subscriber, text: str) -> None:
        try:
            body = json.loads(text)
            if not isinstance(body, dict):
                raise BadRequest("expected a JSON object")
            action = body.get("action")
            slot = (_parse_pubkey_string(body.get("pubkey")), _parse_hex(body.get("datakey"), 32, "datakey"))
        except (BadRequest, ValueError, RecursionError) as exc:
            sub.offer({"error": f"bad subscription request: {exc}"})
            return
        if action == "subscribe":
            if slot in sub.slots:
                return
            if len(sub.slots) >= self.options.max_subscriptions_per_socket:
                sub.offer({"error": f"too many subscriptions on one socket "
                                    f"(limit {self.options.max_subscriptions_per_socket})"})
                return
            sub.slots.add(slot)
            self._subscribers[slot].add(sub)
            entry = await asyncio.to_thread(self.db.get_entry, *slot)
            if entry is not None:
                sub.offer(entry)
        elif action == "unsubscribe":
            sub.slots.discard(slot)
            sub.sent.pop(slot, None)
            subscribers = self._subscribers.get(slot)
            if subscribers is not None:
                subscribers.discard(sub)
                if not subscribers:
                    del self._subscribers[slot]
        else:
            sub.offer({"error": f"unknown action {action!r} (expected subscribe or unsubscribe)"})

    def _notify(self, entry: RegistryEntry) -> None:
        for sub in list(self._subscribers.get((entry.public_key, entry.data_key), ())):
            sub.offer(entry)

    async def _close_sockets(self, app: web.Application) -> None:
        for sub in list(self._sockets):
            with contextlib.suppress(Exception):
                await sub.ws.close(code=1001, message=b"portal shutting down")

    async def sweep(self) -> None:
        """Expire old skyfiles now and then periodically."""
        interval = min(600.0, max(1.0, self.options.blob_ttl_s / 10))
        while True:
            try:
                removed = await asyncio.to_thread(self.db.expire_blobs, self.options.blob_ttl_s)
                if removed:
                    log.info("expired %d skyfiles", removed)
            except sqlite3.Error as exc:
                log.warning("skyfile expiry failed: %s", exc)
            await asyncio.sleep(interval)


@dataclass
class RunningPortal:
    """A portal serving in this process's loop."""

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
                       options: PortalOptions | None = None, **overrides: Any) -> RunningPortal:
    """Start serving in the running loop; ``port=0`` picks a free port (see ``.url``).

    ``overrides`` are PortalOptions fields, e.g. ``start_portal(data=p, subscription=False)``.
    """
    opts = dataclasses.replace(options or PortalOptions(), **overrides)
    opts.check()
    path = Path(data) if data else default_data_path()
    try:
        db = PortalDB(path)
    except (OSError, sqlite3.Error) as exc:
        raise PortalDataError(f"cannot open the database {path}: {exc} (choose another --data)") from exc
    portal = Portal(db, opts)
    # lingering_time bounds how long the body of a refused (413) upload is drained and discarded
    # before the connection is closed; the client still gets to read the 413 first.
    runner = web.AppRunner(portal.app(), access_log=None, handle_signals=False, shutdown_timeout=2.0,
                           lingering_time=2.0)
    try:
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        db.close()
        raise
    bound_port = runner.addresses[0][1] if runner.addresses else port
    shown_host = f"[{host}]" if ":" in host else host
    portal.url = f"http://{shown_host}:{bound_port}"
    return RunningPortal(portal.url, portal, runner, asyncio.create_task(portal.sweep()))


def run_portal(host: str = "127.0.0.1", port: int = 8787, data: str | None = None, subscription: bool = True,
               max_blob_bytes: int = 4 * 1024 * 1024, quota_bytes: int = 1024**3,
               blob_ttl_s: float = 24 * 3600) -> int:
    """Serve until SIGINT/SIGTERM. The first stdout line is the URL (flushed), then a summary."""
    options = PortalOptions(subscription, max_blob_bytes, quota_bytes, blob_ttl_s)
    try:
        options.check()
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} is not between 0 and 65535")
    except ValueError as exc:
        print(f"sdparta portal: {exc}", file=sys.stderr)
        return 2
    data_path = Path(data) if data else default_data_path()

    async def main() -> int:
        try:
            running = await start_portal(host, port, data_path, options)
        except PortalDataError as exc:
            print(f"sdparta portal: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"sdparta portal: cannot listen on {host}:{port}: {exc} (try another --port)", file=sys.stderr)
            return 1
        print(running.url, flush=True)
        anywhere = " (all interfaces: share this machine's address)" if host in ("0.0.0.0", "::", "") else ""
        print(f"sdparta portal {__version__}: serving {running.url}{anywhere}; data {data_path}; "
              f"push {'on' if subscription else 'off'}; skyfiles up to {max_blob_bytes} bytes, "
              f"quota {quota_bytes} bytes, kept {blob_ttl_s:g} s; Ctrl-C stops", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await running.stop()
        return 0

    return asyncio.run(main())
