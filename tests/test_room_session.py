"""Room sessions over an in-process store with clocks we control: how a member's departure is told."""

from __future__ import annotations

import asyncio
import time

import pytest

from sdparta.room.keys import Identity, RoomKeys
from sdparta.room.session import RoomEvents, RoomSession, SessionTiming
from sdparta.room.wire import Member
from sdparta.store import MemoryStore
from sdparta.store.base import RegistryEntry, Store, Subscription
from support.waits import wait_until

IDLE = SessionTiming(reannounce=3600, poll_push=3600)  # no timer fires during the test


class Departures(RoomEvents):
    def __init__(self) -> None:
        self.gone: dict[str, tuple[str, str]] = {}  # name → (status, reason)

    def member_gone(self, member: Member, status: str, reason: str) -> None:
        self.gone[member.name] = (status, reason)


@pytest.fixture(scope="module")
def keys() -> RoomKeys:
    return RoomKeys.derive("session-room", "pw")


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


class HeldDownloads:
    """The shared store as one member sees it, with blob downloads that can be held and released
    one by one: a slow download of an older presence list finishing after a newer one."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.holding = False
        self.held: list[asyncio.Event] = []

    async def get_entry(self, public_key: bytes, data_key: bytes) -> RegistryEntry | None:
        return await self.store.get_entry(public_key, data_key)

    async def set_entry(self, entry: RegistryEntry) -> None:
        await self.store.set_entry(entry)

    async def upload_blob(self, data: bytes) -> str:
        return await self.store.upload_blob(data)

    async def download_blob(self, skylink: str, max_size: int = 1 << 20) -> bytes:
        if self.holding:
            release = asyncio.Event()
            self.held.append(release)
            await release.wait()
        return await self.store.download_blob(skylink, max_size)

    async def open_subscription(self) -> Subscription | None:
        return await self.store.open_subscription()

    async def aclose(self) -> None:
        await self.store.aclose()


async def test_an_older_presence_list_read_last_never_replaces_a_newer_one(keys: RoomKeys) -> None:
    """Push, polling and re-announcing read the presence list side by side. When the download of an
    older list finishes after a newer one was applied, the older must not win: it would report
    whoever joined in between as having left, and the next re-announce would write them out of
    the room (seen in a mesh of 8 starting at once)."""
    store = MemoryStore()
    view = HeldDownloads(store)
    reader_departures, other_departures = Departures(), Departures()
    quick = SessionTiming(reannounce=0.3, reannounce_retry=0.3, poll_push=3600)

    def session(name: str, seed: int, events: RoomEvents, timing: SessionTiming = IDLE,
                through: Store = store) -> RoomSession:
        return RoomSession(through, keys, Identity.from_seed(bytes([seed]) * 32), name, f"{seed:016x}", events,
                           timing=timing)

    reader = session("reader", 1, reader_departures, quick, view)
    first, second, third = (session("first", 2, other_departures), session("second", 3, RoomEvents()),
                            session("third", 4, RoomEvents()))
    await reader.start()
    await first.start()
    await wait_until(lambda: {m.name for m in reader.members()} == {"first"}, "the reader sees the first")

    view.holding = True
    await second.start()  # list [reader, first, second]: the reader's download is held
    await wait_until(lambda: len(view.held) == 1, "the older list's download held")
    await third.start()  # list [reader, first, second, third]: held too
    await wait_until(lambda: len(view.held) >= 2, "the newer list's download held")
    view.holding = False
    view.held[1].set()  # the newer list arrives first...
    await wait_until(lambda: {m.name for m in reader.members()} == {"first", "second", "third"},
                     "the reader sees everyone")
    view.held[0].set()  # ...then the older one
    for release in view.held[2:]:
        release.set()
    sets = reader.counters.sets
    await wait_until(lambda: reader.counters.sets > sets + 1, "the reader re-announcing twice")
    assert {m.name for m in reader.members()} == {"first", "second", "third"}
    assert reader_departures.gone == {}
    await first._update_presence(leaving=False)  # the first reads what the reader wrote
    assert {m.name for m in first.members()} == {"reader", "second", "third"}
    assert other_departures.gone == {}
    for member in (reader, first, second, third):
        await member.close()


async def test_eight_members_joining_at_once_all_find_each_other(keys: RoomKeys) -> None:
    """Concurrent joins race on the presence slot's compare-and-set: the losers re-read and retry,
    and nobody is lost."""
    store = MemoryStore()
    members = [RoomSession(store, keys, Identity.from_seed(bytes([10 + i]) * 32), f"m{i}", f"{10 + i:016x}",
                           RoomEvents(), timing=IDLE) for i in range(8)]
    await asyncio.gather(*(m.start() for m in members))
    for member in members:
        await member._poll_once()
    assert all(len(m.members()) == 7 for m in members), [len(m.members()) for m in members]
    assert sum(m.counters.conflicts for m in members) > 0, "the joins did not race (the test proves nothing)"
    for member in members:
        await member.close()


async def test_a_member_that_vanished_without_bye_and_is_listed_again_is_seen_again(keys: RoomKeys) -> None:
    """A stale record dropped by a writer (the member looked crashed) that comes back in the list
    (its network returned) is a member again: the engine gets member_seen and restarts the pair."""
    store = MemoryStore()
    now = [time.time()]

    class Seen(Departures):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[str] = []

        def member_seen(self, member: Member) -> None:
            self.seen.append(member.name)

    events = Seen()
    reader = RoomSession(store, keys, Identity.from_seed(b"\x01" * 32), "reader", "01" * 8, events,
                         timing=IDLE, clock=lambda: now[0])
    away = RoomSession(store, keys, Identity.from_seed(b"\x02" * 32), "away", "02" * 8, RoomEvents(),
                       timing=IDLE, clock=lambda: now[0])
    await reader.start()
    await away.start()
    await reader._poll_once()
    assert events.seen == ["away"]
    now[0] += IDLE.ttl + 1  # away's network is down past the TTL: its record goes stale
    reader.expire_stale()
    assert events.gone["away"][0] == "gone"
    await away._update_presence(leaving=False)  # back: it announces again
    await reader._poll_once()
    assert events.seen == ["away", "away"] and {m.name for m in reader.members()} == {"away"}
    for member in (reader, away):
        await member.close()
