"""The room's shared settings (protocol.md §5a) with an SFU entry: the wire format and its vector,
the room's bounds on an entry (a bad one is dropped and counted, the TURN part stays), writers that
merge instead of erasing each other's fields, and readers that converge on the newest record — on
a real portal process (push and polling), on real relay processes (both implementations) and on
both at once. The engine's side (Membership.settings: TURN as before, the SFU entry validated with
sdparta.sfu.settings) is at the end.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sdparta.nostr import RelayPool, RelayTimeouts
from sdparta.room import wire
from sdparta.room.events import RoomEvents, SessionTiming
from sdparta.room.keys import Identity, RoomKeys
from sdparta.room.networks import open_room
from sdparta.room.nostr_room import NostrRoom
from sdparta.room.rendezvous import Rendezvous
from sdparta.room.session import RoomSession
from sdparta.room.settings import SettingsShare, merged
from sdparta.room.slots import slot_data_key
from sdparta.store import KeyPair, PortalClient, decode_skylink, sign_entry
from support.nostr_relay import IMPLEMENTATIONS, RelayFactory, RelayProcess
from support.procs import PortalProcess, start_portal
from support.room_events import Recorder
from support.waits import wait_until

TURN = wire.TurnServer("turn:127.0.0.1:3478?transport=udp", "ana", "s3cret")
OTHER_TURN = wire.TurnServer("turn:127.0.0.2:3478?transport=udp", "bo", "pw2")
SFU = {"type": "janus", "url": "wss://127.0.0.1:8989/janus", "room": 1234, "pin": None}
# Settings re-read often here (30 s in real rooms), so a polling reader's convergence is seen soon.
FAST = SessionTiming(reannounce=1.0, ttl=30.0, poll_fast=0.05, poll_slow=0.3, poll_push=1.0, settings_reread=0.5)
RELAY_TIMING = SessionTiming(reannounce=1.0, reannounce_retry=0.5, ttl=30.0)
FAST_RELAY = RelayTimeouts(backoff=(0.1, 1.0), ok=20.0)


@pytest.fixture(scope="module")
def keys() -> RoomKeys:
    return RoomKeys.derive("settings-room", "pw")


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PortalProcess]:
    proc = start_portal(tmp_path_factory.mktemp("portal") / "portal.sqlite3")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def polling_portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PortalProcess]:
    proc = start_portal(tmp_path_factory.mktemp("polling") / "portal.sqlite3", subscription=False)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(params=IMPLEMENTATIONS)
def relay(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RelayProcess]:
    with RelayFactory(tmp_path, implementation=request.param) as factory:
        yield factory.start()


def room_keys(name: str) -> RoomKeys:
    """A fresh room per test (the portals are shared by the module)."""
    return RoomKeys.derive(name, "pw")


class Members:
    """Rooms made for one test, closed at its end."""

    def __init__(self) -> None:
        self.rooms: list[Rendezvous] = []
        self.stores: list[PortalClient] = []

    def portal(self, url: str, keys: RoomKeys, name: str, seed: int, events: RoomEvents, **options: Any) -> RoomSession:
        store = PortalClient(url)
        self.stores.append(store)
        session = RoomSession(store, keys, Identity.from_seed(bytes([seed]) * 32), name, f"{seed:016x}", events,
                              timing=FAST, **options)
        self.rooms.append(session)
        return session

    def relay(self, urls: list[str], keys: RoomKeys, name: str, seed: int, events: RoomEvents,
              **options: Any) -> NostrRoom:
        room = NostrRoom(RelayPool(urls, timeouts=FAST_RELAY), keys, Identity.from_seed(bytes([seed]) * 32), name,
                         f"{seed:016x}", events, timing=RELAY_TIMING, **options)
        self.rooms.append(room)
        return room

    def both(self, portal_url: str, relay_urls: list[str], keys: RoomKeys, name: str, seed: int,
             events: RoomEvents, **options: Any) -> Rendezvous:
        store = PortalClient(portal_url)
        self.stores.append(store)
        room = open_room(keys, Identity.from_seed(bytes([seed]) * 32), name, f"{seed:016x}", events, store=store,
                         relays=RelayPool(relay_urls, timeouts=FAST_RELAY), timing=FAST, relay_timing=RELAY_TIMING,
                         **options)
        self.rooms.append(room)
        return room

    async def close(self) -> None:
        await asyncio.gather(*(room.close() for room in self.rooms), return_exceptions=True)
        await asyncio.gather(*(store.aclose() for store in self.stores), return_exceptions=True)


@pytest.fixture
async def members() -> Any:
    made = Members()
    try:
        yield made
    finally:
        await made.close()


def latest(events: Recorder) -> wire.RoomSettings | None:
    return events.settings_seen[-1] if events.settings_seen else None


def has_both(events: Recorder, turn: wire.TurnServer = TURN) -> bool:
    settings = latest(events)
    return settings is not None and settings.turn == (turn,) and settings.sfu == SFU


def increasing(events: Recorder) -> bool:
    """The engine is told of each newer record, never of an older one after it."""
    stamps = [s.ts_ms for s in events.settings_seen]
    return stamps == sorted(set(stamps))


# ---------------------------------------------------------------------- wire format
def test_settings_with_an_sfu_vector() -> None:
    """protocol.md §5a's vector: demo-room/hunter2, identity seed 00…1f, the room's settings slot,
    an all-zero nonce (Ed25519 signatures are deterministic, so the whole blob is)."""
    keys = RoomKeys.derive("demo-room", "hunter2")
    author = Identity.from_seed(bytes(range(32)))
    slot = KeyPair.from_private_bytes(keys.presence_seed).public_key
    assert slot.hex() == "2487fceb7305bd62eb967a8d2f75e7700ab428fb5b84e6ab169f8108580955e0"
    turn = [wire.TurnServer("turn:127.0.0.1:3478?transport=udp", "ana", "s3cret")]
    sfu = {"type": "janus", "url": "wss://sfu.example.org/janus", "room": 1234, "pin": None}
    assert wire.settings_body(author, turn, 1700000000000, sfu).decode() == (
        '{"author":"03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8",'
        '"sfu":{"pin":null,"room":1234,"type":"janus","url":"wss://sfu.example.org/janus"},"ts":1700000000000,'
        '"turn":[{"credential":"s3cret","url":"turn:127.0.0.1:3478?transport=udp","username":"ana"}],"v":1}')
    blob = wire.encode_settings(keys, author, slot, keys.data_key("settings"), turn, 1700000000000, bytes(12), sfu=sfu)
    assert blob[:26].hex() == "53445031000000000000000000000000c18b62ed052d0cb7b154" and len(blob) == 372
    assert hashlib.sha256(blob).hexdigest() == "9e84ab475f8cfdec65a51231617c4ae2b1a4bcb7b9163fa346a0f0dbf79514dc"
    settings = wire.decode_settings(keys, slot, keys.data_key("settings"), blob)
    assert settings.sfu == sfu and settings.turn == tuple(turn) and settings.sfu_rejected is None
    # a record without an SFU has no "sfu" key at all: byte for byte what readers before it wrote
    assert b"sfu" not in wire.settings_body(author, turn, 1700000000000)


def _signed_body(keys: RoomKeys, author: Identity, data_key: bytes, body: dict[str, Any]) -> bytes:
    raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    return author.sign(b"sdparta/v1/settings\x00" + keys.room_id + data_key + raw) + raw


def _deep(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = {"k": value}
    return value


BAD_SFU = [
    ("a string", "wss://sfu.example.org/janus", "not an object"),
    ("a list", [SFU], "not an object"),
    ("huge", {**SFU, "pin": "p" * 3000}, "more than 2048"),
    ("deep", {**SFU, "extra": _deep(2)}, "nests deeper than 2"),
]


@pytest.mark.parametrize(("label", "value", "reason"), BAD_SFU, ids=[b[0] for b in BAD_SFU])
def test_an_sfu_entry_outside_the_rooms_bounds_is_dropped_and_the_turn_part_kept(
        keys: RoomKeys, label: str, value: Any, reason: str) -> None:
    author, slot, data_key = Identity.from_seed(b"\x07" * 32), bytes(32), keys.data_key("settings")
    body = {"v": 1, "author": author.public_key.hex(), "ts": 5, "sfu": value,
            "turn": [{"url": TURN.url, "username": TURN.username, "credential": TURN.credential}]}
    blob = wire.seal(keys, b"settings", slot, data_key, _signed_body(keys, author, data_key, body))
    settings = wire.decode_settings(keys, slot, data_key, blob)
    assert settings.turn == (TURN,) and settings.sfu is None
    assert settings.sfu_rejected is not None and reason in settings.sfu_rejected
    # and nobody writes such an entry in the first place
    with pytest.raises(wire.WireError):
        SettingsShare(sfu=value)  # type: ignore[arg-type]


def test_settings_timestamps_are_whole_numbers_a_browser_orders_too(keys: RoomKeys) -> None:
    author, slot, data_key = Identity.from_seed(b"\x07" * 32), bytes(32), keys.data_key("settings")
    for ts in (True, -1, 2**53, 1.5):
        body = {"v": 1, "author": author.public_key.hex(), "ts": ts, "turn": []}
        blob = wire.seal(keys, b"settings", slot, data_key, _signed_body(keys, author, data_key, body))
        with pytest.raises(wire.WireError):
            wire.decode_settings(keys, slot, data_key, blob)


def test_a_merge_takes_each_field_from_the_newest_record_that_has_it() -> None:
    me = Identity.from_seed(b"\x09" * 32)
    old_turn = wire.RoomSettings(b"a" * 32, 10, (OTHER_TURN,))
    newer_turn = wire.RoomSettings(b"b" * 32, 20, (TURN,))
    sfu_only = wire.RoomSettings(b"c" * 32, 30, (), SFU)
    record = merged([old_turn, sfu_only, newer_turn, None], SettingsShare(), me, now_ms=5)
    assert record.turn == (TURN,) and record.sfu == SFU
    assert record.ts_ms == 31 and record.author == me.public_key  # newer than all, even with our clock behind
    ours = merged([sfu_only, newer_turn], SettingsShare(turn=(OTHER_TURN,)), me, now_ms=1000)
    assert ours.turn == (OTHER_TURN,) and ours.sfu == SFU and ours.ts_ms == 1000
    assert SettingsShare(turn=(TURN,)).missing_from(sfu_only)
    assert not SettingsShare(turn=(TURN,)).missing_from(old_turn)  # replaced by someone else's: theirs wins
    assert not SettingsShare(sfu=SFU).missing_from(sfu_only)


# ---------------------------------------------------------------------- a portal
@pytest.mark.parametrize("push", [True, False], ids=["push", "polling"])
async def test_on_a_portal_writers_merge_and_every_member_converges(
        portal: PortalProcess, polling_portal: PortalProcess, members: Members, push: bool) -> None:
    """alice shares a relay; carol joins and takes it; bob shares an SFU later: his record keeps
    alice's relay, and alice and carol — who had the older record — get the newer one (push, or the
    periodic re-read of a portal without push); dave, joining last, reads both fields."""
    url = portal.url if push else polling_portal.url
    keys = room_keys(f"portal-merge-{push}")
    alice_events, bob_events, carol_events, dave_events = Recorder(), Recorder(), Recorder(), Recorder()
    alice = members.portal(url, keys, "alice", 1, alice_events, share_turn=[TURN])
    await alice.start()
    carol = members.portal(url, keys, "carol", 3, carol_events)
    await carol.start()
    assert latest(carol_events) is not None and latest(carol_events).turn == (TURN,)  # read on joining
    bob = members.portal(url, keys, "bob", 2, bob_events, share_sfu=SFU)
    await bob.start()
    assert has_both(bob_events)
    await wait_until(lambda: has_both(alice_events) and has_both(carol_events), "the newer settings everywhere", 30)
    dave = members.portal(url, keys, "dave", 4, dave_events)
    await dave.start()
    assert has_both(dave_events) and [s.ts_ms for s in dave_events.settings_seen] == [latest(bob_events).ts_ms]
    for events in (alice_events, bob_events, carol_events, dave_events):
        assert increasing(events)
    assert alice.push_active == push


async def test_on_a_portal_two_members_sharing_at_once_both_stay(portal: PortalProcess, members: Members) -> None:
    """Compare-and-set on the revision: the writer that loses re-reads the winner's record and merges."""
    keys = room_keys("portal-concurrent")
    alice_events, bob_events, carol_events = Recorder(), Recorder(), Recorder()
    alice = members.portal(portal.url, keys, "alice", 1, alice_events, share_turn=[TURN])
    bob = members.portal(portal.url, keys, "bob", 2, bob_events, share_sfu=SFU)
    await asyncio.gather(alice.start(), bob.start())
    carol = members.portal(portal.url, keys, "carol", 3, carol_events)
    await carol.start()
    assert has_both(carol_events)
    await wait_until(lambda: has_both(alice_events) and has_both(bob_events), "both writers converging", 30)


async def _write_settings_slot(url: str, keys: RoomKeys, plaintext: bytes) -> None:
    """What any password holder can do: seal anything signed into the room's settings slot."""
    pair, data_key = KeyPair.from_private_bytes(keys.presence_seed), slot_data_key(keys, "settings", 0)
    client = PortalClient(url)
    try:
        blob = wire.seal(keys, b"settings", pair.public_key, data_key, plaintext)
        skylink = decode_skylink(await client.upload_blob(blob))
        current = await client.get_entry(pair.public_key, data_key)
        await client.set_entry(sign_entry(pair, data_key, skylink, current.revision + 1 if current else 0))
    finally:
        await client.aclose()


@pytest.mark.parametrize(("label", "value", "reason"), BAD_SFU, ids=[b[0] for b in BAD_SFU])
async def test_a_bad_sfu_entry_on_a_portal_is_counted_and_healed_by_the_next_sharer(
        portal: PortalProcess, members: Members, label: str, value: Any, reason: str) -> None:
    keys = room_keys(f"portal-bad-{label}")
    hostile = Identity.from_seed(b"\x66" * 32)
    body = {"v": 1, "author": hostile.public_key.hex(), "ts": 1, "sfu": value,
            "turn": [{"url": TURN.url, "username": TURN.username, "credential": TURN.credential}]}
    await _write_settings_slot(portal.url, keys, _signed_body(keys, hostile, slot_data_key(keys, "settings", 0), body))
    reader_events, sharer_events = Recorder(), Recorder()
    reader = members.portal(portal.url, keys, "reader", 1, reader_events)
    await reader.start()
    [settings] = reader_events.settings_seen
    assert settings.turn == (TURN,) and settings.sfu is None  # the relay part is still the room's
    assert [r for r in reader.counters.invalid_reasons if reason in r], reader.counters.invalid_reasons
    counted = reader.counters.invalid_messages
    await asyncio.sleep(FAST.settings_reread * 3)  # re-reads of the same content are not counted again
    assert reader.counters.invalid_messages == counted
    sharer = members.portal(portal.url, keys, "sharer", 2, sharer_events, share_sfu=SFU)
    await sharer.start()
    await wait_until(lambda: has_both(reader_events), "the sharer's record replacing the bad entry", 30)


# ---------------------------------------------------------------------- relays
async def test_on_a_relay_writers_merge_and_every_member_converges(relay: RelayProcess, members: Members) -> None:
    keys = room_keys(f"relay-merge-{relay.url}")
    alice_events, bob_events, carol_events, dave_events = Recorder(), Recorder(), Recorder(), Recorder()
    alice = members.relay([relay.url], keys, "alice", 1, alice_events, share_turn=[TURN])
    await alice.start()
    carol = members.relay([relay.url], keys, "carol", 3, carol_events)
    await carol.start()
    assert latest(carol_events) is not None and latest(carol_events).turn == (TURN,)
    bob = members.relay([relay.url], keys, "bob", 2, bob_events, share_sfu=SFU)
    await bob.start()
    assert has_both(bob_events)  # merged into what the relay held (after its stored events arrived)
    await wait_until(lambda: has_both(alice_events) and has_both(carol_events), "the newer settings everywhere", 30)
    dave = members.relay([relay.url], keys, "dave", 4, dave_events)
    await dave.start()
    await wait_until(lambda: has_both(dave_events), "the newest settings for a late joiner", 30)
    for events in (alice_events, bob_events, carol_events, dave_events):
        assert increasing(events)


async def test_on_a_relay_two_members_sharing_at_once_both_stay(relay: RelayProcess, members: Members) -> None:
    """No compare-and-set on relays: a sharer whose field a newer record dropped merges it in again."""
    keys = room_keys(f"relay-concurrent-{relay.url}")
    alice_events, bob_events, carol_events = Recorder(), Recorder(), Recorder()
    alice = members.relay([relay.url], keys, "alice", 1, alice_events, share_turn=[TURN])
    bob = members.relay([relay.url], keys, "bob", 2, bob_events, share_sfu=SFU)
    await asyncio.gather(alice.start(), bob.start())
    carol = members.relay([relay.url], keys, "carol", 3, carol_events)
    await carol.start()
    await wait_until(lambda: has_both(alice_events) and has_both(bob_events) and has_both(carol_events),
                     "every member on one record with both fields", 30)


async def test_on_a_relay_a_newer_record_arriving_while_ours_is_on_its_way_gets_our_field_back(
        relay: RelayProcess, members: Members) -> None:
    """The race behind a CI failure of the test above: bob's newer record (no relay in it) reached
    alice while her own was still being published; she adopted it before her fields were out, so she
    never merged her relay in again and the room lost it. Here alice's publish waits for bob's record."""
    keys = room_keys(f"relay-in-flight-{relay.url}")
    alice_events, bob_events = Recorder(), Recorder()
    alice = members.relay([relay.url], keys, "alice", 1, alice_events, share_turn=[TURN])
    bob = members.relay([relay.url], keys, "bob", 2, bob_events, share_sfu=SFU)
    publish = alice.relays.publish
    settings_tag = alice.tags.settings
    held = [0]

    async def after_bob(event: Any, **options: Any) -> Any:
        if held[0] == 0 and any(list(tag[:2]) == ["d", settings_tag] for tag in event.tags):
            held[0] += 1
            await wait_until(lambda: latest(alice_events) is not None and latest(alice_events).sfu == SFU,
                             "bob's record at alice before hers is out", 30)
        return await publish(event, **options)

    alice.relays.publish = after_bob  # type: ignore[method-assign]
    alice_start = asyncio.create_task(alice.start())
    await wait_until(lambda: held[0] == 1, "alice's settings publish held", 30)
    await asyncio.sleep(0.01)  # bob's ts is above alice's
    await bob.start()
    await alice_start
    await wait_until(lambda: has_both(alice_events) and has_both(bob_events), "both fields on the newest record", 30)


async def test_a_bad_sfu_entry_on_a_relay_is_counted_and_the_relay_part_kept(relay: RelayProcess,
                                                                             members: Members) -> None:
    keys = room_keys(f"relay-bad-{relay.url}")
    hostile = members.relay([relay.url], keys, "hostile", 6, Recorder())
    await hostile.start()
    data_key = keys.data_key("nostr", "settings")
    body = {"v": 1, "author": hostile.identity.public_key.hex(), "ts": 1, "sfu": {**SFU, "pin": "p" * 3000},
            "turn": [{"url": TURN.url, "username": TURN.username, "credential": TURN.credential}]}
    blob = wire.seal(keys, b"settings", bytes.fromhex(hostile.nostr_key.pubkey), data_key,
                     _signed_body(keys, hostile.identity, data_key, body))
    from sdparta.room.nostr_wire import b64

    await hostile._publish(hostile.tags.settings, hostile.tags.settings, b64(blob))
    reader_events = Recorder()
    reader = members.relay([relay.url], keys, "reader", 1, reader_events)
    await reader.start()
    await wait_until(lambda: latest(reader_events) is not None, "the hostile record", 30)
    assert latest(reader_events).turn == (TURN,) and latest(reader_events).sfu is None
    assert [r for r in reader.counters.invalid_reasons if "more than 2048" in r], reader.counters.invalid_reasons


# ---------------------------------------------------------------------- both at once
async def test_on_a_portal_and_a_relay_at_once_members_converge(portal: PortalProcess, tmp_path: Path,
                                                               members: Members) -> None:
    with RelayFactory(tmp_path, implementation="python") as factory:
        relay = factory.start()
        keys = room_keys("combined-merge")
        alice_events, bob_events, carol_events = Recorder(), Recorder(), Recorder()
        alice = members.both(portal.url, [relay.url], keys, "alice", 1, alice_events, share_turn=[TURN])
        await alice.start()
        carol = members.both(portal.url, [relay.url], keys, "carol", 3, carol_events)
        await carol.start()
        await wait_until(lambda: latest(carol_events) is not None and latest(carol_events).turn == (TURN,),
                         "alice's relay", 30)
        bob = members.both(portal.url, [relay.url], keys, "bob", 2, bob_events, share_sfu=SFU)
        await bob.start()
        await wait_until(lambda: all(has_both(e) for e in (alice_events, bob_events, carol_events)),
                         "one record with both fields for everyone", 30)
        for events in (alice_events, bob_events, carol_events):
            assert increasing(events)  # each newer record told once, though both networks bring it
        # a portal-only and a relay-only newcomer read the same fields
        portal_events, relay_events = Recorder(), Recorder()
        await members.portal(portal.url, keys, "p", 4, portal_events).start()
        await members.relay([relay.url], keys, "r", 5, relay_events).start()
        await wait_until(lambda: has_both(portal_events) and has_both(relay_events), "both networks' records", 30)
        await members.close()


# ---------------------------------------------------------------------- the engine's side
def _membership(ice_servers: list[Any] | None = None) -> tuple[Any, list[tuple[str, str]]]:
    from sdparta.engine.membership import Membership

    notices: list[tuple[str, str]] = []
    membership = Membership(b"\x01" * 32, "00000000000000aa", 0.0, None,  # type: ignore[arg-type]
                            ice_servers=ice_servers or [], relay_only=False,
                            notice=lambda severity, text: notices.append((severity, text)), changed=lambda: None)
    return membership, notices


def test_the_engine_keeps_the_rooms_sfu_and_uses_its_relay_as_before() -> None:
    membership, notices = _membership()
    author = b"\x02" * 32
    membership.settings(wire.RoomSettings(author, 1, (TURN,)))
    assert [s.urls for s in membership.ice_servers] == [TURN.url] and membership.room_sfu is None
    membership.settings(wire.RoomSettings(author, 2, (TURN,), SFU))
    assert membership.room_sfu is not None and membership.room_sfu.url == SFU["url"]
    assert membership.room_sfu_label == "janus @ 127.0.0.1 room 1234"
    assert "the room names an SFU: janus @ 127.0.0.1 room 1234 (videoroom)" in notices[-1][1]
    assert len(membership.ice_servers) == 1  # the same relay is not added twice
    # a newer relay replaces the room's older one (never ours)
    membership.settings(wire.RoomSettings(author, 3, (OTHER_TURN,), SFU))
    assert [s.urls for s in membership.ice_servers] == [OTHER_TURN.url]
    assert sum("the room names an SFU" in text for _, text in notices) == 1  # the same SFU is told once


def test_the_engine_refuses_an_invalid_sfu_entry_with_a_notice_and_a_count_and_keeps_the_relay() -> None:
    from aiortc import RTCIceServer

    membership, notices = _membership()
    bad = {**SFU, "type": "mcu"}
    membership.settings(wire.RoomSettings(b"\x02" * 32, 1, (TURN,), bad))
    assert membership.room_sfu is None and [s.urls for s in membership.ice_servers] == [TURN.url]
    [(severity, text)] = [n for n in notices if "SFU" in n[1]]
    assert severity == "warning" and "unsupported SFU type 'mcu'" in text and "stays a mesh" in text
    assert membership.counters.invalid_messages == 1
    membership.settings(wire.RoomSettings(b"\x02" * 32, 2, (TURN,), bad))  # the same entry again: told once
    assert membership.counters.invalid_messages == 1 and len([n for n in notices if "SFU" in n[1]]) == 1
    # with a TURN server of our own the room's is not added (as before the SFU entry)
    own, _ = _membership([RTCIceServer(urls="turn:10.0.0.1:3478", username="u", credential="p")])
    own.settings(wire.RoomSettings(b"\x02" * 32, 1, (TURN,), SFU))
    assert [s.urls for s in own.ice_servers] == ["turn:10.0.0.1:3478"] and own.room_sfu is not None


def test_the_snapshot_counts_what_the_engine_rejected_among_the_invalid() -> None:
    from sdparta.engine.call import _counter_fields
    from sdparta.room.events import SessionCounters

    session, engine = SessionCounters(), SessionCounters()
    session.invalid("presence: junk")
    engine.invalid("room settings: invalid SFU entry (x)")
    fields = _counter_fields(session, engine)
    assert fields["invalid_messages"] == 2
    assert dict(fields["invalid_reasons"]) == {"presence: junk": 1, "room settings: invalid SFU entry (x)": 1}


async def test_a_record_dated_far_ahead_cannot_pin_the_rooms_settings(portal: PortalProcess, members: Members) -> None:
    """A password holder writing a ts no honest writer could beat (an hour ahead) is not taken: it is
    counted, and the next sharer's record (dated by its own clock) is the room's."""
    import time

    keys = room_keys("portal-future")
    hostile = Identity.from_seed(b"\x66" * 32)
    body = {"v": 1, "author": hostile.public_key.hex(), "ts": int(time.time() * 1000) + 3_600_000,
            "turn": [{"url": OTHER_TURN.url, "username": OTHER_TURN.username, "credential": OTHER_TURN.credential}]}
    await _write_settings_slot(portal.url, keys, _signed_body(keys, hostile, slot_data_key(keys, "settings", 0), body))
    reader_events = Recorder()
    reader = members.portal(portal.url, keys, "reader", 1, reader_events)
    await reader.start()
    assert reader_events.settings_seen == []
    assert [r for r in reader.counters.invalid_reasons if "ahead of our clock" in r], reader.counters.invalid_reasons
    await members.portal(portal.url, keys, "sharer", 2, Recorder(), share_sfu=SFU).start()
    await wait_until(lambda: latest(reader_events) is not None and latest(reader_events).sfu == SFU,
                     "the sharer's record", 30)
    assert latest(reader_events).turn == ()  # the far-future record's relay was never taken, nor merged
