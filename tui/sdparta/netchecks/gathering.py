"""ICE candidate gathering the way a call does it.

aioice hands out candidates only when the whole gathering is over, and it waits up to 5 s for each
STUN/TURN server: cut short by a shorter timeout, it gives nothing at all — not even the host
candidates it had at once. So host candidates are gathered on their own too (no server, done in
milliseconds): a dead STUN server then costs the server-reflexive candidates, which the STUN check
reports as its own finding, never the host candidates, and "no candidates" really means no
usable interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import aioice
from aiortc.rtcicetransport import parse_stun_turn_uri

from sdparta.netchecks.check import Check

#: Host candidates need no server: binding a socket per interface address.
HOST_GATHER_S = 5.0


async def _gather(connection: aioice.Connection, timeout: float) -> bool:
    """True when gathering finished within ``timeout`` (then ``local_candidates`` holds everything)."""
    try:
        await asyncio.wait_for(connection.gather_candidates(), timeout)
    except TimeoutError:
        return False
    return True


async def gather_candidates(stun_url: str | None, turn: tuple[str, str | None, str | None] | None,
                            *, relay_only: bool = False, timeout: float = 8.0) -> Check:
    """Gather ICE candidates the way a call does (aioice, first STUN and first TURN server)."""
    kwargs: dict[str, Any] = {}
    servers = []
    if stun_url:
        parsed = parse_stun_turn_uri(stun_url)
        kwargs["stun_server"] = (parsed["host"], parsed["port"])
        servers.append(stun_url)
    if turn:
        parsed = parse_stun_turn_uri(turn[0])
        kwargs.update(turn_server=(parsed["host"], parsed["port"]), turn_username=turn[1], turn_password=turn[2],
                      turn_ssl=parsed["scheme"] == "turns", turn_transport=parsed["transport"])
        servers.append(turn[0])
    if relay_only:
        kwargs["transport_policy"] = aioice.TransportPolicy.RELAY
    connection = aioice.Connection(ice_controlling=True, **kwargs)
    # host candidates alone, side by side (relay-only uses none; without servers the call's own is that)
    host_only = aioice.Connection(ice_controlling=True) if servers and not relay_only else None
    started = time.monotonic()
    host_task = asyncio.ensure_future(_gather(host_only, HOST_GATHER_S)) if host_only is not None else None
    try:
        finished = await _gather(connection, timeout)
        candidates = list(connection.local_candidates)
        if not finished and host_task is not None and await host_task:
            candidates = list(host_only.local_candidates)  # type: ignore[union-attr]
    finally:
        if host_task is not None and not host_task.done():
            host_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await host_task
        await connection.close()
        if host_only is not None:
            await host_only.close()
    elapsed = (time.monotonic() - started) * 1000
    listed = [f"{c.type} {c.transport} {c.host}:{c.port}" for c in candidates]
    types = sorted({c.type for c in candidates})
    facts = {"candidates": listed, "types": types, "complete": finished}
    late = "" if finished else f"; {' and '.join(servers)} did not answer within {timeout:g} s"
    if not candidates:
        if relay_only:
            return Check("gathering", "", "no-candidates", "no relay candidate gathered" + (late or ""),
                         elapsed, facts)
        return Check("gathering", "", "no-candidates", "no ICE candidates gathered: this machine has no usable "
                     "network interface (aioice leaves out loopback)", elapsed, facts)
    return Check("gathering", "", None, f"{len(candidates)} candidates ({', '.join(types)}) in {elapsed:.0f} ms"
                 + late, elapsed, facts)
