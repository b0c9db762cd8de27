"""Debian's Janus (``/usr/bin/janus``) for tests: a config of the test's own, in a network namespace.

- :func:`write_config` writes a minimal config dir: only the VideoRoom and AudioBridge plugins and
  the WebSocket transport are *present* (the plugin/transport folders hold symlinks to just those
  ``.so`` files, so nothing else can load), no HTTP or admin API, no shipped secrets (no
  ``admin_secret``; the plugins' ``admin_key`` is a fresh random value, which also locks room
  creation through the API), only the rooms the test asks for, an ``rtp_port_range``, ICE on the one
  address given (``ice_enforce_list``), a chosen ``session_timeout``.
- :func:`start_janus` runs it by PID inside a given namespace (``ip netns exec NS setpriv`` as
  ``nobody``: unprivileged), logging to ``workdir/janus.log``, and waits until the WebSocket server
  is up. The namespace and address are parameters: the NAT lab's public side works as well.
- :class:`JanusNet` makes two namespaces joined by a veth pair — Janus on one side (``10.201.0.2``),
  the test's clients on the other (``10.201.0.1``). Janus skips loopback interfaces for ICE and
  aioice skips 127.0.0.1, so both need a real interface. Both ends live in namespaces the test made,
  so the root namespace's routes and addresses are untouched and parallel tests cannot collide.
  :meth:`JanusNet.entered` moves *this* process (its main thread, where the asyncio loop runs) into
  the client namespace for the test's duration: the suite's network guard allows RFC 1918 to a
  process outside the suite's namespace, and the peer connections' sockets are made there.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

JANUS = "/usr/bin/janus"
CLONE_NEWNET = 0x40000000
READY_LINE = "ebsockets server started"  # "Websockets server started (port N)"
PLUGINS = ("libjanus_videoroom.so", "libjanus_audiobridge.so")
TRANSPORTS = ("libjanus_websockets.so",)


def janus_missing() -> str | None:
    """Why Janus cannot run here (None when it can)."""
    if not os.path.exists(JANUS):
        return "Debian package janus is not installed: apt-get install janus"
    if os.geteuid() != 0:
        return "the Janus tests need root (network namespaces)"
    if not _lib_dir("plugins") or not _lib_dir("transports"):
        return "Janus' plugins or transports are not under /usr/lib/*/janus/"
    if shutil.which("ip") is None or shutil.which("setpriv") is None:
        return "ip (iproute2) and setpriv (util-linux) are needed"
    return None


def _lib_dir(kind: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/*/janus/{kind}"))
    return found[0] if found else None


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


@dataclass(frozen=True)
class VideoRoomSpec:
    room: int
    pin: str | None = None
    publishers: int = 16
    bitrate: int = 300_000


@dataclass(frozen=True)
class AudioBridgeSpec:
    room: int
    pin: str | None = None
    sampling_rate: int = 48_000


def _quote(text: str) -> str:
    if any(ch in text for ch in '"\\\n'):
        raise ValueError(f"refusing to write {text!r} into a Janus config")
    return f'"{text}"'


def write_config(confdir: Path, *, address: str, ws_port: int = 8188, session_timeout: int = 60,
                 rtp_port_range: tuple[int, int] = (20000, 20199), debug_level: int = 4,
                 videorooms: Sequence[VideoRoomSpec] = (), audiobridges: Sequence[AudioBridgeSpec] = ()) -> Path:
    """A minimal Janus config dir (readable by the unprivileged user Janus runs as)."""
    confdir.mkdir(parents=True, exist_ok=True)
    for kind, names in (("plugins", PLUGINS), ("transports", TRANSPORTS)):
        target = confdir / kind
        target.mkdir(exist_ok=True)
        source = _lib_dir(kind)
        assert source is not None
        for name in names:
            link = target / name
            if not link.exists():
                link.symlink_to(Path(source) / name)
    (confdir / "empty").mkdir(exist_ok=True)
    low, high = rtp_port_range
    (confdir / "janus.jcfg").write_text(f"""general: {{
\tconfigs_folder = {_quote(str(confdir))}
\tplugins_folder = {_quote(str(confdir / 'plugins'))}
\ttransports_folder = {_quote(str(confdir / 'transports'))}
\tevents_folder = {_quote(str(confdir / 'empty'))}
\tloggers_folder = {_quote(str(confdir / 'empty'))}
\tdebug_level = {debug_level}
\tserver_name = "sdparta-test"
\tsession_timeout = {session_timeout}
\treclaim_session_timeout = 0
}}
media: {{
\trtp_port_range = "{low}-{high}"
}}
nat: {{
\tnice_debug = false
\tice_enforce_list = {_quote(address)}
\tignore_mdns = true
}}
plugins: {{
}}
transports: {{
}}
events: {{
\tbroadcast = false
}}
""")
    (confdir / "janus.transport.websockets.jcfg").write_text(f"""general: {{
\tjson = "compact"
\tws = true
\tws_port = {ws_port}
\tws_ip = {_quote(address)}
\twss = false
}}
admin: {{
\tadmin_ws = false
\tadmin_wss = false
}}
""")
    admin_key = secrets.token_hex(16)  # never used: it only locks room creation through the API
    rooms = []
    for spec in videorooms:
        pin = f"\tpin = {_quote(spec.pin)}\n" if spec.pin else ""
        rooms.append(f"room-{spec.room}: {{\n\tdescription = \"sdparta test {spec.room}\"\n{pin}"
                     f"\tpublishers = {spec.publishers}\n\tbitrate = {spec.bitrate}\n\taudiocodec = \"opus\"\n"
                     f"\tvideocodec = \"vp8\"\n\tfir_freq = 10\n\trecord = false\n}}\n")
    (confdir / "janus.plugin.videoroom.jcfg").write_text(
        f"general: {{\n\tadmin_key = \"{admin_key}\"\n\tlock_rtp_forward = true\n}}\n" + "".join(rooms))
    rooms = []
    for spec in audiobridges:
        pin = f"\tpin = {_quote(spec.pin)}\n" if spec.pin else ""
        rooms.append(f"room-{spec.room}: {{\n\tdescription = \"sdparta test {spec.room}\"\n{pin}"
                     f"\tsampling_rate = {spec.sampling_rate}\n\trecord = false\n}}\n")
    (confdir / "janus.plugin.audiobridge.jcfg").write_text(
        f"general: {{\n\tadmin_key = \"{admin_key}\"\n\tlock_rtp_forward = true\n\tlock_play_file = true\n"
        f"\tlocal_ip = {_quote(address)}\n}}\n"
        + "".join(rooms))
    for path in [confdir, *confdir.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    return confdir


@dataclass
class JanusProcess:
    proc: subprocess.Popen[bytes]
    address: str
    ws_port: int
    log_path: Path
    confdir: Path

    @property
    def url(self) -> str:
        return f"ws://{self.address}:{self.ws_port}/"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL (a crash, as far as clients can tell)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.confdir, ignore_errors=True)


def start_janus(workdir: Path, *, netns: str, address: str, ws_port: int = 8188, session_timeout: int = 60,
                rtp_port_range: tuple[int, int] = (20000, 20199), videorooms: Sequence[VideoRoomSpec] = (),
                audiobridges: Sequence[AudioBridgeSpec] = (), user: str = "nobody", group: str = "nogroup",
                ready: float = 20.0) -> JanusProcess:
    """Run Janus in ``netns`` on ``address`` as ``user`` and wait for its WebSocket server."""
    workdir.mkdir(parents=True, exist_ok=True)
    # The unprivileged user must read the config: pytest's tmp dirs are root-only, so it lives apart.
    confdir = Path(tempfile.mkdtemp(prefix="sdparta-janus-"))
    write_config(confdir, address=address, ws_port=ws_port, session_timeout=session_timeout,
                 rtp_port_range=rtp_port_range, videorooms=videorooms, audiobridges=audiobridges)
    log_path = workdir / "janus.log"
    argv = ["ip", "netns", "exec", netns, "setpriv", f"--reuid={user}", f"--regid={group}", "--clear-groups",
            "--no-new-privs", JANUS, "-C", str(confdir / "janus.jcfg"), "-F", str(confdir), "-o"]
    with log_path.open("wb") as log_file:  # Janus logs to stdout; the file is opened by us
        proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = JanusProcess(proc, address, ws_port, log_path, confdir)
    deadline = time.monotonic() + ready
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if READY_LINE in server.log():
            return server
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"janus did not start its WebSocket server on {address}:{ws_port} "
                       f"(exit {proc.returncode}):\n{server.log_tail()}")


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@dataclass
class JanusNet:
    """Two namespaces and a veth pair: Janus' side (``server_ns``/``server_ip``) and the clients'."""

    subnet: str = "10.201.0"
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    made: list[str] = field(default_factory=list)

    @property
    def server_ns(self) -> str:
        return f"sdpj-{self.tag}-s"

    @property
    def client_ns(self) -> str:
        return f"sdpj-{self.tag}-c"

    @property
    def server_ip(self) -> str:
        return f"{self.subnet}.2"

    @property
    def client_ip(self) -> str:
        return f"{self.subnet}.1"

    def create(self) -> JanusNet:
        try:
            for ns in (self.server_ns, self.client_ns):
                _run("ip", "netns", "add", ns)
                self.made.append(ns)
                _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("ip", "link", "add", f"sj{self.tag}s", "netns", self.server_ns, "type", "veth", "peer", "name",
                 f"sj{self.tag}c", "netns", self.client_ns)
            for ns, ifname, ip in ((self.server_ns, f"sj{self.tag}s", self.server_ip),
                                   (self.client_ns, f"sj{self.tag}c", self.client_ip)):
                _run("ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", ifname)
                _run("ip", "-n", ns, "link", "set", ifname, "up")
        except Exception:
            self.close()
            raise
        return self

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Run this process's main thread in the client namespace for the block."""
        home = os.open("/proc/self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.client_ns}", os.O_RDONLY)
        try:
            _setns(target)
            yield
        finally:
            _setns(home)
            os.close(target)
            os.close(home)

    def close(self) -> None:
        for ns in reversed(self.made):
            _run("ip", "netns", "del", ns, check=False)
        self.made.clear()
