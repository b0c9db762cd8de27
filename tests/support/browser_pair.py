"""Two network namespaces joined by a veth pair, no route out: Chromium in one, an aiortc process in the other.

Chromium without media permission hides its host candidates behind mDNS ``.local`` names and, in a
namespace with only ``lo``, gathers nothing; a veth pair with multicast on (and a multicast route)
gives it a real interface whose mDNS answers reach the other side. The peer namespace has no default
route out: the browser's default route points at the peer namespace, which has no route and does not
forward, so Chromium's own traffic (update.googleapis.com, UDP probes to 8.8.8.8) ends there. Chromium
runs through a wrapper script (``ip netns exec NS chromium "$@"``) given to playwright as
``executable_path``: playwright talks to it over a pipe, so the test process stays where it is
(the helpers are tests/support/browser.py's).
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from support.browser import BASE_ARGS, FAKE_MEDIA_ARGS, browser_unavailable, check_no_route_out, write_wrapper
from support.browser import run as _run

__all__ = ["BASE_ARGS", "BROWSER_IP", "FAKE_MEDIA_ARGS", "PEER_IP", "BrowserPair", "pair_unavailable"]

SUBNET = "10.202.0"
BROWSER_IP, PEER_IP = f"{SUBNET}.1", f"{SUBNET}.2"


def pair_unavailable() -> str | None:
    """Why the pair cannot be built here (None when it can), naming the missing system dependency."""
    if missing := browser_unavailable():
        return missing
    if shutil.which("iptables") is None:
        return "iptables is not installed: apt-get install iptables"
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
            check_no_route_out(self.peer_ns)
            if not self.mdns_answers:
                _run("ip", "netns", "exec", self.browser_ns, "iptables", "-A", "OUTPUT", "-p", "udp",
                     "--sport", "5353", "-j", "DROP")
            write_wrapper(self.wrapper, self.browser_ns)
        except Exception:
            for ns in made:
                _run("ip", "netns", "del", ns, check=False)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for ns in (self.browser_ns, self.peer_ns):
            _run("ip", "netns", "del", ns, check=False)
