"""The relay client against a scripted aiohttp relay on 127.0.0.1, for what the real one never sends:
rate-limited:/blocked:/restricted:/auth-required:/pow:, CLOSED, NOTICE, a missing OK, NIP-11 limits,
a connection dropped mid-publish, and a hostile relay's junk."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

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
    SubscriptionLimit,
    make_filter,
)
from support.nostr_relay import FakeRelay
from support.waits import wait_until

FAST = RelayTimeouts(backoff=(0.05, 0.5), rate_limit=(0.3, 3.0), resubscribe=(0.2, 2.0), ok=5.0, connect=5.0)
ROOM = "room-tag-0123"
FILTER = make_filter(kinds=[APP_DATA_KIND, 1], tags={"t": [ROOM]})


@pytest.fixture
async def fake() -> AsyncIterator[FakeRelay]:
    relay = await FakeRelay().start()
    try:
        yield relay
    finally:
        await relay.stop()


class Collected:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.crashes: list[tuple[str, str]] = []

    def on_event(self, sub_id: str, event: Event, url: str) -> None:
        self.events.append(event)

    def on_crash(self, name: str, error: str) -> None:
        self.crashes.append((name, error))


async def _open(url: str, got: Collected | None = None, timeouts: RelayTimeouts = FAST) -> Relay:
    got = got or Collected()
    client = Relay(url, on_event=got.on_event, on_crash=got.on_crash, timeouts=timeouts)
    await client.start()
    assert await client.wait_open(20), client.status()
    return client


def answer_events_with(message: str, accepted: bool = False) -> Any:
    async def handler(relay: FakeRelay, ws: Any, msg: list[Any]) -> None:
        if msg[0] == "EVENT":
            await ws.send_json(["OK", msg[1]["id"], accepted, message])
        else:
            await FakeRelay.accept_all(relay, ws, msg)
    return handler


def note(key: NostrKey, text: str = "x") -> Event:
    return key.event(1, text, [["t", ROOM]])


async def test_ok_true_duplicate_and_invalid(fake: FakeRelay) -> None:
    client = await _open(fake.url)
    try:
        key = NostrKey()
        assert (await client.publish(note(key))).status == PublishStatus.ACCEPTED
        fake.on_message = answer_events_with("duplicate: have it")
        assert (await client.publish(note(key))).status == PublishStatus.DUPLICATE
        fake.on_message = answer_events_with("invalid: created_at too far off")
        result = await client.publish(note(key))
        assert result.status == PublishStatus.REJECTED and result.message == "invalid: created_at too far off"
        assert client.state == RelayState.OPEN
        fake.on_message = answer_events_with("pow: difficulty 8>=0", accepted=True)  # OK true with a message
        assert (await client.publish(note(key))).status == PublishStatus.ACCEPTED
        counters = client.status().counters
        assert (counters["accepted"], counters["duplicates"], counters["rejected"]) == (2, 1, {"invalid": 1})
    finally:
        await client.close()


@pytest.mark.parametrize("prefix", ["blocked", "restricted", "auth-required", "pow"])
async def test_a_refusing_relay_is_not_used_again(fake: FakeRelay, prefix: str) -> None:
    fake.on_message = answer_events_with(f"{prefix}: go away")
    client = await _open(fake.url)
    try:
        result = await client.publish(note(NostrKey()))
        assert result.status == PublishStatus.REFUSED
        status = client.status()
        assert status.state == RelayState.REFUSED and status.reason == f"{prefix}: go away"
        sent = len(fake.messages("EVENT"))
        again = await client.publish(note(NostrKey()))
        assert again.status == PublishStatus.REFUSED and len(fake.messages("EVENT")) == sent  # not even sent
        await wait_until(lambda: all(ws.closed for ws in fake.sockets), "our side to close the connection", 10)
        await asyncio.sleep(0.5)  # several reconnect backoffs of FAST: none may happen
        assert fake.connections == 1
    finally:
        await client.close()


async def test_rate_limited_backs_off_and_sends_only_the_newest_record_later(fake: FakeRelay) -> None:
    limited = {"on": True}

    async def handler(relay: FakeRelay, ws: Any, msg: list[Any]) -> None:
        if msg[0] == "EVENT" and limited["on"]:
            limited["on"] = False  # the first EVENT is limited, the rest accepted
            await ws.send_json(["OK", msg[1]["id"], False, "rate-limited: slow down"])
        else:
            await FakeRelay.accept_all(relay, ws, msg)

    fake.on_message = handler
    client = await _open(fake.url)
    try:
        key = NostrKey()
        v1 = key.addressable("presence", "v1", [["t", ROOM]])
        assert (await client.publish(v1)).status == PublishStatus.RATE_LIMITED
        v2 = key.addressable("presence", "v2", [["t", ROOM]])
        held = await client.publish(v2)  # during the backoff: held back, not sent
        assert held.status == PublishStatus.RATE_LIMITED and held.message.startswith("held back")
        assert [m[1]["id"] for m in fake.messages("EVENT")] == [v1.id]
        assert client.status().pending_retries == 1  # v2 superseded v1 in the queue
        await wait_until(lambda: len(fake.messages("EVENT")) == 2, "the re-send after the backoff", 20)
        assert fake.messages("EVENT")[1][1]["id"] == v2.id
        await wait_until(lambda: client.status().pending_retries == 0, "the queue to drain", 20)
        assert client.status().counters["accepted"] == 1
    finally:
        await client.close()


async def test_a_missing_ok_is_a_failure(fake: FakeRelay) -> None:
    async def silent(relay: FakeRelay, ws: Any, msg: list[Any]) -> None:
        return None

    fake.on_message = silent
    client = await _open(fake.url)
    try:
        result = await client.publish(note(NostrKey()), timeout=0.5)
        assert result.status == PublishStatus.TIMEOUT and not result.ok
        assert client.status().counters["ok_timeouts"] == 1
    finally:
        await client.close()


async def test_a_publish_in_flight_is_resent_when_the_connection_drops(fake: FakeRelay) -> None:
    async def drop_first(relay: FakeRelay, ws: Any, msg: list[Any]) -> None:
        if msg[0] == "EVENT" and relay.connections == 1:
            await ws.close()  # no OK: the connection is gone
        else:
            await FakeRelay.accept_all(relay, ws, msg)

    fake.on_message = drop_first
    client = await _open(fake.url)
    try:
        event = note(NostrKey())
        result = await client.publish(event, timeout=20)
        assert result.status == PublishStatus.ACCEPTED
        assert [m[1]["id"] for m in fake.messages("EVENT")] == [event.id, event.id]
        assert client.status().counters["reconnects"] == 1
    finally:
        await client.close()


async def test_subscriptions_are_resent_after_a_drop(fake: FakeRelay) -> None:
    client = await _open(fake.url)
    try:
        client.subscribe("room", [FILTER])
        await wait_until(lambda: len(fake.messages("REQ")) == 1, "the REQ", 10)
        await fake.drop_connections()
        await wait_until(lambda: len(fake.messages("REQ")) == 2, "the REQ re-sent after reconnecting", 20)
        assert fake.messages("REQ")[1] == ["REQ", "room", FILTER]
        client.close_subscription("room")
        await wait_until(lambda: fake.messages("CLOSE") == [["CLOSE", "room"]], "the CLOSE", 10)
        await fake.drop_connections()
        await wait_until(lambda: client.status().counters["reconnects"] == 2, "a second reconnect", 20)
        await wait_until(lambda: client.is_open, "open again", 20)
        assert len(fake.messages("REQ")) == 2  # a closed subscription is not re-sent
    finally:
        await client.close()


@pytest.mark.parametrize(("closed", "retried", "refused"), [
    ("error: shutting down idle subscription", True, False),
    ("rate-limited: too many REQs", True, False),
    ("invalid: unknown filter field", False, False),
    ("auth-required: we only serve members", False, True),
    ("blocked: not welcome", False, True),
])
async def test_closed_prefixes(fake: FakeRelay, closed: str, retried: bool, refused: bool) -> None:
    async def close_first(relay: FakeRelay, ws: Any, msg: list[Any]) -> None:
        if msg[0] == "REQ" and len(relay.messages("REQ")) == 1:
            await ws.send_json(["CLOSED", msg[1], closed])
        else:
            await FakeRelay.accept_all(relay, ws, msg)

    fake.on_message = close_first
    client = await _open(fake.url)
    try:
        client.subscribe("room", [FILTER])
        await wait_until(lambda: client.status().counters["closed_subscriptions"] == 1, "the CLOSED", 10)
        if retried:
            await wait_until(lambda: len(fake.messages("REQ")) == 2, "the subscription asked for again", 20)
            await wait_until(lambda: client.subscription_state("room") == (True, None), "its EOSE", 20)
        elif refused:
            assert client.state == RelayState.REFUSED and client.status().reason == closed
        else:
            await asyncio.sleep(0.5)  # longer than FAST's first resubscribe delay
            assert len(fake.messages("REQ")) == 1 and client.subscription_state("room") == (False, closed)
    finally:
        await client.close()


async def test_notices_are_counted_and_cleaned(fake: FakeRelay) -> None:
    client = await _open(fake.url)
    try:
        await fake.broadcast(json.dumps(["NOTICE", "maintenance at 10:00\x1b[31m\n" + "x" * 1000]))
        await wait_until(lambda: client.status().counters["notices"] == 1, "the NOTICE", 10)
        notice = client.status().last_notice
        assert notice is not None and notice.startswith("maintenance at 10:00 [31m ") and len(notice) <= 300
        assert "\x1b" not in notice
    finally:
        await client.close()


async def test_nip11_limits_are_respected(fake: FakeRelay) -> None:
    fake.nip11 = {"name": "strict", "limitation": {"max_message_length": 2000, "max_content_length": 100,
                                                   "max_subscriptions": 1, "max_event_tags": 2}}
    client = await _open(fake.url)
    try:
        limits = client.limits
        assert (limits.max_message_length, limits.max_content_length, limits.max_subscriptions,
                limits.max_event_tags, limits.advertised) == (2000, 100, 1, 2, True)
        key = NostrKey()
        with pytest.raises(EventTooLarge, match="max_content_length 100"):
            await client.publish(key.event(1, "x" * 101))
        with pytest.raises(EventTooLarge, match="max_event_tags 2"):
            await client.publish(key.event(1, "x", [["t", "1"], ["t", "2"], ["t", "3"]]))
        with pytest.raises(EventTooLarge, match="max_message_length 2000"):
            await client.publish(key.event(1, "x", [["t", "é" * 1000]]))
        assert fake.messages("EVENT") == []  # nothing beyond the limits was sent
        assert (await client.publish(key.event(1, "x" * 100))).ok
        client.subscribe("room", [FILTER])
        with pytest.raises(SubscriptionLimit):
            client.subscribe("second-room", [FILTER])
        client.subscribe("room", [FILTER, FILTER])  # replacing the one subscription is fine
    finally:
        await client.close()


@pytest.mark.parametrize("doc", [None, "not json", "[1, 2]", "[" * 5000 + "]" * 5000, " " * 70_000,
                                 {"limitation": {"max_message_length": "big", "max_subscriptions": -1}}],
                         ids=["404", "not-json", "not-object", "deep", "huge", "bad-values"])
async def test_a_useless_nip11_document_leaves_the_defaults(fake: FakeRelay, doc: Any) -> None:
    fake.nip11 = doc
    client = await _open(fake.url)
    try:
        assert client.limits.max_message_length == 64 * 1024 and not client.limits.advertised
        assert client.limits.max_subscriptions == 20
        assert (await client.publish(note(NostrKey()))).ok
    finally:
        await client.close()


@pytest.mark.parametrize("limitation", [{"auth_required": True}, {"payment_required": True}])
async def test_a_relay_whose_nip11_says_it_would_refuse_us_is_not_used(fake: FakeRelay,
                                                                        limitation: dict[str, Any]) -> None:
    fake.nip11 = {"name": "members only", "limitation": limitation}
    client = Relay(fake.url, timeouts=FAST)
    await client.start()
    try:
        await wait_until(lambda: client.state == RelayState.REFUSED, "the refusal from NIP-11", 10)
        assert "NIP-11" in (client.status().reason or "")
        assert fake.received == []
    finally:
        await client.close()


async def test_a_hostile_relay_cannot_crash_or_fool_the_client(fake: FakeRelay) -> None:
    key, got = NostrKey(), Collected()
    client = await _open(fake.url, got, RelayTimeouts(backoff=(0.05, 0.5), ok=5.0))
    client.max_incoming = 64 * 1024  # our bound on one message (read when the next connection opens)
    try:
        client.subscribe("room", [FILTER])
        await wait_until(lambda: client.subscription_state("room") == (True, None), "EOSE", 10)
        good = key.event(1, "genuine", [["t", ROOM]])
        forged = {**good.to_dict(), "content": "forged"}
        other_room = key.event(1, "elsewhere", [["t", "other-room"]])
        junk = [
            "not json", "[]", "{}", '["EVENT"]', '["EVENT", "room"]', '["OK", 1, true, ""]', '["EOSE"]',
            "[" * 100_000 + "]" * 100_000,  # nesting that would blow the parser's recursion
            json.dumps(["EVENT", "room", {"id": 5}]), json.dumps(["EVENT", "room", forged]),
            json.dumps(["EVENT", "other-sub", good.to_dict()]), json.dumps(["EVENT", "room", other_room.to_dict()]),
            json.dumps(["OK", "ab" * 32, True, ""]), json.dumps(["NOTICE", {"not": "text"}]),
            json.dumps(["AUTH", "challenge"]), json.dumps(["UNKNOWN", 1]),
            json.dumps(["EVENT", "room", good.to_dict()]),
        ]
        for text in junk:
            await fake.broadcast(text)
        await wait_until(lambda: good.id in {e.id for e in got.events}, "the one genuine event", 10)
        counters = client.status().counters
        assert [e.id for e in got.events] == [good.id]
        assert counters["invalid_dropped"] == 2  # {"id": 5} and the forged content
        assert counters["invalid_reasons"] == {"malformed": 1, "id-mismatch": 1}
        assert counters["unrequested"] == 2  # another sub's event, another room's event
        assert counters["malformed"] >= 8 and counters["handler_errors"] == 0 and got.crashes == []
        # a message beyond our size bound drops the connection; the client comes back
        await fake.drop_connections()
        await wait_until(lambda: client.status().counters["reconnects"] == 1 and client.is_open,
                         "reconnected with the smaller bound", 20)
        await fake.broadcast(json.dumps(["NOTICE", "x" * (128 * 1024)]))
        await wait_until(lambda: client.status().counters["oversized"] == 1, "the oversized message", 10)
        await wait_until(lambda: client.is_open and client.status().counters["reconnects"] >= 2, "back again", 20)
        assert client.status().counters["handler_errors"] == 0
    finally:
        await client.close()


async def test_a_failing_listener_is_reported_not_silent(fake: FakeRelay) -> None:
    crashes: list[tuple[str, str]] = []

    def broken(sub_id: str, event: Event, url: str) -> None:
        raise RuntimeError("listener bug")

    client = Relay(fake.url, on_event=broken, on_crash=lambda n, e: crashes.append((n, e)), timeouts=FAST)
    await client.start()
    try:
        assert await client.wait_open(10)
        client.subscribe("room", [FILTER])
        key = NostrKey()
        for text in ("one", "two"):
            await fake.broadcast(json.dumps(["EVENT", "room", note(key, text).to_dict()]))
        await wait_until(lambda: len(crashes) == 2, "both failures reported", 10)
        assert "listener bug" in crashes[0][1] and fake.url in crashes[0][0]
        assert client.is_open and client.status().counters["handler_errors"] == 2
    finally:
        await client.close()


async def test_an_invalid_url_is_dead_at_once() -> None:
    client = Relay("https://not-a-relay.example/", timeouts=FAST)
    await client.start()
    assert client.state == RelayState.DEAD and "ws://" in (client.status().reason or "")
    result = await client.publish(note(NostrKey()), timeout=0.1)
    assert result.status == PublishStatus.TIMEOUT
    await client.close()
