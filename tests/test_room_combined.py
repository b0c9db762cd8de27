"""One room over two networks at once (CombinedRoom): write to all, read from all, de-duplicate.

Two in-process stores stand in for two independent networks (the relay side is tested against a
real relay in test_nostr_room.py): one going down changes nothing for members, a message delivered
by both arrives once, and a departure is told only when no network carries the member any more.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from sdparta.room.combined import CombinedRoom
from sdparta.room.events import RoomEvents, SessionTiming
from sdparta.room.keys import Identity, RoomKeys
from sdparta.room.roster import Roster
from sdparta.room.session import RoomSession
from sdparta.room.wire import sign_member
from sdparta.store import MemoryStore
from support.room_events import Recorder
from support.waits import wait_until

# ttl above roster.CLOCK_SKEW_S: a member taken out of a list with a record that fresh has *left*
FAST = SessionTiming(reannounce=0.5, ttl=12.0, poll_fast=0.05, poll_slow=0.2, poll_push=0.5)




@pytest.fixture(scope="module")
def keys() -> RoomKeys:
    return RoomKeys.derive("combined-room", "pw")


def combined(stores: list[MemoryStore], keys: RoomKeys, name: str, seed: int, events: RoomEvents) -> CombinedRoom:
    identity, sid = Identity.from_seed(bytes([seed]) * 32), f"{seed:016x}"

    def maker(store: MemoryStore) -> Callable[[RoomEvents], RoomSession]:
        return lambda ev: RoomSession(store, keys, identity, name, sid, ev, timing=FAST)

    return CombinedRoom([maker(s) for s in stores], events, session_id=sid, name=name)


async def test_one_network_down_changes_nothing_and_messages_arrive_once(keys: RoomKeys) -> None:
    a, b = MemoryStore(name="a"), MemoryStore(name="b")
    alice_events, bob_events = Recorder(), Recorder()
    alice = combined([a, b], keys, "alice", 1, alice_events)
    bob = combined([a, b], keys, "bob", 2, bob_events)
    await alice.start()
    await bob.start()
    await wait_until(lambda: alice_events.seen == ["bob"] and bob_events.seen == ["alice"], "both see each other")

    # a message goes out on both networks and arrives once
    [bob_member] = alice.members()
    [alice_member] = bob.members()
    await bob.watch(alice_member, True)  # as the engine does while a pair negotiates
    await alice.send(bob_member, {"type": "offer", "sdp": "v=0", "gen": 1})
    await wait_until(lambda: len(bob_events.messages) == 1, "the offer arriving")
    for _ in range(20):  # both networks polled several more times: the copy is never delivered
        await bob.parts[0]._poll_once()  # type: ignore[attr-defined]
        await bob.parts[1]._poll_once()  # type: ignore[attr-defined]
    assert len(bob_events.messages) == 1 and bob_events.messages[0]["sdp"] == "v=0"

    # network a goes down for longer than a record lives: its copy of each member goes stale, the
    # other network still carries them — nobody is reported gone
    a.available = False
    await wait_until(lambda: all(not p.members() for p in (alice.parts[0], bob.parts[0])),
                     "the dead network's records going stale", timeout=30)
    assert alice_events.gone == [] and bob_events.gone == []
    assert [m.name for m in alice.members()] == ["bob"]
    await alice.send(bob_member, {"type": "offer", "sdp": "v=1", "gen": 2})  # still delivered (on b)
    await wait_until(lambda: len(bob_events.messages) == 2, "the second offer over the live network")

    # leaving is told once, when the last network stops carrying the leaver
    a.available = True
    await bob.leave()
    await wait_until(lambda: alice_events.gone == [("bob", "left")], "bob's departure")
    for room in (alice, bob):
        await room.close()


async def test_a_message_older_than_one_delivered_is_dropped(keys: RoomKeys) -> None:
    """Networks deliver in any order: an older message arriving after a newer one is stale."""
    events = Recorder()
    room = CombinedRoom([lambda ev: RoomSession(MemoryStore(), keys, Identity.generate(), "me", "00" * 8, ev)],
                        events, session_id="00" * 8, name="me")
    member = sign_member(keys, Identity.generate(), "11" * 8, "peer", int(time.time() * 1000))
    room._seen(0, member)
    room._message(0, member, {"type": "offer", "ts": 200, "sdp": "new"})
    room._message(0, member, {"type": "offer", "ts": 100, "sdp": "old"})
    room._message(0, member, {"type": "offer", "ts": 200, "sdp": "new"})
    assert [m["sdp"] for m in events.messages] == ["new"]


def test_roster_ignores_records_older_than_a_goodbye(keys: RoomKeys) -> None:
    """A relay replaying an older record after the member's leaving record must not bring it back."""
    events = Recorder()
    now = time.time()
    roster = Roster((b"\x00" * 32, "00" * 8), events, SessionTiming(), lambda: now)
    identity = Identity.generate()
    old = sign_member(keys, identity, "22" * 8, "peer", int(now * 1000) - 2000)
    newer = sign_member(keys, identity, "22" * 8, "peer", int(now * 1000) - 1000)
    assert roster.record(newer)
    assert not roster.record(old)  # older than what we have: a replay
    roster.depart(newer.key, int(now * 1000))
    assert events.gone == [("peer", "left")]
    assert not roster.record(newer)  # replayed after the goodbye
    assert roster.list() == []
