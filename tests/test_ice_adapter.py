"""The aioice-internals adapter against two real aiortc peers on this machine."""

from __future__ import annotations

import asyncio
import socket
import threading
import uuid
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from sdparta.engine import ice_adapter
from sdparta.engine.ice_adapter import end_of_candidates_safe, ice_details, path_kind
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


def _browser_like(sdp: str, host: str | None) -> str:
    """An aiortc SDP as a browser without media permission sends it: no a=end-of-candidates, and its
    host candidates hidden behind a ``.local`` name (``host``; None: no candidates at all)."""
    out = []
    for line in sdp.splitlines():
        if line.startswith("a=end-of-candidates"):
            continue
        if line.startswith("a=candidate:"):
            if host is None or " typ host" not in line:
                continue
            parts = line.split(" ")
            parts[4] = host
            line = " ".join(parts)
        out.append(line)
    return "\r\n".join(out) + "\r\n"


def _own_thread(scenario: Callable[[], Awaitable[None]]) -> None:
    """Run an mDNS-resolving scenario on a fresh thread and loop: aioice keeps its mDNS socket and lock
    per thread, bound to the loop that first resolved (the engine has one loop per thread; pytest has
    one per test, so a second test on the same thread would fail with "bound to a different event loop")."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(scenario())
        except BaseException as exc:  # re-raised in the test thread
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


async def _answer_browser_like_offer(end_always: bool) -> tuple[RTCPeerConnection, RTCPeerConnection, bool]:
    """A real aiortc offerer whose offer reaches a real aiortc answerer as a browser's would, with an
    unresolvable ``.local`` host candidate; the answerer ends the candidates always (the old code) or
    only when :func:`end_of_candidates_safe` says so (the fix). Returns (offerer, answerer, safe)."""
    offerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    answerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    offerer.createDataChannel("probe")
    await offerer.setLocalDescription(await offerer.createOffer())
    hidden = _browser_like(offerer.localDescription.sdp, f"{uuid.uuid4()}.local")
    await answerer.setRemoteDescription(RTCSessionDescription(hidden, "offer"))
    safe = end_of_candidates_safe(answerer)
    if end_always or safe:
        await answerer.addIceCandidate(None)
    await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)
    return offerer, answerer, safe


def test_an_unresolved_mdns_offer_is_not_ended_and_connects_through_prflx() -> None:
    """The regression of issue 13: with the old unconditional end-of-candidates the answer had no
    candidates and the pair never connected; the fix withholds it and the pair connects (prflx)."""
    _own_thread(_unresolved_mdns_offer_connects)


async def _unresolved_mdns_offer_connects() -> None:
    offerer, answerer, safe = await _answer_browser_like_offer(end_always=False)
    try:
        assert not safe, "no remote candidate resolved: end-of-candidates is unsafe"
        assert "a=candidate:" in answerer.localDescription.sdp, "the answer carries local candidates"
        await _wait(lambda: offerer.connectionState == "connected" and answerer.connectionState == "connected")
        selected, _, _, remote = ice_details(answerer)
        assert selected is not None and selected.remote.type == "prflx", selected
        assert all(not c.address.endswith(".local") for c in remote)
    finally:
        await offerer.close()
        await answerer.close()


def test_the_old_unconditional_end_of_candidates_prunes_the_answer() -> None:
    """What the fix avoids, pinned so an aioice that stops pruning is noticed: ending the candidates
    of an offer whose only candidate did not resolve leaves the answer without candidates."""
    _own_thread(_old_end_of_candidates_prunes)


async def _old_end_of_candidates_prunes() -> None:
    offerer, answerer, safe = await _answer_browser_like_offer(end_always=True)
    try:
        assert not safe
        assert "a=candidate:" not in answerer.localDescription.sdp
    finally:
        await offerer.close()
        await answerer.close()


async def test_end_of_candidates_is_safe_once_a_remote_candidate_is_known() -> None:
    a = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    b = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        a.createDataChannel("probe")
        assert not end_of_candidates_safe(b), "no transport yet: unsafe"
        await a.setLocalDescription(await a.createOffer())
        plain = _browser_like(a.localDescription.sdp, None)  # no candidates at all
        await b.setRemoteDescription(RTCSessionDescription(plain, "offer"))
        assert not end_of_candidates_safe(b)
        await b.close()
        b = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        trickle_less = "\r\n".join(line for line in a.localDescription.sdp.splitlines()
                                   if not line.startswith("a=end-of-candidates")) + "\r\n"
        await b.setRemoteDescription(RTCSessionDescription(trickle_less, "offer"))
        assert end_of_candidates_safe(b), "host candidates known: ending is safe"
    finally:
        await a.close()
        await b.close()


class _Room:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, member: Any, body: dict[str, Any]) -> None:
        self.sent.append(body)

    async def watch(self, member: Any, active: bool) -> None:
        pass

    def mark_pending(self, seconds: float = 10.0, *, urgent: bool = False) -> None:
        pass

    def kick(self) -> None:
        pass

    async def room_reachable(self, timeout: float = 1.0) -> bool:
        return True


class _Media:
    def add_to(self, pc: Any, offering: bool) -> None:
        pass

    def receive(self, link: Any, pc: Any, track: Any) -> None:
        pass

    def state_message(self) -> dict[str, Any]:
        return {"t": "state", "name": "me", "muted": False, "camera_off": True, "audio_only": True}


def test_sdpartas_negotiation_answers_an_unresolved_mdns_offer_with_candidates_and_connects() -> None:
    """sdparta's own answer path (engine.negotiation) with a real connection: fails with the old
    unconditional end-of-candidates (an answer without candidates)."""
    _own_thread(_negotiation_answers_unresolved_mdns_offer)


async def _negotiation_answers_unresolved_mdns_offer() -> None:
    from sdparta.engine.diagnosis import Diagnosis
    from sdparta.engine.negotiation import Negotiation, PeerContext
    from sdparta.engine.peer import PeerLink
    from sdparta.room.wire import Member

    async def probe(servers: Any, relay_only: bool) -> str:
        return "no probe in this test"

    room, finished = _Room(), []
    context = PeerContext(
        room=room, media=_Media(), new_pc=lambda: RTCPeerConnection(RTCConfiguration(iceServers=[])),
        finish=lambda link, status, reason: finished.append((status, reason)),
        diagnosis=Diagnosis(list, relay_only=False, notice=lambda s, t: None, probe=probe),
        notice=lambda s, t: None, chat=lambda link, text: None, invalid=lambda reason: None, changed=lambda: None)
    link = PeerLink(Member(b"\x02" * 32, "b" * 16, "browser", 0, b""), False, 0.0, lambda: None)
    negotiation = Negotiation(link, context)
    offerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        offerer.createDataChannel("sdparta")
        await offerer.setLocalDescription(await offerer.createOffer())
        hidden = _browser_like(offerer.localDescription.sdp, f"{uuid.uuid4()}.local")
        negotiation.on_signal({"type": "offer", "sdp": hidden, "gen": 1})
        await _wait(lambda: room.sent)
        answer = room.sent[0]
        assert answer["type"] == "answer" and "a=candidate:" in answer["sdp"], "the answer carries candidates"
        assert any("end-of-candidates not signalled" in c.state for c in link.timeline)
        await offerer.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        await _wait(lambda: offerer.connectionState == "connected" and link.connected_after_s is not None)
        assert not finished
    finally:
        await offerer.close()
        await link.close()


async def test_a_busy_udp_socket_hands_over_its_backlog_in_one_event() -> None:
    """With asyncio's own transport one datagram is read per loop iteration: 40 waiting datagrams
    would take 40 iterations (a bundled SFU subscription's consent replies waited behind its media
    until aioice closed the connection). Drained, all 40 arrive in the first event."""
    assert ice_adapter.drain_udp_sockets()
    loop = asyncio.get_running_loop()
    got: list[bytes] = []
    first: asyncio.Future[None] = loop.create_future()

    class Receiver(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            got.append(data)
            if not first.done():
                first.set_result(None)

    transport, _ = await loop.create_datagram_endpoint(Receiver, local_addr=("127.0.0.1", 0))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for i in range(40):  # in the receive buffer before the loop looks at the socket again
            sender.sendto(b"%d" % i, transport.get_extra_info("sockname"))
        await asyncio.wait_for(first, 5)
        assert got == [b"%d" % i for i in range(40)]
    finally:
        sender.close()
        transport.close()
