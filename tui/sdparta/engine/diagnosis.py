"""Why a pair did not connect, and why the configured STUN/TURN servers gave no candidates.

The case is read from the two SDPs (which candidate types each side gathered); a gathering
problem is explained by probing the servers (aioice drops their errors), at most once per
``PROBE_REUSE`` seconds per call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc import RTCIceServer

from sdparta import netchecks
from sdparta.room.wire import TurnServer

PROBE_REUSE = 30.0  # a STUN/TURN probe's finding is reused this long (gathering problems repeat in bursts)

TURN_ADVICE = ("add --turn URL --turn-user U --turn-password P, "
               "or have someone in the room share one with --share-turn")


def candidate_types(sdp: str) -> set[str]:
    """The candidate types (host, srflx, prflx, relay) an SDP carries."""
    types = set()
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            parts = line.split()
            if "typ" in parts[:-1]:
                types.add(parts[parts.index("typ") + 1])
    return types


def _urls(server: RTCIceServer) -> list[str]:
    return server.urls if isinstance(server.urls, list) else [server.urls]


def turn_servers_of(servers: list[RTCIceServer]) -> list[TurnServer]:
    """The TURN entries of an ICE server list, one per URL (what --share-turn puts in the room)."""
    return [TurnServer(url, server.username or "", server.credential or "")
            for server in servers for url in _urls(server) if url.startswith(("turn:", "turns:"))]


def stun_urls_of(servers: list[RTCIceServer]) -> list[str]:
    """The STUN URLs of an ICE server list."""
    return [url for server in servers for url in _urls(server) if url.startswith(("stun:", "stuns:"))]


async def probe_servers(servers: list[RTCIceServer], relay_only: bool) -> str:
    """Ask every configured STUN/TURN server now; what is wrong with them, in one line."""
    turn = turn_servers_of(servers)
    stun = [] if relay_only else stun_urls_of(servers)
    if not turn and relay_only:
        return "--relay-only needs a TURN server: add --turn URL --turn-user U --turn-password P"
    if not turn and not stun:
        return "no usable network interface (is the network up?)"
    checks = await asyncio.gather(*(netchecks.check_turn(t.url, t.username, t.credential) for t in turn),
                                  *(netchecks.check_stun(url) for url in stun))
    problems = [f"{c.kind.upper()} {c.url}: {c.detail}" for c in checks if c.problem is not None]
    if not problems:
        return "the STUN/TURN servers answer now: the failure was temporary"
    return "; ".join(problems)


class Diagnosis:
    """One call's diagnosis: reads its ICE servers when asked (a room's shared relay may join them)."""

    def __init__(self, servers: Callable[[], list[RTCIceServer]], *, relay_only: bool,
                 notice: Callable[[str, str], None],
                 probe: Callable[[list[RTCIceServer], bool], Awaitable[str]] = probe_servers) -> None:
        self._servers = servers
        self.relay_only = relay_only
        self._notice = notice
        self._probe = probe
        self._probe_lock = asyncio.Lock()
        self._probe_result: tuple[float, str] | None = None  # (when, what) of the last server probe

    async def gathering_problem(self) -> str:
        """Why the configured STUN/TURN servers gave no candidates (probed, then reused a while)."""
        async with self._probe_lock:
            now = time.monotonic()
            if self._probe_result is None or now - self._probe_result[0] > PROBE_REUSE:
                self._probe_result = (now, await self._probe(self._servers(), self.relay_only))
                self._notice("warning", self._probe_result[1])
            return self._probe_result[1]

    def gathering_incomplete(self, local_sdp: str) -> bool:
        """Right after gathering: no candidate at all, or a configured server gave none."""
        types = candidate_types(local_sdp)
        servers = self._servers()
        missing_relay = bool(turn_servers_of(servers)) and "relay" not in types
        missing_srflx = bool(stun_urls_of(servers)) and not self.relay_only and "srflx" not in types
        return not types or missing_relay or missing_srflx

    async def why_not_connected(self, pc: Any, timeout: float) -> str:
        """Say which case a pair that did not connect within ``timeout`` is, and what would fix it.

        ``pc`` is the pair's connection (None: the offerer never sent an offer)."""
        prefix = f"not connected after {timeout:.0f} s"
        if pc is None:
            return f"{prefix}: the peer never sent an offer (it may have left or crashed)"
        if pc.remoteDescription is None:
            return f"{prefix}: the peer never answered (it may have left or crashed)"
        local = candidate_types(pc.localDescription.sdp if pc.localDescription else "")
        remote = candidate_types(pc.remoteDescription.sdp)
        if not local:
            return f"{prefix}: no local ICE candidates were gathered ({await self.gathering_problem()})"
        if not remote:
            return f"{prefix}: the peer gathered no ICE candidates (its STUN/TURN settings are wrong or unreachable)"
        if "relay" not in local and "relay" not in remote:
            unlearned = ""
            if stun_urls_of(self._servers()) and "srflx" not in local:
                unlearned = f"; no public address was learned either ({await self.gathering_problem()})"
            return (f"{prefix}: all ICE checks failed — no direct or STUN path between these networks "
                    f"(a symmetric NAT?): a TURN relay is needed ({TURN_ADVICE}){unlearned}")
        return f"{prefix}: all ICE checks failed, even through the TURN relay (can both sides reach it?)"
