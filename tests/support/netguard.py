"""The suite-wide network guard: no test contacts any host but this machine or a namespace it made.

Installed in the pytest process by ``tests/conftest.py`` and, through ``netguard_site/sitecustomize.py``
on ``PYTHONPATH``, in every Python process a test starts (bots, portals, the relay, ``ip netns exec …
python``). It wraps ``socket.socket.connect``/``connect_ex``/``sendto``/``sendmsg`` and the name
lookups (``getaddrinfo``, ``gethostbyname[_ex]``, ``gethostbyaddr``). Allowed:

- loopback (127/8, ::1) and the unspecified address (which Linux connects to this host);
- this machine's own interface addresses (ICE's host candidates), read from ``/proc/net`` of the
  process's own network namespace and re-read when an address is not found;
- mDNS: 224.0.0.251 and ff02::fb, port 5353 (aioice resolves browsers' ``.local`` names that way);
- in a network namespace other than the suite's own — one a test created (the NAT lab, the bench's
  loopback-only namespace) — also RFC 1918 and the lab's TEST-NET-2/3 subnets (tests/netlab/lab.py:
  198.51.100.0/24, 203.0.113.0/24; its namespaces have no route out);
- name lookups of ``localhost``, ``*.localhost``, this host's name and names in ``/etc/hosts``: any
  other name would be a DNS query, which is already contact with another host.

Anything else raises :class:`NetGuardError` (a PermissionError naming the address) and is appended
to the violation log (``SDPARTA_NETGUARD_LOG``); conftest fails the running test with every entry,
so code that swallows the error (a pool that marks the relay dead) still fails its test loudly.
Only standard-library imports: this runs inside every child process, the relay's venv included.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ENV_ACTIVE = "SDPARTA_NETGUARD"  # "1": sitecustomize installs the guard
ENV_LOG = "SDPARTA_NETGUARD_LOG"  # violation log (JSON lines), shared by the whole process tree
ENV_HOME_NETNS = "SDPARTA_NETGUARD_NETNS"  # the suite's network namespace; "self": the process's own
SITE_DIR = Path(__file__).resolve().parent / "netguard_site"

_IP = ipaddress.IPv4Address | ipaddress.IPv6Address
_MDNS = {ipaddress.ip_address("224.0.0.251"), ipaddress.ip_address("ff02::fb")}
_NAMESPACE_NETS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # RFC 1918
    "198.51.100.0/24", "203.0.113.0/24",  # the NAT lab's "public" side and its dead-end default route
    "fc00::/7", "fe80::/10"))
_INET = (socket.AF_INET, socket.AF_INET6)


class NetGuardError(PermissionError):
    """A test tried to reach a host other than this machine."""


def netns() -> str:
    """This process's network namespace (``net:[inode]``), or "" where /proc does not say."""
    try:
        return os.readlink("/proc/self/ns/net")
    except OSError:
        return ""


def _in_home_netns() -> bool:
    home = os.environ.get(ENV_HOME_NETNS, "self")
    return home in ("self", "") or home == netns()


def own_addresses() -> set[_IP]:
    """Addresses of this namespace's interfaces: IPv4 LOCAL routes of /proc/net/fib_trie, /proc/net/if_inet6."""
    found: set[_IP] = set()
    with contextlib.suppress(OSError):
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
        for previous, line in itertools.pairwise(lines):
            if line.strip().startswith("/32 host LOCAL"):
                with contextlib.suppress(ValueError):
                    found.add(ipaddress.ip_address(previous.split()[-1]))
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            with contextlib.suppress(ValueError, IndexError):
                found.add(ipaddress.IPv6Address(int(line.split()[0], 16)))
    if not found:  # no /proc: at least what the host name resolves to
        with contextlib.suppress(OSError):
            found |= {ipaddress.ip_address(a) for a in _real["gethostbyname_ex"](socket.gethostname())[2]}
    return found


def _hosts_file_names() -> set[str]:
    names = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", socket.gethostname().lower()}
    with contextlib.suppress(OSError):
        for line in Path("/etc/hosts").read_text().splitlines():
            names.update(part.lower() for part in line.split("#", 1)[0].split()[1:])
    return names


class _Policy:
    """What this process may reach; allowed hosts are cached (sendto runs per RTP packet)."""

    def __init__(self) -> None:
        self.allowed: set[tuple[str, int]] = set()
        self.own: set[_IP] = own_addresses()
        self.own_read_at = time.monotonic()
        self.names = _hosts_file_names()
        self.lock = threading.Lock()

    def ip_allowed(self, ip: _IP, port: int) -> bool:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_loopback or ip.is_unspecified:
            return True
        if ip in _MDNS:
            return port == 5353
        if ip in self.own:
            return True
        if not _in_home_netns() and any(ip in net for net in _NAMESPACE_NETS):
            return True
        with self.lock:  # interfaces change (the lab moves a host's address): look again, at most 5 times a second
            if time.monotonic() - self.own_read_at > 0.2:
                self.own, self.own_read_at = own_addresses(), time.monotonic()
        return ip in self.own

    def name_allowed(self, host: str) -> bool:
        name = host.lower().rstrip(".")
        return name in self.names or name.endswith(".localhost") or name == "localhost"


_policy: _Policy | None = None
_real: dict[str, Any] = {"gethostbyname_ex": socket.gethostbyname_ex, "getaddrinfo": socket.getaddrinfo}
_lock = threading.Lock()


def _report(what: str, target: str) -> NetGuardError:
    message = (f"netguard: {what} {target} blocked — tests may contact only this machine (loopback, its own "
               f"interface addresses) and network namespaces they created")
    path = os.environ.get(ENV_LOG)
    if path:
        record = {"pid": os.getpid(), "argv": sys.argv[:6], "what": what, "target": target, "netns": netns()}
        with contextlib.suppress(OSError), _lock, open(path, "a") as log:
            log.write(json.dumps(record) + "\n")
    return NetGuardError(message)


def _parse_ip(host: str) -> _IP | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def check_address(address: Any, family: int = socket.AF_INET, what: str = "connect to") -> None:
    """Raise NetGuardError unless ``address`` (a socket address) is allowed; non-IP families pass."""
    if family not in _INET or not isinstance(address, tuple) or len(address) < 2:
        return
    policy = _policy or _Policy()
    host, port = str(address[0]), int(address[1]) if isinstance(address[1], int) else 0
    if (host, port) in policy.allowed:
        return
    ip = _parse_ip(host)
    if ip is None:  # a host name given straight to connect(): resolved by the C library, so check it here
        if not policy.name_allowed(host):
            raise _report("name lookup of", repr(host))
        addresses = {_parse_ip(info[4][0]) for info in _real["getaddrinfo"](host, port, family)}
        bad = [a for a in addresses if a is None or not policy.ip_allowed(a, port)]
    else:
        bad = [] if policy.ip_allowed(ip, port) else [ip]
    if bad:
        raise _report(what, f"{host}:{port}" if ip is None or ip.version == 4 else f"[{host}]:{port}")
    if len(policy.allowed) > 4096:
        policy.allowed.clear()
    policy.allowed.add((host, port))


def check_name(host: Any) -> None:
    """Raise NetGuardError for a name lookup that would leave this machine (IP literals pass)."""
    if host is None:
        return
    text = host.decode() if isinstance(host, bytes) else str(host)
    if text == "" or _parse_ip(text) is not None:
        return
    if not (_policy or _Policy()).name_allowed(text):
        raise _report("name lookup of", repr(text))


def _patched_methods() -> dict[str, Any]:
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_sendto, real_sendmsg = socket.socket.sendto, socket.socket.sendmsg
    real_getaddrinfo, real_gethostbyname = socket.getaddrinfo, socket.gethostbyname
    real_gethostbyname_ex, real_gethostbyaddr = socket.gethostbyname_ex, socket.gethostbyaddr
    _real.update(getaddrinfo=real_getaddrinfo, gethostbyname_ex=real_gethostbyname_ex)

    def connect(self: socket.socket, address: Any) -> None:
        check_address(address, self.family)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check_address(address, self.family)
        return real_connect_ex(self, address)

    def sendto(self: socket.socket, data: Any, *args: Any) -> int:
        check_address(args[-1] if args else None, self.family, "send to")
        return real_sendto(self, data, *args)

    def sendmsg(self: socket.socket, buffers: Any, *args: Any) -> int:
        if len(args) >= 3 and args[2] is not None:
            check_address(args[2], self.family, "send to")
        return real_sendmsg(self, buffers, *args)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        check_name(host)
        return real_getaddrinfo(host, *args, **kwargs)

    def gethostbyname(host: str) -> str:
        check_name(host)
        return real_gethostbyname(host)

    def gethostbyname_ex(host: str) -> Any:
        check_name(host)
        return real_gethostbyname_ex(host)

    def gethostbyaddr(host: str) -> Any:
        ip = _parse_ip(host)
        if ip is None:
            check_name(host)
        elif not ip.is_loopback:  # a reverse lookup of anything else is a DNS query
            raise _report("reverse lookup of", host)
        return real_gethostbyaddr(host)

    return {"connect": connect, "connect_ex": connect_ex, "sendto": sendto, "sendmsg": sendmsg,
            "getaddrinfo": getaddrinfo, "gethostbyname": gethostbyname, "gethostbyname_ex": gethostbyname_ex,
            "gethostbyaddr": gethostbyaddr, "_real": {"connect": real_connect, "connect_ex": real_connect_ex,
                                                       "sendto": real_sendto, "sendmsg": real_sendmsg,
                                                       "getaddrinfo": real_getaddrinfo,
                                                       "gethostbyname": real_gethostbyname,
                                                       "gethostbyname_ex": real_gethostbyname_ex,
                                                       "gethostbyaddr": real_gethostbyaddr}}


_installed: dict[str, Any] | None = None


def install() -> None:
    """Guard this process (idempotent)."""
    global _installed, _policy
    if _installed is not None:
        return
    patched = _patched_methods()
    _policy = _Policy()
    for name in ("connect", "connect_ex", "sendto", "sendmsg"):
        setattr(socket.socket, name, patched[name])
    for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
        setattr(socket, name, patched[name])
    _installed = patched


def installed() -> bool:
    return _installed is not None


def uninstall() -> None:
    global _installed
    if _installed is None:
        return
    real = _installed["_real"]
    for name in ("connect", "connect_ex", "sendto", "sendmsg"):
        setattr(socket.socket, name, real[name])
    for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
        setattr(socket, name, real[name])
    _installed = None


# ---------------------------------------------------------------- the process tree and the log
def activate_for_children(log_path: Path) -> None:
    """Make every Python process started from here on (its environment inherited) carry the guard."""
    os.environ[ENV_ACTIVE] = "1"
    os.environ[ENV_LOG] = str(log_path)
    os.environ[ENV_HOME_NETNS] = netns() or "self"
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(SITE_DIR)]
    os.environ["PYTHONPATH"] = os.pathsep.join([str(SITE_DIR), *parts])


def unguarded_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """An environment for the one kind of child allowed out: a package install (pip → the registry)."""
    env = dict(os.environ if env is None else env)
    for key in (ENV_ACTIVE, ENV_LOG, ENV_HOME_NETNS):
        env.pop(key, None)
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(SITE_DIR)]
    if parts:
        env["PYTHONPATH"] = os.pathsep.join(parts)
    else:
        env.pop("PYTHONPATH", None)
    return env


def log_offset() -> int:
    path = os.environ.get(ENV_LOG)
    try:
        return os.path.getsize(path) if path else 0
    except OSError:
        return 0


def read_log(start: int, end: int | None = None) -> list[tuple[int, dict[str, Any]]]:
    """(offset, record) for every violation logged between two offsets."""
    path = os.environ.get(ENV_LOG)
    if not path:
        return []
    try:
        with open(path, "rb") as log:
            log.seek(start)
            data = log.read() if end is None else log.read(max(0, end - start))
    except OSError:
        return []
    out, offset = [], start
    for line in data.splitlines(keepends=True):
        with contextlib.suppress(ValueError):
            out.append((offset, json.loads(line)))
        offset += len(line)
    return out


_claimed: list[tuple[int, int]] = []


@contextlib.contextmanager
def expected_violations() -> Iterator[list[dict[str, Any]]]:
    """For tests of the guard itself: violations logged inside the block are handed to the caller
    (and not held against the test)."""
    start = log_offset()
    seen: list[dict[str, Any]] = []
    try:
        yield seen
    finally:
        end = log_offset()
        seen.extend(record for _, record in read_log(start, end))
        _claimed.append((start, end))


def unexpected_since(start: int) -> list[dict[str, Any]]:
    """Violations logged since ``start`` that no :func:`expected_violations` block took."""
    return [record for offset, record in read_log(start)
            if not any(lo <= offset < hi for lo, hi in _claimed)]
