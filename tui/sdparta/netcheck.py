"""Network checks that name a cause: portal reachability and API, STUN answers and the NAT mapping
they reveal, TURN allocation (auth failed / unreachable / TLS failed), and ICE candidate gathering.

aioice swallows STUN/TURN errors while gathering (a wrong TURN password just means "no relay
candidate"), so `sdparta doctor` and the engine's diagnosis ask the servers themselves, here.
Everything is bounded by a timeout; nothing here raises for a network problem, it reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import aioice
import httpx
from aioice import stun
from aioice.turn import create_turn_endpoint
from aiortc.rtcicetransport import parse_stun_turn_uri

from sdparta.store.base import StoreError, StoreUnavailable
from sdparta.store.portal_client import PortalClient, check_portal_url

Address = tuple[str, int]


@dataclass(frozen=True)
class Check:
    """One finding. ``problem`` is None when all is well, else a short code (``unreachable``,
    ``auth-failed``, ``tls-failed``, ``refused``, ``not-a-portal``, ``no-candidates``…)."""

    kind: str  # portal | stun | turn | nat | gathering
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


# ---------------------------------------------------------------------- STUN
class _StunProtocol(asyncio.DatagramProtocol):
    """A UDP socket that runs STUN transactions (aioice's retransmission logic) to any address."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.transactions: dict[bytes, stun.Transaction] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        try:
            message = stun.parse_message(data)
        except ValueError:
            return  # not STUN: ignore
        transaction = self.transactions.get(message.transaction_id)
        if transaction is not None:
            transaction.response_received(message, addr)

    def send_stun(self, message: stun.Message, addr: Address) -> None:
        assert self.transport is not None
        self.transport.sendto(bytes(message), addr)

    async def binding(self, addr: Address, timeout: float) -> tuple[stun.Message, float]:
        """One Binding request; (response, round trip in ms). TimeoutError when nothing answers."""
        request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        transaction = stun.Transaction(request, addr, self, retransmissions=3)
        self.transactions[request.transaction_id] = transaction
        started = time.monotonic()
        try:
            response, _ = await asyncio.wait_for(transaction.run(), timeout)
        finally:
            del self.transactions[request.transaction_id]
        return response, (time.monotonic() - started) * 1000


async def _resolve(host: str, port: int, kind: int = socket.SOCK_DGRAM) -> Address:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, family=socket.AF_INET, type=kind)
    return infos[0][4][0], infos[0][4][1]


async def _open_stun_socket() -> tuple[asyncio.DatagramTransport, _StunProtocol]:
    transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        _StunProtocol, local_addr=("0.0.0.0", 0))
    return transport, protocol  # type: ignore[return-value]


async def check_stun(url: str, *, timeout: float = 3.0) -> Check:
    """Does the STUN server answer, with which mapped (public) address, how fast."""
    try:
        parsed = parse_stun_turn_uri(url)
    except ValueError as exc:
        return Check("stun", url, "bad-url", f"not a STUN URL ({exc}): expected e.g. stun:stun.example.org:3478")
    transport = None
    try:
        server = await _resolve(parsed["host"], parsed["port"])
        transport, protocol = await _open_stun_socket()
        response, rtt = await protocol.binding(server, timeout)
    except socket.gaierror as exc:
        return Check("stun", url, "unreachable", f"cannot resolve {parsed['host']}: {exc}")
    except (TimeoutError, stun.TransactionTimeout):
        return Check("stun", url, "unreachable", f"no STUN answer from {parsed['host']}:{parsed['port']} "
                     f"within {timeout:.0f} s (server down, or UDP blocked on this network)")
    except stun.TransactionFailed as exc:
        return Check("stun", url, "refused", f"the server refused a Binding request ({exc})")
    except OSError as exc:
        return Check("stun", url, "unreachable", f"cannot send to {parsed['host']}:{parsed['port']}: {exc}")
    finally:
        if transport is not None:
            transport.close()
    mapped = response.attributes.get("XOR-MAPPED-ADDRESS") or response.attributes.get("MAPPED-ADDRESS")
    if mapped is None:
        return Check("stun", url, "bad-answer", "the answer carries no mapped address (not a STUN server?)", rtt)
    return Check("stun", url, None, f"answers in {rtt:.0f} ms; this machine is seen as {mapped[0]}:{mapped[1]}",
                 rtt, {"mapped": f"{mapped[0]}:{mapped[1]}"})


async def nat_mapping(stun_urls: list[str], *, timeout: float = 3.0) -> Check:
    """From one local port, ask several destinations what they see. The same public address and port
    everywhere: endpoint-independent mapping (hole punching works); different: the mapping depends on
    the destination (a symmetric NAT) and peers will need a TURN relay. Destinations: each STUN server,
    its RFC 5780 OTHER-ADDRESS when it has one, else its port + 1."""
    transport = None
    seen: dict[Address, Address] = {}
    try:
        transport, protocol = await _open_stun_socket()
        local_port = transport.get_extra_info("sockname")[1]
        queue: list[Address] = []
        for url in stun_urls:
            with contextlib.suppress(ValueError, OSError):
                parsed = parse_stun_turn_uri(url)
                queue.append(await _resolve(parsed["host"], parsed["port"]))
        first_of_server = set(queue)
        while queue and len(seen) < 4:
            destination = queue.pop(0)
            if destination in seen:
                continue
            try:
                response, _ = await protocol.binding(destination, timeout)
            except (TimeoutError, stun.TransactionError, OSError):
                continue
            mapped = response.attributes.get("XOR-MAPPED-ADDRESS")
            if mapped is None:
                continue
            seen[destination] = mapped
            if destination in first_of_server:
                other = response.attributes.get("OTHER-ADDRESS")
                queue.append(tuple(other) if other else (destination[0], destination[1] + 1))  # type: ignore[arg-type]
    finally:
        if transport is not None:
            transport.close()
    facts: dict[str, Any] = {"mappings": {f"{d[0]}:{d[1]}": f"{m[0]}:{m[1]}" for d, m in seen.items()}}
    if not seen:
        return Check("nat", ",".join(stun_urls), "unknown", "no STUN server answered: the NAT could not be observed",
                     facts={**facts, "behaviour": "unknown"})
    addresses = set(seen.values())
    if all(address == (_source_address(destination), local_port) for destination, address in seen.items()):
        return Check("nat", ",".join(stun_urls), None, "no NAT: this machine has a public address",
                     facts={**facts, "behaviour": "none"})
    if len(seen) < 2:
        return Check("nat", ",".join(stun_urls), "unknown",
                     "behind NAT; only one STUN destination answered, so the mapping behaviour is unknown "
                     "(give a second --stun server to find out)", facts={**facts, "behaviour": "unknown"})
    if len(addresses) == 1:
        return Check("nat", ",".join(stun_urls), None,
                     f"behind NAT with endpoint-independent mapping ({len(seen)} destinations all see "
                     f"{next(iter(addresses))[0]}:{next(iter(addresses))[1]}): direct/STUN connections can work",
                     facts={**facts, "behaviour": "endpoint-independent"})
    return Check("nat", ",".join(stun_urls), "symmetric",
                 f"behind a symmetric NAT: the public address changes per destination ({len(addresses)} different "
                 "mappings), so peers cannot reach this machine by STUN; a TURN relay is needed",
                 facts={**facts, "behaviour": "symmetric"})


def _source_address(destination: Address) -> str:
    """The local address this machine sends from towards ``destination`` (routing table, no packet)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(destination)
        return str(probe.getsockname()[0])


# ---------------------------------------------------------------------- TURN
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
        server = await _resolve(host, port, socket.SOCK_STREAM if transport_name == "tcp" else socket.SOCK_DGRAM)
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


# ---------------------------------------------------------------------- gathering
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


# ---------------------------------------------------------------------- portal
async def check_portal(url: str, *, timeout: float = 5.0) -> Check:
    """Latency (median of 3 HEAD /), Skynet API compatibility (a registry read of an empty slot must
    say 404) and whether it pushes registry updates (subscription websocket)."""
    try:
        url = check_portal_url(url)
    except ValueError as exc:
        return Check("portal", url, "bad-url", str(exc))
    client = PortalClient(url, timeout=timeout)
    try:
        latencies = []
        header = None
        for _ in range(3):
            started = time.monotonic()
            # one overall deadline per request: a portal that drips bytes never trips the per-read timeout
            response = await asyncio.wait_for(client.http.head(url + "/"), 2 * timeout)
            latencies.append((time.monotonic() - started) * 1000)
            header = response.headers.get("skynet-portal-api")
        latency = statistics.median(latencies)
        try:
            await client.get_entry(os.urandom(32), os.urandom(32))
        except StoreUnavailable as exc:
            return Check("portal", url, "unreachable", str(exc), latency)
        except StoreError as exc:
            return Check("portal", url, "not-a-portal", f"answers HTTP but not the Skynet registry API ({exc})",
                         latency)
        subscription = await client.open_subscription()
        push = subscription is not None
        if subscription is not None:
            await subscription.aclose()
    except (TimeoutError, httpx.ReadTimeout):
        return Check("portal", url, "unreachable", "not answering (it accepts connections but sends no complete "
                     f"answer within {2 * timeout:g} s): check that it is a portal and that it is not overloaded")
    except httpx.HTTPError as exc:
        return Check("portal", url, "unreachable", f"unreachable ({type(exc).__name__}: {exc}): check the URL "
                     "and that it is running (start one with `sdparta portal`)")
    finally:
        await client.aclose()
    facts = {"push": push, "skynet_portal_api_header": header is not None}
    how = "pushes updates (subscription)" if push else "no subscription: clients will poll (slower, more requests)"
    return Check("portal", url, None, f"Skynet API ok in {latency:.0f} ms; {how}", latency, facts)
