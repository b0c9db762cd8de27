"""One finding of a network check, and what every check shares."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from typing import Any

Address = tuple[str, int]


@dataclass(frozen=True)
class Check:
    """One finding. ``problem`` is None when all is well, else a short code (``unreachable``,
    ``auth-failed``, ``tls-failed``, ``refused``, ``not-a-portal``, ``no-candidates``…)."""

    kind: str  # portal | relay | stun | turn | nat | gathering
    url: str
    problem: str | None
    detail: str
    latency_ms: float | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.problem is None

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "url": self.url, "ok": self.ok, "problem": self.problem, "detail": self.detail,
                "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 1), **self.facts}


async def resolve(host: str, port: int, kind: int = socket.SOCK_DGRAM) -> Address:
    """The first IPv4 address of ``host`` (the checks, like aioice, use IPv4)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, family=socket.AF_INET, type=kind)
    return infos[0][4][0], infos[0][4][1]
