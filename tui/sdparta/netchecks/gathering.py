"""ICE candidate gathering the way a call does it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aioice
from aiortc.rtcicetransport import parse_stun_turn_uri

from sdparta.netchecks.check import Check


async def gather_candidates(stun_url: str | None, turn: tuple[str, str | None, str | None] | None,
                            *, relay_only: bool = False, timeout: float = 8.0) -> Check:
    """Gather ICE candidates the way a call does (aioice, first STUN and first TURN server)."""
    kwargs: dict[str, Any] = {}
    if stun_url:
        parsed = parse_stun_turn_uri(stun_url)
        kwargs["stun_server"] = (parsed["host"], parsed["port"])
    if turn:
        parsed = parse_stun_turn_uri(turn[0])
        kwargs.update(turn_server=(parsed["host"], parsed["port"]), turn_username=turn[1], turn_password=turn[2],
                      turn_ssl=parsed["scheme"] == "turns", turn_transport=parsed["transport"])
    if relay_only:
        kwargs["transport_policy"] = aioice.TransportPolicy.RELAY
    connection = aioice.Connection(ice_controlling=True, **kwargs)
    started = time.monotonic()
    try:
        await asyncio.wait_for(connection.gather_candidates(), timeout)
    except TimeoutError:
        pass
    finally:
        candidates = list(connection.local_candidates)
        await connection.close()
    elapsed = (time.monotonic() - started) * 1000
    listed = [f"{c.type} {c.transport} {c.host}:{c.port}" for c in candidates]
    types = sorted({c.type for c in candidates})
    if not candidates:
        return Check("gathering", "", "no-candidates", "no ICE candidates gathered: calls cannot connect",
                     elapsed, {"candidates": listed, "types": types})
    return Check("gathering", "", None, f"{len(candidates)} candidates ({', '.join(types)}) in {elapsed:.0f} ms",
                 elapsed, {"candidates": listed, "types": types})
