"""ICE restarts on loopback: two real engines through a real portal. A restart asked for by either
side goes over the live data channel, replaces the pair's connection and the call goes on (audio
keeps arriving, chat still works). Outages that kill the path are tested in the NAT lab."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from sdparta.engine.call import Call, CallConfig
from sdparta.engine.state import PeerSnapshot
from sdparta.room.keys import Identity, RoomKeys
from sdparta.room.session import RoomEvents, RoomSession, SessionTiming
from sdparta.store import open_store

pytestmark = pytest.mark.integration


def wait(predicate: Callable[[], bool], timeout: float, what: str, detail: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{detail()}")
        time.sleep(0.05)


def only_peer(call: Call) -> PeerSnapshot | None:
    peers = call.snapshot().peers
    return peers[0] if len(peers) == 1 else None


def describe(*calls: Call) -> str:
    lines = []
    for call in calls:
        for peer in call.snapshot().peers:
            lines.append(f"{call.config.name}→{peer.name}: {peer.status} {peer.failure_reason} "
                         f"restarts={peer.restarts} audio={peer.audio_seconds:.1f}s "
                         f"timeline={[c.state for c in peer.timeline if c.kind == 'peer'][-6:]}")
    return "\n".join(lines)


@pytest.mark.parametrize("asked_by", ["offerer", "answerer"])
def test_ice_restart_keeps_the_call(portal, asked_by: str) -> None:  # type: ignore[no-untyped-def]
    keys = RoomKeys.derive("restart-room", "")
    calls = [Call(CallConfig(room="restart-room", portals=[portal.url], name=name, video="none",
                             audio=f"tone:{hz}", room_keys=keys))
             for name, hz in (("alice", 500), ("bob", 700))]
    for call in calls:
        call.start()
    try:
        wait(lambda: all((p := only_peer(c)) is not None and p.status == "connected" and p.audio_seconds > 1
                         for c in calls), 30, "both connected and hearing each other", lambda: describe(*calls))
        peer = only_peer(calls[0])
        assert peer is not None
        offerer = calls[0] if peer.we_offer else calls[1]
        answerer = calls[1] if offerer is calls[0] else calls[0]
        asker = offerer if asked_by == "offerer" else answerer
        target = only_peer(asker)
        assert target is not None
        heard_before = only_peer(answerer).audio_seconds  # type: ignore[union-attr]

        asker.restart_ice(target.session_id)

        wait(lambda: all((p := only_peer(c)) is not None and p.restarts == 1 and p.status == "connected"
                         for c in calls), 20, "the pair back after one ICE restart", lambda: describe(*calls))
        for call in calls:
            timeline = [c.state for c in only_peer(call).timeline if c.kind == "peer"]  # type: ignore[union-attr]
            assert any(s.startswith("reconnecting") for s in timeline), timeline
        offer_notes = [c.state for c in only_peer(offerer).timeline if c.kind == "peer"]  # type: ignore[union-attr]
        assert "restart offer gen 2 via data channel" in offer_notes, offer_notes
        # media flows on the new connection and the data channel still carries chat
        wait(lambda: only_peer(answerer).audio_seconds > heard_before + 2, 15,  # type: ignore[union-attr]
             "audio after the restart", lambda: describe(*calls))
        offerer.send_chat("after the restart")
        wait(lambda: any(m.text == "after the restart" for m in answerer.snapshot().chat), 10,
             "chat after the restart", lambda: describe(*calls))
    finally:
        for call in calls:
            call.stop()
        assert not any(call.running for call in calls)


def test_a_member_out_of_the_list_without_bye_and_listed_again_gets_a_fresh_pair(portal) -> None:  # type: ignore[no-untyped-def]
    """A session that vanished from the presence list without saying bye (a writer with a stale
    list, or a buggy one) and is listed again is alive: the engine starts a fresh pair with it
    instead of keeping it `left` for good. The other member is a bare room session we drive."""
    keys = RoomKeys.derive("relist-room", "")
    call = Call(CallConfig(room="relist-room", portals=[portal.url], name="alice", video="none",
                           audio="none", room_keys=keys, connect_timeout=60))
    call.start()

    async def bob_vanishes_and_returns() -> None:
        store = open_store([portal.url])
        bob = RoomSession(store, keys, Identity.generate(), "bob", "b0b0b0b0b0b0b0b0", RoomEvents(),
                          timing=SessionTiming(reannounce=3600, poll_push=3600))
        await bob.start()
        try:
            await asyncio.to_thread(wait, lambda: only_peer(call) is not None, 20, "alice seeing bob",
                                    lambda: describe(call))
            await bob._update_presence(leaving=True)  # out of the list, no bye
            await asyncio.to_thread(wait, lambda: (p := only_peer(call)) is not None and p.status == "left",
                                    20, "alice taking bob for left", lambda: describe(call))
            await bob._update_presence(leaving=False)  # listed again
            await asyncio.to_thread(wait, lambda: (p := only_peer(call)) is not None
                                    and p.status in ("discovered", "connecting"), 20,
                                    "a fresh pair with bob", lambda: describe(call))
        finally:
            await bob.close()
            await store.aclose()

    try:
        asyncio.run(bob_vanishes_and_returns())
        timeline = [c.state for c in only_peer(call).timeline if c.kind == "peer"]  # type: ignore[union-attr]
        assert "back in the room after being gone" in timeline, timeline
    finally:
        call.stop()
