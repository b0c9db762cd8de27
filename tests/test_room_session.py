"""Room sessions over an in-process store with clocks we control: how a member's departure is told."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from sdparta.room.keys import Identity, RoomKeys
from sdparta.room.session import RoomEvents, RoomSession, SessionTiming
from sdparta.room.wire import Member
from sdparta.store import MemoryStore

IDLE = SessionTiming(reannounce=3600, poll_push=3600)  # no timer fires during the test


class Departures(RoomEvents):
    def __init__(self) -> None:
        self.gone: dict[str, tuple[str, str]] = {}  # name → (status, reason)

    def member_gone(self, member: Member, status: str, reason: str) -> None:
        self.gone[member.name] = (status, reason)


@pytest.fixture(scope="module")
def keys() -> RoomKeys:
    return RoomKeys.derive("session-room", "pw")


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def test_a_member_dropped_as_stale_by_a_writer_ahead_of_us_is_gone_not_left(keys: RoomKeys) -> None:
    """Writers drop stale records from the presence list. When one whose clock runs a few seconds
    ahead does so before we expired the record ourselves, the member is missing from the list while
    still fresh by our clock: it crashed (gone), it did not leave. A member that takes itself out
    of the list with a fresh record has left."""
    store = MemoryStore()
    now = [time.time()]
    skew = 5.0

    def session(name: str, seed: int, events: RoomEvents, ahead: float = 0.0) -> RoomSession:
        return RoomSession(store, keys, Identity.from_seed(bytes([seed]) * 32), name, f"{seed:016x}", events,
                           timing=IDLE, clock=lambda: now[0] + ahead)

    departures = Departures()
    reader = session("reader", 1, departures)
    crasher = session("crasher", 2, RoomEvents())
    leaver = session("leaver", 3, RoomEvents(), ahead=skew)
    for member in (reader, crasher):
        await member.start()
    await wait_until(lambda: {m.name for m in reader.members()} == {"crasher"}, "the reader sees the crasher")
    await crasher.close()  # crashes: no bye, its record stays in the list

    # later the crasher's record is stale by the newcomer's clock, still fresh by the reader's
    now[0] += IDLE.ttl - skew / 2
    await leaver.start()  # writes the list with itself and without the stale record
    await wait_until(lambda: "crasher" in departures.gone, "the crasher's departure seen")
    assert departures.gone["crasher"][0] == "gone"
    assert [m.name for m in reader.members()] == ["leaver"]

    await leaver.leave()  # takes its own fresh record out of the list
    await wait_until(lambda: "leaver" in departures.gone, "the leaver's departure seen")
    assert departures.gone["leaver"] == ("left", "left the room")
    for member in (reader, leaver):
        await member.close()
