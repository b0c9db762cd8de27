"""The relay client against real relay processes on 127.0.0.1: publish and read back, OK handling,
NIP-11, rate limits, tampered events a relay serves, restarts, each relay's quirks.

Tests that take ``relay``/``relays`` run against both implementations (the PyPI nostr-relay 1.14 and
the TypeScript @nostr-relay/core 0.0.40, see support/nostr_relay.py); those that need one relay's
particular behaviour (the PyPI relay's rate limits, its unchecked ids, its deviations) say so."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sdparta.nostr import (
    APP_DATA_KIND,
    Event,
    EventTooLarge,
    NostrKey,
    PublishStatus,
    Relay,
    RelayState,
    RelayTimeouts,
    compute_id,
    make_filter,
)
from support.nostr_relay import IMPLEMENTATIONS, RelayFactory, RelayProcess
from support.waits import wait_until

FAST = RelayTimeouts(backoff=(0.2, 2.0), rate_limit=(0.5, 4.0), ok=20.0)
ROOM = "room-tag-0123"


@pytest.fixture(params=IMPLEMENTATIONS)
def relays(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RelayFactory]:
    with RelayFactory(tmp_path, implementation=request.param) as factory:
        yield factory


@pytest.fixture
def python_relays(tmp_path: Path) -> Iterator[RelayFactory]:
    """Only the PyPI relay, for tests of what only it does."""
    with RelayFactory(tmp_path, implementation="python") as factory:
        yield factory


@pytest.fixture
def relay(relays: RelayFactory) -> RelayProcess:
    return relays.start()


class Inbox:
    """What a relay client delivered: verified events per subscription, and EOSEs."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.eose: list[str] = []

    def on_event(self, sub_id: str, event: Event, url: str) -> None:
        self.events.append(event)

    def on_eose(self, sub_id: str, url: str) -> None:
        self.eose.append(sub_id)

    def ids(self) -> set[str]:
        return {e.id for e in self.events}


async def _client(url: str, inbox: Inbox | None = None, timeouts: RelayTimeouts = FAST) -> Relay:
    inbox = inbox or Inbox()
    client = Relay(url, on_event=inbox.on_event, on_eose=inbox.on_eose, timeouts=timeouts)
    await client.start()
    assert await client.wait_open(30), client.status()
    return client


async def _raw_publish(url: str, event: dict[str, Any]) -> list[Any]:
    """Publish over a bare websocket, bypassing every check of ours; returns the relay's answer."""
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.send_str(json.dumps(["EVENT", event]))
        return json.loads((await ws.receive(timeout=30)).data)


def room_filter() -> dict[str, Any]:
    return make_filter(kinds=[APP_DATA_KIND, 20001, 1], tags={"t": [ROOM]})


async def test_publish_and_read_back(relay: RelayProcess) -> None:
    key, reader_inbox = NostrKey(), Inbox()
    writer, reader = await _client(relay.url), await _client(relay.url, reader_inbox)
    try:
        stored = key.addressable("presence", "sealed-1", [["t", ROOM]])
        assert (await writer.publish(stored)).status == PublishStatus.ACCEPTED
        again = await writer.publish(stored)
        if relay.implementation == "python":
            assert again.status == PublishStatus.DUPLICATE, again  # "duplicate: exists"
        else:
            # @nostr-relay/core answers an id it handled in the last 10 minutes from a cache of its first
            # answer: OK true, no "duplicate:" — as good as accepted either way
            assert again.status == PublishStatus.ACCEPTED, again
        duplicates = 1 if relay.implementation == "python" else 0

        reader.subscribe("room", [room_filter()])
        await wait_until(lambda: "room" in reader_inbox.eose, "EOSE of the stored events", 30)
        assert reader_inbox.ids() == {stored.id}
        assert reader_inbox.events[0] == stored  # verified and equal field for field

        live = key.addressable("presence", "sealed-2", [["t", ROOM]])
        assert (await writer.publish(live)).ok
        await wait_until(lambda: live.id in reader_inbox.ids(), "the live event", 30)
        other_room = key.event(1, "x", [["t", "another-room"]])
        assert (await writer.publish(other_room)).ok
        marker = key.event(1, "marker", [["t", ROOM]])
        assert (await writer.publish(marker)).ok
        await wait_until(lambda: marker.id in reader_inbox.ids(), "the marker", 30)
        assert other_room.id not in reader_inbox.ids()
        counters = writer.status().counters
        assert counters["accepted"] == 5 - duplicates and counters["duplicates"] == duplicates
        assert reader.status().counters["events_received"] == 3
    finally:
        await writer.close()
        await reader.close()


async def test_nostr_json_escaping_matches_the_relay(relay: RelayProcess) -> None:
    """The relay recomputes the id with its own JSON library (rapidjson; JSON.stringify in the TS
    relay) to check the signature: an event full of characters that need escaping is accepted only if
    both serializations agree. (rapidjson differs on C0 controls like ESC — \\u001B there, \\u001b
    here and in JSON.stringify — which is why NostrKey never builds an event holding one.)"""
    client = await _client(relay.url)
    try:
        content = 'nl\n cr\r tab\t bs\b ff\f del\x7f quote" back\\ é 😀 \u2028\u2029 </script> \U0010ffff'
        event = NostrKey().event(1, content, [["t", ROOM, "ü\n\""]])
        result = await client.publish(event)
        assert result.status == PublishStatus.ACCEPTED, result
    finally:
        await client.close()


async def test_the_relays_nip11_and_our_assumed_limits(relay: RelayProcess) -> None:
    client = await _client(relay.url)
    try:
        info = client.status().info
        assert info is not None and info.error is None
        sent_before = client.status().counters["events_sent"]
        if relay.implementation == "python":
            assert info.name == "sdparta test relay" and 1 in info.supported_nips and info.version == "1.14"
            # nostr-relay's NIP-11 has no "limitation": we assume strfry's 64 KiB cap on a message
            assert not info.limits.advertised and client.limits.max_message_length == 64 * 1024
            with pytest.raises(EventTooLarge, match="max_message_length"):
                await client.publish(NostrKey().event(1, "x" * (64 * 1024)))
        else:
            assert info.name == "sdparta test relay (ts)" and 1 in info.supported_nips and info.version == "0.0.40"
            # server.mjs advertises what it enforces: the client keeps within it, not within 64 KiB
            assert info.limits.advertised
            assert client.limits.max_message_length == 128 * 1024 and client.limits.max_content_length == 96 * 1024
            assert client.limits.max_subscriptions == 256
            assert (await client.publish(NostrKey().event(1, "x" * (90 * 1024)))).ok  # > 64 KiB, within its limits
            sent_before = client.status().counters["events_sent"]
            with pytest.raises(EventTooLarge, match="max_content_length"):
                await client.publish(NostrKey().event(1, "x" * (97 * 1024)))
            with pytest.raises(EventTooLarge, match="max_message_length"):
                await client.publish(NostrKey().event(1, "x" * (90 * 1024), [["t", "y" * 1000]] * 40))
        assert client.status().counters["events_sent"] == sent_before  # refused before sending
        assert client.state == RelayState.OPEN
    finally:
        await client.close()


async def test_ok_false_for_one_event_leaves_the_relay_usable(relays: RelayFactory) -> None:
    if relays.implementation == "python":
        small = relays.start(extra_config={"max_event_size": 100})  # the relay's own content limit
        # nostr-relay answers ["OK", "", false, "invalid: 280 characters should be enough for anybody"]:
        # an empty id, matched to the EVENT that was waiting
        too_much: tuple[str, list[list[str]]] = ("x" * 101, [["t", ROOM]])
        prefix = "invalid"
    else:
        # the TS relay advertises its limits (the client keeps within them) and its validator's others
        # are ours too (1024-character tag values): what it refuses of a well-formed event is an
        # expired one, ["OK", id, false, "reject: event is expired"] (a prefix NIP-01 does not name)
        small = relays.start()
        too_much = ("expired", [["t", ROOM], ["expiration", str(int(time.time()) - 60)]])
        prefix = "reject"
    client = await _client(small.url)
    try:
        key = NostrKey()
        refused = await client.publish(key.event(1, *too_much))
        assert refused.status == PublishStatus.REJECTED and refused.message.startswith(f"{prefix}:"), refused
        assert client.state == RelayState.OPEN
        assert (await client.publish(key.event(1, "fits", [["t", ROOM]]))).status == PublishStatus.ACCEPTED
        assert client.status().counters["rejected"] == {prefix: 1}
        assert client.status().pending_retries == 0  # refused for good: not sent again
    finally:
        await client.close()


async def test_rate_limited_events_are_held_back_and_sent_later(python_relays: RelayFactory) -> None:
    """PyPI relay only: the TS relay library has no rate limits."""
    limited = python_relays.start(rate_limits={"ip": {"EVENT": "2/s"}})
    client = await _client(limited.url)
    try:
        key = NostrKey()
        results = [await client.publish(key.event(1, f"n{i}", [["t", ROOM]])) for i in range(4)]
        statuses = [r.status for r in results]
        assert PublishStatus.RATE_LIMITED in statuses, statuses
        assert client.status().counters["rejected"]["rate-limited"] >= 1
        held = [r.event_id for r in results if r.status == PublishStatus.RATE_LIMITED]
        # re-sent by the client itself once the backoff is over (no caller action): all end up stored
        await wait_until(lambda: set(held) <= {e["id"] for e in limited.stored_events()},
                         "the held-back events stored by the relay", 60)
        assert client.status().pending_retries == 0
    finally:
        await client.close()


async def test_events_the_relay_serves_are_verified(python_relays: RelayFactory) -> None:
    """nostr-relay checks the signature against the hash of the fields, but stores and serves the id it was
    given: an event with a false id is served to everyone. The client drops it. (PyPI relay only: the
    TS relay refuses a false id, "invalid: id is wrong", see test_the_ts_relays_behaviour.)"""
    relay = python_relays.start()
    key = NostrKey()
    good = key.event(1, "genuine", [["t", ROOM]])
    forged = key.event(1, "forged-id", [["t", ROOM]]).to_dict()
    forged["id"] = compute_id(key.pubkey, forged["created_at"], 1, [["t", ROOM]], "some other content")
    assert (await _raw_publish(relay.url, forged))[2] is True  # the relay takes it
    bad_sig = key.event(1, "bad-sig", [["t", ROOM]]).to_dict()
    bad_sig["content"] = "tampered"
    answer = await _raw_publish(relay.url, bad_sig)
    assert answer[2] is False and "invalid" in answer[3]  # a tampered content it does catch
    inbox = Inbox()
    client = await _client(relay.url, inbox)
    try:
        assert (await client.publish(good)).ok
        client.subscribe("room", [room_filter()])
        await wait_until(lambda: "room" in inbox.eose, "EOSE", 30)
        assert forged["id"] in {e["id"] for e in relay.stored_events()}
        assert inbox.ids() == {good.id}
        counters = client.status().counters
        assert counters["invalid_dropped"] == 1 and counters["invalid_reasons"] == {"id-mismatch": 1}
    finally:
        await client.close()


async def test_reconnect_after_a_relay_restart_resends_the_subscription(relay: RelayProcess) -> None:
    inbox = Inbox()
    client = await _client(relay.url, inbox)
    key = NostrKey()
    try:
        client.subscribe("room", [room_filter()])
        await wait_until(lambda: "room" in inbox.eose, "first EOSE", 30)
        await asyncio.to_thread(relay.stop)
        await wait_until(lambda: client.state != RelayState.OPEN, "the client to notice the relay is gone", 60)
        during = key.event(1, "written while the relay was down", [["t", ROOM]])
        pending = asyncio.ensure_future(client.publish(during, timeout=120))  # waits for the connection
        await asyncio.to_thread(relay.start)
        assert (await pending).status == PublishStatus.ACCEPTED
        await wait_until(lambda: client.state == RelayState.OPEN, "the client back on the relay", 60)
        await wait_until(lambda: during.id in inbox.ids(), "the event through the re-sent subscription", 60)
        after = key.event(1, "after the restart", [["t", ROOM]])
        assert (await client.publish(after)).ok
        await wait_until(lambda: after.id in inbox.ids(), "a live event after the restart", 60)
        counters = client.status().counters
        assert counters["reconnects"] >= 1 and counters["subscriptions_sent"] >= 2
        assert client.status().subscriptions == ("room",)
    finally:
        await client.close()


async def test_the_relays_known_deviations(python_relays: RelayFactory) -> None:
    """DESIGN.md §7, observed: ephemeral events stored and replayed, an older version of an addressable
    record kept beside the newer one, expired events (NIP-40) served. The client delivers each of them
    verified; ordering by the sealed content, not arrival, is the room layer's job. (The PyPI relay's;
    the TS relay's differences are in test_the_ts_relays_behaviour.)"""
    relay = python_relays.start()
    key = NostrKey()
    writer = await _client(relay.url)
    try:
        ephemeral = key.event(20001, "ephemeral", [["t", ROOM]])
        newer = key.addressable("presence", "v2", [["t", ROOM]])
        older = key.event(APP_DATA_KIND, "v1", [["d", "presence"], ["t", ROOM]], created_at=newer.created_at - 10)
        expired = key.event(1, "expired", [["t", ROOM], ["expiration", str(newer.created_at - 60)]])
        for event in (ephemeral, newer, older, expired):  # the older version arrives after the newer one
            assert (await writer.publish(event)).ok
        inbox = Inbox()
        reader = await _client(relay.url, inbox)
        try:
            reader.subscribe("room", [room_filter()])
            await wait_until(lambda: "room" in inbox.eose, "EOSE", 30)
            assert {ephemeral.id, newer.id, older.id, expired.id} <= inbox.ids()
        finally:
            await reader.close()
    finally:
        await writer.close()


async def test_the_ts_relays_behaviour(tmp_path: Path) -> None:
    """Where @nostr-relay/core differs from the PyPI relay, observed: it refuses a false id and an
    expired event, keeps no ephemeral event, keeps only the newest version of an addressable record
    (an older one is answered OK true "duplicate:") — and the client reads it all the same."""
    with RelayFactory(tmp_path, implementation="ts") as factory:
        relay = factory.start()
        key = NostrKey()
        forged = key.event(1, "forged-id", [["t", ROOM]]).to_dict()
        forged["id"] = compute_id(key.pubkey, forged["created_at"], 1, [["t", ROOM]], "some other content")
        assert (await _raw_publish(relay.url, forged))[2:] == [False, "invalid: id is wrong"]
        writer = await _client(relay.url)
        try:
            ephemeral = key.event(20001, "ephemeral", [["t", ROOM]])
            newer = key.addressable("presence", "v2", [["t", ROOM]])
            older = key.event(APP_DATA_KIND, "v1", [["d", "presence"], ["t", ROOM]], created_at=newer.created_at - 10)
            expired = key.event(1, "expired", [["t", ROOM], ["expiration", str(newer.created_at - 60)]])
            assert (await writer.publish(ephemeral)).status == PublishStatus.ACCEPTED
            assert (await writer.publish(newer)).status == PublishStatus.ACCEPTED
            assert (await writer.publish(older)).status == PublishStatus.DUPLICATE
            refused = await writer.publish(expired)
            assert refused.status == PublishStatus.REJECTED and refused.message.startswith("reject:"), refused
            inbox = Inbox()
            reader = await _client(relay.url, inbox)
            try:
                reader.subscribe("room", [room_filter()])
                await wait_until(lambda: "room" in inbox.eose, "EOSE", 30)
                assert inbox.ids() == {newer.id}
            finally:
                await reader.close()
            assert {e["id"] for e in relay.stored_events()} == {newer.id}
        finally:
            await writer.close()
