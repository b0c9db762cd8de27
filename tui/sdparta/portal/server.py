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

One hostile client (an IP address, or an IPv6 /64) cannot take the portal from others: connections,
sockets, uploads and new registry slots are capped or rate-limited per client (token buckets with
bursts), answered with 429 and a JSON message (``Retry-After`` says when); request heads and bodies
must arrive in bounded time; registry entries not written for ``registry_ttl_s`` expire. Every limit
is a ``PortalOptions`` field, documented in docs/portal.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import ipaddress
import json
import logging
import signal
import sqlite3
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
from aiohttp import BodyPartReader, WSMsgType, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import BadContentDispositionHeader

from sdparta import __version__
from sdparta.portal.db import BlobPolicy, PortalDB, QuotaExceeded
from sdparta.store.base import MAX_ENTRY_DATA, InvalidEntry, RegistryEntry
from sdparta.store.crypto import MAX_REVISION, decode_skylink, skylink_for_content, verify_entry

log = logging.getLogger(__name__)
# aiohttp warns once per distinct malformed Content-Disposition, and the text is the client's: each
# new header would be a new line on stderr. The upload is refused (or the part ignored) anyway.
warnings.filterwarnings("ignore", category=BadContentDispositionHeader)

MAX_REGISTRY_BODY = 4096
MULTIPART_OVERHEAD = 64 * 1024
MAX_WS_MESSAGE = 1024
#: A room member needs about 1 + N slots on one socket (presence, settings, one per member pair);
#: rooms have at most 64 members.
MAX_SUBSCRIPTIONS_PER_SOCKET = 256
MAX_SOCKETS = 2048
#: File descriptors kept free for SQLite, worker threads and logs when the connection cap is derived
#: from the process's descriptor limit.
FD_HEADROOM = 64
#: Pushes waiting for one socket; a reader this far behind is disconnected (it re-subscribes and
#: gets the current values, so it loses nothing).
SOCKET_QUEUE = 256
SEND_TIMEOUT_S = 10.0
#: What the upload bucket charges for one skyfile at least: floods of tiny uploads are bounded too.
UPLOAD_MIN_CHARGE = 4096
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


@functools.lru_cache(maxsize=4096)
def client_key(host: str | None) -> str:
    """Who a limit applies to: the IPv4 address, or the IPv6 /64 (one subscriber's whole prefix;
    an IPv4-mapped address counts as its IPv4)."""
    if not host:
        return "local"
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False).network_address) + "/64"
    return str(ip)


class TokenBucket:
    """``rate`` tokens per second up to ``burst``: bursts pass, sustained floods are refused."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, cost: float = 1.0) -> float:
        """0 when ``cost`` tokens were taken, else the seconds until they would be available."""
        self._refill(time.monotonic())
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate if self.rate > 0 else float("inf")

    def charge(self, cost: float = 1.0) -> None:
        """Take ``cost`` even into debt (for work already done by racing requests)."""
        self._refill(time.monotonic())
        self.tokens -= cost

    def peek(self, cost: float = 1.0) -> bool:
        self._refill(time.monotonic())
        return self.tokens >= cost

    @property
    def full(self) -> bool:
        self._refill(time.monotonic())
        return self.tokens >= self.burst


class RateLimiter:
    """One TokenBucket per client; buckets that are full and unused for ``IDLE_S`` are dropped by
    ``prune`` (a spray of addresses costs memory only while it lasts; a bucket a request is using
    is never dropped under it)."""

    IDLE_S = 300.0

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.buckets: dict[str, TokenBucket] = {}
        self._seen: dict[str, float] = {}

    def bucket(self, client: str) -> TokenBucket:
        bucket = self.buckets.get(client)
        if bucket is None:
            bucket = self.buckets[client] = TokenBucket(self.rate, self.burst)
        self._seen[client] = time.monotonic()
        return bucket

    def prune(self) -> None:
        idle = time.monotonic() - self.IDLE_S
        for client in [c for c, b in self.buckets.items() if self._seen.get(c, 0.0) < idle and b.full]:
            del self.buckets[client]
            self._seen.pop(client, None)


class LogLimiter:
    """At most ``burst`` lines per kind, refilled at ``per_s``; the next line says how many were
    dropped. Hostile input must not be able to fill the disk or drown real problems."""

    def __init__(self, per_s: float = 0.2, burst: float = 10) -> None:
        self.per_s = per_s
        self.burst = burst
        self._buckets: dict[str, TokenBucket] = {}
        self._dropped: dict[str, int] = {}

    def log(self, logger: logging.Logger | logging.LoggerAdapter[logging.Logger], level: int, kind: str,
            msg: str, *args: Any, exc_info: bool = False) -> None:
        bucket = self._buckets.get(kind)
        if bucket is None:
            bucket = self._buckets[kind] = TokenBucket(self.per_s, self.burst)
        if bucket.take() > 0:
            self._dropped[kind] = self._dropped.get(kind, 0) + 1
            return
        dropped = self._dropped.pop(kind, 0)
        if dropped:
            msg += f" ({dropped} similar lines suppressed)"
        logger.log(level, msg, *args, exc_info=exc_info)


def _describe(exc: BaseException | None) -> str:
    """One short line for an exception from the network (its text is attacker-chosen: repr, capped)."""
    if exc is None:
        return "unknown error"
    text = repr(str(exc))
    return f"{type(exc).__name__}: {text[:160]}{'…' if len(text) > 160 else ''}"


class _ServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's connection logger: malformed requests and resets become one rate-limited line,
    not a traceback each (they are the client's problem, and anyone can send them)."""

    def __init__(self, logger: logging.Logger, limiter: LogLimiter) -> None:
        super().__init__(logger, {})
        self.limiter = limiter

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        with contextlib.suppress(TypeError, ValueError):
            msg = str(msg) % args
        self.limiter.log(log, logging.INFO, "bad-request", "%s: %s", msg, _describe(exc))


class PortalDataError(Exception):
    """The portal's SQLite file cannot be opened or created."""


class BadRequest(ValueError):
    """A request field is malformed; the message is shown to the client."""


def _error(status: int, message: str, retry_after: float | None = None) -> web.Response:
    headers = CORS_HEADERS
    if retry_after is not None:
        headers = {**CORS_HEADERS, "Retry-After": str(max(1, min(86400, int(retry_after + 0.999))))}
    return web.json_response({"message": message}, status=status, headers=headers)


def _too_many(message: str, retry_after: float) -> web.Response:
    """429: the client treats it as "try later"; the message says what ran out."""
    return _error(429, message, retry_after)


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
    """Everything configurable about a portal; docs/portal.md explains each limit and its default.

    The per-client defaults are sized for a room of 64 on one host (every test runs ~10 bots and
    benches thousands of requests per second, all from 127.0.0.1), not for one person.
    """

    subscription: bool = True
    max_blob_bytes: int = 4 * 1024 * 1024
    quota_bytes: int = 1024 * 1024 * 1024
    blob_ttl_s: float = 24 * 3600
    max_sockets: int = MAX_SOCKETS
    max_subscriptions_per_socket: int = MAX_SUBSCRIPTIONS_PER_SOCKET
    #: push sockets one client may hold (a member needs one per portal)
    max_sockets_per_client: int = 128
    #: open TCP connections in all; 0 = the descriptor limit minus FD_HEADROOM
    max_connections: int = 0
    max_connections_per_client: int = 256
    #: a request head must be complete this long after connecting or after the previous response;
    #: an idle keep-alive connection is closed after the same time
    header_timeout_s: float = 30.0
    #: a request body must be complete this long after its head
    body_timeout_s: float = 60.0
    #: parts in one skyfile upload (skynet-js sends one, named ``file``)
    max_multipart_parts: int = 8
    #: skyfile upload bytes per second per client, and the burst (each upload counts at least 4 KiB)
    upload_rate_bytes_s: float = 2 * 1024 * 1024
    upload_burst_bytes: float = 32 * 1024 * 1024
    #: one client's share of the skyfile quota (capped at the quota)
    client_quota_bytes: int = 64 * 1024 * 1024
    #: skyfiles up to this size are "room-sized" and may use the reserve
    small_blob_bytes: int = 128 * 1024
    #: the end of the quota only room-sized skyfiles may use (capped at an eighth of the quota)
    small_reserve_bytes: int = 128 * 1024 * 1024
    #: a skyfile this young is never evicted to make room (its readers may not have fetched it yet)
    evict_min_age_s: float = 600.0
    #: new registry slots per second per client, and the burst; updates of existing slots are free
    registry_insert_rate: float = 2.0
    registry_insert_burst: float = 1000.0
    #: registry entries not written for this long expire (as on Skynet)
    registry_ttl_s: float = 30 * 24 * 3600

    def check(self) -> None:
        """ValueError naming the bad option."""
        if self.max_blob_bytes <= 0:
            raise ValueError("the maximum skyfile size must be positive")
        if self.quota_bytes <= 0:
            raise ValueError("the skyfile quota must be positive")
        if self.blob_ttl_s <= 0:
            raise ValueError("the skyfile lifetime must be positive")
        positive = ("max_sockets", "max_subscriptions_per_socket", "max_sockets_per_client",
                    "max_connections_per_client", "header_timeout_s", "body_timeout_s", "max_multipart_parts",
                    "upload_rate_bytes_s", "client_quota_bytes", "registry_insert_rate", "registry_ttl_s")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name.replace('_', ' ')} must be positive")
        if self.max_connections < 0 or self.small_blob_bytes < 0 or self.small_reserve_bytes < 0 \
                or self.evict_min_age_s < 0:
            raise ValueError("connection, reserve and eviction limits must not be negative")
        if self.upload_burst_bytes < self.max_blob_bytes:
            raise ValueError("the upload burst must allow one skyfile of the maximum size")
        if self.registry_insert_burst < 1:
            raise ValueError("the registry insert burst must be at least 1")

    def blob_policy(self) -> BlobPolicy:
        return BlobPolicy(quota_bytes=self.quota_bytes, client_bytes=min(self.client_quota_bytes, self.quota_bytes),
                          small_blob_bytes=self.small_blob_bytes,
                          small_reserve_bytes=min(self.small_reserve_bytes, self.quota_bytes // 8),
                          evict_min_age_s=self.evict_min_age_s)

    def connection_cap(self) -> int:
        """``max_connections``, or what the process's descriptor limit allows."""
        if self.max_connections:
            return self.max_connections
        try:
            import resource

            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        except (ImportError, OSError, ValueError):
            return 4096
        if soft == resource.RLIM_INFINITY:
            return 65536
        return max(16, soft - FD_HEADROOM)


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
    """Request handlers bound to one database, and the per-client limits."""

    def __init__(self, db: PortalDB, options: PortalOptions) -> None:
        self.db = db
        self.options = options
        self.url = ""
        self._subscribers: dict[Slot, set[_Subscriber]] = {}
        self._sockets: set[_Subscriber] = set()
        self._sockets_by_client: dict[str, int] = {}
        self._connections: dict[Any, str] = {}  # aiohttp protocol → client
        self._connections_by_client: dict[str, int] = {}
        self._connection_cap = options.connection_cap()
        self.uploads = RateLimiter(options.upload_rate_bytes_s, options.upload_burst_bytes)
        self.inserts = RateLimiter(options.registry_insert_rate, options.registry_insert_burst)
        self.log_limit = LogLimiter()
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

    # ---------------------------------------------------------------- connections
    def guard_connections(self, server: web.Server) -> None:
        """Count TCP connections per client on aiohttp's connection hooks; one over a cap gets a
        429 (or 503 when the portal as a whole is full) and is closed before anything is read."""
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler: Any, transport: asyncio.Transport) -> None:
            made(handler, transport)
            peer = transport.get_extra_info("peername")
            client = client_key(peer[0] if isinstance(peer, tuple) and peer else None)
            held = self._connections_by_client.get(client, 0)
            if held >= self.options.max_connections_per_client:
                self._refuse(transport, 429, f"too many connections from your address (limit "
                                             f"{self.options.max_connections_per_client}); reuse connections")
                return
            if len(self._connections) >= self._connection_cap:
                self._refuse(transport, 503, "the portal has too many connections; try later")
                return
            self._connections[handler] = client
            self._connections_by_client[client] = held + 1

        def connection_lost(handler: Any, exc: BaseException | None) -> None:
            client = self._connections.pop(handler, None)
            if client is not None:
                held = self._connections_by_client.get(client, 1) - 1
                if held > 0:
                    self._connections_by_client[client] = held
                else:
                    self._connections_by_client.pop(client, None)
            lost(handler, exc)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]

    def _refuse(self, transport: asyncio.Transport, status: int, message: str) -> None:
        self.log_limit.log(log, logging.INFO, "connection-cap", "refused a connection: %s", message)
        body = json.dumps({"message": message}).encode()
        reason = "Too Many Requests" if status == 429 else "Service Unavailable"
        with contextlib.suppress(Exception):
            transport.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                            f"Content-Length: {len(body)}\r\nRetry-After: 5\r\nConnection: close\r\n"
                            "Access-Control-Allow-Origin: *\r\n\r\n".encode() + body)
        transport.close()

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    # ---------------------------------------------------------------- middleware
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
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            # the client went away mid-request: normal on the internet, one short line
            self.log_limit.log(log, logging.INFO, "client-gone", "client %s went away during %s %s: %s",
                          request.remote, request.method, request.path[:80], _describe(exc))
            return _error(400, "the connection was lost before the request was complete")
        except Exception:  # the portal never crashes on a request
            self.log_limit.log(log, logging.ERROR, "handler-failed", "portal handler failed", exc_info=True)
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
        o = self.options
        return web.json_response(
            {"name": "sdparta portal", "version": __version__, "subscription": o.subscription,
             "max_entry_data": MAX_ENTRY_DATA, "max_skyfile_bytes": o.max_blob_bytes,
             "skyfile_ttl_s": o.blob_ttl_s, "registry_ttl_s": o.registry_ttl_s,
             "limits": {"max_subscriptions_per_socket": o.max_subscriptions_per_socket,
                        "max_sockets_per_client": o.max_sockets_per_client,
                        "max_connections_per_client": o.max_connections_per_client,
                        "upload_rate_bytes_s": o.upload_rate_bytes_s,
                        "client_quota_bytes": min(o.client_quota_bytes, o.quota_bytes),
                        "registry_insert_rate": o.registry_insert_rate,
                        "registry_insert_burst": o.registry_insert_burst}},
            headers={"skynet-portal-api": self.url})

    async def _read_body(self, request: web.Request, limit: int) -> bytes | None:
        """At most ``limit + 1`` bytes of the body (None: it did not arrive within the body timeout)."""
        raw = b""
        try:
            async with asyncio.timeout(self.options.body_timeout_s):
                while len(raw) <= limit and (chunk := await request.content.read(limit + 1 - len(raw))):
                    raw += chunk
        except TimeoutError:
            return None
        return raw

    def _body_timeout(self) -> web.Response:
        response = _error(408, f"the request body did not arrive within {self.options.body_timeout_s:g} s")
        response.force_close()
        return response

    # ---------------------------------------------------------------- registry
    async def registry_get(self, request: web.Request) -> web.Response:
        try:
            public_key = _parse_pubkey_string(request.query.get("publickey"))
            data_key = _parse_hex(request.query.get("datakey"), 32, "datakey")
        except BadRequest as exc:
            return _error(400, str(exc))
        entry = await asyncio.to_thread(self.db.get_entry, public_key, data_key, self.options.registry_ttl_s)
        if entry is None:
            return _error(404, "no registry entry for this public key and data key")
        return web.json_response(_entry_json(entry))

    async def registry_post(self, request: web.Request) -> web.Response:
        too_large = f"registry request too large (limit {MAX_REGISTRY_BODY} bytes)"
        if request.content_length is not None and request.content_length > MAX_REGISTRY_BODY:
            return _error(413, too_large)
        raw = await self._read_body(request, MAX_REGISTRY_BODY)
        if raw is None:
            return self._body_timeout()
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
        bucket = self.inserts.bucket(client_key(request.remote))
        ttl = self.options.registry_ttl_s
        outcome = await asyncio.to_thread(self.db.set_entry, entry, bucket.peek(), ttl)
        if outcome == "inserted":
            bucket.charge()
        elif outcome == "limited":
            wait = bucket.take()  # refused, so nothing is taken; this only says how long to wait
            return _too_many(f"too many new registry entries from your address (limit "
                             f"{self.options.registry_insert_rate:g}/s, bursts of "
                             f"{self.options.registry_insert_burst:g}); updates of existing entries still "
                             "work; try later", wait)
        elif outcome == "refused":
            stored = await asyncio.to_thread(self.db.get_entry, entry.public_key, entry.data_key, ttl)
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
        client = client_key(request.remote)
        bucket = self.uploads.bucket(client)
        declared = request.content_length or 0
        if not bucket.peek(min(max(declared, UPLOAD_MIN_CHARGE), self.options.upload_burst_bytes)):
            return self._upload_limited(bucket, max(declared, UPLOAD_MIN_CHARGE))
        try:
            async with asyncio.timeout(self.options.body_timeout_s):
                outcome = await self._read_skyfile(request, limit)
        except TimeoutError:
            return self._body_timeout()
        if isinstance(outcome, web.Response):
            return outcome
        content = outcome
        if wait := bucket.take(max(len(content), UPLOAD_MIN_CHARGE)):
            return self._upload_limited(bucket, len(content), wait)
        skylink = skylink_for_content(content)
        try:
            await asyncio.to_thread(self.db.put_blob, skylink, content, client)
        except QuotaExceeded as exc:
            return _error(507, f"the portal's skyfile storage is full for this upload: {exc}; try again "
                               "after old skyfiles expire, or use another portal")
        raw = decode_skylink(skylink)
        return web.json_response({"skylink": skylink, "merkleroot": raw[2:].hex(),
                                  "bitfield": int.from_bytes(raw[:2], "little")})

    def _upload_limited(self, bucket: TokenBucket, size: int, wait: float | None = None) -> web.Response:
        if wait is None:
            wait = max(0.0, size - bucket.tokens) / bucket.rate
        return _too_many(f"too many skyfile bytes uploaded from your address (limit "
                         f"{self.options.upload_rate_bytes_s:g} bytes/s, bursts of "
                         f"{self.options.upload_burst_bytes:g}); try later", wait)

    async def _read_skyfile(self, request: web.Request, limit: int) -> bytes | web.Response:
        """The ``file`` part's content, or the error response (few parts, bounded sizes)."""
        try:
            reader = await request.multipart()
        except (AssertionError, ValueError, KeyError, TypeError) as exc:
            return _error(400, f"expected multipart/form-data with a 'file' field ({exc})")
        max_parts = self.options.max_multipart_parts
        try:
            other = 0  # bytes of fields other than 'file': read (bounded) and dropped
            parts = 0
            while (part := await reader.next()) is not None:
                parts += 1
                if parts > max_parts:  # checked before any part's body is read: cheap to refuse
                    return _error(400, f"too many multipart parts (limit {max_parts}; send one named 'file')")
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
                        return _error(413, f"upload too large (limit {limit} bytes)")
                    chunks.append(chunk)
                return b"".join(chunks)
        except (ValueError, AssertionError, KeyError, TypeError, HttpProcessingError) as exc:
            return _error(400, f"malformed multipart body: {str(exc).strip()[:200]}")
        return _error(400, "multipart field 'file' is missing (directory uploads are not supported)")

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
        client = client_key(request.remote)
        held = self._sockets_by_client.get(client, 0)
        if held >= self.options.max_sockets_per_client:
            return _too_many(f"too many subscription sockets from your address (limit "
                             f"{self.options.max_sockets_per_client}); poll or try later", 10)
        if len(self._sockets) >= self.options.max_sockets:
            return _error(503, "too many subscription sockets on this portal; poll or try later", 10)
        self._sockets_by_client[client] = held + 1
        sub: _Subscriber | None = None
        ws = web.WebSocketResponse(heartbeat=20, max_msg_size=MAX_WS_MESSAGE)
        try:
            try:
                await ws.prepare(request)  # a bad handshake raises an HTTPException: the middleware's 4xx
            except (ConnectionError, asyncio.IncompleteReadError):
                return _error(400, "the connection was lost during the websocket handshake")
            sub = _Subscriber(ws)
            self._sockets.add(sub)
            sub.task = asyncio.create_task(sub.run())
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_ws_message(sub, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    sub.offer({"error": "send JSON text messages"})
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            self.log_limit.log(log, logging.INFO, "client-gone", "subscription socket lost: %s", _describe(exc))
        except Exception:  # a broken socket must not take anything else down
            self.log_limit.log(log, logging.ERROR, "socket-failed", "subscription socket failed", exc_info=True)
        finally:
            left = self._sockets_by_client.get(client, 1) - 1
            if left > 0:
                self._sockets_by_client[client] = left
            else:
                self._sockets_by_client.pop(client, None)
            if sub is not None:
                await self._drop_subscriber(sub)
        return ws

    async def _drop_subscriber(self, sub: _Subscriber) -> None:
        """Forget every trace of a closed socket (no per-slot entries left behind)."""
        self._sockets.discard(sub)
        for slot in sub.slots:
            subscribers = self._subscribers.get(slot)
            if subscribers is not None:
                subscribers.discard(sub)
                if not subscribers:
                    del self._subscribers[slot]
        sub.slots = set()
        sub.sent = {}
        if sub.task is not None:
            sub.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sub.task
        sub.queue = asyncio.Queue(maxsize=1)  # drop queued pushes now, not when the socket object goes

    async def _on_ws_message(self, sub: _Subscriber, text: str) -> None:
        try:
            body = json.loads(text)
            if not isinstance(body, dict):
                raise BadRequest("expected a JSON object")
            action = body.get("action")
            slot = (_parse_pubkey_string(body.get("pubkey")), _parse_hex(body.get("datakey"), 32, "datakey"))
        except (BadRequest, ValueError, RecursionError) as exc:
            sub.offer({"error": f"bad subscription request: {str(exc)[:200]}"})
            return
        if action == "subscribe":
            if slot in sub.slots:
                return
            if len(sub.slots) >= self.options.max_subscriptions_per_socket:
                sub.offer({"error": f"too many subscriptions on one socket "
                                    f"(limit {self.options.max_subscriptions_per_socket})"})
                return
            sub.slots.add(slot)
            self._subscribers.setdefault(slot, set()).add(sub)
            entry = await asyncio.to_thread(self.db.get_entry, *slot, self.options.registry_ttl_s)
            if entry is not None and slot in sub.slots:
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
            sub.offer({"error": f"unknown action {str(action)[:40]!r} (expected subscribe or unsubscribe)"})

    def _notify(self, entry: RegistryEntry) -> None:
        for sub in list(self._subscribers.get((entry.public_key, entry.data_key), ())):
            sub.offer(entry)

    async def _close_sockets(self, app: web.Application) -> None:
        for sub in list(self._sockets):
            with contextlib.suppress(Exception):
                await sub.ws.close(code=1001, message=b"portal shutting down")

    async def sweep(self) -> None:
        """Expire old skyfiles and registry entries now and then periodically; forget idle buckets."""
        interval = min(600.0, max(1.0, self.options.blob_ttl_s / 10))
        registry_every = min(3600.0, max(1.0, self.options.registry_ttl_s / 10))
        registry_due = 0.0
        while True:
            try:
                removed = await asyncio.to_thread(self.db.expire_blobs, self.options.blob_ttl_s)
                if removed:
                    log.info("expired %d skyfiles", removed)
                if time.monotonic() >= registry_due:
                    registry_due = time.monotonic() + registry_every
                    removed = await asyncio.to_thread(self.db.expire_entries, self.options.registry_ttl_s)
                    if removed:
                        log.info("expired %d registry entries not written for %g s", removed,
                                 self.options.registry_ttl_s)
            except sqlite3.Error as exc:
                log.warning("expiry failed: %s", exc)
            self.uploads.prune()
            self.inserts.prune()
            await asyncio.sleep(min(interval, registry_every))


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
        db = PortalDB(path, opts.blob_policy())
    except (OSError, sqlite3.Error) as exc:
        raise PortalDataError(f"cannot open the database {path}: {exc} (choose another --data)") from exc
    portal = Portal(db, opts)
    # lingering_time bounds how long the body of a refused (413) upload is drained and discarded
    # before the connection is closed; the client still gets to read the 413 first. aiohttp's
    # keep-alive timer runs from the connection's start (and each response) until a complete request
    # head, so it is both the header timeout and the idle keep-alive limit. Its connection log goes
    # through _ServerLog: one rate-limited line per malformed request, no traceback.
    runner = web.AppRunner(portal.app(), access_log=None, handle_signals=False, shutdown_timeout=2.0,
                           lingering_time=2.0, keepalive_timeout=opts.header_timeout_s,
                           logger=_ServerLog(log, portal.log_limit))
    try:
        await runner.setup()
        assert runner.server is not None
        portal.guard_connections(runner.server)
        await web.TCPSite(runner, host, port, backlog=1024).start()
    except BaseException:
        await runner.cleanup()
        db.close()
        raise
    bound_port = runner.addresses[0][1] if runner.addresses else port
    shown_host = f"[{host}]" if ":" in host else host
    portal.url = f"http://{shown_host}:{bound_port}"
    return RunningPortal(portal.url, portal, runner, asyncio.create_task(portal.sweep()))


def raise_fd_limit() -> None:
    """Lift the soft descriptor limit to the hard one: the connection caps, not the default 1024,
    should decide how many clients a portal serves."""
    with contextlib.suppress(ImportError, OSError, ValueError):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = hard if hard != resource.RLIM_INFINITY else 65536
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def run_portal(host: str = "127.0.0.1", port: int = 8787, data: str | None = None, subscription: bool = True,
               max_blob_bytes: int = 4 * 1024 * 1024, quota_bytes: int = 1024**3,
               blob_ttl_s: float = 24 * 3600, limits: dict[str, Any] | None = None) -> int:
    """Serve until SIGINT/SIGTERM. The first stdout line is the URL (flushed), then a summary.

    ``limits`` are further PortalOptions fields (``sdparta portal`` limit flags)."""
    try:
        options = PortalOptions(subscription, max_blob_bytes, quota_bytes, blob_ttl_s, **(limits or {}))
        options.check()
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} is not between 0 and 65535")
    except ValueError as exc:
        print(f"sdparta portal: {exc}", file=sys.stderr)
        return 2
    except TypeError as exc:
        print(f"sdparta portal: {exc}", file=sys.stderr)
        return 2
    data_path = Path(data) if data else default_data_path()
    raise_fd_limit()

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
