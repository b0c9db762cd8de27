"""STUN: does a server answer (and with which mapped address), and the NAT mapping behaviour."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import Any

from aioice import stun
from aiortc.rtcicetransport import parse_stun_turn_uri

from sdparta.netchecks.check import Address, Check, resolve


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
        server = await resolve(parsed["host"], parsed["port"])
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
                queue.append(await resolve(parsed["host"], parsed["port"]))
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
