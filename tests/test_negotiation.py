"""Per-peer negotiation with fake connections, room and media: no sockets, no aiortc gathering.

Covers who offers (glare rule), which offers/answers count (generations), the connect guard
(failed, or reconnecting when a path worked before), ICE-failure policy and restart scheduling."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from aiortc import RTCSessionDescription

from sdparta.engine.diagnosis import Diagnosis
from sdparta.engine.negotiation import Negotiation, NegotiationTiming, PeerContext, offers_first
from sdparta.engine.peer import PeerLink
from sdparta.engine.state import PeerStatus
from sdparta.room.wire import Member

DEADLINE = 20.0  # generous: CI is a loaded 2-core machine


def sdp(*types: str) -> str:
    lines = ["v=0", "m=audio 9 UDP/TLS/RTP/SAVPF 96"]
    lines += [f"a=candidate:{i} 1 udp 1 10.0.0.{i} {4000 + i} typ {kind}" for i, kind in enumerate(types, 1)]
    return "\r\n".join(lines) + "\r\n"


class FakeChannel:
    def __init__(self, state: str = "open") -> None:
        self.readyState = state
        self.sent: list[dict[str, Any]] = []
        self.handlers: dict[str, Callable[..., Any]] = {}

    def on(self, event: str, fn: Callable[..., Any] | None = None) -> Any:
        if fn is not None:
            self.handlers[event] = fn
            return fn
        return lambda f: self.handlers.setdefault(event, f)

    def send(self, raw: str) -> None:
        self.sent.append(json.loads(raw))


class FakePC:
    """The part of RTCPeerConnection a negotiation uses."""

    def __init__(self, types: tuple[str, ...] = ("host",)) -> None:
        self.types = types
        self.handlers: dict[str, Callable[..., Any]] = {}
        self.signalingState = "stable"
        self.iceGatheringState = "new"
        self.iceConnectionState = "new"
        self.connectionState = "new"
        self.localDescription: RTCSessionDescription | None = None
        self.remoteDescription: RTCSessionDescription | None = None
        self.channel: FakeChannel | None = None

    def on(self, event: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return lambda fn: self.handlers.setdefault(event, fn)

    async def createOffer(self) -> RTCSessionDescription:
        return RTCSessionDescription(sdp(*self.types), "offer")

    async def createAnswer(self) -> RTCSessionDescription:
        return RTCSessionDescription(sdp(*self.types), "answer")

    async def setLocalDescription(self, description: RTCSessionDescription) -> None:
        self.localDescription = description
        self.signalingState = "have-local-offer" if description.type == "offer" else "stable"

    async def setRemoteDescription(self, description: RTCSessionDescription) -> None:
        self.remoteDescription = description
        self.signalingState = "have-remote-offer" if description.type == "offer" else "stable"

    async def addIceCandidate(self, candidate: object) -> None:
        pass

    def createDataChannel(self, label: str, ordered: bool = True) -> FakeChannel:
        self.channel = FakeChannel("connecting")
        return self.channel

    def getSenders(self) -> list[Any]:
        return []

    def getTransceivers(self) -> list[Any]:
        return []

    async def close(self) -> None:
        self.connectionState = "closed"

    def become(self, state: str) -> None:
        self.connectionState = state
        self.handlers["connectionstatechange"]()


class FakeRoom:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.kicks = 0

    async def send(self, member: Member, body: dict[str, Any]) -> None:
        self.sent.append(body)

    async def watch(self, member: Member, active: bool) -> None:
        pass

    def mark_pending(self, seconds: float = 10.0, *, urgent: bool = False) -> None:
        pass

    def kick(self) -> None:
        self.kicks += 1

    async def room_reachable(self, timeout: float = 1.0) -> bool:
        return True


class FakeMedia:
    def add_to(self, pc: Any, offering: bool) -> None:
        pass

    def receive(self, link: PeerLink, pc: Any, track: Any) -> None:
        pass

    def state_message(self) -> dict[str, Any]:
        return {"t": "state", "name": "me", "muted": False, "camera_off": True, "audio_only": True}


class Harness:
    def __init__(self, *, we_offer: bool, timing: NegotiationTiming | None = None,
                 types: tuple[str, ...] = ("host",)) -> None:
        self.room = FakeRoom()
        self.pcs: list[FakePC] = []
        self.finished: list[tuple[PeerStatus, str | None]] = []
        self.notices: list[str] = []

        async def probe(servers: Any, relay_only: bool) -> str:
            return "no usable network interface (is the network up?)"

        def new_pc() -> FakePC:
            self.pcs.append(FakePC(types))
            return self.pcs[-1]

        def finish(link: PeerLink, status: PeerStatus, reason: str | None) -> None:
            if not link.finished:
                link.set_status(status, reason)
                self.finished.append((status, reason))

        self.context = PeerContext(
            room=self.room, media=FakeMedia(), new_pc=new_pc, finish=finish,  # type: ignore[arg-type]
            diagnosis=Diagnosis(list, relay_only=False, notice=lambda s, t: self.notices.append(t), probe=probe),
            notice=lambda s, t: self.notices.append(t), chat=lambda link, text: None,
            invalid=lambda reason: None, changed=lambda: None, timing=timing or NegotiationTiming())
        member = Member(b"\x02" * 32, "b" * 16, "bob", 0, b"")
        self.link = PeerLink(member, we_offer, 0.0, lambda: None)
        self.negotiation = Negotiation(self.link, self.context)

    @property
    def pc(self) -> FakePC:
        return self.pcs[-1]

    async def until(self, predicate: Callable[[], bool], what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE
        while not predicate():
            assert loop.time() < deadline, f"timed out waiting for {what}; timeline: {self.timeline()}"
            await asyncio.sleep(0.01)

    def timeline(self) -> list[str]:
        return [c.state for c in self.link.timeline if c.kind == "peer"]

    async def close(self) -> None:
        await asyncio.sleep(0.01)  # let spawned work start before it is cancelled
        await self.link.close()


# ---------------------------------------------------------------------------- who offers
def test_the_smaller_public_key_offers_and_the_session_id_breaks_a_tie() -> None:
    small, big = b"\x01" * 32, b"\x02" * 32
    assert offers_first(small, "ffff", Member(big, "0000", "x", 0, b""))
    assert not offers_first(big, "0000", Member(small, "ffff", "x", 0, b""))
    # the same identity twice (two terminals): the session ids decide
    assert offers_first(small, "aaaa", Member(small, "bbbb", "x", 0, b""))
    assert not offers_first(small, "bbbb", Member(small, "aaaa", "x", 0, b""))


def test_exactly_one_side_of_every_pair_offers() -> None:
    keys = [bytes([i]) * 32 for i in (3, 1, 2)]
    sessions = ["c" * 16, "a" * 16, "b" * 16]
    for i in range(3):
        for j in range(3):
            if i != j:
                a = offers_first(keys[i], sessions[i], Member(keys[j], sessions[j], "x", 0, b""))
                b = offers_first(keys[j], sessions[j], Member(keys[i], sessions[i], "x", 0, b""))
                assert a != b


# ---------------------------------------------------------------------------- generations
async def test_the_offerer_sends_generation_one_and_takes_only_its_answer() -> None:
    h = Harness(we_offer=True)
    try:
        h.negotiation.start()
        await h.until(lambda: h.room.sent, "the first offer")
        assert h.room.sent[0]["type"] == "offer" and h.room.sent[0]["gen"] == 1
        assert h.link.status == PeerStatus.CONNECTING
        h.negotiation.on_signal({"type": "answer", "sdp": sdp("host"), "gen": 0})  # to an older offer
        h.negotiation.on_signal({"type": "offer", "sdp": sdp("host"), "gen": 5})  # the offerer takes no offer
        await asyncio.sleep(0.05)
        assert not h.negotiation.answered and h.pc.remoteDescription is None and len(h.pcs) == 1
        h.negotiation.on_signal({"type": "answer", "sdp": sdp("host"), "gen": 1})
        await h.until(lambda: h.negotiation.answered, "the answer applied")
        assert h.pc.remoteDescription is not None and h.pc.remoteDescription.type == "answer"
    finally:
        await h.close()


async def test_the_answerer_ignores_stale_and_repeated_offers() -> None:
    h = Harness(we_offer=False)
    try:
        h.negotiation.on_signal({"type": "offer", "sdp": sdp("host"), "gen": 2})
        await h.until(lambda: h.room.sent, "the answer")
        assert h.room.sent == [{"type": "answer", "sdp": sdp("host"), "gen": 2}]
        for gen in (2, 1):  # the same offer again (channel and room), then an older one
            h.negotiation.on_signal({"type": "offer", "sdp": sdp("host"), "gen": gen})
        h.negotiation.on_signal({"type": "answer", "sdp": sdp("host"), "gen": 2})  # the answerer takes no answer
        await asyncio.sleep(0.05)
        assert len(h.pcs) == 1 and len(h.room.sent) == 1
        h.negotiation.on_signal({"type": "offer", "sdp": sdp("host"), "gen": 3})  # a newer one counts
        await h.until(lambda: len(h.room.sent) == 2, "the second answer")
        assert h.room.sent[1]["gen"] == 3 and len(h.pcs) == 2
    finally:
        await h.close()


async def test_a_returning_member_continues_above_the_old_generations() -> None:
    old = Harness(we_offer=True)
    old.negotiation.gen, old.negotiation.remote_gen, old.negotiation.path_worked = 4, 2, True
    h = Harness(we_offer=True)
    try:
        h.negotiation.follow(old.negotiation)
        assert "back in the room after being gone" in h.timeline()
        h.negotiation.start()
        await h.until(lambda: h.room.sent, "the fresh offer")
        assert h.room.sent[0]["gen"] == 5 and h.negotiation.path_worked
    finally:
        await h.close()


async def test_signals_on_a_finished_pair_are_ignored() -> None:
    h = Harness(we_offer=False)
    h.link.set_status(PeerStatus.LEFT)
    h.negotiation.on_signal({"type": "offer", "sdp": sdp("host"), "gen": 1})
    await asyncio.sleep(0.05)
    assert not h.pcs and not h.room.sent


# ---------------------------------------------------------------------------- connect guard
async def test_a_pair_that_never_connects_fails_with_its_diagnosis() -> None:
    h = Harness(we_offer=False, timing=NegotiationTiming(connect_timeout=0.05))
    try:
        h.negotiation.start()  # the peer never sends an offer
        await h.until(lambda: h.finished, "the connect guard")
        assert h.finished == [(PeerStatus.FAILED, "not connected after 0 s: the peer never sent an offer "
                                                  "(it may have left or crashed)")]
    finally:
        await h.close()


async def test_a_pair_with_a_path_that_worked_before_reconnects_instead_of_failing() -> None:
    old = Harness(we_offer=False)
    old.negotiation.path_worked = True
    h = Harness(we_offer=False, timing=NegotiationTiming(connect_timeout=0.05))
    try:
        h.negotiation.follow(old.negotiation)
        h.negotiation.start()
        await h.until(lambda: h.link.status == PeerStatus.RECONNECTING, "reconnecting")
        assert not h.finished
        assert h.link.failure_reason is not None and "a path to this peer worked before" in h.link.failure_reason
        assert h.room.kicks == 1  # the push socket is reopened: it may have died with the network
    finally:
        await h.close()


async def test_a_connected_pair_is_left_alone_by_the_guard() -> None:
    h = Harness(we_offer=True, timing=NegotiationTiming(connect_timeout=0.2))
    try:
        h.negotiation.start()
        await h.until(lambda: h.room.sent, "the offer")
        h.pc.become("connected")
        assert h.link.status == PeerStatus.CONNECTED and h.negotiation.path_worked
        await asyncio.sleep(0.4)
        assert h.link.status == PeerStatus.CONNECTED and not h.finished
    finally:
        await h.close()


async def test_ice_failure_is_final_only_if_no_path_ever_worked() -> None:
    first = Harness(we_offer=True)
    later = Harness(we_offer=True)
    try:
        for h in (first, later):
            h.negotiation.start()
            await h.until(lambda h=h: h.room.sent, "the offer")
        later.pc.become("connected")
        first.pc.become("failed")
        later.pc.become("failed")
        assert (first.link.status, first.link.failure_reason) == (PeerStatus.FAILED, "ICE/DTLS failed")
        assert (later.link.status, later.link.failure_reason) == (PeerStatus.RECONNECTING, "ICE/DTLS failed")
    finally:
        await first.close()
        await later.close()


async def test_no_local_candidates_fails_at_once_with_the_probe_finding() -> None:
    h = Harness(we_offer=True, types=())
    try:
        h.negotiation.start()
        await h.until(lambda: h.finished, "the gathering check")
        assert h.finished == [(PeerStatus.FAILED, "no local ICE candidates were gathered "
                                                  "(no usable network interface (is the network up?))")]
    finally:
        await h.close()


# ---------------------------------------------------------------------------- restarts
async def test_an_ice_restart_offers_the_next_generation_over_the_live_channel_and_renews_it() -> None:
    timing = NegotiationTiming(reoffer=0.2, answered_timeout=0.2)
    h = Harness(we_offer=True, timing=timing)
    try:
        h.negotiation.start()
        await h.until(lambda: h.room.sent, "the offer")
        h.negotiation.on_signal({"type": "answer", "sdp": sdp("host"), "gen": 1})
        await h.until(lambda: h.negotiation.answered, "the answer")
        channel = h.pcs[0].channel
        assert channel is not None
        channel.readyState = "open"
        channel.handlers["open"]()
        assert channel.sent[0]["t"] == "state"
        h.pc.become("connected")

        h.negotiation.request_restart()
        assert h.link.status == PeerStatus.RECONNECTING
        await h.until(lambda: any(m.get("t") == "signal" for m in channel.sent), "the restart offer on the channel")
        signal = next(m for m in channel.sent if m.get("t") == "signal")
        assert signal["body"]["type"] == "offer" and signal["body"]["gen"] == 2
        assert "restart offer gen 2 via data channel" in h.timeline()
        # unanswered: offered again after `reoffer`, one generation up
        await h.until(lambda: any(b["gen"] == 3 for b in h.room.sent), "the renewed restart offer")
        h.negotiation.on_signal({"type": "answer", "sdp": sdp("host"), "gen": h.negotiation.gen})
        await h.until(lambda: h.negotiation.answered, "the restart answer")
        h.pc.become("connected")
        assert h.link.status == PeerStatus.CONNECTED and h.link.restarts == 1
        assert h.negotiation.reconnecting_since is None
    finally:
        await h.close()


async def test_the_answerer_asks_the_offerer_to_restart() -> None:
    h = Harness(we_offer=False)
    try:
        h.negotiation.on_signal({"type": "offer", "sdp": sdp("host"), "gen": 1})
        await h.until(lambda: h.room.sent, "the answer")
        channel = FakeChannel("open")
        h.pc.handlers["datachannel"](channel)
        h.negotiation.request_restart()
        assert channel.sent[-1] == {"t": "restart"} and h.link.status != PeerStatus.RECONNECTING
        assert "asked the peer to restart ICE" in h.timeline()
    finally:
        await h.close()


async def test_silence_on_a_connected_pair_starts_reconnecting_and_a_long_one_gives_up() -> None:
    h = Harness(we_offer=False, timing=NegotiationTiming(silence=4.0, give_up=120.0))
    try:
        h.link.set_status(PeerStatus.CONNECTED)
        now = h.link.last_heard
        h.negotiation.heartbeat(now + 1.0)
        assert h.link.status == PeerStatus.CONNECTED
        assert h.negotiation.heard_recently(now + 1.0) and not h.negotiation.heard_recently(now + 5.0)
        h.negotiation.heartbeat(now + 5.0)
        assert (h.link.status, h.link.failure_reason) == (PeerStatus.RECONNECTING, "nothing heard for 4 s")
        assert h.negotiation.reconnecting_since is not None
        h.negotiation.heartbeat(h.negotiation.reconnecting_since + 121.0)
        assert h.finished == [(PeerStatus.FAILED, "could not reconnect for 120 s")]
    finally:
        await h.close()


@pytest.mark.parametrize("raw", ['{"t":"signal","body":{"type":"offer","sdp":"x","gen":true}}',
                                 '{"t":"signal","body":{"type":"pranswer","sdp":"x","gen":1}}', "[1]"])
async def test_malformed_channel_signals_are_dropped(raw: str) -> None:
    h = Harness(we_offer=False)
    dropped: list[str] = []
    h.context.invalid = dropped.append
    try:
        h.negotiation.on_signal({"type": "offer", "sdp": sdp("host"), "gen": 1})
        await h.until(lambda: h.room.sent, "the answer")
        channel = FakeChannel("open")
        h.pc.handlers["datachannel"](channel)
        channel.handlers["message"](raw)
        await asyncio.sleep(0.05)
        assert len(dropped) == 1 and len(h.pcs) == 1
    finally:
        await h.close()
