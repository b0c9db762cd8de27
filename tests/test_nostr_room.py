"""The room protocol over a real Nostr relay process (NostrRoom), without WebRTC; every test runs
against both relay implementations (PyPI nostr-relay, TypeScript @nostr-relay/core).

Members find each other through their own addressable records, exchange sealed pair messages,
leave with a goodbye that replays cannot undo, and a relay that replays stale records or serves
tampered events changes nothing. What the relay stores is opaque.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sdparta.nostr import Event, RelayPool, RelayTimeouts
from sdparta.room.events import RoomEvents, SessionTiming
from sdparta.room.keys import Identity, RoomKeys
from sdparta.room.nostr_room import NostrRoom
from sdparta.room.wire import TurnServer
from support.nostr_relay import IMPLEMENTATIONS, RelayFactory, RelayProcess
from support.room_events import Recorder
from support.waits import wait_until

FAST_RELAY = RelayTimeouts(backoff=(0.1, 1.0), ok=20.0)
TIMING = SessionTiming(reannounce=1.0, reannounce_retry=0.5, ttl=30.0)


@pytest.fixture(scope="module")
def keys() -> RoomKeys:
    return RoomKeys.derive("nostr-room-test", "secret password")


@pytest.fixture(params=IMPLEMENTATIONS)
def relay(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RelayProcess]:
    with RelayFactory(tmp_path, implementation=request.param) as factory:
        yield factory.start()


def member(relay_urls: list[str], keys: RoomKeys, name: str, seed: int, events: RoomEvents,
           **options: Any) -> NostrRoom:
    return NostrRoom(RelayPool(relay_urls, timeouts=FAST_RELAY), keys, Identity.from_seed(bytes([seed]) * 32),
                     name, f"{seed:016x}", events, timing=TIMING, **options)


async def test_members_meet_talk_and_leave_over_a_relay(relay: RelayProcess, keys: RoomKeys) -> None:
    alice_events, bob_events = Recorder(), Recorder()
    turn = [TurnServer("turn:127.0.0.1:3478?transport=udp", "user", "pass")]
    alice = member([relay.url], keys, "alice", 1, alice_events, share_turn=turn)
    bob = member([relay.url], keys, "bob", 2, bob_events)
    await alice.start()
    await bob.start()
    try:
        await wait_until(lambda: alice_events.seen == ["bob"] and bob_events.seen == ["alice"],
                         "both members seeing each other", 30)
        # the settings alice shared reached bob before anyone was seen (read while joining)
        assert [s.turn for s in bob_events.settings_seen] == [tuple(turn)]

        [bob_member] = alice.members()
        for gen in range(1, 4):  # the newest replaces the last (one addressable event per pair)
            await alice.send(bob_member, {"type": "offer", "sdp": f"v=0 gen {gen}", "gen": gen})
        await wait_until(lambda: bob_events.messages and bob_events.messages[-1]["gen"] == 3, "the newest offer", 30)
        assert [m["gen"] for m in bob_events.messages] == sorted(m["gen"] for m in bob_events.messages)
        assert set(bob_events.via) == {relay.url}  # the relay that delivered each message is named

        await bob.leave()
        await wait_until(lambda: alice_events.gone == [("bob", "left")], "bob's departure", 30)
        await wait_until(lambda: alice_events.messages[-1]["type"] == "bye", "bob's bye", 30)
    finally:
        await alice.close()
        await bob.close()
    # what the relay stored is opaque: no name, no SDP, no room name, no password, no TURN credential
    stored = json.dumps(relay.stored_events())
    for secret in ("alice", "bob", "v=0", "nostr-room-test", "secret password", "turn:", "user", "pass"):
        assert secret not in stored, secret


async def test_settings_reach_a_member_whose_relay_caches_identical_filters(tmp_path: Path, keys: RoomKeys) -> None:
    """@nostr-relay/core answers a filter it answered shortly before from a cache (1 s by default,
    60 s here so it is certain): the settings a member shared after its own REQ must still reach
    the next member, so no two members send the same settings filter."""
    turn = [TurnServer("turn:127.0.0.1:3478?transport=udp", "user", "pass")]
    with RelayFactory(tmp_path, implementation="ts") as factory:
        relay = factory.start(extra_config={"filter-cache-ms": 60_000})
        alice_events, bob_events = Recorder(), Recorder()
        alice = member([relay.url], keys, "alice", 1, alice_events, share_turn=turn)
        bob = member([relay.url], keys, "bob", 2, bob_events)
        try:
            await alice.start()
            await bob.start()
            assert [s.turn for s in bob_events.settings_seen] == [tuple(turn)]
        finally:
            await alice.close()
            await bob.close()


async def test_replayed_old_records_do_not_bring_a_leaver_back(relay: RelayProcess, keys: RoomKeys) -> None:
    """A relay that serves an older version of a member's record after its goodbye (the PyPI relay
    keeps old addressable versions; the TS one does not, the replay is injected either way) must not
    resurrect it: order is the record's own ts."""
    leaver = member([relay.url], keys, "leaver", 3, RoomEvents())
    published: list[Event] = []
    real_publish = leaver.relays.publish

    async def recording(event: Event, **options: Any) -> Any:
        published.append(event)
        return await real_publish(event, **options)

    leaver.relays.publish = recording  # type: ignore[method-assign]
    await leaver.start()
    await leaver.leave()
    await leaver.close()
    here, goodbye = published[0], published[-1]
    assert here.tag("d") == goodbye.tag("d") and goodbye.created_at > here.created_at

    watcher_events = Recorder()
    watcher = member([relay.url], keys, "watcher", 4, watcher_events)
    await watcher.start()  # reads what the relay holds (the old record too, if it kept it)
    try:
        watcher._on_event(goodbye, "replay")
        watcher._on_event(here, "replay")  # the old record delivered after the goodbye
        assert watcher_events.seen == [] and watcher.members() == []
    finally:
        await watcher.close()


async def test_tampered_and_foreign_events_are_counted_not_used(relay: RelayProcess, keys: RoomKeys) -> None:
    """Events that carry the room's tag but do not open (a stranger without the password, or junk)
    are counted as invalid and change nothing."""
    events = Recorder()
    room = member([relay.url], keys, "reader", 5, events)
    stranger_keys = RoomKeys.derive("nostr-room-test", "wrong password")
    stranger = NostrRoom(RelayPool([relay.url], timeouts=FAST_RELAY), stranger_keys, Identity.generate(), "x",
                         "55" * 8, RoomEvents(), timing=TIMING)
    stranger.tags = room.tags  # it even knows the room's tag: its record still does not open
    await room.start()
    await stranger.start()
    try:
        await wait_until(lambda: room.counters.invalid_messages >= 1, "the stranger's record rejected", 30)
        assert events.seen == [] and room.members() == []
        assert any("does not open" in reason or "presence" in reason for reason in room.counters.invalid_reasons)
    finally:
        await room.close()
        await stranger.close()
