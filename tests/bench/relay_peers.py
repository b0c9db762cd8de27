"""The two kinds of peer the relay bench times (relay_bench.py): Trystero pages in Chromium and sdparta
processes (this file run with ``--peer NAME``, one ``Call`` per round, commanded over stdin/stdout)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import http.server
import json
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BENCH = Path(__file__).resolve().parent
TRYSTERO = BENCH / "trystero"
TRYSTERO_VERSION = "0.25.4"
APP_ID = "sdparta-relay-bench"
LOST_AFTER = 10.0  # a join with nothing on either side within this is lost


def prepare_trystero() -> list[str]:
    """``npm ci`` when the pinned packages are not installed, bundle the page, check the bundle."""
    def version(package: str) -> str | None:
        manifest = TRYSTERO / "node_modules" / package / "package.json"
        with contextlib.suppress(OSError, ValueError):
            return str(json.loads(manifest.read_text()).get("version"))
        return None

    packages = ("trystero", "@trystero-p2p/nostr", "@trystero-p2p/core")
    if any(version(p) != TRYSTERO_VERSION for p in packages) or not (TRYSTERO / "node_modules/.bin/esbuild").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=TRYSTERO, check=True, timeout=900,
                       capture_output=True)
    subprocess.run(["npm", "run", "-s", "build", "--", "--log-level=warning"], cwd=TRYSTERO, check=True,
                   timeout=120)
    wrong = {p: version(p) for p in packages if version(p) != TRYSTERO_VERSION}
    if wrong:
        raise RuntimeError(f"the harness needs {TRYSTERO_VERSION} of {', '.join(packages)}; installed: {wrong}")
    return verify_bundle((TRYSTERO / "dist" / "page.js").read_text())


def verify_bundle(bundle: str) -> list[str]:
    """Check, in the bundled code itself, that the page can use no relay but the local one and no STUN
    server; returns what was verified (RuntimeError when anything is off)."""
    problems = []
    relay_source = re.search(r"getRelays = \(config, defaults, defaultN[^\n]*", bundle)
    if relay_source is None or not relay_source.group(0).split("=>", 1)[1].strip().startswith(
            "config.relayConfig?.urls ||"):
        problems.append("getRelays does not take config.relayConfig.urls first")
    uses = [m.start() for m in re.finditer(r"\bdefaultRelayUrls\b", bundle)]
    fallback = re.findall(r"getRelays\(config, defaultRelayUrls,", bundle)
    listed = re.search(r"var defaultRelayUrls = \[(.*?)\]\.map", bundle, re.S)
    public = re.findall(r'"([^"]+)"', listed.group(1)) if listed else []
    # the definition, the one fallback use, and the module's export list
    if len(fallback) != 1 or len(uses) > 3 or not public:
        problems.append(f"defaultRelayUrls is used outside getRelays' fallback ({len(uses)} references)")
    if not re.search(r"iceServers: defaultIceServers\.concat\(turnConfig \?\? \[\]\),\s*\.\.\.rtcConfig", bundle):
        problems.append("rtcConfig is not spread after the default iceServers (STUN servers would be added)")
    if "relayConfig: { urls: [relay] }" not in bundle or "rtcConfig: { iceServers: [] }" not in bundle:
        problems.append("the page does not pass relayConfig.urls and rtcConfig.iceServers")
    if "relayUrls" in bundle:
        problems.append("the bundle mentions relayUrls (ignored by 0.25.4)")
    if problems:
        raise RuntimeError("Trystero bundle check failed: " + "; ".join(problems))
    return [f"bundle check: Trystero {TRYSTERO_VERSION} reads relays only as `config.relayConfig?.urls || "
            f"<{len(public)} public defaults>` (getRelays, its one use of the defaults); the page passes "
            "`relayConfig.urls` = [the local relay] and `rtcConfig.iceServers` = [], which is spread after "
            "Trystero's 4 default STUN servers and so replaces them"]


# ============================================================================ page server
class PageServer:
    """Serves the harness directory on 127.0.0.1 (inside the namespace), quietly, from a thread."""

    def __init__(self, directory: Path) -> None:
        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                     functools.partial(Quiet, directory=str(directory)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, name="page-server", daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# ============================================================================ pairs
Times = tuple[float, float, float, float]  # join A, join B, arrival at A, arrival at B (unix seconds)


class TrysteroPair:
    """Two Trystero pages in browser contexts of their own; each run loads both pages afresh (a new
    document and a new Trystero instance; the contexts and their renderer processes are reused)."""

    def __init__(self, browser: Any, url: str) -> None:
        self.browser, self.url = browser, url
        self.contexts: list[Any] = []
        self.pages: list[Any] = []
        self.loaded = False
        self.room = ""
        self.at: float | None = None
        self.sockets: set[str] = set()
        self.ice_servers: set[str] = set()
        self.page_count = 0
        self.errors: list[str] = []

    def prepare(self, room: str) -> None:
        self.teardown()
        self.room = room
        while len(self.pages) < 2:
            context = self.browser.new_context(permissions=["camera", "microphone"])
            self.contexts.append(context)
            self.pages.append(context.new_page())
        for page in self.pages:  # both load at once
            page.goto(self.url, wait_until="commit")
        for page in self.pages:
            page.wait_for_function("window.benchJoin !== undefined", timeout=15000)
            self.page_count += 1
        self.loaded = True

    def ready(self) -> None:
        pass

    def join(self, side: int, at: float | None = None) -> None:
        self.at = at
        self.pages[side].evaluate("([a, r, t]) => benchJoin(a, r, t)",
                                  [APP_ID, self.room, at * 1000 if at is not None else None])

    def result(self) -> Times | None:
        if self.at is not None:
            sleep_until(self.at + 0.005)  # a scheduled join has happened by then (no polling meanwhile)
        joins = [p.evaluate("bench.joinAt") for p in self.pages]
        if any(j is None for j in joins):
            return None
        arrivals = []
        for page in self.pages:
            left_ms = max(0.0, max(joins) + LOST_AFTER * 1000 - time.time() * 1000)
            arrivals.append(page.evaluate("t => benchWaitPeer(t)", left_ms))
        if any(a is None for a in arrivals):
            return None
        return joins[0] / 1000, joins[1] / 1000, arrivals[0] / 1000, arrivals[1] / 1000

    def diagnose(self) -> str:
        return json.dumps([p.evaluate("({joinAt: bench.joinAt, peers: bench.peerJoins.length, "
                                      "errors: bench.errors})") for p in self.pages])

    def teardown(self) -> None:
        """Record what the pages connected to, then leave the room (``room.leave()``: its peer
        connections close; the next ``prepare`` loads the pages afresh)."""
        if not self.loaded:
            return
        for page in self.pages:
            with contextlib.suppress(Exception):
                seen = page.evaluate("({s: bench.sockets, i: bench.iceServers, e: bench.errors})")
                self.sockets.update(seen["s"])
                self.ice_servers.update(seen["i"])
                self.errors += seen["e"]
                page.evaluate("benchLeave()")
        self.loaded = False

    def close(self) -> None:
        self.teardown()
        for context in self.contexts:
            with contextlib.suppress(Exception):
                context.close()
        self.contexts, self.pages = [], []


class SdpartaPeer:
    """One sdparta peer process (this file with ``--peer``), running one Call per round."""

    def __init__(self, name: str, log: Path) -> None:
        self.name = name
        self.messages: queue.Queue[list[str]] = queue.Queue()
        self.seen: dict[tuple[str, str], list[str]] = {}
        with log.open("w") as log_file:
            self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--peer", name],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file,
                                         text=True, bufsize=1)
        threading.Thread(target=self._read, name=f"peer-{name}", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.messages.put(line.split())
        self.messages.put(["exited"])

    def send(self, *words: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(" ".join(words) + "\n")
        self.proc.stdin.flush()

    def wait(self, kind: str, gen: str, timeout: float) -> list[str] | None:
        """The message ``kind`` for call ``gen`` (its remaining words), None after ``timeout``."""
        deadline = time.monotonic() + timeout
        while (kind, gen) not in self.seen:
            try:
                words = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if words[0] == "exited":
                raise RuntimeError(f"sdparta peer {self.name} exited ({self.proc.poll()})")
            if words[0] == "error":
                raise RuntimeError(f"sdparta peer {self.name}: {' '.join(words[1:])}")
            if len(words) >= 2:
                self.seen[(words[0], words[1])] = words[2:]
        return self.seen[(kind, gen)]

    def close(self) -> None:
        from support.procs import stop_process

        with contextlib.suppress(Exception):
            self.send("quit")
        with contextlib.suppress(Exception):
            self.proc.wait(20)
        stop_process(self.proc)


class SdpartaPair:
    """Two sdparta peer processes; ``config`` holds the CallConfig fields of this pair's calls."""

    def __init__(self, peers: tuple[SdpartaPeer, SdpartaPeer], config: dict[str, Any]) -> None:
        self.peers, self.config = peers, config
        self.gen = 0
        self.active = False

    @property
    def tag(self) -> str:
        return str(self.gen)

    def prepare(self, room: str) -> None:
        self.teardown()
        self.gen += 1
        for i, peer in enumerate(self.peers):
            config = {"room": room, "name": f"{'ab'[i]}{self.gen}", "video": "pattern", "audio": "tone:440",
                      "connect_timeout": 30.0, **self.config}
            peer.send("call", self.tag, json.dumps(config, separators=(",", ":")))
        self.active = True

    def ready(self) -> None:
        for peer in self.peers:
            if peer.wait("prepared", self.tag, 60) is None:
                raise RuntimeError(f"sdparta peer {peer.name} did not prepare its call")

    def join(self, side: int, at: float | None = None) -> None:
        self.peers[side].send("join", self.tag, repr(at or 0.0))

    def result(self) -> Times | None:
        joins = []
        for peer in self.peers:
            joined = peer.wait("joined", self.tag, 15)
            if joined is None:
                return None
            joins.append(float(joined[0]))
        arrivals = []
        for peer in self.peers:
            opened = peer.wait("open", self.tag, max(0.0, max(joins) + LOST_AFTER - time.time()))
            if opened is None:
                return None
            arrivals.append(float(opened[0]))
        return joins[0], joins[1], arrivals[0], arrivals[1]

    def diagnose(self) -> str:
        states = []
        for peer in self.peers:
            peer.send("diag", self.tag)
            states.append((peer.wait("diag", self.tag, 5) or ["?"])[0])
        return " | ".join(states)

    def teardown(self) -> None:
        if not self.active:
            return
        for peer in self.peers:
            peer.send("leave", self.tag)
        for peer in self.peers:
            peer.wait("left", self.tag, 30)
        self.active = False


def sleep_until(t: float) -> None:
    delay = t - time.time()
    if delay > 0:
        time.sleep(delay)


# ============================================================================ peer process
def peer_main(name: str) -> int:
    """One sdparta peer: commands on stdin (call GEN CONFIG, join GEN AT, diag GEN, leave GEN, quit),
    answers on stdout (prepared/joined/open/diag/left GEN …). ``open`` is the first data channel of the
    current call reaching "open" (aiortc's state setter, timed before its handlers run)."""
    import aiortc.rtcdatachannel

    from sdparta.engine.call import Call, CallConfig
    from sdparta.room.keys import RoomKeys

    lock = threading.Lock()

    def say(*words: object) -> None:
        with lock:
            sys.stdout.write(" ".join(str(w) for w in words) + "\n")
            sys.stdout.flush()

    current: dict[str, Any] = {"gen": None, "opened": False}
    original = aiortc.rtcdatachannel.RTCDataChannel._setReadyState

    def timed(channel: Any, state: str) -> None:
        t = time.time()
        first = state == "open" and channel.readyState != "open" and current["gen"] is not None \
            and not current["opened"]
        if first:
            current["opened"] = True
        original(channel, state)
        if first:
            say("open", current["gen"], repr(t))

    aiortc.rtcdatachannel.RTCDataChannel._setReadyState = timed  # type: ignore[method-assign]
    fields = {f.name for f in dataclasses.fields(CallConfig)}
    call: Call | None = None
    gen = ""
    for line in sys.stdin:
        cmd, _, rest = line.strip().partition(" ")
        try:
            if cmd == "call":
                gen, _, raw = rest.partition(" ")
                config = json.loads(raw)
                unknown = set(config) - fields
                if unknown:
                    say("error", f"CallConfig has no {', '.join(sorted(unknown))} (this sdparta lacks it)")
                    continue
                keys = RoomKeys.derive(config["room"], "", iterations=1)
                current.update(gen=None, opened=False)
                call = Call(CallConfig(**config, room_keys=keys))
                say("prepared", gen)
            elif cmd == "join" and call is not None:
                at = float(rest.split()[1])
                sleep_until(at)
                current["gen"] = gen
                t = time.time()
                call.start()
                say("joined", gen, repr(t))
            elif cmd == "diag" and call is not None:
                snap = call.snapshot()
                peers = ",".join(f"{p.name}:{p.status}:{p.connection_state}:{p.failure_reason or ''}"
                                 for p in snap.peers)
                say("diag", gen, f"{name}:{snap.status}:[{peers}]".replace(" ", "_"))
            elif cmd == "leave":
                current["gen"] = None
                if call is not None:
                    call.stop()
                call = None
                say("left", rest.strip())
            elif cmd == "quit":
                break
        except Exception as exc:
            say("error", f"{type(exc).__name__}: {exc}".replace("\n", " "))
    if call is not None:
        call.stop()
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--peer":
        sys.exit(f"usage: {sys.argv[0]} --peer NAME   (started by relay_bench.py)")
    raise SystemExit(peer_main(sys.argv[2]))
