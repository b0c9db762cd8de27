"""A NAT lab from network namespaces: one "public" network and private hosts behind NAT boxes.

    private host ns (10.0.K.2) ── lan │ NAT box ns │ wan (203.0.113.(10+K)) ── bridge in the public ns
                                                                               (203.0.113.1-2: portal, coturn)

NAT kinds: ``eim`` (endpoint-independent mapping: ``MASQUERADE``) and ``symmetric`` (a new mapping
per destination: ``MASQUERADE --random-fully``). Each NAT box drops NEW/INVALID traffic arriving on
its WAN (else an early inbound check becomes a connection *to the NAT box* and breaks hole punching),
and the public namespace has a default route (else coturn tears down an allocation whose peer address
is unroutable). Namespace names are unique per lab; everything is removed on close, processes by PID.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.coturn import Coturn, coturn_missing, start_coturn
from support.procs import PortalProcess, start_portal

PUBLIC_NET = "203.0.113"  # TEST-NET-3: never routed on the internet
PORTAL_IP, TURN_IP, TURN_OTHER_IP = f"{PUBLIC_NET}.1", f"{PUBLIC_NET}.2", f"{PUBLIC_NET}.3"
NAT_KINDS = ("eim", "symmetric")


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def netlab_unavailable() -> str | None:
    """Why the lab cannot be built here (None when it can): root, `ip netns`, iptables, coturn."""
    if os.geteuid() != 0:
        return "the NAT lab needs root (network namespaces and iptables)"
    for tool, package in (("ip", "iproute2"), ("iptables", "iptables")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed: apt-get install {package}"
    if (reason := coturn_missing()) is not None:
        return reason
    probe = f"sdp-probe-{uuid.uuid4().hex[:6]}"
    made = run("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` is not permitted here: {made.stderr.strip()}"
    try:
        nat = run("ip", "netns", "exec", probe, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "lo",
                  "-j", "MASQUERADE", "--random-fully", check=False)
        if nat.returncode != 0:
            return f"iptables NAT does not work in a namespace: {nat.stderr.strip()}"
    finally:
        run("ip", "netns", "del", probe, check=False)
    return None


@dataclass
class Host:
    """A private host behind its own NAT box."""

    name: str
    ns: str
    nat_ns: str
    nat: str
    address: str
    wan_address: str

    def exec_prefix(self, env: dict[str, str] | None = None) -> list[str]:
        """The argv prefix that runs a command on this host (with ``env`` set, if given)."""
        setenv = ["env", *(f"{k}={v}" for k, v in env.items())] if env else []
        return ["ip", "netns", "exec", self.ns, *setenv]


@dataclass
class Lab:
    workdir: Path
    prefix: str = field(default_factory=lambda: f"sdp{uuid.uuid4().hex[:5]}")
    namespaces: list[str] = field(default_factory=list)
    hosts: dict[str, Host] = field(default_factory=dict)
    stoppers: list[Any] = field(default_factory=list)
    _numbers: Any = field(default_factory=lambda: itertools.count(1))

    @property
    def public_ns(self) -> str:
        return f"{self.prefix}-pub"

    def _ns(self, name: str) -> str:
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        self.sh(name, "ip link set lo up")
        return name

    def sh(self, ns: str, *commands: str) -> None:
        """Run commands (split on spaces) inside a namespace."""
        for command in commands:
            run("ip", "netns", "exec", ns, *command.split())

    def build_public(self) -> None:
        ns = self._ns(self.public_ns)
        self.sh(ns, "ip link add br0 type bridge", "ip link set br0 up",
                f"ip addr add {PORTAL_IP}/24 dev br0", f"ip addr add {TURN_IP}/24 dev br0",
                f"ip addr add {TURN_OTHER_IP}/24 dev br0",
                # a default route to nowhere: coturn must see every peer address as routable
                "ip link add out0 type veth peer name out1", "ip link set out0 up", "ip link set out1 up",
                "ip addr add 198.51.100.1/24 dev out0", "ip route add default via 198.51.100.2 dev out0")

    def add_private(self, name: str, nat: str) -> Host:
        """A host ``name`` in 10.0.K.0/24 behind a NAT box of kind ``nat`` on the public bridge."""
        if nat not in NAT_KINDS:
            raise ValueError(f"NAT kind must be one of {NAT_KINDS}")
        k = next(self._numbers)
        host_ns, nat_ns = self._ns(f"{self.prefix}-h{k}"), self._ns(f"{self.prefix}-n{k}")
        wan_peer, wan_address = f"{self.prefix}w{k}", f"{PUBLIC_NET}.{10 + k}"
        run("ip", "link", "add", "wan", "netns", nat_ns, "type", "veth", "peer", "name", wan_peer,
            "netns", self.public_ns)
        run("ip", "link", "add", "lan", "netns", nat_ns, "type", "veth", "peer", "name", "eth0", "netns", host_ns)
        self.sh(self.public_ns, f"ip link set {wan_peer} master br0", f"ip link set {wan_peer} up")
        masquerade = "-t nat -A POSTROUTING -o wan -j MASQUERADE" + (" --random-fully" if nat == "symmetric" else "")
        self.sh(nat_ns, f"ip addr add {wan_address}/24 dev wan", "ip link set wan up",
                f"ip addr add 10.0.{k}.1/24 dev lan", "ip link set lan up",
                f"ip route add default via {PORTAL_IP}", "sysctl -q -w net.ipv4.ip_forward=1",
                f"iptables {masquerade}",
                "iptables -A INPUT -i wan -m conntrack --ctstate NEW,INVALID -j DROP",
                "iptables -A FORWARD -i wan -m conntrack --ctstate NEW,INVALID -j DROP")
        self.sh(host_ns, f"ip addr add 10.0.{k}.2/24 dev eth0", "ip link set eth0 up",
                f"ip route add default via 10.0.{k}.1")
        host = Host(name, host_ns, nat_ns, nat, f"10.0.{k}.2", wan_address)
        self.hosts[name] = host
        return host

    def link_down(self, host: Host) -> None:
        """The NAT box loses its uplink (its WAN interface goes down)."""
        self.sh(host.nat_ns, "ip link set wan down")

    def link_up(self, host: Host) -> None:
        self.sh(host.nat_ns, "ip link set wan up", f"ip route replace default via {PORTAL_IP}")

    def block_udp(self, host: Host) -> None:
        """The NAT box forwards no UDP (a firewall that lets the web through): STUN and ICE fail,
        the portal (HTTP over TCP) still answers."""
        self.sh(host.nat_ns, "iptables -I FORWARD 1 -p udp -j DROP")

    def unblock_udp(self, host: Host) -> None:
        self.sh(host.nat_ns, "iptables -D FORWARD -p udp -j DROP")

    def change_address(self, host: Host) -> str:
        """The private host moves to a new address on its LAN (as after a DHCP renewal or a Wi-Fi
        roam): the old address is gone, sockets bound to it can no longer send. Returns the new one."""
        subnet = host.address.rsplit(".", 1)[0]
        new = f"{subnet}.{int(host.address.rsplit('.', 1)[1]) + 10}"
        self.sh(host.ns, f"ip addr del {host.address}/24 dev eth0", f"ip addr add {new}/24 dev eth0",
                f"ip route replace default via {subnet}.1")
        host.address = new
        return new

    def start_portal(self, workdir: Path) -> str:
        """A real portal in the public namespace; returns its URL (as seen from the private hosts)."""
        portal: PortalProcess = start_portal(workdir / "lab-portal.sqlite3", host=PORTAL_IP,
                                             argv_prefix=["ip", "netns", "exec", self.public_ns])
        self.stoppers.append(portal)
        return portal.url

    def start_coturn(self, workdir: Path, *, tls: bool = False) -> Coturn:
        """coturn in the public namespace, on two addresses (RFC 5780 NAT behaviour discovery);
        ``tls`` adds a turns: listener with a self-signed certificate (``Coturn.ca_file``)."""
        server = start_coturn(workdir / "coturn", listen=(TURN_IP, TURN_OTHER_IP),
                              argv_prefix=["ip", "netns", "exec", self.public_ns], tls=tls)
        self.stoppers.append(server)
        return server

    def close(self) -> None:
        for stopper in reversed(self.stoppers):
            with contextlib.suppress(Exception):  # keep tearing down the rest
                stopper.stop()
        for ns in reversed(self.namespaces):
            run("ip", "netns", "del", ns, check=False)
        self.namespaces.clear()


def build_lab(workdir: Path) -> Lab:
    lab = Lab(workdir)
    try:
        lab.build_public()
    except Exception:
        lab.close()
        raise
    return lab
