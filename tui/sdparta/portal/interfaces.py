"""This machine's own addresses, read from its interfaces (no packet sent, no name looked up but
this host's own): what ``sdparta portal --host 0.0.0.0`` prints as the page's LAN URLs and what a
``--tls self-signed`` certificate covers.

``ifaddr`` (getifaddrs through ctypes; installed with aioice) lists every interface; where it is
missing, the addresses this host's name resolves to are the fallback.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket

#: hosts that mean "every interface" to ``sdparta portal --host``
ALL_INTERFACES = ("0.0.0.0", "::", "")

_IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def _all_addresses() -> set[_IP]:
    found: set[_IP] = set()
    try:
        import ifaddr
    except ImportError:
        ifaddr = None
    if ifaddr is not None:
        with contextlib.suppress(OSError, ValueError):
            for adapter in ifaddr.get_adapters():
                for ip in adapter.ips:
                    text = ip.ip[0] if isinstance(ip.ip, tuple) else ip.ip
                    with contextlib.suppress(ValueError):
                        found.add(ipaddress.ip_address(str(text).split("%", 1)[0]))
    if not found:
        with contextlib.suppress(OSError):
            for info in socket.getaddrinfo(socket.gethostname(), None):
                with contextlib.suppress(ValueError):
                    found.add(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]))
    return found


def lan_addresses(host: str = "") -> list[str]:
    """The addresses others can reach this machine at when it listens on ``host`` (0.0.0.0: IPv4,
    ``::``: IPv6, "": both), sorted, IPv4 first: no loopback, no link-local (a URL with an IPv6
    zone works nowhere useful), no multicast. Empty for a host that is not "every interface"."""
    if host not in ALL_INTERFACES:
        return []
    wanted = {"0.0.0.0": (4,), "::": (6,), "": (4, 6)}[host]
    usable = [ip for ip in _all_addresses()
              if ip.version in wanted and not (ip.is_loopback or ip.is_link_local or ip.is_multicast
                                               or ip.is_unspecified)]
    return [str(ip) for ip in sorted(usable, key=lambda ip: (ip.version, ip.packed))]


def url_host(address: str) -> str:
    """``address`` as the host part of a URL (IPv6 in brackets)."""
    return f"[{address}]" if ":" in address else address
