"""A Janus API session over WebSocket (subprotocol ``janus-protocol``), with aiohttp's client.

One :class:`JanusSession` is one WebSocket and one Janus session: ``create``, a keepalive every
``keepalive_s`` — by default 25 s or a third of the ``session-timeout`` Janus' ``info`` advertises,
whichever is shorter (Janus' default is 60 s; a server configured shorter would otherwise drop an
idle session: nothing else resets its timer while media flows), plugin handles
(``attach``/``detach``), requests matched to answers by transaction. A plugin ``message`` is first
``ack``ed and answered later by an ``event`` carrying the same transaction (or answered at once with
``success`` for a synchronous plugin request); events without a transaction (``webrtcup``, ``media``,
``hangup``, a plugin's own notifications) go to the handle's queue.

Everything Janus sends is untrusted: one message ≤ :data:`MAX_MESSAGE_BYTES` (aiohttp closes the
socket beyond it), nesting ≤ :data:`MAX_DEPTH` checked before parsing, exact types for ids and
codes, text cut to printable characters. Malformed messages are dropped and counted, never raised
into the reader. The reader and the keepalive run under :func:`sdparta.supervise.supervised`: a bug
is reported through ``on_crash`` and the loop restarted. The end of the session — socket closed,
Janus restarted, ``timeout`` event, a keepalive unanswered — is one :class:`SessionLost`, delivered
to every waiting request, to ``wait_lost()`` and to every handle's queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from sdparta import safe_json
from sdparta.sfu.errors import (
    JanusError,
    JanusProtocolError,
    JanusRequestError,
    JanusTimeout,
    NoSuchRoom,
    RoomFull,
    SessionLost,
    SfuUnreachable,
    WrongPin,
)
from sdparta.sfu.settings import check_url
from sdparta.supervise import supervised

log = logging.getLogger(__name__)

__all__ = ["HandleEvent", "JanusHandle", "JanusSession", "SessionStats", "clean_text", "janus_id", "stop_task"]

MAX_MESSAGE_BYTES = 1024 * 1024  # an SDP offer for 30 m-lines is ~40 KB
MAX_DEPTH = 12
#: Janus' default session_timeout is 60 s; one keepalive every 25 s leaves two chances.
DEFAULT_KEEPALIVE_S = 25.0
#: The shortest automatic keepalive interval, whatever session-timeout Janus advertises.
MIN_KEEPALIVE_S = 1.0
DEFAULT_REQUEST_TIMEOUT_S = 10.0
DEFAULT_CONNECT_TIMEOUT_S = 10.0
#: Undelivered events per handle; beyond it the oldest are dropped (and counted).
MAX_QUEUED_EVENTS = 512
MAX_TEXT = 300
SUBPROTOCOL = "janus-protocol"

# Plugin error codes (janus_videoroom.c, janus_audiobridge.c) that deserve their own type.
_NO_SUCH_ROOM = {426, 485}
_UNAUTHORIZED = {433, 489}
_ROOM_FULL = {432}
_MISSING_ELEMENT = {429, 483}
_SESSION_NOT_FOUND = 458


def clean_text(value: object, limit: int = MAX_TEXT) -> str:
    """Printable text from Janus (reasons, display names), cut to ``limit`` characters."""
    text = value if isinstance(value, str) else ""
    text = "".join(ch if ch.isprintable() else " " for ch in text[: limit * 2])
    return text[:limit] + ("…" if len(text) > limit else "")


async def stop_task(task: asyncio.Task[Any], *, grace_s: float = 1.0) -> None:
    """Cancel ``task`` and wait until it has ended, cancelling again while it runs on.

    Python 3.11 can lose a cancellation that lands just as the future a task awaits completes
    (``asyncio.wait_for`` returns the result instead; libraries still use it): a loop waiting for its
    next event then waits forever and a plain ``cancel(); await task`` hangs the caller with it.
    Whatever the task raised or returned is dropped (it was being stopped)."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=grace_s)
    if not task.cancelled():
        with contextlib.suppress(Exception):
            task.result()


def janus_id(value: object) -> int | None:
    """A Janus id (session, handle, participant, room): a positive integer below 2**64, not a bool."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**64:
        return None
    return value


@dataclass(frozen=True)
class HandleEvent:
    """One event for a handle: ``janus`` is the kind (``event``, ``webrtcup``, ``media``, ``hangup``,
    ``slowlink``, ``detached``, ``lost``); ``data`` the plugin's data (dicts checked, not trusted
    further), ``jsep`` an SDP offer/answer if one came with it, ``raw`` the whole message."""

    janus: str
    data: dict[str, Any] = field(default_factory=dict)
    jsep: dict[str, str] | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    error: JanusError | None = None  # set for ``lost``


@dataclass
class SessionStats:
    sent: int = 0
    received: int = 0
    malformed: int = 0
    unrequested: int = 0
    dropped_events: int = 0
    keepalives: int = 0
    crashes: int = 0


def _jsep(value: object) -> dict[str, str] | None:
    if not isinstance(value, dict):
        return None
    kind, sdp = value.get("type"), value.get("sdp")
    if kind not in ("offer", "answer") or not isinstance(sdp, str) or not sdp:
        return None
    return {"type": kind, "sdp": sdp}


def _summary(message: dict[str, Any]) -> str:
    """A message for the debug log: everything but the SDP (its type and size only)."""
    shown = {key: value for key, value in message.items() if key != "jsep"}
    body = shown.get("body")
    if isinstance(body, dict) and "pin" in body:
        shown["body"] = {**body, "pin": "…"}  # never a room's PIN in a log
    jsep = message.get("jsep")
    if isinstance(jsep, dict):
        sdp = jsep.get("sdp")
        shown["jsep"] = f"<{jsep.get('type')}, {len(sdp) if isinstance(sdp, str) else 0} chars>"
    return clean_text(repr(shown), 4000)


def plugin_error(data: dict[str, Any], where: str) -> JanusRequestError | None:
    """The typed error a plugin answer holds (``error_code``/``error``), or None."""
    code = data.get("error_code")
    if code is None and "error" not in data:
        return None
    code = code if isinstance(code, int) and not isinstance(code, bool) else None
    reason = clean_text(data.get("error"))
    if code in _NO_SUCH_ROOM:
        return NoSuchRoom(f"{where}: no such room ({reason})", code, reason)
    if code in _UNAUTHORIZED:
        return WrongPin(f"{where}: wrong PIN for the room ({reason})", code, reason)
    if code in _MISSING_ELEMENT and "pin" in reason.lower():
        return WrongPin(f"{where}: the room needs a PIN and none was given ({reason})", code, reason)
    if code in _ROOM_FULL:
        return RoomFull(f"{where}: the room is full ({reason})", code, reason)
    return JanusRequestError(f"{where}: Janus refused the request: {reason or 'no reason given'} (error {code})",
                             code, reason)


class JanusHandle:
    """A plugin handle: requests to the plugin and a queue of the plugin's events."""

    def __init__(self, session: JanusSession, handle_id: int, plugin: str) -> None:
        self.session, self.id, self.plugin = session, handle_id, plugin
        self.events: asyncio.Queue[HandleEvent] = asyncio.Queue()
        self.detached = False

    def _deliver(self, event: HandleEvent) -> None:
        if self.events.qsize() >= MAX_QUEUED_EVENTS:
            with contextlib.suppress(asyncio.QueueEmpty):
                self.events.get_nowait()
                self.session.stats.dropped_events += 1
        self.events.put_nowait(event)

    async def request(self, body: dict[str, Any], jsep: dict[str, str] | None = None, *,
                      timeout: float | None = None) -> tuple[dict[str, Any], dict[str, str] | None]:
        """Send a plugin request; return the plugin's answer data and its JSEP (if any). A plugin
        error is raised typed (NoSuchRoom, WrongPin, RoomFull, JanusRequestError)."""
        message: dict[str, Any] = {"janus": "message", "handle_id": self.id, "body": body}
        if jsep is not None:
            message["jsep"] = jsep
        reply = await self.session._transact(message, timeout=timeout, wait_for_event=True)
        plugindata = reply.get("plugindata")
        data = plugindata.get("data") if isinstance(plugindata, dict) else None
        if not isinstance(data, dict):
            raise JanusProtocolError(f"{self.session.label}: the {self.plugin} answer has no plugin data")
        error = plugin_error(data, f"{self.session.label}")
        if error is not None:
            raise error
        return data, _jsep(reply.get("jsep"))

    async def next_event(self, timeout: float | None = None) -> HandleEvent:
        async with asyncio.timeout(timeout):
            return await self.events.get()

    async def hangup(self) -> None:
        with contextlib.suppress(JanusError):
            await self.session._transact({"janus": "hangup", "handle_id": self.id}, timeout=5)

    async def detach(self) -> None:
        """Detach from the plugin (idempotent; nothing raised once the session is gone)."""
        if self.detached:
            return
        self.detached = True
        self.session._handles.pop(self.id, None)
        if not self.session.lost:
            with contextlib.suppress(JanusError):
                await self.session._transact({"janus": "detach", "handle_id": self.id}, timeout=5)


class JanusSession:
    """One WebSocket, one Janus session. Build it with :meth:`connect`."""

    def __init__(self, url: str, *, keepalive_s: float | None = None,
                 request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
                 on_crash: Callable[[str, str], None] | None = None,
                 on_lost: Callable[[SessionLost], None] | None = None) -> None:
        self.url = check_url(url)
        self.label = f"janus @ {urlsplit(url).hostname}"
        #: None until connected: then ``keepalive_s`` as given, or chosen from Janus' session-timeout.
        self._keepalive_given = keepalive_s
        self.keepalive_s = DEFAULT_KEEPALIVE_S if keepalive_s is None else keepalive_s
        self.request_timeout_s = request_timeout_s
        #: Janus' advertised session-timeout in seconds (None: not advertised or not asked).
        self.server_session_timeout: int | None = None
        self.session_id: int | None = None
        self.stats = SessionStats()
        self.lost: SessionLost | None = None
        self._on_crash, self._on_lost = on_crash, on_lost
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._pending: dict[str, tuple[asyncio.Future[dict[str, Any]], bool]] = {}
        self._handles: dict[int, JanusHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._lost_event = asyncio.Event()
        self._closing = False
        self._counter = itertools.count(1)
        self._prefix = secrets.token_hex(4)

    # ------------------------------------------------------------------ life
    @classmethod
    async def connect(cls, url: str, *, connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
                      **kwargs: Any) -> JanusSession:
        """Open the WebSocket and create the session. SfuUnreachable when no Janus answers."""
        session = cls(url, **kwargs)
        try:
            await session._open(connect_timeout_s)
        except BaseException:
            await session.close()
            raise
        return session

    async def _open(self, connect_timeout_s: float) -> None:
        self._http = aiohttp.ClientSession()
        try:
            async with asyncio.timeout(connect_timeout_s):  # not wait_for: it can swallow a cancellation
                self._ws = await self._http.ws_connect(
                    self.url, protocols=(SUBPROTOCOL,), max_msg_size=MAX_MESSAGE_BYTES, autoping=True,
                    compress=0, timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0))
        except TimeoutError:
            raise SfuUnreachable(f"{self.label} is unreachable: no answer from {self.url} within "
                                 f"{connect_timeout_s:g} s") from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            detail = clean_text(str(exc)) or type(exc).__name__
            raise SfuUnreachable(f"{self.label} is unreachable at {self.url}: {detail}") from None
        if self._ws.protocol != SUBPROTOCOL:
            raise SfuUnreachable(f"{self.url} is not a Janus WebSocket API (it did not accept the "
                                 f"{SUBPROTOCOL!r} subprotocol)")
        self._start("janus reader", self._read_loop)
        try:
            reply = await self._transact({"janus": "create"}, timeout=connect_timeout_s, in_session=False)
        except JanusTimeout:
            raise SfuUnreachable(f"{self.label} accepted the WebSocket but did not create a session within "
                                 f"{connect_timeout_s:g} s") from None
        data = reply.get("data")
        session_id = janus_id(data.get("id")) if isinstance(data, dict) else None
        if session_id is None:
            raise JanusProtocolError(f"{self.label}: the answer to create holds no session id")
        self.session_id = session_id
        if self._keepalive_given is None:
            await self._choose_keepalive(connect_timeout_s)
        self._start("janus keepalive", self._keepalive_loop)

    async def _choose_keepalive(self, timeout: float) -> None:
        """A third of Janus' session-timeout when that is shorter than the default (0: never times out)."""
        try:
            info = await self._transact({"janus": "info"}, timeout=timeout, in_session=False)
        except JanusTimeout:
            return  # an old or trimmed Janus: keep the default
        except JanusRequestError:
            return
        value = info.get("session-timeout")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return
        self.server_session_timeout = value
        if value > 0:
            self.keepalive_s = max(MIN_KEEPALIVE_S, min(DEFAULT_KEEPALIVE_S, value / 3))

    def _start(self, name: str, loop: Callable[[], Any]) -> None:
        task = asyncio.create_task(supervised(name, loop, self._crashed, stopping=lambda: self._closing
                                              or self.lost is not None), name=name)
        self._tasks.append(task)

    def _crashed(self, name: str, error: str) -> None:
        self.stats.crashes += 1
        if self._on_crash is not None:
            self._on_crash(name, error)

    async def close(self) -> None:
        """Destroy the session (best effort), close the socket, stop the loops. Idempotent."""
        if self._closing:
            return
        self._closing = True
        if self.lost is None and self._ws is not None and not self._ws.closed and self.session_id is not None:
            with contextlib.suppress(JanusError, asyncio.CancelledError):
                await self._transact({"janus": "destroy"}, timeout=3)
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        for task in self._tasks:
            await stop_task(task)
        if self._http is not None:
            await self._http.close()
        self._fail_all(SessionLost(f"{self.label}: the session was closed"), report=False)

    async def __aenter__(self) -> JanusSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_lost(self) -> SessionLost:
        """Return once the session is lost (not after a close of our own)."""
        await self._lost_event.wait()
        assert self.lost is not None
        return self.lost

    def _fail_all(self, error: SessionLost, *, report: bool = True) -> None:
        if self.lost is not None:
            return
        self.lost = error
        for future, _ in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()
        for handle in list(self._handles.values()):
            handle._deliver(HandleEvent("lost", error=error))
        if report:
            log.warning("%s", error)
            self._lost_event.set()
            if self._on_lost is not None:
                try:
                    self._on_lost(error)
                except Exception:
                    log.exception("the session-lost listener failed")

    # ------------------------------------------------------------------ requests
    async def attach(self, plugin: str) -> JanusHandle:
        reply = await self._transact({"janus": "attach", "plugin": plugin})
        data = reply.get("data")
        handle_id = janus_id(data.get("id")) if isinstance(data, dict) else None
        if handle_id is None:
            raise JanusProtocolError(f"{self.label}: the answer to attach holds no handle id")
        handle = JanusHandle(self, handle_id, plugin)
        self._handles[handle_id] = handle
        return handle

    async def keepalive(self) -> None:
        await self._transact({"janus": "keepalive"})
        self.stats.keepalives += 1

    async def info(self) -> dict[str, Any]:
        """The server's ``info`` answer (version, plugins, transports)."""
        return await self._transact({"janus": "info"}, in_session=False)

    async def _transact(self, message: dict[str, Any], *, timeout: float | None = None, in_session: bool = True,
                        wait_for_event: bool = False) -> dict[str, Any]:
        if self.lost is not None:
            raise self.lost
        if self._ws is None or self._ws.closed:
            raise SessionLost(f"{self.label}: the connection to Janus is closed")
        transaction = f"{self._prefix}-{next(self._counter)}"
        message = {**message, "transaction": transaction}
        if in_session:
            message["session_id"] = self.session_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[transaction] = (future, wait_for_event)
        limit = self.request_timeout_s if timeout is None else timeout
        try:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s → %s", self.label, _summary(message))
            await self._ws.send_json(message)
            self.stats.sent += 1
            async with asyncio.timeout(limit):  # not wait_for: in 3.11 it can swallow a cancellation
                reply = await future
        except TimeoutError:
            raise JanusTimeout(f"{self.label} did not answer {message['janus']!r} within {limit:g} s") from None
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
            if self.lost is not None:
                raise self.lost from None
            raise SessionLost(f"{self.label}: sending to Janus failed: {clean_text(str(exc))}") from None
        finally:
            self._pending.pop(transaction, None)
        if reply.get("janus") == "error":
            error = reply.get("error")
            error = error if isinstance(error, dict) else {}
            code = error.get("code") if isinstance(error.get("code"), int) else None
            reason = clean_text(error.get("reason"))
            if code == _SESSION_NOT_FOUND:
                lost = SessionLost(f"{self.label}: Janus no longer knows this session ({reason}); "
                                   "it timed out or Janus restarted", code)
                self._fail_all(lost)
                raise lost
            raise JanusRequestError(f"{self.label} refused {message['janus']!r}: {reason or 'no reason'} "
                                    f"(error {code})", code, reason)
        return reply

    # ------------------------------------------------------------------ loops
    async def _keepalive_loop(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive_s)
            try:
                await self.keepalive()
            except JanusTimeout:
                self._fail_all(SessionLost(f"{self.label} stopped answering keepalives"))
                return
            except SessionLost:
                return

    async def _read_loop(self) -> None:
        assert self._ws is not None
        ws = self._ws
        while True:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.TEXT:
                self._receive(msg.data)
                continue
            if msg.type == aiohttp.WSMsgType.BINARY:
                self.stats.malformed += 1
                continue
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                reason = "the connection closed (Janus stopped or restarted?)"
            else:
                reason = f"the connection failed ({clean_text(str(msg.data)) or msg.type.name})"
            if not self._closing:
                self._fail_all(SessionLost(f"{self.label}: session lost: {reason}"))
            return

    def _receive(self, raw: str) -> None:
        """One message from Janus: validated, then to its transaction or its handle. Never raises."""
        self.stats.received += 1
        try:
            message = safe_json.loads(raw, max_depth=MAX_DEPTH, what="a Janus message")
        except safe_json.JSONError:
            self.stats.malformed += 1
            return
        if not isinstance(message, dict) or not isinstance(message.get("janus"), str):
            self.stats.malformed += 1
            return
        kind = message["janus"]
        transaction = message.get("transaction")
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s ← %s", self.label, _summary(message))
        if isinstance(transaction, str) and transaction in self._pending:
            future, wait_for_event = self._pending[transaction]
            if kind == "ack" and (wait_for_event and "plugindata" not in message):
                return  # the plugin answers later with an event of the same transaction
            if not future.done():
                future.set_result(message)
            return
        if kind == "timeout":
            if janus_id(message.get("session_id")) in (None, self.session_id):
                self._fail_all(SessionLost(f"{self.label}: Janus timed out the session (no keepalive in time)"))
            return
        sender = janus_id(message.get("sender"))
        handle = self._handles.get(sender) if sender is not None else None
        if handle is None:
            self.stats.unrequested += 1
            return
        plugindata = message.get("plugindata")
        data = plugindata.get("data") if isinstance(plugindata, dict) else None
        event = HandleEvent(clean_text(kind, 40), data if isinstance(data, dict) else {}, _jsep(message.get("jsep")),
                            message)
        if kind == "detached":
            handle.detached = True
            self._handles.pop(handle.id, None)
        handle._deliver(event)
