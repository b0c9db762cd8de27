"""Real Nostr relays for tests, as processes on 127.0.0.1: two independent implementations.

``implementation="python"`` (the default) is the PyPI ``nostr-relay`` 1.14; ``"ts"`` is CodyTseng's
TypeScript ``@nostr-relay/core`` 0.0.40 with its SQLite event repository (better-sqlite3, built from
source) behind the small ``ws`` server in ``nostr_relay_ts/server.mjs``, pinned by its
``package-lock.json`` and installed with ``npm ci`` into ``nostr_relay_ts/node_modules``. ``--install``
prepares both. Where the TS relay differs from the PyPI one (both observed by the tests): it checks
ids and signatures, never stores ephemeral events, keeps one version of an addressable event (the
newest; an older one is answered ``OK true "duplicate: …"``), refuses expired events
(``reject: event is expired``) and events more than 10 minutes off the clock, advertises its limits
in NIP-11 (``limitation``), registers a REQ's live subscription only after its EOSE (an event stored
in between reaches that subscriber neither way), serves a REQ whose filter it answered less than 1 s
ago from a cache, silently drops a client's oldest subscription past its limit, and closes the
socket (1009) on a message over ``max_message_length``.

The PyPI relay:

It lives in a virtualenv of its own (``relay_venv()``): its dependencies (aiodns, uvloop, brotli,
zstd, SQLAlchemy, pydantic, …) would otherwise land in sdparta's venv, and aiodns alone silently
switches aiohttp's resolver for the code under test. ``.ci/run`` prepares it
(``python tests/support/nostr_relay.py --install``); a developer's first test run does the same.

Each relay gets its own config (SQLite in the test's directory, content limit raised from 4096 to
256 Ki characters, 256 subscriptions per connection instead of 32) and a free port, is waited for
until its NIP-11 document answers, and is stopped by PID. Deviations from NIP-01 this relay has
(DESIGN.md §7), which the client must survive: it stores and replays ephemeral events, returns an
older addressable event beside a newer one, serves expired events, never checks that an event's id
is the hash of its fields (it checks the signature over the recomputed hash, but stores and serves
the id it was given), answers a refused EVENT with an OK whose id is empty, and reports a REQ over
its subscription limit with a NOTICE instead of CLOSED. Its NIP-11 document has no ``limitation``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from support.netguard import unguarded_env
from support.procs import free_port, stop_process

REPO = Path(__file__).resolve().parents[2]
IMPLEMENTATIONS = ("python", "ts")
#: the TypeScript relay's project (server.mjs, package.json, package-lock.json; node_modules installed)
TS_RELAY_DIR = Path(__file__).resolve().parent / "nostr_relay_ts"
TS_RELAY_VERSION = "0.0.40"
RELAY_VERSION = "1.14"
#: Everything the relay needs, pinned to the set it was tested with (`pip freeze` of a fresh install,
#: 2026-12): a new release of any of them must not change the relay under the tests.
RELAY_PACKAGES = (
    f"nostr-relay=={RELAY_VERSION}", "aiodns==4.0.4", "aiohappyeyeballs==2.7.1", "aiohttp==3.14.5",
    "aionostr==0.20.0", "aiosignal==1.4.0", "aiosqlite==0.22.1", "alembic==1.20.1", "annotated-types==0.8.0",
    "anyio==4.16.0", "attrs==26.1.0", "backports.zstd==1.8.0", "brotli==1.2.1", "cffi==2.1.1", "click==8.5.1",
    "coincurve==21.0.0", "cryptography==50.0.2", "falcon==4.4.0", "frozenlist==1.8.0", "greenlet==3.5.6",
    "gunicorn==27.0.1", "h11==0.16.0", "httptools==0.9.0", "idna==3.20", "Mako==1.4.3", "MarkupSafe==3.0.4",
    "multidict==7.2.1", "propcache==0.5.4", "pycares==5.2.1", "pycparser==3.12", "pydantic==2.14.4",
    "pydantic_core==2.50.5", "python-dotenv==1.2.4", "python-rapidjson==1.25", "PyYAML==6.0.4",
    "setproctitle==1.3.8", "SQLAlchemy==2.1.9", "typing-inspection==0.4.5", "typing_extensions==4.16.0",
    "uvicorn==0.54.0", "uvloop==0.23.0", "watchfiles==1.3.0", "websockets==17.4", "yarl==1.25.1",
)
CONTENT_LIMIT = 256 * 1024
SUBSCRIPTION_LIMIT = 256


def relay_venv() -> Path:
    """Where the relay's own virtualenv lives (``SDPARTA_NOSTR_RELAY_VENV`` overrides)."""
    default = REPO / ".pytest_cache" / f"nostr-relay-{RELAY_VERSION}-venv"
    return Path(os.environ.get("SDPARTA_NOSTR_RELAY_VENV", default))


def _marker(venv: Path) -> Path:
    return venv / "sdparta-installed.json"


def install_relay(venv: Path | None = None, *, quiet: bool = True) -> Path:
    """Create the relay's venv once (a lock makes concurrent callers wait); returns its ``nostr-relay``.

    pip reaches the package registry, as ``.ci/run``'s own install does: it runs without the
    network guard's hook; nothing else here does."""
    venv = venv or relay_venv()
    exe = venv / "bin" / "nostr-relay"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        wanted = {"packages": list(RELAY_PACKAGES), "python": sys.version.split()[0]}
        with contextlib.suppress(OSError, ValueError):
            if exe.exists() and json.loads(_marker(venv).read_text()) == wanted:
                return exe
        env = unguarded_env()
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, env=env, timeout=300)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
               *(["-q"] if quiet else []), *RELAY_PACKAGES]
        result = subprocess.run(pip, env=env, capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            raise RuntimeError(f"installing nostr-relay failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        _marker(venv).write_text(json.dumps(wanted))
    return exe


def _ts_marker() -> Path:
    return TS_RELAY_DIR / "node_modules" / ".sdparta-installed.json"


def _ts_wanted() -> dict[str, str]:
    lock = (TS_RELAY_DIR / "package-lock.json").read_bytes()
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    return {"package-lock": hashlib.sha256(lock).hexdigest(), "node": node}


def install_ts_relay(*, quiet: bool = True) -> Path:
    """``npm ci`` the TypeScript relay once (a lock makes concurrent callers wait; a marker holding the
    lockfile's hash and node's version makes a second call instant); returns its ``server.mjs``.

    better-sqlite3 is built from source (node-gyp: gcc, g++, make, python3): its prebuilt binaries
    are on GitHub, which CI cannot reach. npm reaches its registry, as pip does for the PyPI relay:
    it runs without the network guard's hook."""
    server = TS_RELAY_DIR / "server.mjs"
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise RuntimeError("the TypeScript test relay needs node (>= 20) and npm on PATH")
    with open(TS_RELAY_DIR / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        wanted = _ts_wanted()
        with contextlib.suppress(OSError, ValueError):
            if json.loads(_ts_marker().read_text()) == wanted:
                return server
        env = {**unguarded_env(), "npm_config_build_from_source": "true", "npm_config_audit": "false",
               "npm_config_fund": "false", "npm_config_update_notifier": "false"}
        npm = ["npm", "ci", *(["--loglevel=error"] if quiet else [])]
        result = subprocess.run(npm, cwd=TS_RELAY_DIR, env=env, capture_output=True, text=True, timeout=1800)
        native = TS_RELAY_DIR / "node_modules" / "better-sqlite3" / "build" / "Release" / "better_sqlite3.node"
        if result.returncode != 0 or not native.exists():
            raise RuntimeError(f"installing the TypeScript nostr relay (npm ci in {TS_RELAY_DIR}) failed"
                               f"{'' if native.exists() else ' (better-sqlite3 was not built)'}:\n"
                               f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        _ts_marker().write_text(json.dumps(wanted))
    return server


def install(implementation: str = "python", *, quiet: bool = True) -> Path:
    """Install one implementation; returns what ``RelayProcess`` runs (an executable or server.mjs)."""
    if implementation == "python":
        return install_relay(quiet=quiet)
    if implementation == "ts":
        return install_ts_relay(quiet=quiet)
    raise ValueError(f"unknown relay implementation {implementation!r}: one of {IMPLEMENTATIONS}")


def relay_config(data: Path, port: int, *, host: str = "127.0.0.1", rate_limits: dict[str, Any] | None = None,
                 extra: dict[str, Any] | None = None) -> str:
    """nostr-relay's config for a relay storing in ``data`` and listening on ``host:port``."""
    conf: dict[str, Any] = {
        "DEBUG": False,
        "relay_name": "sdparta test relay",
        "relay_description": "started by sdparta's tests",
        "storage": {
            "sqlalchemy.url": f"sqlite+aiosqlite:///{data / 'nostr.sqlite3'}",
            "validators": ["nostr_relay.validators.is_not_too_large", "nostr_relay.validators.is_signed",
                           "nostr_relay.validators.is_recent"],
        },
        "gunicorn": {"bind": f"{host}:{port}", "host": host, "loglevel": "warning"},
        "authentication": {"enabled": False},
        "verification": {"nip05_verification": "disabled"},
        "max_event_size": CONTENT_LIMIT,  # the content limit (characters); 4096 by default
        "subscription_limit": SUBSCRIPTION_LIMIT,  # per connection; 32 by default
        "message_timeout": 1800,
        "logging": {
            "version": 1,
            "formatters": {"plain": {"format": "%(asctime)s %(name)s %(levelname)s %(message)s"}},
            "handlers": {"out": {"class": "logging.StreamHandler", "formatter": "plain",
                                 "stream": "ext://sys.stdout"}},
            "root": {"level": "INFO", "handlers": ["out"]},
        },
    }
    if rate_limits is not None:
        conf["rate_limits"] = rate_limits
    conf.update(extra or {})
    return json.dumps(conf, indent=1)  # YAML is a superset of JSON: no yaml dependency here


# NIP-11 asked from inside another namespace (RelayProcess.argv_prefix)
_NIP11 = """
import json, sys, urllib.request
req = urllib.request.Request(sys.argv[1], headers={"Accept": "application/nostr+json"})
with urllib.request.urlopen(req, timeout=2) as resp:
    print(json.dumps(json.loads(resp.read())))
"""


@dataclass
class RelayProcess:
    """One running relay; ``url`` is its websocket URL, ``db`` its SQLite file. For the TS relay
    ``exe`` is its server.mjs and ``config`` a JSON file of server.mjs options (its limits)."""

    data: Path
    port: int
    config: Path
    exe: Path
    proc: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"
    #: run the relay (and its NIP-11 check) through this, e.g. ``ip netns exec NS`` for a lab namespace
    argv_prefix: tuple[str, ...] = ()
    implementation: str = "python"
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.data / "relay.log"

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def db(self) -> Path:
        return self.data / "nostr.sqlite3"

    @property
    def name(self) -> str:
        return "nostr-relay (PyPI)" if self.implementation == "python" else "@nostr-relay/core (TS)"

    def argv(self) -> list[str]:
        if self.implementation == "ts":
            options = json.loads(self.config.read_text())
            flags = [arg for key, value in options.items() for arg in (f"--{key}", str(value))]
            return ["node", str(self.exe), "--host", self.host, "--port", str(self.port), "--db", str(self.db),
                    *flags]
        return [str(self.exe), "-c", str(self.config), "serve", "--use-uvicorn"]

    def start(self, timeout: float = 90.0) -> RelayProcess:
        """Run the relay and wait until its NIP-11 document answers."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([*self.argv_prefix, *self.argv()],
                                         stdout=log, stderr=subprocess.STDOUT, cwd=self.data)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            if self.info() is not None:
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer within {timeout:.0f} s:\n{self.log()[-3000:]}")

    def info(self) -> dict[str, Any] | None:
        """The relay's NIP-11 document, or None when it does not answer (asked from the relay's own
        namespace when it runs in another one: this process cannot, and should not, reach it)."""
        if self.argv_prefix:
            result = subprocess.run([*self.argv_prefix, sys.executable, "-c", _NIP11, self.http_url],
                                    capture_output=True, text=True, timeout=15)
            return json.loads(result.stdout) if result.returncode == 0 else None
        request = urllib.request.Request(self.http_url, headers={"Accept": "application/nostr+json"})
        try:
            with urllib.request.urlopen(request, timeout=2) as resp:
                return json.loads(resp.read())
        except (OSError, urllib.error.URLError, ValueError):
            return None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def restart(self) -> RelayProcess:
        """Stop and start again on the same port with the same database."""
        self.stop()
        return self.start()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stored_events(self) -> list[dict[str, Any]]:
        """Every event in the relay's database, as stored (hex fields hexed), e.g. for privacy checks."""
        if self.implementation == "ts":
            # @nostr-relay/event-repository-sqlite's schema: hex TEXT columns, tags as JSON (and a copy of
            # searchable content in events_fts, generic_tags holding "name:value" per single-letter tag)
            with contextlib.closing(sqlite3.connect(self.db, timeout=30)) as db:  # WAL: a reader needs -shm
                rows = db.execute("SELECT id, pubkey, created_at, kind, tags, content, sig FROM events").fetchall()
            return [{"id": r[0], "pubkey": r[1], "created_at": r[2], "kind": r[3], "tags": json.loads(r[4]),
                     "content": r[5], "sig": r[6]} for r in rows]
        with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT id, pubkey, created_at, kind, tags, content, sig FROM events").fetchall()
        return [{"id": r[0].hex(), "pubkey": r[1].hex(), "created_at": r[2], "kind": r[3], "tags": json.loads(r[4]),
                 "content": r[5], "sig": r[6].hex()} for r in rows]


#: server.mjs's limits, advertised in its NIP-11 and enforced (a message over the first closes the
#: socket): above strfry's 64 KiB, below our hard cap; subscriptions raised as the PyPI relay's are
TS_DEFAULTS = {"max-message-length": 128 * 1024, "max-content-length": 96 * 1024,
               "max-subscriptions": SUBSCRIPTION_LIMIT}


def start_relay(data: Path, *, port: int = 0, rate_limits: dict[str, Any] | None = None,
                extra_config: dict[str, Any] | None = None, host: str = "127.0.0.1",
                argv_prefix: tuple[str, ...] = (), implementation: str = "python") -> RelayProcess:
    """Configure and start one relay in ``data`` (created); ``rate_limits`` as in nostr-relay's config,
    e.g. ``{"ip": {"EVENT": "2/s"}}`` (PyPI relay only: the TS one has none); ``extra_config`` is merged
    into nostr-relay's config, or for the TS relay into server.mjs's options (``TS_DEFAULTS``, and
    ``filter-cache-ms``: its REQ result cache, 1000 ms as the library's default unless given);
    ``argv_prefix`` runs it elsewhere (``ip netns exec NS``)."""
    exe = install(implementation)
    data.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    if implementation == "ts":
        if rate_limits is not None:
            raise ValueError("the TypeScript relay has no rate limits")
        unknown = set(extra_config or {}) - set(TS_DEFAULTS) - {"filter-cache-ms"}
        if unknown:
            raise ValueError(f"unknown TypeScript relay options {sorted(unknown)}: {sorted(TS_DEFAULTS)}")
        config = data / "server-options.json"
        config.write_text(json.dumps({**TS_DEFAULTS, **(extra_config or {})}))
    else:
        config = data / "config.yaml"
        config.write_text(relay_config(data, port, host=host, rate_limits=rate_limits, extra=extra_config))
    return RelayProcess(data, port, config, exe, host=host, argv_prefix=argv_prefix,
                        implementation=implementation).start()


class RelayFactory:
    """Starts relays in a test's directory and stops every one of them at the end; ``implementation``
    is the default for ``start`` (which may name another)."""

    def __init__(self, workdir: Path, implementation: str = "python") -> None:
        self.workdir = workdir
        self.implementation = implementation
        self.relays: list[RelayProcess] = []

    def start(self, name: str = "relay", **options: Any) -> RelayProcess:
        options.setdefault("implementation", self.implementation)
        relay = start_relay(self.workdir / f"{name}-{len(self.relays)}", **options)
        self.relays.append(relay)
        return relay

    def __enter__(self) -> RelayFactory:
        return self

    def __exit__(self, *exc: object) -> None:
        for relay in self.relays:
            with contextlib.suppress(Exception):
                relay.stop()


if __name__ == "__main__":
    if sys.argv[1:] != ["--install"]:
        sys.exit(f"usage: {sys.argv[0]} --install   (creates {relay_venv()} and {TS_RELAY_DIR / 'node_modules'})")
    for implementation in IMPLEMENTATIONS:
        started = time.monotonic()
        print(implementation, install(implementation, quiet=True), f"({time.monotonic() - started:.1f} s)")


# ---------------------------------------------------------------- a scriptable fake relay
Handler = Any  # async (FakeRelay, ws, message list) -> None


class FakeRelay:
    """A tiny aiohttp relay for what the real one never does (rate-limited:, blocked:, CLOSED, junk…).

    ``on_message`` decides the answer to each client message; by default EVENT gets ``OK true``, REQ
    gets the stored events matching nothing but EOSE. Every message received is kept in ``received``
    and every websocket in ``sockets``; ``nip11`` is served to ``Accept: application/nostr+json``."""

    def __init__(self, on_message: Handler | None = None, nip11: Any = ...) -> None:
        self.on_message = on_message or FakeRelay.accept_all
        # a dict is served as JSON, a str as is, None as 404
        self.nip11: Any = {"name": "fake relay", "supported_nips": [1, 11]} if nip11 is ... else nip11
        self.received: list[list[Any]] = []
        self.sockets: list[Any] = []
        self.connections = 0
        self.url = ""
        self._runner: Any = None

    @staticmethod
    async def accept_all(relay: FakeRelay, ws: Any, msg: list[Any]) -> None:
        if msg[0] == "EVENT":
            await ws.send_json(["OK", msg[1]["id"], True, ""])
        elif msg[0] == "REQ":
            await ws.send_json(["EOSE", msg[1]])

    async def start(self) -> FakeRelay:
        from aiohttp import web

        async def handle(request: web.Request) -> web.StreamResponse:
            if request.headers.get("Upgrade", "").lower() != "websocket":
                if request.headers.get("Accept") == "application/nostr+json":
                    if self.nip11 is None:
                        raise web.HTTPNotFound()
                    if isinstance(self.nip11, str):
                        return web.Response(text=self.nip11, content_type="application/nostr+json")
                    return web.json_response(self.nip11, content_type="application/nostr+json")
                return web.Response(text="a fake nostr relay")
            ws = web.WebSocketResponse(max_msg_size=4 * 1024 * 1024)
            await ws.prepare(request)
            self.connections += 1
            self.sockets.append(ws)
            async for frame in ws:
                if frame.type != web.WSMsgType.TEXT:
                    continue
                msg = json.loads(frame.data)
                self.received.append(msg)
                await self.on_message(self, ws, msg)
            return ws

        app = web.Application()
        app.router.add_get("/", handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"ws://127.0.0.1:{port}/"
        return self

    def messages(self, kind: str) -> list[list[Any]]:
        return [m for m in self.received if m and m[0] == kind]

    async def drop_connections(self) -> None:
        for ws in list(self.sockets):
            with contextlib.suppress(Exception):
                await ws.close()
        self.sockets.clear()

    async def broadcast(self, text: str) -> None:
        for ws in list(self.sockets):
            if not ws.closed:
                await ws.send_str(text)

    async def stop(self) -> None:
        await self.drop_connections()
        if self._runner is not None:
            await self._runner.cleanup()
