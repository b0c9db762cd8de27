"""Two network namespaces joined by a veth pair, no route out: Chromium in one, an aiortc process in the other.

Chromium without media permission hides its host candidates behind mDNS ``.local`` names and, in a
namespace with only ``lo``, gathers nothing; a veth pair with multicast on (and a multicast route)
gives it a real interface whose mDNS answers reach the other side. The peer namespace has no default
route out: the browser's default route points at the peer namespace, which has no route and does not
forward, so Chromium's own traffic (update.googleapis.com, UDP probes to 8.8.8.8) ends there. Chromium
runs through a wrapper script (``ip netns exec NS chromium "$@"``) given to playwright as
``executable_path``: playwright talks to it over a pipe, so the test process stays where it is.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
SUBNET = "10.202.0"
BROWSER_IP, PEER_IP = f"{SUBNET}.1", f"{SUBNET}.2"
BASE_ARGS = ("--disable-component-update", "--no-first-run", "--disable-background-networking")
FAKE_MEDIA_ARGS = ("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream")


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def pair_unavailable() -> str | None:
    """Why the pair cannot be built here (None when it can), naming the missing system dependency."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "ip is not installed: apt-get install iproute2"
    if shutil.which("iptables") is None:
        return "iptables is not installed: apt-get install iptables"
    if not CHROMIUM.exists():
        return "Debian's chromium is not installed: apt-get install -y chromium"
    return None


class BrowserPair:
    """``browser_ns`` (10.202.0.1/30) ── veth ── ``peer_ns`` (10.202.0.2/30); removed on exit."""

    def __init__(self, workdir: Path, *, mdns_answers: bool = True) -> None:
        self.mdns_answers = mdns_answers  # False: the browser's mDNS answers are dropped (.local names never resolve)
        tag = uuid.uuid4().hex[:5]
        self.browser_ns, self.peer_ns = f"sdpb{tag}-br", f"sdpb{tag}-pe"
        self.wrapper = workdir / "chromium-in-netns"

    def peer_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.peer_ns]

    def __enter__(self) -> BrowserPair:
        in_use = _run("ip", "-o", "addr", "show").stdout
        if f" {SUBNET}." in in_use:
            raise RuntimeError(f"{SUBNET}.0/30 is in use on this machine")
        made: list[str] = []
        try:
            for ns in (self.browser_ns, self.peer_ns):
                _run("ip", "netns", "add", ns)
                made.append(ns)
                _run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            _run("ip", "link", "add", "sdpbv0", "netns", self.browser_ns, "type", "veth",
                 "peer", "name", "sdpbv1", "netns", self.peer_ns)
            for ns, dev, ip in ((self.browser_ns, "sdpbv0", BROWSER_IP), (self.peer_ns, "sdpbv1", PEER_IP)):
                ex = ("ip", "netns", "exec", ns)
                _run(*ex, "ip", "addr", "add", f"{ip}/30", "dev", dev)
                _run(*ex, "ip", "link", "set", dev, "multicast", "on", "up")
                _run(*ex, "ip", "route", "add", "224.0.0.0/4", "dev", dev)
            # Without media permission Chromium gathers only on the interface of its default route
            # (it finds it by connecting a UDP socket to 8.8.8.8, which sends nothing): the browser's
            # default route points at the peer namespace, which has none and forwards nothing.
            _run("ip", "netns", "exec", self.browser_ns, "ip", "route", "add", "default", "via", PEER_IP)
            ex = ("ip", "netns", "exec", self.peer_ns)
            if _run(*ex, "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() != "0":
                raise RuntimeError(f"namespace {self.peer_ns} forwards packets")
            for outside in ("8.8.8.8", "142.250.0.1"):
                if _run(*ex, "ip", "route", "get", outside, check=False).returncode == 0:
                    raise RuntimeError(f"namespace {self.peer_ns} has a route to {outside}")
            if not self.mdns_answers:
                _run("ip", "netns", "exec", self.browser_ns, "iptables", "-A", "OUTPUT", "-p", "udp",
                     "--sport", "5353", "-j", "DROP")
            self.wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {self.browser_ns} {CHROMIUM} "$@"\n')
            self.wrapper.chmod(0o755)
        except Exception:
            for ns in made:
                _run("ip", "netns", "del", ns, check=False)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for ns in (self.browser_ns, self.peer_ns):
            _run("ip", "netns", "del", ns, check=False)
