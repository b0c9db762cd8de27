"""The portal's HTTP application: routes, handlers and the per-client limits they apply.

Endpoints (the subset signalling needs, shaped as skyd answers and skynet-js 4.x sends):

- ``HEAD|GET /``: header ``skynet-portal-api: <url>``; JSON with limits and whether push is on.
- ``GET /skynet/registry?publickey=ed25519:<hex>&datakey=<hex>`` → ``{"data": hex, "revision": n,
  "signature": hex, "type": 1}`` or 404.
- ``POST /skynet/registry`` (skynet-js JSON) → 204; 400 for data > 113 bytes, a revision that does not
  grow (equal included), a bad signature or malformed input; 413 for an oversized body.
- ``POST /skynet/skyfile`` (multipart field ``file``) → ``{"skylink", "merkleroot", "bitfield"}``;
  413 over the blob limit (streamed, never buffered whole), 507 when the quota is full.
- ``GET|HEAD /<46-character skylink>`` with ``skynet-skylink`` and ``skynet-portal-api`` headers.
- ``/skynet/registry/subscription`` websocket (skyd's protocol, ``sdparta.portal.push``): the current
  value of a slot on subscribe, then every accepted write.
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
import json
import logging
import sqlite3
import time
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from sdparta import __version__
from sdparta.portal.app_build import AppBuild, build
from sdparta.portal.clients import RateLimiter, TokenBucket, client_key
from sdparta.portal.db import PORTAL_OWNER, PortalDB, QuotaExceeded
from sdparta.portal.logs import LogLimiter, describe
from sdparta.portal.options import PortalOptions
from sdparta.portal.parsing import MAX_REGISTRY_BODY, BadRequest, parse_hex, parse_pubkey_string, parse_registry_post
from sdparta.portal.push import PushHub
from sdparta.portal.responses import CORS_HEADERS, PREFLIGHT_HEADERS, entry_json, error, too_many
from sdparta.portal.webapp import load_web_dir, serve
from sdparta.store.base import MAX_ENTRY_DATA, InvalidEntry
from sdparta.store.crypto import decode_skylink, skylink_for_content, verify_entry

log = logging.getLogger(__name__)

#: Room for the multipart framing and fields besides ``file`` on top of the blob limit.
MULTIPART_OVERHEAD = 64 * 1024
#: What the upload bucket charges for one skyfile at least: floods of tiny uploads are bounded too.
UPLOAD_MIN_CHARGE = 4096
#: The owner the app builds are stored under (never a client key; outside the quotas).
APP_OWNER = PORTAL_OWNER
#: Every uploaded skyfile is data, never a page on the portal's origin (an HTML upload served as a
#: page would be XSS against every user's identity key): no sniffing, a download, and a sandbox CSP
#: in case a browser renders it anyway.
BLOB_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Disposition": "attachment",
                "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; sandbox"}


class Portal(PushHub):
    """Request handlers bound to one database, and the per-client limits.

    It is the push hub too (``PushHub``: sockets and their slots), so one object holds everything a
    running portal keeps in memory and a registry write notifies subscribers directly.
    """

    def __init__(self, db: PortalDB, options: PortalOptions) -> None:
        super().__init__(db, options, LogLimiter())
        self.url = ""
        self._connections: dict[Any, str] = {}  # aiohttp protocol → client
        self._connections_by_client: dict[str, int] = {}
        self._connection_cap = options.connection_cap()
        self.uploads = RateLimiter(options.upload_rate_bytes_s, options.upload_burst_bytes)
        self.inserts = RateLimiter(options.registry_insert_rate, options.registry_insert_burst)
        self.requests = 0
        #: the browser page (``/web/``), loaded once; an absent directory serves 404s
        self.web = load_web_dir(options.web_dir)
        #: skylink → the single-file app build it ships (served as a page; nothing else is)
        self.app_builds: dict[str, AppBuild] = {}
        if self.web.present:
            built = build(self.web.raw)  # BuildError: the page cannot be shipped (fails the start)
            self.app_builds[skylink_for_content(built.html)] = built
        self.store_app_builds()

    def store_app_builds(self) -> None:
        """Store (or refresh the age of) the shipped builds as ordinary skyfiles."""
        for skylink, built in self.app_builds.items():
            try:
                self.db.put_blob(skylink, built.html, APP_OWNER)
            except QuotaExceeded as exc:  # still served from memory
                log.warning("cannot store the app build %s: %s", skylink, exc)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REGISTRY_BODY, middlewares=[self._middleware])
        app.router.add_get("/", self.root)
        app.router.add_get("/skynet/registry", self.registry_get)
        app.router.add_post("/skynet/registry", self.registry_post)
        app.router.add_post("/skynet/skyfile", self.skyfile_post)
        if self.options.subscription:
            app.router.add_get("/skynet/registry/subscription", self.subscription)
        app.router.add_get("/web", self.web_redirect)
        app.router.add_get("/web/{path:.*}", self.web_get)
        app.router.add_get("/{skylink:[A-Za-z0-9_-]+}", self.skylink_get)  # also answers HEAD
        app.router.add_get("/{skylink:[A-Za-z0-9_-]{46}}/{path:.*}", self.skylink_get)
        app.on_shutdown.append(self.close_sockets)
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
            # a trusted proxy carries everyone's requests: its clients are told apart per request
            if held >= self.options.max_connections_per_client and client not in self.trusted_proxies:
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
                return error(exc.status, exc.reason or "request refused")
            raise
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            # the client went away mid-request: normal on the internet, one short line
            self.log_limit.log(log, logging.INFO, "client-gone", "client %s went away during %s %s: %s",
                          request.remote, request.method, request.path[:80], describe(exc))
            return error(400, "the connection was lost before the request was complete")
        except Exception:  # the portal never crashes on a request
            self.log_limit.log(log, logging.ERROR, "handler-failed", "portal handler failed", exc_info=True)
            return error(500, "internal error (the request was not applied)")
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
        response = error(408, f"the request body did not arrive within {self.options.body_timeout_s:g} s")
        response.force_close()
        return response

    # ---------------------------------------------------------------- registry
    async def registry_get(self, request: web.Request) -> web.Response:
        try:
            public_key = parse_pubkey_string(request.query.get("publickey"))
            data_key = parse_hex(request.query.get("datakey"), 32, "datakey")
        except BadRequest as exc:
            return error(400, str(exc))
        entry = await asyncio.to_thread(self.db.get_entry, public_key, data_key, self.options.registry_ttl_s)
        if entry is None:
            return error(404, "no registry entry for this public key and data key")
        return web.json_response(entry_json(entry))

    async def registry_post(self, request: web.Request) -> web.Response:
        too_large = f"registry request too large (limit {MAX_REGISTRY_BODY} bytes)"
        if request.content_length is not None and request.content_length > MAX_REGISTRY_BODY:
            return error(413, too_large)
        raw = await self._read_body(request, MAX_REGISTRY_BODY)
        if raw is None:
            return self._body_timeout()
        if len(raw) > MAX_REGISTRY_BODY:
            return error(413, too_large)
        try:
            entry = parse_registry_post(raw)
        except BadRequest as exc:
            message = str(exc)
            return error(400, message if message.startswith("malformed") else f"malformed registry entry: {message}")
        if len(entry.data) > MAX_ENTRY_DATA:
            return error(400, f"registry data too big ({len(entry.data)} > {MAX_ENTRY_DATA} bytes)")
        if not verify_entry(entry):
            return error(400, "invalid signature for this registry entry")
        bucket = self.inserts.bucket(self.client_of(request))
        ttl = self.options.registry_ttl_s
        outcome = await asyncio.to_thread(self.db.set_entry, entry, bucket.peek(), ttl)
        if outcome == "inserted":
            bucket.charge()
        elif outcome == "limited":
            wait = bucket.take()  # refused, so nothing is taken; this only says how long to wait
            return too_many(f"too many new registry entries from your address (limit "
                            f"{self.options.registry_insert_rate:g}/s, bursts of "
                            f"{self.options.registry_insert_burst:g}); updates of existing entries still "
                            "work; try later", wait)
        elif outcome == "refused":
            stored = await asyncio.to_thread(self.db.get_entry, entry.public_key, entry.data_key, ttl)
            have = f" (stored revision {stored.revision})" if stored else ""
            return error(400, f"revision number must be greater than the stored revision{have}")
        self.notify(entry)
        return web.Response(status=204)

    # ---------------------------------------------------------------- skyfiles
    async def skyfile_post(self, request: web.Request) -> web.Response:
        limit = self.options.max_blob_bytes
        too_large = f"upload too large (limit {limit} bytes)"
        if request.content_length is not None and request.content_length > limit + MULTIPART_OVERHEAD:
            return error(413, too_large)
        client = self.client_of(request)
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
            return error(507, f"the portal's skyfile storage is full for this upload: {exc}; try again "
                              "after old skyfiles expire, or use another portal")
        raw = decode_skylink(skylink)
        return web.json_response({"skylink": skylink, "merkleroot": raw[2:].hex(),
                                  "bitfield": int.from_bytes(raw[:2], "little")})

    def _upload_limited(self, bucket: TokenBucket, size: int, wait: float | None = None) -> web.Response:
        if wait is None:
            wait = max(0.0, size - bucket.tokens) / bucket.rate
        return too_many(f"too many skyfile bytes uploaded from your address (limit "
                        f"{self.options.upload_rate_bytes_s:g} bytes/s, bursts of "
                        f"{self.options.upload_burst_bytes:g}); try later", wait)

    async def _read_skyfile(self, request: web.Request, limit: int) -> bytes | web.Response:
        """The ``file`` part's content, or the error response (few parts, bounded sizes)."""
        try:
            reader = await request.multipart()
        except (AssertionError, ValueError, KeyError, TypeError) as exc:
            return error(400, f"expected multipart/form-data with a 'file' field ({exc})")
        max_parts = self.options.max_multipart_parts
        try:
            other = 0  # bytes of fields other than 'file': read (bounded) and dropped
            parts = 0
            while (part := await reader.next()) is not None:
                parts += 1
                if parts > max_parts:  # checked before any part's body is read: cheap to refuse
                    return error(400, f"too many multipart parts (limit {max_parts}; send one named 'file')")
                if not isinstance(part, BodyPartReader):
                    return error(400, "nested multipart bodies are not supported")
                if part.name != "file":
                    while chunk := await part.read_chunk(16 * 1024):
                        other += len(chunk)
                        if other > MULTIPART_OVERHEAD:
                            return error(413, f"fields besides 'file' exceed {MULTIPART_OVERHEAD} bytes")
                    continue
                chunks: list[bytes] = []
                size = 0
                while chunk := await part.read_chunk(64 * 1024):
                    size += len(chunk)
                    if size > limit:
                        return error(413, f"upload too large (limit {limit} bytes)")
                    chunks.append(chunk)
                return b"".join(chunks)
        except (ValueError, AssertionError, KeyError, TypeError, HttpProcessingError) as exc:
            return error(400, f"malformed multipart body: {str(exc).strip()[:200]}")
        return error(400, "multipart field 'file' is missing (directory uploads are not supported)")

    async def web_redirect(self, request: web.Request) -> web.Response:
        return web.Response(status=301, headers={"Location": "/web/"})

    async def web_get(self, request: web.Request) -> web.StreamResponse:
        return serve(self.web, request, request.match_info.get("path", ""))

    async def skylink_get(self, request: web.Request) -> web.Response:
        skylink = request.match_info["skylink"]
        try:
            decode_skylink(skylink)
        except InvalidEntry as exc:
            return error(400, f"malformed skylink: {exc}")
        if request.match_info.get("path"):
            return error(404, "this portal serves single files only (no paths inside a skyfile)")
        built = self.app_builds.get(skylink)
        if built is not None:  # a page this portal ships: the only skylinks served as HTML
            return web.Response(body=built.html, headers={
                **built.headers, "Content-Type": "text/html; charset=utf-8", "skynet-skylink": skylink,
                "skynet-portal-api": self.url, "Cache-Control": "public, max-age=31536000, immutable",
                "ETag": f'"{skylink}"'})
        content = await asyncio.to_thread(self.db.get_blob, skylink, self.options.blob_ttl_s)
        if content is None:
            return error(404, "no skyfile with this skylink (expired or never uploaded)")
        return web.Response(body=content, content_type="application/octet-stream",
                            headers={"skynet-skylink": skylink, "skynet-portal-api": self.url,
                                     "Cache-Control": "public, max-age=31536000, immutable",
                                     "ETag": f'"{skylink}"', **BLOB_HEADERS})

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
            with contextlib.suppress(sqlite3.Error):
                await asyncio.to_thread(self.store_app_builds)
            self.uploads.prune()
            self.inserts.prune()
            await asyncio.sleep(min(interval, registry_every))
