"""The aioice-internals adapter against two real aiortc peers on this machine."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection

from sdparta.engine import ice_adapter
from sdparta.engine.ice_adapter import ice_details, path_kind
from sdparta.engine.state import CandidateInfo, CandidatePairInfo


async def _wait(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_selected_pair_and_check_list_of_a_connected_pair() -> None:
    a = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    b = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        a.createDataChannel("probe")
        assert ice_details(a) == (None, (), (), ())  # nothing gathered yet: empty, no exception
        await a.setLocalDescription(await a.createOffer())
        await b.setRemoteDescription(a.localDescription)
        await b.setLocalDescription(await b.createAnswer())
        await a.setRemoteDescription(b.localDescription)
        await _wait(lambda: a.connectionState == "connected" and b.connectionState == "connected")
        selected, check_list, local, remote = ice_details(a)
        assert selected is not None and selected.nominated
        assert selected.local.type == "host" and selected.remote.type == "host"
        assert any(p.state == "succeeded" for p in check_list)
        chosen = [p for p in check_list if p.selected]
        assert len(chosen) == 1 and selected.selected, "exactly one pair of the check list is the selected one"
        assert (chosen[0].local, chosen[0].remote) == (selected.local, selected.remote)
        assert local and remote
        assert {c.address for c in remote} >= {selected.remote.address}
        assert path_kind(selected) == "direct"
    finally:
        await a.close()
        await b.close()


def _pair(local: str, remote: str) -> CandidatePairInfo:
    def cand(kind: str) -> CandidateInfo:
        return CandidateInfo("1", 1, "udp", kind, "10.0.0.1", 1, 1)

    return CandidatePairInfo(cand(local), cand(remote), "succeeded", True)


def test_path_kind_classification() -> None:
    assert path_kind(None) is None
    assert path_kind(_pair("host", "host")) == "direct"
    assert path_kind(_pair("srflx", "host")) == "stun"
    assert path_kind(_pair("host", "prflx")) == "stun"
    assert path_kind(_pair("relay", "srflx")) == "turn"


def test_two_nominated_pairs_but_one_selected(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The controlled side marks every pair the remote nominates (here IPv4 and IPv6) as nominated;
    only aioice's ``_nominated`` entry carries media, and only it is ``selected``."""
    def cand(host: str) -> Any:
        return SimpleNamespace(foundation="1", component=1, transport="udp", type="host", host=host, port=9,
                               priority=1)

    v4 = SimpleNamespace(local_candidate=cand("192.0.2.1"), remote_candidate=cand("192.0.2.2"),
                         state=SimpleNamespace(value=3), nominated=True)
    v6 = SimpleNamespace(local_candidate=cand("fd00::1"), remote_candidate=cand("fd00::2"),
                         state=SimpleNamespace(value=3), nominated=True)
    connection = SimpleNamespace(_nominated={1: v6}, _check_list=[v4, v6], local_candidates=[v4.local_candidate],
                                 remote_candidates=[v4.remote_candidate])
    monkeypatch.setattr(ice_adapter, "_connection", lambda pc: connection)
    selected, check_list, _, _ = ice_details(None)  # type: ignore[arg-type]
    assert selected is not None and selected.selected and selected.remote.address == "fd00::2"
    assert [p.nominated for p in check_list] == [True, True]
    assert [p.selected for p in check_list] == [False, True]
