"""The client under a portal that accepts connections but never answers, or drips its answer.

Issue 8, findings 12 and 13: every network wait has an overall deadline (a per-read timeout alone
lets a portal that sends one byte every few seconds hang a join forever), the bot then names the
portal instead of blaming the room name or password, and nothing is left open at exit ("Unclosed
client session" / "Event loop is closed"). All servers here listen on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sdparta.engine.call import Call, CallConfig
from sdparta.room.keys import RoomKeys
from sdparta.store import MemoryStore, MultiStore, PortalClient, StoreUnavailable
from sdparta.store import portal_client as portal_client_module
from sdparta.store.crypto import KeyPair, hash_data_key, skylink_for_content
from support.procs import BotProcess, free_port, start_bot, wait_for

KEY = KeyPair.from_seed("hostile-test")
DK = hash_data_key("slot")
#: Below the client's 5 s per-read timeout, so only an overall deadline stops a dripped answer.
DRIP_INTERVAL_S = 2.0
LEAK_MARKERS = ("Event loop is closed", "Unclosed client session", "Unclosed connector")


class HostileServer:
    """A TCP server on 127.0.0.1 that reads requests and then either says nothing (``silent``),
    sends an HTTP status line and headers one byte at a time, forever (``drip-headers``), or sends
    complete headers and then the body one byte at a time (``drip-body``)."""

    def __init__(self, mode: str, interval: float = DRIP_INTERVAL_S) -> None:
        self.mode, self.interval = mode, interval
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
            if self.mode != "silent":
                threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        if self.mode == "drip-headers":
            prefix, endless = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Pad: ", b"a"
        else:
            prefix, endless = b"HTTP/1.1 200 OK\r\nContent-Length: 4000\r\n\r\n", b" "
        try:
            conn.recv(65536)
            if self.mode == "drip-body":
                conn.sendall(prefix)
                prefix = b""
            for byte in prefix:
                if self._stop.wait(self.interval):
                    return
                conn.sendall(bytes([byte]))
            while not self._stop.wait(self.interval):
                conn.sendall(endless)
        except OSError:
            pass

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.close()


@pytest.fixture
def hostile() -> Iterator[Any]:
    servers: list[HostileServer] = []

    def make(mode: str, interval: float = DRIP_INTERVAL_S) -> HostileServer:
        servers.append(HostileServer(mode, interval))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


class _BusyRegistryPortal:
    """Push works, the registry is always busy (503), so every join attempt fails after opening
    push. Served from its own thread and loop, so sync tests (real bot processes) can use it too."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        assert started.wait(30), "the busy portal did not start"
        assert self._runner is not None
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        started.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        async def subscription(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for _ in ws:
                pass
            return ws

        async def busy(request: web.Request) -> web.Response:
            return web.json_response({"message": "busy"}, status=503)

        app = web.Application()
        app.router.add_get("/skynet/registry/subscription", subscription)
        app.router.add_route("*", "/skynet/registry", busy)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()

    def close(self) -> None:
        assert self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()


@pytest.fixture
def ws_only_portal() -> Iterator[str]:
    portal = _BusyRegistryPortal()
    try:
        yield portal.url
    finally:
        portal.close()


# ---------------------------------------------------------------------- PortalClient, directly
@pytest.mark.parametrize("mode", ["silent", "drip-headers", "drip-body"])
async def test_a_request_to_a_portal_that_never_finishes_answering_has_a_deadline(
        hostile: Any, mode: str) -> None:
    server = hostile(mode, interval=0.2)  # far below the per-read timeout: only the deadline stops it
    client = PortalClient(server.url, timeout=5.0, deadline=1.0)
    try:
        # the outer bound only turns a hang (the bug) into a failure instead of a stuck test
        with pytest.raises(StoreUnavailable, match=r"is not answering \(no complete answer within 1 s\)"):
            await asyncio.wait_for(client.get_entry(KEY.public_key, DK), 60)
        with pytest.raises(StoreUnavailable, match="is not answering"):
            await asyncio.wait_for(client.download_blob(skylink_for_content(b"x"), max_size=8192), 60)
    finally:
        await client.aclose()


def test_bigger_transfers_get_a_size_scaled_but_bounded_deadline() -> None:
    client = PortalClient("http://127.0.0.1:1")
    small, blob = client._deadline_for(0), client._deadline_for(4 * 1024 * 1024)
    assert small == client.deadline >= 10.0  # generous for a slow link, yet bounded
    assert small < blob < 120.0


async def test_the_subscription_handshake_has_a_deadline(hostile: Any) -> None:
    for mode in ("silent", "drip-headers"):
        client = PortalClient(hostile(mode, interval=0.2).url, handshake_deadline=1.0)
        try:
            # no push from a portal that never completes the upgrade: poll instead, do not hang
            assert await asyncio.wait_for(client.open_subscription(), 60) is None
            assert client._push_supported is None  # not "has no push": tried again later
        finally:
            await client.aclose()


# ---------------------------------------------------------------------- nothing left open
@pytest.fixture
def sessions(monkeypatch: pytest.MonkeyPatch) -> list[aiohttp.ClientSession]:
    """Every aiohttp session the store client makes during the test."""
    made: list[aiohttp.ClientSession] = []
    real = aiohttp.ClientSession

    def recording(*args: Any, **kwargs: Any) -> aiohttp.ClientSession:
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(portal_client_module.aiohttp, "ClientSession", recording)
    return made


async def test_closing_the_client_closes_push_channels_its_owner_dropped(
        ws_only_portal: str, sessions: list[aiohttp.ClientSession]) -> None:
    """A join that fails after opening push and is retried drops the first channel (room/session.py
    opens a fresh one per attempt): the client still closes it."""
    client = PortalClient(ws_only_portal)
    assert await client.open_subscription() is not None
    assert await client.open_subscription() is not None  # the first one is no longer referenced
    assert len(sessions) == 2 and not any(s.closed for s in sessions)
    await client.aclose()
    assert all(s.closed for s in sessions)


async def test_a_cancelled_subscription_handshake_leaves_nothing_open(
        hostile: Any, ws_only_portal: str, sessions: list[aiohttp.ClientSession]) -> None:
    silent = hostile("silent")
    client = PortalClient(silent.url)
    try:
        task = asyncio.ensure_future(client.open_subscription())
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert sessions and all(s.closed for s in sessions)
    finally:
        await client.aclose()
    # several portals: one channel opened, the other still in its handshake when the join stops
    sessions.clear()
    store = MultiStore([PortalClient(ws_only_portal), PortalClient(silent.url)])
    try:
        task = asyncio.ensure_future(store.open_subscription())
        for _ in range(200):  # until the working portal's channel is open (the other one never is)
            if client_opened(store):
                break
            await asyncio.sleep(0.05)
        assert client_opened(store) and len(sessions) == 2
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert all(s.closed for s in sessions)
    finally:
        await store.aclose()


def client_opened(store: MultiStore) -> bool:
    """Has any portal of ``store`` opened its push channel?"""
    return any(getattr(s, "_subscriptions", None) for s in store.stores)


class _NeverAnswers(MemoryStore):
    """A store whose registry reads never return (no deadline at all)."""

    async def get_entry(self, public_key: bytes, data_key: bytes) -> Any:
        await asyncio.Event().wait()


def test_stop_ends_a_join_that_waits_on_the_store() -> None:
    call = Call(CallConfig(room="stuck", portals=["http://127.0.0.1:1"], video="none", audio="none",
                           store=_NeverAnswers(), room_keys=RoomKeys.derive("stuck", "")))
    call.start()
    try:
        wait_for(lambda: call.running, 10, "the engine running")
        time.sleep(1.0)  # the join is now waiting on the store
    finally:
        call.stop(timeout=60)  # the leave is bounded (5 s); without the fix the join never ends
    assert not call.running
    assert call.snapshot().status == "stopped"


# ---------------------------------------------------------------------- real bot processes
def _last_line(bot: BotProcess) -> str:
    lines = bot.log_path.read_text().strip().splitlines()
    return lines[-1] if lines else ""


def _no_leaks(bot: BotProcess) -> None:
    text = bot.log_path.read_text()
    for marker in LEAK_MARKERS:
        assert marker not in text, f"{bot.name} printed {marker!r}:\n{text[-3000:]}"


@pytest.mark.integration
def test_bot_names_a_portal_that_accepts_but_never_answers(tmp_path: Path, hostile: Any) -> None:
    """Silent and dripping portals, with push and polling only: each bot stops trying within its
    deadlines, exits at the end of its --duration and says the portal is not answering."""
    silent, drip = hostile("silent"), hostile("drip-headers")
    # a join attempt is two sequential registry reads (after push and settings, side by side): at
    # most ~20 s with the default 10 s deadlines; --duration leaves a wide margin over that
    duration = "40"
    bots = {f"{kind}{suffix}": start_bot(tmp_path, "hostile-room", [server.url], f"{kind}{suffix}", tone=None,
                                         video="none", record=False, extra=["--duration", duration, *flags])
            for kind, server in (("silent", silent), ("drip", drip))
            for suffix, flags in (("-push", []), ("-poll", ["--no-push"]))}
    started = time.monotonic()
    try:
        for name, bot in bots.items():
            remaining = max(1.0, 120 - (time.monotonic() - started))
            try:
                code = bot.proc.wait(remaining)  # generous: the fix bounds it to about 50 s
            except Exception as exc:
                raise AssertionError(f"{name} did not exit within 120 s:\n{bot.log_path.read_text()[-3000:]}") \
                    from exc
            url = silent.url if name.startswith("silent") else drip.url
            line = _last_line(bot)
            assert code == 3, f"{name}: exit {code}: {line}"
            assert line.startswith(f"bot: saw nobody in the room (portal {url} is not answering"), f"{name}: {line}"
            assert "same room name" not in line
            _no_leaks(bot)
    finally:
        for bot in bots.values():
            bot.stop()


@pytest.mark.integration
def test_bot_stopped_before_its_first_answer_says_so(tmp_path: Path, hostile: Any) -> None:
    bot = start_bot(tmp_path, "hostile-room", [hostile("silent").url], "early", tone=None, video="none",
                    record=False, extra=["--duration", "2"])
    try:
        assert bot.proc.wait(60) == 3
        assert "is not answering" in _last_line(bot) and "same room name" not in _last_line(bot)
        _no_leaks(bot)
    finally:
        bot.stop()


@pytest.mark.integration
def test_bot_that_never_joined_exits_cleanly(tmp_path: Path, ws_only_portal: str) -> None:
    """Finding 13: a closed port, and a portal whose push works but whose registry is busy (each
    retried join used to leave a push session behind): no "Event loop is closed" /
    "Unclosed client session" at exit."""
    bots = [start_bot(tmp_path, "never-joined", [url], name, tone=None, video="none", record=False,
                      extra=["--duration", "5"])
            for name, url in (("closed", f"http://127.0.0.1:{free_port()}"), ("busy", ws_only_portal))]
    try:
        for bot in bots:
            assert bot.proc.wait(60) == 3, bot.log_path.read_text()[-3000:]
            assert _last_line(bot).startswith("bot: saw nobody in the room (portal http://127.0.0.1:")
            _no_leaks(bot)
    finally:
        for bot in bots:
            bot.stop()


# ---------------------------------------------------------------------- sdparta doctor
@pytest.mark.parametrize("mode", ["silent", "drip-headers"])
async def test_doctor_names_a_portal_that_never_finishes_answering(hostile: Any, mode: str) -> None:
    """`doctor`'s portal check read HEAD / with only httpx's per-read timeout: a dripping portal held it
    for ever. Now it is "not answering" after its overall deadline."""
    from sdparta.netchecks import check_portal

    server = hostile(mode, interval=0.2)
    check = await asyncio.wait_for(check_portal(server.url, timeout=0.5), 60)
    assert check.problem == "unreachable" and "not answering" in check.detail
