"""Load on a relay (issue 12): a steady room of 4 for 2 minutes stays within the event budget,
counted at the relay.

The PyPI relay's database cannot show what it received: an addressable event (all of ours are) is
replaced by its next version, so a counted record there is at most one per (author, ``d``). A
counting websocket proxy in front of the real relay therefore sees every frame: the bots are given
its URL, it forwards both ways (and the NIP-11 document), and keeps each client frame with the time
and the connection it came on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sdparta.room.keys import RoomKeys
from sdparta.room.nostr_room import NOSTR_TIMING
from sdparta.room.nostr_wire import RoomTags
from support.nostr_relay import RelayFactory, RelayProcess
from support.procs import BotProcess, peers_by_name, start_bot, wait_for

pytestmark = pytest.mark.integration

ROOM = "relay-load-room"
NAMES = ("bot1", "bot2", "bot3", "bot4")
TONES = {"bot1": 440.0, "bot2": 620.0, "bot3": 830.0, "bot4": 1010.0}
WINDOW_S = 120.0
#: After the last pair connects, a pair's fast re-announce period may still be running (it lasts
#: ``reannounce_retry`` = 5 s once nothing negotiates): the steady state starts after two of them.
SETTLE_S = 2 * NOSTR_TIMING.reannounce_retry + 2
#: The re-announce loop sleeps ``reannounce × U(0.8, 1.0)`` between two records of a steady member,
#: i.e. 48–60 s: any 120 s window holds at most ⌊120 / 48⌋ + 1 = 3 of them and at least
#: ⌊120 / 60⌋ = 2 (fewer would let the 150 s record expire). 3 per 2 minutes is the 1.5 per minute
#: below; one more event of any kind from one peer breaks it.
JITTER_MIN = 0.8
MAX_PER_WINDOW = int(WINDOW_S // (NOSTR_TIMING.reannounce * JITTER_MIN)) + 1
MIN_PER_WINDOW = int(WINDOW_S // NOSTR_TIMING.reannounce)
BUDGET_PER_MINUTE = 1.5


# ---------------------------------------------------------------- the counting proxy
@dataclass
class Connection:
    number: int
    opened: float
    closed: float | None = None
    frames: list[tuple[float, list[Any]]] = field(default_factory=list)  # client → relay, parsed

    def of_kind(self, kind: str, start: float = 0.0, end: float = float("inf")) -> list[list[Any]]:
        return [m for t, m in self.frames if m and m[0] == kind and start <= t <= end]

    def sub_ids(self) -> list[str]:
        return [m[1] for m in self.of_kind("REQ")]


class CountingProxy:
    """A websocket proxy on 127.0.0.1 in front of one relay, in a thread with its own loop; every
    text frame a client sends is parsed and kept (Nostr messages are JSON arrays), everything is
    forwarded unchanged both ways. Plain HTTP (the NIP-11 document) is forwarded too."""

    def __init__(self, relay: RelayProcess) -> None:
        self.relay = relay
        self.connections: list[Connection] = []
        self.relay_frames = 0  # relay → clients, for the record
        self.url = ""
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="counting-proxy", daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> CountingProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    def snapshot(self) -> list[Connection]:
        with self._lock:
            return [Connection(c.number, c.opened, c.closed, list(c.frames)) for c in self.connections]

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_get("/", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"ws://127.0.0.1:{port}/"

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        if request.headers.get("Upgrade", "").lower() != "websocket":
            headers = {"Accept": request.headers.get("Accept", "*/*")}
            async with self._session.get(self.relay.http_url, headers=headers) as resp:
                body = await resp.read()
                return web.Response(body=body, status=resp.status,
                                    headers={"Content-Type": resp.headers.get("Content-Type", "text/plain")})
        client = web.WebSocketResponse(max_msg_size=0, autoping=True, compress=False)
        await client.prepare(request)
        with self._lock:
            conn = Connection(len(self.connections), time.monotonic())
            self.connections.append(conn)
        try:
            async with self._session.ws_connect(self.relay.url, max_msg_size=0, autoping=True, compress=0) as relay:
                tasks = [asyncio.create_task(self._from_client(client, relay, conn)),
                         asyncio.create_task(self._from_relay(relay, client))]
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            with self._lock:
                conn.closed = time.monotonic()
            await client.close()
        return client

    async def _from_client(self, client: web.WebSocketResponse, relay: aiohttp.ClientWebSocketResponse,
                           conn: Connection) -> None:
        async for msg in client:
            if msg.type == aiohttp.WSMsgType.TEXT:
                try:
                    parsed = json.loads(msg.data)
                except ValueError:
                    parsed = ["<not json>"]
                with self._lock:
                    conn.frames.append((time.monotonic(), parsed if isinstance(parsed, list) else [parsed]))
                await relay.send_str(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await relay.send_bytes(msg.data)

    async def _from_relay(self, relay: aiohttp.ClientWebSocketResponse, client: web.WebSocketResponse) -> None:
        async for msg in relay:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.relay_frames += 1
                await client.send_str(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await client.send_bytes(msg.data)


# ---------------------------------------------------------------- the test
@pytest.fixture
def relays(tmp_path: Path) -> Iterator[RelayFactory]:
    with RelayFactory(tmp_path) as factory:
        yield factory


@pytest.fixture
def bots() -> Iterator[dict[str, BotProcess]]:
    started: dict[str, BotProcess] = {}
    yield started
    for bot in started.values():
        bot.stop()


def _all_connected(bots: dict[str, BotProcess]) -> bool:
    for name, bot in bots.items():
        peers = peers_by_name(bot.report())
        if any(peers.get(other, {}).get("status") != "connected" for other in bots if other != name):
            return False
    return True


def _describe(bots: dict[str, BotProcess], proxy: CountingProxy | None = None) -> str:
    lines = []
    for name, bot in bots.items():
        report = bot.report() or {}
        peers = {n: (p["status"], p.get("restarts"), p.get("audio_seconds")) for n, p in peers_by_name(report).items()}
        lines.append(f"{name}: {report.get('status')} sid={report.get('session_id')} peers={peers} "
                     f"networks={[(n['state'], n['sent'], n['received']) for n in report.get('networks', [])]}")
        lines.append("  log: " + " | ".join(bot.log_path.read_text(errors="replace").splitlines()[-6:]))
    if proxy is not None:
        for conn in proxy.snapshot():
            kinds = Counter(m[0] for _, m in conn.frames if m)
            lines.append(f"connection {conn.number}: subs={conn.sub_ids()} closed={conn.closed is not None} {kinds}")
    return "\n".join(lines)


def _kind_of(event: dict[str, Any], tags: RoomTags) -> str:
    x = next((t[1] for t in event.get("tags", []) if len(t) > 1 and t[0] == "x"), None)
    if x == tags.room:
        return "presence"
    if x == tags.settings:
        return "settings"
    return "pair message"


def test_a_steady_room_of_four_stays_within_the_relay_event_budget(  # type: ignore[no-untyped-def]
        tmp_path: Path, relays: RelayFactory, bots) -> None:
    """A steady, fully connected room of 4 over one relay costs each peer at most about one event
    per minute (protocol.md §8: re-announce every 60 s, every 5 s only while a pair negotiates).

    Budget, exactly: between two records a steady member sleeps ``reannounce × U(0.8, 1.0)`` =
    48–60 s, so a 120 s window holds at most ⌊120 / 48⌋ + 1 = 3 events per peer (1.5 per minute)
    and at least ⌊120 / 60⌋ = 2. Any other event in the window (a pair message, a fast re-announce
    because something calls ``mark_pending`` in steady state) breaks it. Counted at the relay: every
    ``["EVENT", …]`` frame each bot's connection carried. Each bot subscribes once (one ``REQ`` per
    room per relay) on its only connection, and nobody disconnects or reconnects meanwhile."""
    relay = relays.start()
    proxy = CountingProxy(relay).start()
    try:
        _run_load(tmp_path, bots, proxy)
    finally:
        for bot in bots.values():  # before the proxy: their goodbyes go through it
            bot.stop()
        proxy.stop()


def _run_load(tmp_path: Path, bots: dict[str, BotProcess], proxy: CountingProxy) -> None:
    for name in NAMES:  # audio only, mono and light: four meshed processes on two busy cores
        bots[name] = start_bot(tmp_path, ROOM, [], name, tone=TONES[name], video="none", record=False,
                               extra=["--relay", proxy.url, "--audio-only", "--opus-bitrate", "24000",
                                      "--opus-channels", "1"])
    wait_for(lambda: _all_connected(bots), 180, "all 12 directed pairs connected",
             interval=0.5, diagnostics=lambda: _describe(bots, proxy))
    time.sleep(SETTLE_S)  # not a condition: the fast re-announces of the negotiation may still run out
    assert _all_connected(bots), _describe(bots, proxy)
    reports = {name: bot.report() or {} for name, bot in bots.items()}
    sessions = {r["session_id"]: name for name, r in reports.items()}
    before = {name: peers_by_name(r) for name, r in reports.items()}

    start = time.monotonic()
    dropped: list[str] = []
    while time.monotonic() < start + WINDOW_S:  # a measurement window: watch that nobody drops meanwhile
        time.sleep(2)
        for name, bot in bots.items():
            for other, peer in peers_by_name(bot.report()).items():
                if peer.get("status") != "connected":
                    dropped.append(f"{name}→{other}: {peer.get('status')} at +{time.monotonic() - start:.0f} s")
    end = time.monotonic()
    after = {name: peers_by_name(bot.report()) for name, bot in bots.items()}

    tags = RoomTags(RoomKeys.derive(ROOM))
    connections = proxy.snapshot()
    per_peer: dict[str, list[dict[str, Any]]] = {}
    reqs: dict[str, list[str]] = {}
    joining: dict[str, int] = {}  # events before the window (joining, negotiating, settling), for the record
    for conn in connections:
        subs = conn.sub_ids()
        owner = next((sessions.get(s.removeprefix("sdparta-")) for s in subs), None) or f"connection {conn.number}"
        reqs.setdefault(owner, []).extend(subs)
        per_peer.setdefault(owner, []).extend(m[1] for m in conn.of_kind("EVENT", start, end))
        joining[owner] = joining.get(owner, 0) + len(conn.of_kind("EVENT", 0, start))
    breakdown = {name: Counter(_kind_of(e, tags) for e in events) for name, events in per_peer.items()}
    figures = {name: f"{len(events)} events in {WINDOW_S:.0f} s = {len(events) * 60 / WINDOW_S:.2f}/min "
                     f"{dict(breakdown[name])}" for name, events in per_peer.items()}
    print(f"\nrelay load, steady room of 4: {json.dumps(figures, indent=1)}; REQs {reqs}; "
          f"before the window {joining}; {len(connections)} connections, {proxy.relay_frames} frames relay → clients")
    detail = f"{figures}\nREQs: {reqs}\n{_describe(bots, proxy)}"

    # every bot on one connection the whole time, subscribed once on it
    assert sorted(per_peer) == sorted(NAMES), detail
    assert len(connections) == len(NAMES), f"a bot reconnected (or an extra connection): {detail}"
    assert all(conn.closed is None for conn in connections), detail
    for name in NAMES:
        assert len(reqs[name]) == 1, f"{name} sent {len(reqs[name])} REQs on its one connection: {detail}"
    assert not any(conn.of_kind("CLOSE") for conn in connections), detail
    # the room stayed steady: every pair connected throughout, no ICE restart, media flowing
    assert not dropped, f"pairs dropped during the window: {dropped[:10]}\n{detail}"
    for name in NAMES:
        for other, peer in after[name].items():
            assert peer["status"] == "connected" and peer["restarts"] == before[name][other]["restarts"], detail
            assert peer["audio_seconds"] > before[name][other]["audio_seconds"] + WINDOW_S / 2, (name, other, detail)
    # the budget, per peer: at most 3 events in 120 s (1.5/min), and its record kept alive (≥ 2)
    for name in NAMES:
        events = per_peer[name]
        per_minute = len(events) * 60 / WINDOW_S
        assert len(events) <= MAX_PER_WINDOW and per_minute <= BUDGET_PER_MINUTE, \
            f"{name} sent {len(events)} events in {WINDOW_S:.0f} s ({per_minute:.2f}/min): {detail}"
        assert breakdown[name]["presence"] >= MIN_PER_WINDOW, f"{name} stopped re-announcing: {detail}"
