"""A room survives time, its own members and their mistakes (issue 8, findings 1–5).

Every test here writes into the room's slots what a password holder (or an expired skyfile) can
leave there, and checks that members still find each other — each fails on the code before the fix.
In-process store with real signatures and sealing; the integration twins with real portal and bot
processes are in test_room_resilience_portal.py.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from sdparta.room import wire
from sdparta.room.keys import Identity, RoomKeys
from sdparta.room.session import RoomEvents, RoomSession, SessionTiming
from sdparta.room.slots import EPOCH_REVISION_LIMIT, slot_data_key
from sdparta.room.wire import MAX_MEMBERS, Member, seal, sign_member
from sdparta.store import KeyPair, MemoryStore, decode_skylink, sign_entry, skylink_for_content
from sdparta.store.crypto import MAX_REVISION
from support.waits import wait_until

IDLE = SessionTiming(reannounce=3600, poll_push=3600)  # no timer fires unless a test asks for it
QUICK = SessionTiming(reannounce=0.3, reannounce_retry=0.3, poll_push=3600)


@pytest.fixture(scope="module")
def keys() -> RoomKeys:
    return RoomKeys.derive("resilient-room", "pw", iterations=1000)


class Seen(RoomEvents):
    def __init__(self) -> None:
        self.seen: list[str] = []
        self.gone: dict[str, tuple[str, str]] = {}
        self.invalid_reasons: list[str] = []
        self.failures: list[tuple[str, str]] = []

    def member_seen(self, member: Member) -> None:
        self.seen.append(member.name)

    def member_gone(self, member: Member, status: str, reason: str) -> None:
        self.gone[member.name] = (status, reason)

    def invalid(self, reason: str) -> None:
        self.invalid_reasons.append(reason)

    def loop_failed(self, name: str, error: str) -> None:
        self.failures.append((name, error))


def member(store: MemoryStore, keys: RoomKeys, name: str, seed: int, events: RoomEvents | None = None,
           timing: SessionTiming = IDLE) -> RoomSession:
    return RoomSession(store, keys, Identity.from_seed(bytes([seed]) * 32), name, f"{seed:016x}",
                       events or Seen(), timing=timing)


def room_keypair(keys: RoomKeys) -> KeyPair:
    return KeyPair.from_private_bytes(keys.presence_seed)


def write_slot(store: MemoryStore, keys: RoomKeys, data: bytes, *, label: str = "presence",
               revision: int | None = None, epoch: int = 0) -> None:
    """What any password holder can do: sign anything into the room's shared slot."""
    pair = room_keypair(keys)
    data_key = slot_data_key(keys, label, epoch)
    current = store.entries.get((pair.public_key, data_key))
    if revision is None:
        revision = current.revision + 1 if current is not None else 0
    store.entries[(pair.public_key, data_key)] = sign_entry(pair, data_key, data, revision)


def sealed_blob(store: MemoryStore, keys: RoomKeys, plaintext: bytes, kind: bytes = b"presence",
                label: str = "presence") -> bytes:
    """Seal ``plaintext`` for the room's slot, store it, return the raw skylink."""
    blob = seal(keys, kind, room_keypair(keys).public_key, slot_data_key(keys, label, 0), plaintext)
    skylink = skylink_for_content(blob)
    store.blobs[skylink] = blob
    return decode_skylink(skylink)


def names(session: RoomSession) -> set[str]:
    return {m.name for m in session.members()}


async def close_all(*sessions: RoomSession) -> None:
    for session in sessions:
        await session.close()


# ---------------------------------------------------------------------- finding 1
async def test_a_room_whose_presence_skyfile_expired_can_be_joined_again(keys: RoomKeys) -> None:
    """The last member leaves; its (empty) list's skyfile expires on the portal. The next joiners must
    treat the missing blob as an empty list and write a new one — not fail for ever."""
    store = MemoryStore()
    last = member(store, keys, "last", 1)
    await last.start()
    await last.leave()
    await last.close()
    store.blobs.clear()  # the skyfile lifetime passed

    events = Seen()
    first, second = member(store, keys, "first", 2, events), member(store, keys, "second", 3)
    await first.start()  # raised "skyfile … is not on store" before the fix
    await second.start()
    await wait_until(lambda: names(first) == {"second"} and names(second) == {"first"}, "both see each other")
    assert any("is not on store" in reason for reason in events.invalid_reasons)
    await close_all(first, second)


async def test_missing_settings_skyfile_is_no_settings(keys: RoomKeys) -> None:
    store = MemoryStore()
    write_slot(store, keys, decode_skylink(skylink_for_content(b"gone")), label="settings")
    joiner = member(store, keys, "joiner", 2)
    assert await joiner.fetch_settings() is None  # raised StoreError before the fix
    assert joiner.counters.invalid_messages == 1


# ---------------------------------------------------------------------- finding 2
@pytest.mark.parametrize("junk", [b"0123456789", decode_skylink(skylink_for_content(b"never uploaded"))],
                         ids=["10-junk-bytes", "34-bytes-naming-no-skyfile"])
async def test_one_junk_write_into_presence_heals_within_a_reannounce(keys: RoomKeys, junk: bytes) -> None:
    """A member writes junk into presence. Newcomers still join and see the members who were there,
    and the members keep re-announcing (they stopped for good before the fix)."""
    store = MemoryStore()
    old_events = Seen()
    old = member(store, keys, "old", 1, old_events, timing=QUICK)
    await old.start()
    write_slot(store, keys, junk)
    sets = old.counters.sets
    await wait_until(lambda: old.counters.sets >= sets + 2, "the old member re-announcing past the junk")
    newcomer = member(store, keys, "newcomer", 2)
    await newcomer.start()
    await wait_until(lambda: names(newcomer) == {"old"} and names(old) == {"newcomer"}, "both see each other")
    assert old_events.gone == {}
    assert old_events.invalid_reasons  # the junk was counted, not hidden
    await close_all(old, newcomer)


async def test_a_newer_valid_list_wins_over_the_last_good_one(keys: RoomKeys) -> None:
    """Unusable content is replaced by the last good list, but a valid newer list written after the
    junk is taken as it is."""
    store = MemoryStore()
    reader = member(store, keys, "reader", 1)
    await reader.start()
    write_slot(store, keys, b"junk")
    await reader._poll_once()
    other = member(store, keys, "other", 2)
    await other.start()  # writes [reader, other] at a revision above the junk
    await reader._poll_once()
    assert names(reader) == {"other"}
    await close_all(reader, other)


async def test_a_frozen_presence_revision_moves_the_room_to_the_next_epoch(keys: RoomKeys) -> None:
    """A write at revision 2^64-1 freezes the slot (no higher revision can be signed). The members
    move the room's presence to the next epoch's slot; newcomers follow; nobody is reported gone."""
    store = MemoryStore()
    events = Seen()
    old = member(store, keys, "old", 1, events, timing=QUICK)
    await old.start()
    write_slot(store, keys, b"frozen", revision=MAX_REVISION)
    await wait_until(lambda: old.counters.epoch_moves == 1, "the old member moving on")
    # push, poll and re-announce all notice the frozen slot at once: together they move one epoch
    reader = member(store, keys, "reader", 3)
    await asyncio.gather(reader._poll_once(), reader._fetch_presence(), reader._update_presence(leaving=False),
                         reader._fetch_presence())
    assert reader.presence_epoch == 1 and reader.counters.epoch_moves == 1
    newcomer = member(store, keys, "newcomer", 2)
    await newcomer.start()
    await wait_until(lambda: {"old", "reader"} <= names(newcomer) and {"newcomer", "reader"} <= names(old),
                     "everyone sees everyone")
    moved = store.entries[(room_keypair(keys).public_key, slot_data_key(keys, "presence", 1))]
    assert moved.revision < EPOCH_REVISION_LIMIT
    assert events.gone == {}
    await close_all(old, newcomer, reader)


async def test_a_frozen_settings_revision_moves_settings_to_the_next_epoch(keys: RoomKeys) -> None:
    store = MemoryStore()
    write_slot(store, keys, b"frozen", label="settings", revision=MAX_REVISION)
    sharer, reader = member(store, keys, "sharer", 1), member(store, keys, "reader", 2)
    await sharer.share_settings([wire.TurnServer("turn:127.0.0.1:3478", "u", "p")])
    settings = await reader.fetch_settings()
    assert settings is not None and settings.turn[0].url == "turn:127.0.0.1:3478"
    assert reader.counters.epoch_moves == 1


# ---------------------------------------------------------------------- finding 3
DEEP = b"[" * 50_000


async def test_deeply_nested_presence_is_an_invalid_list_not_a_crash(keys: RoomKeys) -> None:
    store = MemoryStore()
    old_events = Seen()
    old = member(store, keys, "old", 1, old_events, timing=QUICK)
    await old.start()
    write_slot(store, keys, sealed_blob(store, keys, DEEP))
    newcomer = member(store, keys, "newcomer", 2)
    await newcomer.start()  # RecursionError before the fix
    await wait_until(lambda: names(newcomer) == {"old"} and names(old) == {"newcomer"}, "both see each other")
    assert any("nests deeper" in reason for reason in old_events.invalid_reasons + newcomer.events.invalid_reasons)
    assert old_events.failures == []
    await close_all(old, newcomer)


async def test_deeply_nested_settings_are_no_settings(keys: RoomKeys) -> None:
    store = MemoryStore()
    author = Identity.from_seed(b"\x05" * 32)
    raw = DEEP
    data_key = slot_data_key(keys, "settings", 0)
    signature = author.sign(b"sdparta/v1/settings\x00" + keys.room_id + data_key + raw)
    write_slot(store, keys, sealed_blob(store, keys, signature + raw, b"settings", "settings"), label="settings")
    assert await member(store, keys, "reader", 2).fetch_settings() is None


def test_every_room_decoder_turns_deep_nesting_into_a_wire_error(keys: RoomKeys) -> None:
    author = Identity.from_seed(b"\x06" * 32)
    data_key = keys.data_key("pair", "00" * 8, "11" * 8)
    signature = author.sign(b"sdparta/v1/msg\x00" + keys.room_id + data_key + DEEP)
    blob = seal(keys, b"msg", author.public_key, data_key, signature + DEEP)
    with pytest.raises(wire.WireError, match="nests deeper"):
        wire.decode_message(keys, author.public_key, data_key, blob)
    with pytest.raises(wire.WireError, match="nests deeper"):
        wire.load_json(b'{"v":1,"members":' + b"[" * 9 + b"]" * 9 + b"}", "presence list")
    assert wire.load_json(b'{"name":"[[[[[[[[[[[[[[[[[[[["}', "x") == {"name": "[" * 20}


async def test_a_crashed_background_loop_is_reported_and_restarted(keys: RoomKeys) -> None:
    """A bug in one event handler must not end re-announcing silently."""

    class Buggy(Seen):
        calls = 0

        def member_seen(self, member: Member) -> None:
            Buggy.calls += 1
            if Buggy.calls == 1:
                raise RuntimeError("a bug in the engine")
            super().member_seen(member)

    store = MemoryStore(push=False)
    events = Buggy()
    watcher = RoomSession(store, keys, Identity.from_seed(b"\x01" * 32), "watcher", "01" * 8, events,
                          timing=SessionTiming(reannounce=0.2, reannounce_retry=0.2, poll_slow=0.05,
                                               poll_fast=0.05))
    await watcher.start()
    other = member(store, keys, "other", 2)
    await other.start()
    await wait_until(lambda: bool(events.failures), "the crash reported")
    assert "a bug in the engine" in events.failures[0][1]
    assert watcher.counters.loop_restarts >= 1
    third = member(store, keys, "third", 3)
    await third.start()
    await wait_until(lambda: "third" in events.seen, "the restarted loop sees the next member")
    sets = watcher.counters.sets
    await wait_until(lambda: watcher.counters.sets > sets, "re-announcing goes on")
    await close_all(watcher, other, third)


# ---------------------------------------------------------------------- finding 4
def fake_records(keys: RoomKeys, count: int, ts_ms: int) -> list[Member]:
    return [sign_member(keys, Identity.from_seed(bytes([100 + i % 100, i // 100]) + b"\x00" * 30),
                        f"{0xf000 + i:016x}", f"fake{i}", ts_ms) for i in range(count)]


def write_list(store: MemoryStore, keys: RoomKeys, members: list[Member]) -> None:
    pair = room_keypair(keys)
    blob = wire.encode_presence(keys, pair.public_key, slot_data_key(keys, "presence", 0), members)
    skylink = skylink_for_content(blob)
    store.blobs[skylink] = blob
    write_slot(store, keys, decode_skylink(skylink))


async def test_a_flood_of_fake_records_does_not_hide_the_real_members(keys: RoomKeys) -> None:
    """64 validly signed fakes, re-written every few seconds by a password holder, used to push the
    real members past the 64-member cut-off: newcomers saw only fakes, and members saw each other
    leave. Writers keep their own record first and the members they hear alive next; a full list
    cannot prove a departure."""
    store = MemoryStore()

    class Alive(Seen):
        def __init__(self, peers: set[str]) -> None:
            super().__init__()
            self.peers = peers

        def alive(self, member: Member) -> bool:
            return member.name in self.peers

    a_events, b_events = Alive({"b"}), Alive({"a"})
    a = member(store, keys, "a", 1, a_events, timing=QUICK)
    b = member(store, keys, "b", 2, b_events, timing=QUICK)
    await a.start()
    await b.start()
    await wait_until(lambda: names(a) == {"b"} and names(b) == {"a"}, "the real members see each other")

    stop = asyncio.Event()

    async def flood() -> None:
        while not stop.is_set():
            write_list(store, keys, fake_records(keys, MAX_MEMBERS, int(time.time() * 1000)))
            await asyncio.sleep(0.1)

    attacker = asyncio.create_task(flood())
    try:
        await asyncio.sleep(0.5)
        newcomer = member(store, keys, "newcomer", 3, timing=QUICK)
        await newcomer.start()
        await wait_until(lambda: {"a", "b"} <= names(newcomer), "the newcomer sees the real members", 20)
        assert a_events.gone == {} and b_events.gone == {}
        assert {"a", "b"} <= names(a) | {"a"} and "b" in names(a)
    finally:
        stop.set()
        await attacker
    await close_all(a, b, newcomer)


def test_a_writer_keeps_its_own_and_live_records_first_and_limits_sessions_per_identity(keys: RoomKeys) -> None:
    store = MemoryStore()

    class Alive(Seen):
        def alive(self, member: Member) -> bool:
            return member.name == "friend"

    writer = member(store, keys, "writer", 1, Alive())
    now = int(time.time() * 1000)
    friend = sign_member(keys, Identity.from_seed(b"\x02" * 32), "02" * 8, "friend", now - 20_000)
    one_key = Identity.from_seed(b"\x03" * 32)
    same_identity = [sign_member(keys, one_key, f"{i:016x}", f"clone{i}", now) for i in range(10)]
    flood = fake_records(keys, MAX_MEMBERS, now)
    written = writer._list_to_write([*flood, *same_identity, friend], leaving=False)
    assert [m.name for m in written[:2]] == ["writer", "friend"]
    assert len(written) == MAX_MEMBERS
    assert sum(m.public_key == one_key.public_key for m in written) <= 4


# ---------------------------------------------------------------------- finding 5
async def test_an_offer_replayed_into_another_slot_says_so(keys: RoomKeys) -> None:
    store = MemoryStore()
    events = Seen()
    victim = member(store, keys, "victim", 1)
    target = member(store, keys, "target", 2, events)
    mallory = member(store, keys, "mallory", 3)
    for session in (victim, target, mallory):
        await session.start()
    for session in (victim, target):
        await session._poll_once()  # IDLE timing: read the list everybody has written
    victim_record = next(m for m in target.members() if m.name == "victim")
    mallory_record = next(m for m in target.members() if m.name == "mallory")
    await victim.send(next(m for m in victim.members() if m.name == "target"),
                      {"type": "offer", "sdp": "v=0", "gen": 1})
    victim_key = target._pairs.key(victim_record.session_id, target.session_id)
    stolen = store.entries[(victim_record.public_key, victim_key)].data
    mallory_key = target._pairs.key(mallory_record.session_id, target.session_id)
    store.entries[(mallory_record.public_key, mallory_key)] = sign_entry(
        KeyPair.from_private_bytes(mallory.identity.seed), mallory_key, stolen, 0)
    await target.watch(mallory_record, True)
    await wait_until(lambda: bool(events.invalid_reasons), "the replay counted")
    reason = events.invalid_reasons[-1]
    assert "replay" in reason and "password" not in reason
    await close_all(victim, target, mallory)


def test_message_json_shape_is_stable() -> None:
    """The canonical JSON the decoders accept is the one the encoders write (guards load_json)."""
    assert wire.load_json(json.dumps({"v": 1, "members": []}).encode(), "x") == {"v": 1, "members": []}
