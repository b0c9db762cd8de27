"""The registry subscription websocket (``/skynet/registry/subscription``, skyd's protocol).

Clients send ``{"action": "subscribe"|"unsubscribe", "pubkey": "ed25519:<hex>", "datakey": hex}``;
the portal pushes ``{"pubkey", "datakey", "data", "revision", "signature", "type"}`` with the
current value on subscribe and on every accepted write. Each socket has its own bounded send queue
drained by its own task, so a slow reader never holds up a writer's POST: one that falls far behind
is disconnected (it re-subscribes and gets the current values, so it loses nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import WSMsgType, web

from sdparta.portal.clients import client_key, request_client
from sdparta.portal.db import PortalDB
from sdparta.portal.logs import LogLimiter, describe
from sdparta.portal.options import PortalOptions
from sdparta.portal.parsing import BadRequest, load_json, parse_hex, parse_pubkey_string
from sdparta.portal.responses import error, push_json, too_many
from sdparta.store.base import RegistryEntry, Slot

log = logging.getLogger(__name__)

#: A subscribe message is ~170 bytes.
MAX_WS_MESSAGE = 1024
#: Pushes waiting for one socket; a reader this far behind is disconnected.
SOCKET_QUEUE = 256
SEND_TIMEOUT_S = 10.0


class Subscriber:
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
                payload = push_json(item)
            else:
                payload = item
            try:
                await asyncio.wait_for(self.ws.send_json(payload), SEND_TIMEOUT_S)
            except (ConnectionError, RuntimeError, TimeoutError):
                await self.ws.close()
                return


class PushHub:
    """Every push socket and the slots each one watches, with the per-client socket cap.

    ``subscription`` is the websocket endpoint; ``notify`` is called after every accepted write.
    """

    def __init__(self, db: PortalDB, options: PortalOptions, log_limit: LogLimiter) -> None:
        self.db = db
        self.options = options
        self.log_limit = log_limit
        self._subscribers: dict[Slot, set[Subscriber]] = {}
        self._sockets: set[Subscriber] = set()
        self._sockets_by_client: dict[str, int] = {}
        self.trusted_proxies = frozenset(client_key(proxy) for proxy in options.trusted_proxies)

    def client_of(self, request: web.Request) -> str:
        """The client a request counts against (behind a trusted proxy: the forwarded address)."""
        return request_client(request.remote, request.headers, self.trusted_proxies)

    async def subscription(self, request: web.Request) -> web.StreamResponse:
        """The websocket endpoint: one socket per request, within the per-client and portal caps."""
        client = self.client_of(request)
        held = self._sockets_by_client.get(client, 0)
        if held >= self.options.max_sockets_per_client:
            return too_many(f"too many subscription sockets from your address (limit "
                            f"{self.options.max_sockets_per_client}); poll or try later", 10)
        if len(self._sockets) >= self.options.max_sockets:
            return error(503, "too many subscription sockets on this portal; poll or try later", 10)
        self._sockets_by_client[client] = held + 1
        sub: Subscriber | None = None
        ws = web.WebSocketResponse(heartbeat=20, max_msg_size=MAX_WS_MESSAGE)
        try:
            try:
                await ws.prepare(request)  # a bad handshake raises an HTTPException: the middleware's 4xx
            except (ConnectionError, asyncio.IncompleteReadError):
                return error(400, "the connection was lost during the websocket handshake")
            sub = Subscriber(ws)
            self._sockets.add(sub)
            sub.task = asyncio.create_task(sub.run())
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_ws_message(sub, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    sub.offer({"error": "send JSON text messages"})
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            self.log_limit.log(log, logging.INFO, "client-gone", "subscription socket lost: %s", describe(exc))
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

    async def _drop_subscriber(self, sub: Subscriber) -> None:
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

    async def _on_ws_message(self, sub: Subscriber, text: str) -> None:
        try:
            body = load_json(text, "subscription request")
            if not isinstance(body, dict):
                raise BadRequest("expected a JSON object")
            action = body.get("action")
            slot = (parse_pubkey_string(body.get("pubkey")), parse_hex(body.get("datakey"), 32, "datakey"))
        except BadRequest as exc:
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

    def notify(self, entry: RegistryEntry) -> None:
        """Queue an accepted write for every socket watching its slot."""
        for sub in list(self._subscribers.get((entry.public_key, entry.data_key), ())):
            sub.offer(entry)

    async def close_sockets(self, app: web.Application) -> None:
        """On shutdown: tell every socket the portal is going away."""
        for sub in list(self._sockets):
            with contextlib.suppress(Exception):
                await sub.ws.close(code=1001, message=b"portal shutting down")
