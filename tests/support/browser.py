"""Debian's Chromium for tests, driven by the PyPI ``playwright`` package through ``executable_path``
(never ``playwright install``), always inside a network namespace the test made and removes.

Chromium reaches out by itself (the component updater, WebRTC's UDP probes to 8.8.8.8) even with
``--disable-component-update``: it runs only in a namespace with no route out. :class:`IsolatedNamespace`
is the simplest such namespace, only ``lo`` — enough for a page served from 127.0.0.1 inside it (a
secure context, so WebCrypto works). Chromium runs through a wrapper script (``ip netns exec NS
chromium "$@"``) given to playwright as ``executable_path``: playwright talks to it over a pipe, so the
test process stays where it is. tests/support/browser_pair.py builds two namespaces joined by a veth
pair on the same helpers, for WebRTC between Chromium and aiortc.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
BASE_ARGS = ("--disable-component-update", "--no-first-run", "--disable-background-networking")
FAKE_MEDIA_ARGS = ("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream")
#: addresses a namespace must have no route to (a public resolver, a Google front end)
OUTSIDE = ("8.8.8.8", "142.250.0.1")


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def browser_unavailable() -> str | None:
    """Why Chromium cannot be run in a namespace here (None when it can), naming what is missing."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "ip is not installed: apt-get install iproute2"
    if not CHROMIUM.exists():
        return "Debian's chromium is not installed: apt-get install -y chromium"
    if importlib.util.find_spec("playwright") is None:
        return "the PyPI playwright package is not installed"
    return None


def write_wrapper(path: Path, namespace: str) -> Path:
    """The ``executable_path`` for playwright: Debian's chromium inside ``namespace``."""
    path.write_text(f'#!/bin/sh\nexec ip netns exec {namespace} {CHROMIUM} "$@"\n')
    path.chmod(0o755)
    return path


def check_no_route_out(namespace: str) -> None:
    """RuntimeError unless ``namespace`` forwards nothing and has no route to the outside."""
    ex = ("ip", "netns", "exec", namespace)
    if run(*ex, "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() != "0":
        raise RuntimeError(f"namespace {namespace} forwards packets")
    for outside in OUTSIDE:
        if run(*ex, "ip", "route", "get", outside, check=False).returncode == 0:
            raise RuntimeError(f"namespace {namespace} has a route to {outside}")


class IsolatedNamespace:
    """A network namespace with only ``lo`` (no route anywhere) and a Chromium wrapper for it; removed
    on exit. Servers the page needs run inside it too (``prefix()`` + their command line)."""

    def __init__(self, workdir: Path, tag: str = "sdpw") -> None:
        self.name = f"{tag}{uuid.uuid4().hex[:6]}"
        self.wrapper = workdir / "chromium-in-netns"

    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def __enter__(self) -> IsolatedNamespace:
        run("ip", "netns", "add", self.name)
        try:
            run(*self.prefix(), "ip", "link", "set", "lo", "up")
            check_no_route_out(self.name)
            write_wrapper(self.wrapper, self.name)
        except Exception:
            run("ip", "netns", "del", self.name, check=False)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        run("ip", "netns", "del", self.name, check=False)


class CallNamespaces:
    """Chromium's namespace and the bots' namespace, joined by a veth pair, no route out (as
    tests/support/browser_pair.py, on its own subnet so both can exist at once); removed on exit.

    Servers the page uses run in the browser namespace listening on every interface: the page reaches
    them at 127.0.0.1 (a secure context, so WebCrypto and getUserMedia work), bots in the peer
    namespace at ``browser_ip``. Bots get host candidates on the veth (aioice skips 127.0.0.1);
    Chromium without media permission hides its address behind mDNS names, whose answers cross the
    veth (multicast on, a multicast route each side)."""

    def __init__(self, workdir: Path, subnet: str = "10.204.0") -> None:
        tag = uuid.uuid4().hex[:5]
        self.subnet = subnet
        self.browser_ip, self.peer_ip = f"{subnet}.1", f"{subnet}.2"
        self.browser_ns, self.peer_ns = f"sdpc{tag}-br", f"sdpc{tag}-pe"
        self.wrapper = workdir / "chromium-in-call-netns"

    def browser_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.browser_ns]

    def peer_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.peer_ns]

    def __enter__(self) -> CallNamespaces:
        if f" {self.subnet}." in run("ip", "-o", "addr", "show").stdout:
            raise RuntimeError(f"{self.subnet}.0/30 is in use on this machine")
        made: list[str] = []
        try:
            for ns in (self.browser_ns, self.peer_ns):
                run("ip", "netns", "add", ns)
                made.append(ns)
                run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            run("ip", "link", "add", "sdpcv0", "netns", self.browser_ns, "type", "veth",
                "peer", "name", "sdpcv1", "netns", self.peer_ns)
            for ns, dev, ip in ((self.browser_ns, "sdpcv0", self.browser_ip), (self.peer_ns, "sdpcv1", self.peer_ip)):
                ex = ("ip", "netns", "exec", ns)
                run(*ex, "ip", "addr", "add", f"{ip}/30", "dev", dev)
                run(*ex, "ip", "link", "set", dev, "multicast", "on", "up")
                run(*ex, "ip", "route", "add", "224.0.0.0/4", "dev", dev)
            # Without media permission Chromium gathers only on its default route's interface: point it
            # at the peer namespace, which has no route on and forwards nothing.
            run("ip", "netns", "exec", self.browser_ns, "ip", "route", "add", "default", "via", self.peer_ip)
            check_no_route_out(self.peer_ns)
            write_wrapper(self.wrapper, self.browser_ns)
        except Exception:
            for ns in made:
                run("ip", "netns", "del", ns, check=False)
            raise
        return self

    def set_link(self, up: bool) -> None:
        """Take the veth down (an outage between the browser's side and the bots) or bring it back up
        with the routes a link going down takes along."""
        ex = ("ip", "netns", "exec", self.browser_ns)
        run(*ex, "ip", "link", "set", "sdpcv0", "up" if up else "down")
        if up:
            run(*ex, "ip", "route", "replace", "224.0.0.0/4", "dev", "sdpcv0")
            run(*ex, "ip", "route", "replace", "default", "via", self.peer_ip)

    def __exit__(self, *exc: object) -> None:
        for ns in (self.browser_ns, self.peer_ns):
            run("ip", "netns", "del", ns, check=False)


_CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def entered(namespace: str) -> Iterator[None]:
    """Run this process's calling thread in ``namespace`` for the block (as tests/support/janus.py
    JanusNet.entered): sockets made there are the namespace's, and threads started from it (a Call's
    engine thread) stay in it. Child processes are better started with ``ip netns exec``."""
    libc = ctypes.CDLL(None, use_errno=True)

    def setns(fd: int) -> None:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns: {os.strerror(err)}")

    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        setns(target)
        yield
    finally:
        setns(home)
        os.close(target)
        os.close(home)


def web_link(page_url: str, room: str, password: str, **params: str) -> str:
    """The page's shareable link for a test: ``page_url#room=…&pw=…&ice=[&k=v…]``. ``ice=`` (no STUN
    server) unless given: the page's default is a public STUN server, which no test may name."""
    from urllib.parse import quote

    fields = {"room": room, "pw": password, "ice": "", **params}
    return page_url + "#" + "&".join(f"{k}={quote(v, safe=':/')}" for k, v in fields.items())
