"""TURN: allocate a relay with the given credentials and name why it failed."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time

from aioice import stun
from aioice.turn import create_turn_endpoint
from aiortc.rtcicetransport import parse_stun_turn_uri

from sdparta.netchecks.check import Check, resolve


class _Allocation(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.closed = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def check_turn(url: str, username: str | None, password: str | None, *, timeout: float = 5.0) -> Check:
    """Allocate a relay on the TURN server with these credentials (then release it)."""
    try:
        parsed = parse_stun_turn_uri(url)
    except ValueError as exc:
        return Check("turn", url, "bad-url", f"not a TURN URL ({exc}): expected e.g. turn:relay.example.org:3478"
                                             "?transport=udp or turns:relay.example.org:5349")
    host, port, transport_name = parsed["host"], parsed["port"], parsed["transport"]
    secure = parsed["scheme"] == "turns"
    where = f"{host}:{port} over {'TLS' if secure else transport_name.upper()}"
    started = time.monotonic()
    try:
        server = await resolve(host, port, socket.SOCK_STREAM if transport_name == "tcp" else socket.SOCK_DGRAM)
        transport, protocol = await asyncio.wait_for(create_turn_endpoint(
            _Allocation, server, username or None, password or None,
            ssl=ssl.create_default_context() if secure else None, transport=transport_name), timeout)
    except stun.TransactionFailed as exc:
        code = exc.response.error_code
        if code in (401, 431):
            who = f"user {username!r}" if username else "no username"
            return Check("turn", url, "auth-failed",
                         f"TURN authentication failed at {where} ({who}): check --turn-user and --turn-password")
        if code == 486:
            return Check("turn", url, "refused", f"{where} refused: allocation quota reached for this user")
        return Check("turn", url, "refused", f"{where} refused the allocation ({exc})")
    except ssl.SSLError as exc:
        return Check("turn", url, "tls-failed", f"TLS with {where} failed: {exc.reason or exc} "
                     "(certificate or hostname wrong? try turn: with ?transport=tcp to compare)")
    except (TimeoutError, stun.TransactionTimeout):
        if secure and await _tcp_connects(host, port, timeout):
            return Check("turn", url, "tls-failed", f"{host}:{port} accepts TCP but the TLS handshake did not "
                         "finish (is it a TLS port? for a plain port use turn: with ?transport=tcp)")
        return Check("turn", url, "unreachable", f"no TURN answer from {where} within {timeout:.0f} s "
                     "(server down, wrong port, or this network blocks it: try ?transport=tcp or turns:)")
    except socket.gaierror as exc:
        return Check("turn", url, "unreachable", f"cannot resolve {host}: {exc}")
    except (OSError, ConnectionError) as exc:
        return Check("turn", url, "unreachable", f"cannot reach {where}: {exc}")
    latency = (time.monotonic() - started) * 1000
    relayed = transport.get_extra_info("sockname")
    mapped = transport.get_extra_info("related_address")
    transport.close()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(protocol.closed), 2.0)
    facts = {"relayed": f"{relayed[0]}:{relayed[1]}", "mapped": f"{mapped[0]}:{mapped[1]}" if mapped else None,
             "transport": "tls" if secure else transport_name}
    return Check("turn", url, None, f"relay allocated at {relayed[0]}:{relayed[1]} in {latency:.0f} ms "
                 f"({where})", latency, facts)


async def _tcp_connects(host: str, port: int, timeout: float) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True
