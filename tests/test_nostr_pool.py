"""Several relays as one: two real relay processes, a dead port and an invalid URL in one pool."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdparta.nostr import (
    APP_DATA_KIND,
    NostrKey,
    PoolSubscription,
    PublishStatus,
    Received,
    RelayPool,
    RelayState,
    RelayTimeouts,
    make_filter,
)
from support.nostr_relay import FakeRelay, RelayFactory
from support.procs import free_port
from support.waits import wait_until

FAST = RelayTimeouts(backoff=(0.1, 1.0), ok=20.0, dead_after=2)
ROOM = "room-tag-pool"
FILTER = make_filter(kinds=[APP_DATA_KIND, 1], tags={"t": [ROOM]})


@pytest.fixture
def relays(tmp_path: Path) -> Iterator[RelayFactory]:
    with RelayFactory(tmp_path) as factory:
        yield factory


def drain(sub: PoolSubscription) -> list[Received]:
    out = []
    while (item := sub.get_nowait()) is not None:
        out.append(item)
    return out


async def test_publish_to_all_read_once_and_survive_one_relay_down(relays: RelayFactory) -> None:
    a, b = relays.start("a"), relays.start("b")
    dead = f"ws://127.0.0.1:{free_port()}/"  # nothing listens there
    pool = RelayPool([a.url, b.url, dead, "not a url", a.url], timeouts=FAST)
    assert len(pool.relays) == 4  # the duplicate URL merged
    await pool.start()
    received: list[Received] = []
    try:
        assert await pool.wait_any_open(30)
        sub = pool.subscribe("room", [FILTER])
        key = NostrKey()
        first = key.addressable("presence", "v1", [["t", ROOM]])
        result = await pool.publish(first, wait_all=True, timeout=10)
        assert result.ok and set(result.accepted_by) == {a.url, b.url}, result
        assert result.results["not a url"].status == PublishStatus.TIMEOUT  # DEAD from the start: skipped
        assert pool.relays["not a url"].state == RelayState.DEAD
        await wait_until(lambda: bool(received.extend(drain(sub)) or received), "the event", 30)
        assert [r.event.id for r in received] == [first.id]  # two relays, delivered once
        assert received[0].relay in (a.url, b.url)
        assert all(first.id in {e["id"] for e in r.stored_events()} for r in (a, b))

        await wait_until(lambda: pool.relays[dead].state == RelayState.DEAD, "the dead port marked dead", 30)
        await asyncio.to_thread(a.stop)
        await wait_until(lambda: not pool.relays[a.url].is_open, "relay a seen down", 30)
        second = key.addressable("presence", "v2", [["t", ROOM]])
        result = await pool.publish(second)  # returns on b's OK: a and the dead port change nothing
        assert result.ok and result.accepted_by == [b.url]
        await wait_until(lambda: bool(received.extend(drain(sub)) or len(received) == 2), "the second event", 30)
        assert received[1].event.id == second.id and received[1].relay == b.url
        statuses = {s.url: s for s in pool.status()}
        assert statuses[b.url].counters["accepted"] == 2 and statuses[dead].counters["connect_failures"] >= 2
    finally:
        await pool.close()


async def test_a_publish_returns_on_the_first_ok_and_the_rest_finish_later() -> None:
    slow_ok: asyncio.Event = asyncio.Event()

    async def slow(relay: FakeRelay, ws: object, msg: list[object]) -> None:
        if msg[0] == "EVENT":
            await slow_ok.wait()  # answers only when the test says so
        await FakeRelay.accept_all(relay, ws, msg)

    fast_relay, slow_relay = await FakeRelay().start(), await FakeRelay(slow).start()
    pool = RelayPool([fast_relay.url, slow_relay.url], timeouts=FAST)
    await pool.start()
    try:
        for relay in pool.relays.values():
            assert await relay.wait_open(10)
        event = NostrKey().event(1, "x", [["t", ROOM]])
        result = await pool.publish(event)
        assert result.accepted_by == [fast_relay.url] and result.pending == {slow_relay.url}
        slow_ok.set()
        await wait_until(lambda: pool.relays[slow_relay.url].status().counters["accepted"] == 1,
                         "the slow relay's OK, counted in the background", 10)
    finally:
        await pool.close()
        await fast_relay.stop()
        await slow_relay.stop()


async def test_a_subscription_waits_for_every_open_relay_to_send_its_stored_events(relays: RelayFactory) -> None:
    a, b = relays.start("a"), relays.start("b")
    key = NostrKey()
    only_on_b = key.event(1, "stored on b only", [["t", ROOM]])
    pool_b = RelayPool([b.url], timeouts=FAST)
    await pool_b.start()
    try:
        assert (await pool_b.publish(only_on_b)).ok
    finally:
        await pool_b.close()
    pool = RelayPool([a.url, b.url], timeouts=FAST)
    await pool.start()
    try:
        for relay in pool.relays.values():
            assert await relay.wait_open(30)
        sub = pool.subscribe("room", [FILTER])
        assert await sub.wait_stored(30)
        assert sub.eose_from == {a.url, b.url}
        assert [r.event.id for r in drain(sub)] == [only_on_b.id]
        sub.close()
        assert sub.closed and all(r.status().subscriptions == () for r in pool.relays.values())
    finally:
        await pool.close()
