"""Issue 12's relay figures: sdparta over a local Nostr relay side by side with Trystero 0.25.4, in one run.

Usage: python tests/bench/run.py --only relay [--write docs/benchmarks.md]
   or: python tests/bench/relay_bench.py [--rounds 50] [--dead-rounds 10] [--write docs/benchmarks.md]
``--write`` replaces (or appends) the section "Relays and Trystero (DATE)" of that file, nothing else.

Setup (CI does not run this bench, so it installs nothing there):
- root, for a network namespace (``ip`` from iproute2);
- Debian's Chromium: ``apt-get install -y chromium`` (``/usr/bin/chromium``);
- the PyPI ``playwright`` package in the venv: ``.venv/bin/pip install playwright==1.65.2``. Never
  ``playwright install``: Debian's browser is driven through ``executable_path``;
- node and npm: the harness in ``tests/bench/trystero`` (trystero 0.25.4 and esbuild, exact pins, lock
  file committed) is installed with ``npm ci`` on first use and bundled with esbuild on every run;
- the test relay's own venv (PyPI ``nostr-relay`` 1.14, ``tests/support/nostr_relay.py``), made on first use.
Installs happen before the namespace exists; nothing inside it can reach a registry, or anything else.

Isolation. Chromium contacts update.googleapis.com and sends UDP probes to 8.8.8.8 even with
``--disable-component-update``, and Trystero falls back to 5 of its 28 built-in public relays when the relay
list is not where 0.25.4 reads it (``relayConfig.urls``). So everything measured (the relays, the page
server, Chromium, every sdparta process) runs in a network namespace of its own that has only ``lo``
(127.0.0.1, plus 127.0.0.2 because aioice never offers 127.0.0.1) and no route: ``ip route get`` to any
outside address fails in it, which the bench checks before it starts. The bench re-runs itself inside the
namespace (``ip netns exec``) and removes the namespace afterwards. Chromium runs with
``--allow-loopback-in-peer-connection`` and the pages' contexts hold camera/microphone permission, as a
call page does after ``getUserMedia``: without it Chromium gathers candidates only on the default route,
which a loopback-only namespace does not have, and no pair ever connects. The bundle is checked before
the run (relays come only from ``relayConfig.urls``; ``rtcConfig`` replaces the default STUN servers) and
every page records each WebSocket URL and each ``iceServers`` it used; any other than the local relay
and ``[]`` fails the bench.

Figures (medians; the baselines are measured in the same run):
- join time, "wait" mode: one peer joins, the other 3 s later; from the joiner's join (Trystero:
  ``joinRoom``; sdparta: ``Call.start()``) to both sides' ``onPeerJoin`` (Trystero) or both sides' data
  channel open (sdparta). "Together" mode: both join at the same instant, timed from the later join.
  Times are wall clock on both sides (``performance.timeOrigin + performance.now()``, ``time.time()``).
  Rounds interleave Trystero and sdparta (and both modes) so machine load hits all alike: a round
  measures each both-at-once pair while the waiting pairs' first peers sit in their rooms, then each
  joiner 3 s after its peer; one measurement at a time, each pair leaving its room right after its
  measurement (no call streams media during another's), the order rotated every round. A join is lost
  when nothing arrives within 10 s.
- sdparta peers are processes of their own (``relay_peers.py --peer``), each running one
  ``sdparta.engine.call.Call`` per round with a fresh identity in a fresh room; room keys are derived
  beforehand (``CallConfig.room_keys``, the KDF with one iteration: the KDF is not on the measured path).
  Media as ``sdparta bot`` defaults (test pattern + 440 Hz tone), so the offer is a real ~6 KB one.
- time to connected with one of two relays dead (killed: connection refused; silent: accepts TCP and never
  answers), listed first, against two live relays and against the portal transport, in the same rounds;
- events per peer per minute in a steady room of 4 ``sdparta bot`` processes over two relays, counted by a
  WebSocket proxy in front of each relay (EVENT messages the bots send), and registry writes per peer per
  minute for a room of 4 over the portal (push), from the bots' own request counters.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.util
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_tables import Row, format_table, put_section
from relay_peers import (
    LOST_AFTER,
    TRYSTERO,
    TRYSTERO_VERSION,
    PageServer,
    SdpartaPair,
    SdpartaPeer,
    Times,
    TrysteroPair,
    prepare_trystero,
    sleep_until,
)

BENCH = Path(__file__).resolve().parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ("--allow-loopback-in-peer-connection", "--disable-component-update")
SECTION = "## Relays and Trystero"

JOIN_ROUNDS = 50  # each round: one wait-mode and one together-mode join per system → 100 joins each
DEAD_ROUNDS = 10
WAIT_GAP = 3.0  # the joiner joins this long after the waiting peer
STAGGER = 0.3  # between the waiting peers' joins in one round
SETTLE = 0.3  # idle time before each measured join
BATCH = 10  # rounds per batch median
STEADY_SETTLE, STEADY_WINDOW = 30.0, 120.0


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# ============================================================================ setup checks
def relay_bench_unavailable() -> str | None:
    """Why this bench cannot run here (None when it can)."""
    if os.geteuid() != 0:
        return "needs root (everything runs in a network namespace with only loopback)"
    if shutil.which("ip") is None:
        return "ip is not installed: apt-get install iproute2"
    if not CHROMIUM.exists():
        return "Debian's chromium is not installed: apt-get install -y chromium"
    if importlib.util.find_spec("playwright") is None:
        return "PyPI playwright is missing: .venv/bin/pip install playwright==1.65.2 (never `playwright install`)"
    if shutil.which("npm") is None or shutil.which("node") is None:
        return "node and npm are needed for the Trystero harness: apt-get install -y nodejs npm"
    return None


# ============================================================================ the namespace
def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    from netlab.lab import run

    return run(*args, check=check)


class LoopbackNamespace:
    """A network namespace with only ``lo`` (127.0.0.1 and 127.0.0.2) and no route; removed on exit."""

    def __init__(self) -> None:
        self.name = f"sdprelay-{uuid.uuid4().hex[:6]}"

    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def __enter__(self) -> LoopbackNamespace:
        _run("ip", "netns", "add", self.name)
        try:
            _run(*self.prefix(), "ip", "link", "set", "lo", "up")
            _run(*self.prefix(), "ip", "addr", "add", "127.0.0.2/8", "dev", "lo")
            links = _run(*self.prefix(), "ip", "-o", "link", "show").stdout.strip().splitlines()
            if len(links) != 1 or ": lo:" not in links[0]:
                raise RuntimeError(f"namespace {self.name} has more than lo: {links}")
            for outside in ("8.8.8.8", "142.250.0.1", "2001:4860:4860::8888"):
                if _run(*self.prefix(), "ip", "route", "get", outside, check=False).returncode == 0:
                    raise RuntimeError(f"namespace {self.name} has a route to {outside}")
        except Exception:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        _run("ip", "netns", "del", self.name, check=False)



@dataclasses.dataclass
class Series:
    """The join times of one pair and mode."""

    label: str
    times: list[float] = dataclasses.field(default_factory=list)
    lost: int = 0
    skews: list[float] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def add(self, times: Times | None, together: bool, diagnose: Callable[[], str]) -> None:
        if times is None:
            self.lost += 1
            self.times.append(float("nan"))
            with contextlib.suppress(Exception):
                self.notes.append(diagnose())
            return
        join_a, join_b, at_a, at_b = times
        start = max(join_a, join_b) if together else join_b
        self.times.append(max(at_a, at_b) - start)
        self.skews.append(abs(join_a - join_b))

    @property
    def good(self) -> list[float]:
        return [t for t in self.times if t == t]

    @property
    def joins(self) -> int:
        return len(self.times)

    def batch_medians(self, per: int = BATCH) -> list[float]:
        return [median([t for t in self.times[i:i + per] if t == t]) for i in range(0, len(self.times), per)
                if any(t == t for t in self.times[i:i + per])]

    def summary(self) -> str:
        good = self.good
        if not good:
            return "no join arrived"
        return f"{median(good) * 1000:.0f} ms ({min(good) * 1000:.0f}–{max(good) * 1000:.0f})"

    def detail(self, together: bool = False) -> str:
        batches = self.batch_medians()
        text = f"median of {len(self.good)}"
        if together and self.skews:
            text += f" (the two joins {median(self.skews) * 1000:.1f} ms apart, median)"
        if len(batches) > 1:
            text += f", batch medians {min(batches) * 1000:.0f}–{max(batches) * 1000:.0f} ms"
        if self.lost:
            text += f", {self.lost} lost"
        return text



def run_rounds(rounds: int, waiting: list[tuple[Any, Series]], together: list[tuple[Any, Series]],
               tag: str, progress: Callable[[str], None]) -> None:
    """Interleaved rounds (see the module doc): each round one join per series, one measurement at a
    time, each pair left (its media stopped) right after its measurement, the order rotated per round."""
    def room(label: str, r: int) -> str:
        return f"{tag}-{label}-{r}-{uuid.uuid4().hex[:8]}"

    def rotated(group: list[tuple[Any, Series]], r: int) -> list[tuple[Any, Series]]:
        k = r % len(group) if group else 0
        return group[k:] + group[:k]

    pairs = waiting + together
    rooms = {id(pair): str(i) for i, (pair, _) in enumerate(pairs)}
    spent: Counter[str] = Counter()  # where a round's time goes (printed with the progress)

    @contextlib.contextmanager
    def phase(name: str) -> Iterator[None]:
        t0 = time.monotonic()
        yield
        spent[name] += time.monotonic() - t0

    def prepare(group: list[tuple[Any, Series]], r: int) -> None:
        for pair, _ in group:
            with phase(f"prepare {type(pair).__name__}"):
                pair.prepare(room(rooms[id(pair)], r))
        for pair, _ in group:
            with phase(f"ready {type(pair).__name__}"):
                pair.ready()

    def measure(pair: Any, series: Series, together: bool, join: Callable[[], None]) -> None:
        with phase("measured"):
            join()
            series.add(pair.result(), together, pair.diagnose)
        with phase(f"leave {type(pair).__name__}"):
            pair.teardown()

    prepare(pairs, 0)
    spent.clear()  # the first preparation includes starting the processes and pages
    began = time.monotonic()
    for r in range(rounds):
        time.sleep(SETTLE)
        a_joined: dict[int, float] = {}
        for pair, _ in rotated(waiting, r):
            a_joined[id(pair)] = time.time()
            pair.join(0)
            time.sleep(STAGGER)
        for pair, series in rotated(together, r):
            time.sleep(SETTLE)
            at = time.time() + 0.05

            def both(pair: Any = pair, at: float = at) -> None:
                pair.join(0, at)
                pair.join(1, at)

            measure(pair, series, True, both)
        if r + 1 < rounds:
            prepare(together, r + 1)
        done = time.time()
        for pair, series in rotated(waiting, r):
            with phase("idle until the joiner's turn"):
                sleep_until(max(a_joined[id(pair)] + WAIT_GAP, done + SETTLE))
            measure(pair, series, False, lambda pair=pair: pair.join(1))
            done = time.time()
        if r + 1 < rounds:
            prepare(waiting, r + 1)
        if (r + 1) % BATCH == 0 or r + 1 == rounds:
            progress(f"  round {r + 1}/{rounds}: " + "; ".join(
                f"{s.label} {median(s.good[-BATCH:]) * 1000:.0f} ms" for _, s in pairs)
                + f" | {(time.monotonic() - began) / (r + 1):.1f} s per round: "
                + ", ".join(f"{k} {v / (r + 1):.2f}" for k, v in spent.items()))


# ============================================================================ counting proxy
class CountingProxy:
    """A WebSocket proxy in front of a relay counting the messages clients send (EVENT, REQ, CLOSE…);
    other requests (NIP-11) are passed through. Runs its own loop in a thread."""

    def __init__(self, upstream_http: str) -> None:
        self.upstream = upstream_http.rstrip("/") + "/"
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.url = ""
        self._thread = threading.Thread(target=self._main, name="counting-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("counting proxy did not start")

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)

    def _count(self, text: str) -> None:
        with contextlib.suppress(ValueError, IndexError, TypeError):
            kind = str(json.loads(text)[0])
            with self._lock:
                self.counts[kind] += 1

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        import aiohttp
        from aiohttp import web

        self._session = aiohttp.ClientSession()
        ws_upstream = "ws" + self.upstream[4:]

        async def handle(request: web.Request) -> web.StreamResponse:
            if request.headers.get("Upgrade", "").lower() != "websocket":
                async with self._session.get(self.upstream, headers={"Accept": request.headers.get("Accept", "")}) as r:
                    return web.Response(body=await r.read(), status=r.status,
                                        content_type=r.content_type or "application/octet-stream")
            client = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
            await client.prepare(request)
            async with self._session.ws_connect(ws_upstream, max_msg_size=16 * 1024 * 1024) as relay:
                async def down() -> None:
                    async for msg in relay:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            await client.send_str(msg.data)
                        else:
                            break
                    await client.close()

                pump = asyncio.create_task(down())
                async for msg in client:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    self._count(msg.data)
                    await relay.send_str(msg.data)
                pump.cancel()
            return client

        app = web.Application()
        app.router.add_get("/", handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"ws://127.0.0.1:{port}/"

    def close(self) -> None:
        async def stop() -> None:
            await self._runner.cleanup()
            await self._session.close()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@contextlib.contextmanager
def silent_relay() -> Iterator[str]:
    """A "relay" that accepts TCP connections and never answers (a hung host): its ws:// URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield f"ws://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        sock.close()


# ============================================================================ the measurements (in the namespace)
def measure_joins(relay_url: str, page_url: str, browser: Any, work: Path, rounds: int,
                  progress: Callable[[str], None]) -> tuple[dict[str, Series], list[str]]:
    peers = [SdpartaPeer(f"j{i}", work / f"peer-j{i}.log") for i in range(4)]
    tw, tt = TrysteroPair(browser, page_url), TrysteroPair(browser, page_url)
    series = {k: Series(k) for k in ("trystero wait", "sdparta wait", "trystero together", "sdparta together")}
    relay = {"portals": [], "relays": [relay_url]}
    try:
        run_rounds(rounds,
                   [(tw, series["trystero wait"]), (SdpartaPair((peers[0], peers[1]), relay), series["sdparta wait"])],
                   [(tt, series["trystero together"]),
                    (SdpartaPair((peers[2], peers[3]), relay), series["sdparta together"])],
                   "join", progress)
    finally:
        for pair in (tw, tt):
            pair.close()
        for peer in peers:
            peer.close()
    sockets = tw.sockets | tt.sockets
    ice = tw.ice_servers | tt.ice_servers
    if sockets != {relay_url} or ice != {"[]"}:
        raise RuntimeError(f"Trystero used more than the local relay: sockets {sockets}, iceServers {ice}")
    checks = [f"run check: the {tw.page_count + tt.page_count} Trystero pages opened WebSockets only to the local "
              f"relay ({relay_url}) and every RTCPeerConnection had `iceServers: []`"]
    errors = tw.errors + tt.errors
    if errors:
        checks.append(f"page errors: {errors[:3]}")
    return series, checks


def measure_dead_relay(relays: Any, portal_url: str, work: Path, rounds: int,
                       progress: Callable[[str], None]) -> dict[str, Series]:
    alive = [relays.start("alive"), relays.start("alive")]
    killed = relays.start("killed")
    killed_url = killed.url
    killed.kill()
    with silent_relay() as silent_url:
        configs = {
            "two relays, both alive": {"portals": [], "relays": [alive[0].url, alive[1].url]},
            "two relays, first killed (connection refused)": {"portals": [], "relays": [killed_url, alive[0].url]},
            "two relays, first silent (accepts TCP, never answers)": {"portals": [], "relays": [silent_url,
                                                                                             alive[0].url]},
            "the portal (push), same rounds": {"portals": [portal_url]},
        }
        peers = [SdpartaPeer(f"d{i}", work / f"peer-d{i}.log") for i in range(2 * len(configs))]
        series = {label: Series(label) for label in configs}
        try:
            waiting = [(SdpartaPair((peers[2 * i], peers[2 * i + 1]), config), series[label])
                       for i, (label, config) in enumerate(configs.items())]
            run_rounds(rounds, waiting, [], "dead", progress)
        finally:
            for peer in peers:
                peer.close()
    return series


def measure_steady(relays: Any, portal_url: str, work: Path, progress: Callable[[str], None],
                   settle: float = STEADY_SETTLE, window: float = STEADY_WINDOW) -> dict[str, Any]:
    from support.procs import peers_by_name, start_bot, wait_for

    def connected(bots: list[Any]) -> bool:
        return all(sum(p["status"] == "connected" for p in peers_by_name(b.report()).values()) >= 3 for b in bots)

    steady = [relays.start("steady"), relays.start("steady")]
    proxies = [CountingProxy(r.http_url) for r in steady]
    bots: list[Any] = []
    try:
        relay_flags = [flag for proxy in proxies for flag in ("--relay", proxy.url)]
        relay_bots = [start_bot(work, "steady-relay", [], f"r{i}", tone=None, video="none", record=False,
                                extra=relay_flags) for i in range(4)]
        portal_bots = [start_bot(work, "steady-portal", [portal_url], f"p{i}", tone=None, video="none",
                                 record=False) for i in range(4)]
        bots = relay_bots + portal_bots
        wait_for(lambda: connected(relay_bots) and connected(portal_bots), 90, "both steady rooms connected")
        progress(f"  steady rooms connected; settling {settle:.0f} s, counting {window:.0f} s")
        time.sleep(settle)

        def reports() -> list[dict[str, Any]]:
            return [b.report() or {} for b in bots]

        before, counts0, t0 = reports(), [p.snapshot() for p in proxies], time.monotonic()
        time.sleep(window)
        after, counts1, elapsed = reports(), [p.snapshot() for p in proxies], time.monotonic() - t0
        per_relay = [{k: (c1[k] - c0[k]) / 4 / (elapsed / 60) for k in set(c1) | set(c0)}
                     for c0, c1 in zip(counts0, counts1, strict=True)]

        def rate(b: dict[str, Any], a: dict[str, Any], get: Callable[[dict[str, Any]], float]) -> float:
            span = a.get("written_at", 0) - b.get("written_at", 0)
            return (get(a) - get(b)) / span * 60 if span > 0 else float("nan")

        def sets(report: dict[str, Any]) -> float:
            return float(report.get("requests", {}).get("set", 0))

        def requests(report: dict[str, Any]) -> float:
            return float(sum(report.get("requests", {}).get(k, 0) for k in ("get", "set", "upload", "download")))

        def reported_sent(report: dict[str, Any]) -> float:
            return float(sum(n.get("sent", 0) for n in report.get("networks", []) if isinstance(n, dict)))

        still = all(connected(group) for group in (relay_bots, portal_bots))
        return {
            "events": [r.get("EVENT", 0.0) for r in per_relay],
            "reqs": [r.get("REQ", 0.0) for r in per_relay],
            "reported_events": median([rate(b, a, reported_sent) for b, a in zip(before[:4], after[:4], strict=True)]),
            "portal_sets": median([rate(b, a, sets) for b, a in zip(before[4:], after[4:], strict=True)]),
            "portal_requests": median([rate(b, a, requests) for b, a in zip(before[4:], after[4:], strict=True)]),
            "still_connected": still,
            "window": elapsed,
            "settle": settle,
        }
    finally:
        for bot in bots:
            bot.stop()
        for proxy in proxies:
            proxy.close()


def inner_main(out: Path, rounds: int, dead_rounds: int, steady_window: float) -> None:
    """Everything measured, run inside the namespace; writes {rows, notes} as JSON to ``out``."""
    from playwright.sync_api import sync_playwright
    from run import bench_floor

    from support.nostr_relay import RelayFactory
    from support.procs import start_portal

    def progress(text: str) -> None:
        print(text, flush=True)

    rows: list[Row] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="sdparta-relay-bench-") as tmp_name, RelayFactory(Path(tmp_name)) as relays:
        tmp = Path(tmp_name)
        relay = relays.start("join")
        portal = start_portal(tmp / "portal.sqlite3")
        server = PageServer(TRYSTERO)
        try:
            floor = bench_floor(5)
            rows.append(("aiortc pair in the namespace, SDP handed over in-process (floor)", f"{floor * 1000:.0f} ms",
                         "baseline, median of 5"))
            began = time.monotonic()
            progress("== relay: join times, Trystero and sdparta interleaved")
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS))
                try:
                    page_url = f"{server.url}/index.html?relay={urllib.parse.quote(relay.url)}"
                    series, checks = measure_joins(relay.url, page_url, browser, tmp, rounds, progress)
                finally:
                    browser.close()
            notes += checks
            notes.append(f"{rounds} join rounds took {time.monotonic() - began:.0f} s")
            for mode, what in (("wait", "joiner 3 s after the waiting peer"), ("together", "both join at once")):
                ts, sd = series[f"trystero {mode}"], series[f"sdparta {mode}"]
                issue = " (issue: 113 ms)" if mode == "wait" else " (issue: 137 ms)"
                rows.append((f"Trystero {TRYSTERO_VERSION}, one local relay, {what}: join → both `onPeerJoin`",
                             ts.summary(), ts.detail(mode == "together") + issue))
                verdict = "no join arrived"
                if sd.good and ts.good:
                    m, base = median(sd.good), median(ts.good)
                    verdict = (f"{m / base:.2f}× Trystero's in the same run ({(m - base) * 1000:+.1f} ms); "
                               f"target lower: {'met' if m < base else 'MISSED'}")
                rows.append((f"sdparta, same relay, {what}: join → data channel open on both sides", sd.summary(),
                             f"{sd.detail(mode == 'together')}; {verdict}"))
            for name in ("sdparta", "trystero"):
                lost = sum(s.lost for k, s in series.items() if k.startswith(name))
                joins = sum(s.joins for k, s in series.items() if k.startswith(name))
                target = f"; target 0 in 100: {'met' if lost == 0 else 'MISSED'}" if name == "sdparta" else ""
                rows.append((f"{'sdparta' if name == 'sdparta' else 'Trystero'}: lost joins (nothing within "
                             f"{LOST_AFTER:.0f} s), both modes", f"{lost} of {joins}", f"same rounds{target}"))
                notes += [f"lost {name} join: {n}" for s in series.values() if s.label.startswith(name)
                          for n in s.notes]
            progress("== relay: one of two relays dead")
            dead = measure_dead_relay(relays, portal.url, tmp, dead_rounds, progress)
            alive = sorted(dead["two relays, both alive"].good)
            base = median(alive)
            # noise: half the interquartile range of the both-alive joins, at least 30 ms
            quartiles = statistics.quantiles(alive, n=4) if len(alive) >= 2 else [base, base, base]
            noise = max(0.030, (quartiles[2] - quartiles[0]) / 2)
            for label, s in dead.items():
                if label == "two relays, both alive":
                    verdict = "baseline (same rounds)"
                else:
                    delta = median(s.good) - base
                    verdict = f"{delta * 1000:+.0f} ms vs both alive"
                    if label.startswith("two relays"):
                        verdict += (f"; target unchanged within noise (±{noise * 1000:.0f} ms, half the IQR of "
                                    f"both alive): {'met' if abs(delta) <= noise else 'MISSED'}")
                rows.append((f"sdparta, joiner 3 s after its peer, {label}: join → data channels open",
                             s.summary(), f"{s.detail()}; {verdict}"))
            progress("== relay: steady rooms of 4 (relays and portal side by side)")
            steady = measure_steady(relays, portal.url, tmp, progress, window=steady_window,
                                    settle=min(STEADY_SETTLE, steady_window / 2))
            events = " / ".join(f"{e:.2f}" for e in steady["events"])
            reqs = " / ".join(f"{e:.2f}" for e in steady["reqs"])
            ok = all(e <= 1.0 for e in steady["events"])
            reported = steady["reported_events"]
            rows.append(("steady room of 4 `sdparta bot`s over 2 relays: EVENTs per peer per minute, per relay",
                         events, f"counted at each relay (a proxy), {steady['window']:.0f} s window after "
                                 f"{steady['settle']:.0f} s settling; REQs {reqs}; bot reports "
                                 f"{reported:.2f} sent per peer per minute over both relays; "
                                 f"target ≤ 1 per relay: {'met' if ok else 'MISSED'}"
                                 + ("" if steady["still_connected"] else "; a pair dropped during the window")))
            rows.append(("steady room of 4 `sdparta bot`s over the portal (push): registry writes per peer per minute",
                         f"{steady['portal_sets']:.2f}", f"same window; all portal requests "
                                                          f"{steady['portal_requests']:.1f} per peer per minute"))
        finally:
            server.close()
            portal.stop()
    out.write_text(json.dumps({"rows": rows, "notes": notes}))


# ============================================================================ outer: namespace, report
def bench_relay(runs: int, rows: list[Row], *, rounds: int = JOIN_ROUNDS, dead_rounds: int = DEAD_ROUNDS,
                steady_window: float = STEADY_WINDOW, notes: list[str] | None = None) -> None:
    """Issue 12's relay figures (see the module doc); ``runs`` is unused: the counts are the issue's."""
    del runs
    if (reason := relay_bench_unavailable()) is not None:
        rows.append(("relays and Trystero", "not measured", reason))
        return
    from support.nostr_relay import install_relay

    install_relay()  # outside the namespace: pip may need the registry
    checks = prepare_trystero()
    began, load0 = time.monotonic(), os.getloadavg()[0]
    with LoopbackNamespace() as ns, tempfile.TemporaryDirectory(prefix="sdparta-relay-out-") as out_dir:
        out = Path(out_dir) / "result.json"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        cmd = [*ns.prefix(), sys.executable, str(Path(__file__).resolve()), "--inner", str(out),
               "--rounds", str(rounds), "--dead-rounds", str(dead_rounds), "--steady-window", str(steady_window)]
        proc = subprocess.Popen(cmd, env=env)
        try:
            code = proc.wait(timeout=3600)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise
        if code != 0 or not out.exists():
            raise RuntimeError(f"the relay bench failed inside the namespace (exit {code})")
        result = json.loads(out.read_text())
    rows += [tuple(r) for r in result["rows"]]  # type: ignore[misc]
    if notes is not None:
        notes += [f"namespace check: {ns.name} had only `lo` (127.0.0.1, 127.0.0.2) and no route to 8.8.8.8, "
                  "142.250.0.1 or 2001:4860:4860::8888", *checks, *result["notes"],
                  f"sdparta measured at {_revision()}; the whole bench took {time.monotonic() - began:.0f} s, "
                  f"load average {load0:.1f} at its start and {os.getloadavg()[0]:.1f} at its end (2 cores shared "
                  "with other work: compare figures of one run, not across runs)"]


def _revision() -> str:
    repo = BENCH.parents[1]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "tui"], cwd=repo, capture_output=True,
                           text=True).stdout.splitlines()
    return head.strip() + (f" (+ {len(dirty)} uncommitted files under tui/)" if dirty else "")


def write_section(path: Path, rows: list[Row], notes: list[str]) -> None:
    """Put the section "Relays and Trystero (DATE)" into ``path``."""
    put_section(path, SECTION, "`tests/bench/run.py --only relay` on this machine ({cores} cores), {date}: a local "
                "`nostr-relay` 1.14, Debian's Chromium driven by Playwright and sdparta processes, all in a network "
                "namespace with only loopback (see `tests/bench/relay_bench.py` for the setup and the method).",
                rows, notes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=JOIN_ROUNDS, help="join rounds (each: one join per series)")
    parser.add_argument("--dead-rounds", type=int, default=DEAD_ROUNDS)
    parser.add_argument("--steady-window", type=float, default=STEADY_WINDOW, help="seconds counted, steady rooms")
    parser.add_argument("--write", default=None, help="put the section into this markdown file")
    parser.add_argument("--inner", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner is not None:
        inner_main(Path(args.inner), args.rounds, args.dead_rounds, args.steady_window)
        return 0
    rows: list[Row] = []
    notes: list[str] = []
    bench_relay(0, rows, rounds=args.rounds, dead_rounds=args.dead_rounds, steady_window=args.steady_window,
                notes=notes)
    print(format_table(rows))
    print("\n".join(f"- {n}" for n in notes))
    if args.write:
        write_section(Path(args.write), rows, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
