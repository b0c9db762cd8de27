"""A websocket to one relay that stays connected: connect with a deadline (NIP-11 read alongside),
reconnect with exponential backoff, a state anyone can read, and a supervised loop.

:class:`sdparta.nostr.relay.Relay` puts the NIP-01 protocol on top (hooks ``_on_open``,
``_on_text``, ``_on_lost``). Why a separate layer: reconnection and refusal are the same for every
message kind, and a relay that drops us must never lose a subscription or silently stop a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from sdparta.nostr.info import HARD_MAX_MESSAGE, RelayInfo, RelayLimits, fetch_info, relay_url
from sdparta.nostr.retry import Backoff
from sdparta.nostr.state import RelayCounters, RelayState
from sdparta.supervise import supervised

log = logging.getLogger(__name__)

#: A relay whose NIP-11 document could not be read is asked again at most this often.
INFO_RETRY_S = 300.0


@dataclass(frozen=True, slots=True)
class RelayTimeouts:
    connect: float = 5.0  # TCP + websocket upgrade
    info: float = 3.0  # the NIP-11 GET (in parallel with the connect)
    ok: float = 10.0  # default publish deadline: connected, sent and answered within this
    backoff: tuple[float, float] = (0.5, 60.0)  # reconnect delay: first, max
    rate_limit: tuple[float, float] = (2.0, 300.0)  # hold-back after rate-limited:, first and max
    resubscribe: tuple[float, float] = (2.0, 300.0)  # re-REQ after CLOSED error:/rate-limited:
    stable_after: float = 5.0  # a connection open this long resets the reconnect backoff
    dead_after: int = 3  # failed attempts in a row before the relay counts as dead
    heartbeat: float = 20.0  # websocket ping interval (a silent dead connection is noticed)


DEFAULT_TIMEOUTS = RelayTimeouts()


class RelayConnection:
    """Connection management for one relay URL; ``start()`` returns at once."""

    def __init__(self, url: str, *, on_state: Callable[[Any], None] | None = None,
                 on_crash: Callable[[str, str], None] | None = None, timeouts: RelayTimeouts = DEFAULT_TIMEOUTS,
                 max_incoming: int = HARD_MAX_MESSAGE) -> None:
        self._on_state, self._on_crash_cb = on_state, on_crash
        self.timeouts, self.max_incoming = timeouts, max_incoming
        self.counters = RelayCounters()
        self.info: RelayInfo | None = None
        self._state: RelayState = RelayState.CONNECTING
        self._reason: str | None = None
        try:
            self.url, self._invalid = relay_url(url), False
        except ValueError as exc:
            self.url, self._invalid = url, True
            self._state, self._reason = RelayState.DEAD, str(exc)
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._opened = asyncio.Event()  # set while open, and for good once refused/closed (wakes waiters)
        self._kick = asyncio.Event()  # reconnect now
        self._reconnect = Backoff(*timeouts.backoff)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._info_at = 0.0
        self._fail_streak = 0
        self._ever_opened = False

    # ------------------------------------------------------------------ hooks for the protocol layer
    def _on_open(self) -> None:
        """The websocket is open (``_ws`` set, state not yet OPEN)."""

    def _on_text(self, text: str) -> None:
        """One text message; must not raise."""

    def _on_lost(self) -> None:
        """The connection is gone (dropped, refused or closed)."""

    def _loops(self) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
        return [("nostr relay connection", self._run)]

    def status(self) -> Any:
        raise NotImplementedError

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> RelayState:
        return self._state

    @property
    def reason(self) -> str | None:
        return self._reason

    @property
    def limits(self) -> RelayLimits:
        return self.info.limits if self.info is not None else RelayLimits()

    @property
    def is_open(self) -> bool:
        return self._ws is not None and self._state == RelayState.OPEN

    def _stopping(self) -> bool:
        return self._state in (RelayState.CLOSED, RelayState.REFUSED)

    def _set_state(self, state: RelayState, reason: str | None = None) -> None:
        if self._stopping() and state != RelayState.CLOSED:
            return  # refused and closed are final
        changed = (state, reason) != (self._state, self._reason)
        self._state, self._reason = state, reason
        if changed and self._on_state is not None:
            try:
                self._on_state(self.status())
            except Exception:
                log.exception("relay %s: state listener failed", self.url)

    def _crash(self, name: str, error: str) -> None:
        self.counters.handler_errors += 1
        if self._on_crash_cb is not None:
            self._on_crash_cb(f"{name} ({self.url})", error)

    def refuse(self, reason: str) -> None:
        """Stop using this relay for good: it said it will not serve us (blocked:, auth-required:, …)."""
        if self._stopping():
            return
        log.warning("relay %s refuses us: %s", self.url, reason)
        self._set_state(RelayState.REFUSED, reason)
        self._opened.set()
        self._on_lost()
        if self._ws is not None:
            self._spawn(self._ws.close())

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start connecting in the background; an invalid URL stays DEAD and never connects."""
        if self._session is not None or self._invalid:
            return
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
            total=None, connect=self.timeouts.connect, sock_connect=self.timeouts.connect))
        for name, loop in self._loops():
            self._spawn(supervised(name, loop, self._crash, stopping=self._stopping))

    async def close(self) -> None:
        self._set_state(RelayState.CLOSED)
        self._opened.set()
        self._on_lost()
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._session is not None and not self._session.closed:
            await self._session.close()

    def reconnect(self) -> None:
        """The network may have changed: drop the connection (it may be dead without knowing it), retry now."""
        self._kick.set()
        if self._ws is not None:
            self._spawn(self._ws.close())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_open(self, timeout: float) -> bool:
        """Wait until the connection is open (False after ``timeout``, or at once when it never will be)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.is_open:
            remaining = deadline - loop.time()
            if self._stopping() or self._invalid or remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._opened.wait(), remaining)
        return True

    # ------------------------------------------------------------------ the connection loop
    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        """Open the websocket and, at the same time, read NIP-11 (when not known yet, or failed long ago)."""
        assert self._session is not None
        loop = asyncio.get_running_loop()
        ws_coro = self._session.ws_connect(  # no permessage-deflate: nothing to inflate, no bomb to defuse
            self.url, max_msg_size=self.max_incoming, heartbeat=self.timeouts.heartbeat, compress=0,
            autoping=True, timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0))
        async with asyncio.timeout(self.timeouts.connect):
            if self.info is None or (self.info.error is not None and loop.time() - self._info_at > INFO_RETRY_S):
                self._info_at = loop.time()
                ws, info = await asyncio.gather(ws_coro, fetch_info(self._session, self.url, self.timeouts.info),
                                                return_exceptions=True)
                if isinstance(info, RelayInfo):
                    self.info = info
                if isinstance(ws, BaseException):
                    raise ws
                return ws
            return await ws_coro

    async def _run(self) -> None:
        while not self._stopping() and not self._invalid:
            if self._state != RelayState.DEAD:
                self._set_state(RelayState.CONNECTING, self._reason)
            try:
                ws = await self._connect()
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                self.counters.connect_failures += 1
                await self._backoff(f"connect failed: {type(exc).__name__}: {exc}"[:300], failed=True)
                continue
            refusal = self.info.refusal if self.info is not None else None
            if refusal is not None:
                await ws.close()
                self.refuse(refusal)
                return
            await self._serve(ws)
            await self._backoff("connection closed", failed=False)

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        loop = asyncio.get_running_loop()
        opened_at = loop.time()
        if self._ever_opened:
            self.counters.reconnects += 1
        self._ever_opened = True
        self._ws = ws
        self._on_open()
        self._set_state(RelayState.OPEN)
        self._opened.set()
        try:
            await self._read(ws)
        finally:
            self._ws = None
            if not self._stopping():
                self._opened.clear()
                self._set_state(RelayState.BACKING_OFF, "connection closed")
            self._on_lost()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)
        if loop.time() - opened_at >= self.timeouts.stable_after:
            self._reconnect.reset()
            self._fail_streak = 0

    async def _backoff(self, reason: str, *, failed: bool) -> None:
        if self._stopping():
            return
        self._fail_streak += 1 if failed else 0
        delay = self._reconnect.next()
        dead = self._fail_streak >= self.timeouts.dead_after
        self._set_state(RelayState.DEAD if dead else RelayState.BACKING_OFF, reason)
        log.info("relay %s: %s; retrying in %.1f s", self.url, reason, delay)
        self._kick.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._kick.wait(), delay)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.TEXT:
                self._on_text(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                self.counters.malformed += 1
            elif msg.type == aiohttp.WSMsgType.ERROR:
                if isinstance(msg.data, aiohttp.WebSocketError) and \
                        msg.data.code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG:
                    self.counters.oversized += 1
                log.info("relay %s: websocket error %s", self.url, msg.data)
                return
            else:  # CLOSE, CLOSING, CLOSED
                return

    async def _send_text(self, text: str) -> bool:
        """Write one message (bounded: a relay that stops reading must not hang us); False when not sent."""
        ws = self._ws
        if ws is None or ws.closed:
            return False
        try:
            async with asyncio.timeout(self.timeouts.ok):
                await ws.send_str(text)
            return True
        except (aiohttp.ClientError, ConnectionError, RuntimeError, TimeoutError) as exc:
            log.info("relay %s: send failed (%s); reconnecting", self.url, exc)
            self.reconnect()
            return False
