"""Diagnosis of a pair that did not connect, from its two SDPs (no sockets: the server probe is a fake)."""

from __future__ import annotations

from typing import Any

import pytest
from aiortc import RTCIceServer, RTCSessionDescription

from sdparta.engine.diagnosis import Diagnosis, candidate_types, stun_urls_of, turn_servers_of
from sdparta.room.wire import TurnServer

STUN = RTCIceServer(urls="stun:203.0.113.1:3478")
TURN = RTCIceServer(urls=["turn:203.0.113.2:3478", "stun:203.0.113.2:3478"], username="u", credential="p")
PROBE = "STUN stun:203.0.113.1:3478: no answer"


def sdp(*types: str) -> str:
    lines = ["v=0", "m=audio 9 UDP/TLS/RTP/SAVPF 96"]
    lines += [f"a=candidate:{i} 1 udp 1 10.0.0.{i} {4000 + i} typ {kind}" for i, kind in enumerate(types, 1)]
    return "\r\n".join(lines) + "\r\n"


class Pair:
    """Just the descriptions of a connection."""

    def __init__(self, local: tuple[str, ...] | None, remote: tuple[str, ...] | None) -> None:
        self.localDescription = RTCSessionDescription(sdp(*local), "offer") if local is not None else None
        self.remoteDescription = RTCSessionDescription(sdp(*remote), "answer") if remote is not None else None


def diagnosis(servers: list[RTCIceServer], relay_only: bool = False) -> tuple[Diagnosis, list[Any]]:
    probes: list[Any] = []

    async def probe(probed: list[RTCIceServer], relay: bool) -> str:
        probes.append((list(probed), relay))
        return PROBE

    return Diagnosis(lambda: servers, relay_only=relay_only, notice=lambda s, t: None, probe=probe), probes


NEEDS_TURN = ("not connected after 20 s: all ICE checks failed — no direct or STUN path between these "
              "networks (a symmetric NAT?): a TURN relay is needed (add --turn URL --turn-user U "
              "--turn-password P, or have someone in the room share one with --share-turn)")


@pytest.mark.parametrize(("servers", "pair", "expected"), [
    ([], None, "not connected after 20 s: the peer never sent an offer (it may have left or crashed)"),
    ([], Pair(("host",), None), "not connected after 20 s: the peer never answered (it may have left or crashed)"),
    ([STUN], Pair((), ("host",)), f"not connected after 20 s: no local ICE candidates were gathered ({PROBE})"),
    ([], Pair(("host",), ()), "not connected after 20 s: the peer gathered no ICE candidates "
                              "(its STUN/TURN settings are wrong or unreachable)"),
    ([], Pair(("host",), ("host", "srflx")), NEEDS_TURN),
    ([STUN], Pair(("host", "srflx"), ("host", "srflx")), NEEDS_TURN),
    ([STUN], Pair(("host",), ("host", "srflx")), f"{NEEDS_TURN}; no public address was learned either ({PROBE})"),
    ([TURN], Pair(("host", "relay"), ("host",)), "not connected after 20 s: all ICE checks failed, even "
                                                 "through the TURN relay (can both sides reach it?)"),
    ([], Pair(("host",), ("relay",)), "not connected after 20 s: all ICE checks failed, even "
                                      "through the TURN relay (can both sides reach it?)"),
])
async def test_each_failure_case_is_named_from_the_two_sdps(servers: list[RTCIceServer], pair: Pair | None,
                                                            expected: str) -> None:
    diag, _ = diagnosis(servers)
    assert await diag.why_not_connected(pair, 20.0) == expected


async def test_the_server_probe_is_reused_not_repeated() -> None:
    diag, probes = diagnosis([STUN])
    for _ in range(3):
        assert await diag.gathering_problem() == PROBE
    assert probes == [([STUN], False)]


@pytest.mark.parametrize(("servers", "relay_only", "types", "incomplete"), [
    ([], False, (), True),  # nothing at all
    ([], False, ("host",), False),
    ([STUN], False, ("host",), True),  # a STUN server that gave no public address
    ([STUN], False, ("host", "srflx"), False),
    ([STUN], True, ("relay",), False),  # relay-only asks nothing of STUN
    ([TURN], False, ("host", "srflx"), True),  # a TURN server that gave no relay
    ([TURN], True, ("relay",), False),
])
def test_gathering_is_incomplete_when_a_configured_server_gave_nothing(
        servers: list[RTCIceServer], relay_only: bool, types: tuple[str, ...], incomplete: bool) -> None:
    diag, _ = diagnosis(servers, relay_only)
    assert diag.gathering_incomplete(sdp(*types)) is incomplete


def test_candidate_types_and_server_lists() -> None:
    assert candidate_types(sdp("host", "srflx", "relay", "host")) == {"host", "srflx", "relay"}
    assert candidate_types("a=candidate:1 1 udp 1 10.0.0.1 4000 typ\r\n") == set()
    assert turn_servers_of([STUN, TURN]) == [TurnServer("turn:203.0.113.2:3478", "u", "p")]
    assert stun_urls_of([STUN, TURN]) == ["stun:203.0.113.1:3478", "stun:203.0.113.2:3478"]
