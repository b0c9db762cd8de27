"""Push over the portal's registry subscription websocket (aiohttp client): one channel per portal.

The portal pushes the current value of a slot on subscribe and then every accepted write, so a
member learns of offers and presence without polling. Every pushed entry is verified like a read
one; a portal without the endpoint (``NoPush``) or out of reach leaves the caller polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator

import aiohttp

from sdparta.store.base import InvalidEntry, RegistryEntry, Slot
from sdparta.store.crypto import check_slot
from sdparta.store.multi import UpdateMailbox
from sdparta.store.portal_json import loads, parse_entry, slot_of_push

log = logging.getLogger(__name__)

MAX_PUSH_MESSAGE = 16 * 1024
#: The push websocket's handshake (TCP connect + HTTP upgrade answer) must be done within this.
HANDSHAKE_DEADLINE = 10.0
SUBSCRIPTION_PATH = "/skynet/registry/subscription"
#: Handshake answers that mean "this portal has no subscription endpoint" (as opposed to "down").
_NO_PUSH_STATUSES = {400, 401, 403, 404, 405, 426, 501}


def _ws_url(url: str) -> str:
    if url.startswith("https://"):
        return "wss://" + url[len("https://"):] + SUBSCRIPTION_PATH
    return "ws://" + url[len("http://"):] + SUBSCRIPTION_PATH


class NoPush(Exception):
    """The portal answered the websocket handshake with "no such endpoint"."""


class PortalSubscription:
    """The portal's registry subscription websocket.

    Pushed entries are verified and only delivered for subscribed slots. When the socket drops it
    reconnects with backoff and re-subscribes every slot; the portal then pushes the current values,
    so nothing written during the outage is missed (older or repeated revisions are dropped).
    """

    def __init__(self, url: str, *, connect_timeout: float = 5.0,
                 handshake_deadline: float = HANDSHAKE_DEADLINE) -> None:
        self.url = url
        self.ws_url = _ws_url(url)
        self._connect_timeout = connect_timeout
        self._handshake_deadline = handshake_deadline
        self._slots: set[Slot] = set()
        self._mailbox = UpdateMailbox()
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self._retry_now = asyncio.Event()
        self.reconnects = 0
        self.rejected = 0  # pushes that failed verification

    async def _open_ws(self) -> aiohttp.ClientWebSocketResponse:
        """Connect and upgrade within the handshake deadline (TimeoutError otherwise): aiohttp
        bounds only the TCP connect, so a portal that never answers the upgrade would hang us."""
        assert self._session is not None
        try:
            async with asyncio.timeout(self._handshake_deadline):
                # a short close timeout: reconnect() closes sockets that may be dead (no reply ever comes)
                return await self._session.ws_connect(self.ws_url, heartbeat=15, max_msg_size=MAX_PUSH_MESSAGE,
                                                      autoclose=True, autoping=True,
                                                      timeout=aiohttp.ClientWSTimeout(ws_close=1.0))
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in _NO_PUSH_STATUSES:
                raise NoPush(f"portal {self.url} has no registry subscription endpoint ({exc.status})") from exc
            raise
        except TimeoutError as exc:
            raise TimeoutError(f"portal {self.url} did not complete the subscription handshake within "
                               f"{self._handshake_deadline:g} s") from exc

    async def connect(self) -> None:
        """Open the socket; raises NoPush, or aiohttp/OS errors when the portal is unreachable."""
        timeout = aiohttp.ClientTimeout(total=None, connect=self._connect_timeout,
                                        sock_connect=self._connect_timeout)
        self._session = aiohttp.ClientSession(timeout=timeout)
        self._ws = await self._open_ws()
        self.connected.set()
        self._task = asyncio.create_task(self._reader())

    async def _send(self, action: str, public_key: bytes, data_key: bytes) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            return  # (re-)subscribed by the reader once connected again
        try:
            # bounded: a portal that stops reading fills the socket buffer and a send waits on drain
            async with asyncio.timeout(self._handshake_deadline):
                await ws.send_json({"action": action, "pubkey": "ed25519:" + public_key.hex(),
                                    "datakey": data_key.hex()})
        except TimeoutError:
            log.info("subscription to %s: the portal does not take our messages; reconnecting", self.url)
            self.reconnect()  # the reader reopens the socket and re-subscribes every slot
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            pass

    async def add(self, public_key: bytes, data_key: bytes) -> None:
        check_slot(public_key, data_key)
        if (public_key, data_key) in self._slots:
            return
        self._slots.add((public_key, data_key))
        await self._send("subscribe", public_key, data_key)

    async def remove(self, public_key: bytes, data_key: bytes) -> None:
        if (public_key, data_key) not in self._slots:
            return
        self._slots.discard((public_key, data_key))
        self._mailbox.forget((public_key, data_key))
        await self._send("unsubscribe", public_key, data_key)

    def updates(self) -> AsyncIterator[RegistryEntry]:
        return self._mailbox.updates()

    async def _reader(self) -> None:
        delay = 0.25
        while not self._mailbox.closed:
            ws = self._ws
            if ws is not None:
                try:
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            self._handle(msg.data)
                        elif msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE):
                            break
                except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
                    log.info("subscription to %s dropped: %s", self.url, exc)
                self.connected.clear()
                delay = 0.25
            if self._mailbox.closed:
                break
            with contextlib.suppress(TimeoutError):  # dropped: reconnect (sooner when kicked), re-subscribe
                await asyncio.wait_for(self._retry_now.wait(), delay * (0.5 + random.random()))
            if self._retry_now.is_set():
                self._retry_now.clear()
                delay = 0.25
            delay = min(delay * 2, 10.0)
            try:
                self._ws = await self._open_ws()
            except (NoPush, aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.info("subscription to %s: reconnect failed: %s", self.url, exc)
                self._ws = None
                continue
            self.reconnects += 1
            self.connected.set()
            for public_key, data_key in list(self._slots):
                await self._send("subscribe", public_key, data_key)

    def reconnect(self) -> None:
        """Drop the socket (it may be dead without knowing it) and reopen it at once."""
        self._retry_now.set()
        ws = self._ws
        if ws is not None and not ws.closed:
            asyncio.get_running_loop().create_task(ws.close())

    def _handle(self, raw: str) -> None:
        """One pushed text message: delivered when it is a verified entry of a subscribed slot,
        otherwise counted (``rejected``) or ignored. Never raises on what the portal sends."""
        if not isinstance(raw, str) or len(raw) > MAX_PUSH_MESSAGE:
            return
        try:
            body = loads(raw)
        except ValueError:
            self.rejected += 1
            return
        if isinstance(body, dict) and body.get("error"):
            error = body["error"]
            log.info("portal %s subscription error: %.200s", self.url,
                     error if isinstance(error, str) else type(error).__name__)
            return
        slot = slot_of_push(body)
        if slot is None or slot not in self._slots:
            return  # a push we did not ask for is ignored
        try:
            entry = parse_entry(slot[0], slot[1], body)
        except InvalidEntry as exc:
            self.rejected += 1
            log.warning("portal %s pushed an invalid entry: %s", self.url, exc)
            return
        self._mailbox.put(entry)

    @property
    def closed(self) -> bool:
        """Closed for good (aclose), not merely disconnected."""
        return self._mailbox.closed

    async def aclose(self) -> None:
        """Close the socket, the reader and the HTTP session (always all three: an aiohttp session
        left open is reported as "Unclosed client session" when it is collected)."""
        self._mailbox.close()
        try:
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task
            if self._ws is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._ws.close(), 2.0)
        finally:
            if self._session is not None and not self._session.closed:
                await self._session.close()
