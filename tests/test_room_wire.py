"""Room protocol wire format: the test vectors of docs/protocol.md, round trips and tampering."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdparta.room import wire
from sdparta.room.keys import Identity, RoomKeys, fingerprint

SID_A, SID_B = "0011223344556677", "8899aabbccddeeff"


@pytest.fixture(scope="module")
def keys() -> RoomKeys:
    return RoomKeys.derive("demo-room", "hunter2")


@pytest.fixture(scope="module")
def alice() -> Identity:
    return Identity.from_seed(bytes(range(32)))


def test_key_derivation_vectors(keys: RoomKeys) -> None:
    assert keys.seal_key.hex() == "35ffb15e5eea97a15c2e5535068c45ec627cd08c6c49e19c2d08a27bb87fb72e"
    assert keys.tag_key.hex() == "af592b55778218639e384261b5eabc8ec34578ba4e55a4e8ecef645ab58d90a2"
    assert keys.presence_seed.hex() == "24fff6ed1e3fdca2939bd0cbeb1e5ed700d688e03fb031182660a097db30bf5e"
    assert keys.room_id.hex() == "89c001dec17a999c5a84f0a6b1d74eb6"
    assert keys.data_key("presence").hex() == "2fe912703f6c80583c6216ebd3064ab05fdce1bd13bcd0fd54da0b5753759297"
    assert keys.data_key("pair", SID_A, SID_B).hex() == (
        "c3827605ca3914c3fe20f709ff92843ff1e6663d2e08b5df3342dc91f9194576")
    assert keys.data_key("settings").hex() == "ace2d5608031cee8a9798750e350308dbd9f67256dfc4bdd2a2aeab9a8eb2464"


def test_password_and_room_both_matter(keys: RoomKeys) -> None:
    assert RoomKeys.derive("demo-room", "hunter3", iterations=1000).seal_key != keys.seal_key
    other = RoomKeys.derive("demo-room", "hunter2", iterations=1000)
    assert RoomKeys.derive("demo-roon", "hunter2", iterations=1000).seal_key != other.seal_key


def test_identity_fingerprint_vector(alice: Identity) -> None:
    assert alice.public_key.hex() == "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
    assert fingerprint(alice.public_key) == "5647:5aa7:5463:474c"


def test_message_vector_opens(keys: RoomKeys, alice: Identity) -> None:
    data_key = keys.data_key("pair", SID_A, SID_B)
    body = {"v": 1, "type": "bye", "from": SID_A, "to": SID_B, "name": "alice", "ts": 1700000000000,
            "gen": 0}
    blob = wire.encode_message(keys, alice, data_key, body, nonce=bytes(12))
    assert blob.hex().startswith("53445031" + "00" * 12 + "748ab6a982d6d6815e08")
    assert wire.decode_message(keys, alice.public_key, data_key, blob) == body


def test_wrong_password_cannot_open(keys: RoomKeys, alice: Identity) -> None:
    data_key = keys.data_key("pair", SID_A, SID_B)
    blob = wire.encode_message(keys, alice, data_key, {"v": 1, "type": "bye", "from": SID_A, "to": SID_B})
    intruder = RoomKeys.derive("demo-room", "guess", iterations=1000)
    with pytest.raises(wire.WireError, match="sealed for another slot"):
        wire.decode_message(intruder, alice.public_key, data_key, blob)


def test_member_of_room_cannot_forge_another_author(keys: RoomKeys, alice: Identity) -> None:
    """Mallory knows the room key but not Alice's identity key: her blob claiming Alice fails."""
    mallory = Identity.generate()
    data_key = keys.data_key("pair", SID_A, SID_B)
    blob = wire.encode_message(keys, mallory, data_key, {"v": 1, "type": "bye", "from": SID_A, "to": SID_B})
    with pytest.raises(wire.WireError):
        wire.decode_message(keys, alice.public_key, data_key, blob)


def test_blob_bound_to_its_slot(keys: RoomKeys, alice: Identity) -> None:
    data_key = keys.data_key("pair", SID_A, SID_B)
    blob = wire.encode_message(keys, alice, data_key, {"v": 1, "type": "bye", "from": SID_A, "to": SID_B})
    with pytest.raises(wire.WireError):
        wire.decode_message(keys, alice.public_key, keys.data_key("pair", SID_B, SID_A), blob)


def test_presence_round_trip_and_forged_record(keys: RoomKeys, alice: Identity) -> None:
    slot_pk, data_key = b"\x01" * 32, keys.data_key("presence")
    good = wire.sign_member(keys, alice, SID_A, "alice", 1700000000000)
    forged = wire.Member(alice.public_key, SID_B, "alice", 1700000000000, good.signature)
    blob = wire.encode_presence(keys, slot_pk, data_key, [good, forged])
    members, rejected = wire.decode_presence(keys, slot_pk, data_key, blob)
    assert members == [good]
    assert rejected == 1


def test_every_name_we_sign_reads_back_and_newer_characters_are_kept(keys: RoomKeys, alice: Identity) -> None:
    """A name cut at 48 characters kept a trailing space, which no reader accepted: that member was
    invisible to everyone. A character this Python's Unicode does not know yet (U+1FA77, Unicode 15,
    unassigned in Python 3.11's database) signed by a browser must not make its member invisible."""
    slot_pk, data_key = b"\x01" * 32, keys.data_key("presence")
    names = ["a" * 47 + " b", "  spaced  ", "x" * 60, "", "tab\there", "pink \U0001fa77 heart"]
    members = [wire.sign_member(keys, alice, SID_A, name, 1700000000000 + i) for i, name in enumerate(names)]
    assert members[0].name == "a" * 47 and members[4].name == "tabhere"
    decoded, rejected = wire.decode_presence(keys, slot_pk, data_key,
                                             wire.encode_presence(keys, slot_pk, data_key, members))
    assert rejected == 0 and [m.name for m in decoded] == [m.name for m in members]
    newer = wire.Member(alice.public_key, SID_A, "pink \U0001fa77 heart", 5, b"")
    signed = wire.Member(*dataclasses.astuple(newer)[:4], alice.sign(
        wire._presence_signing_bytes(keys, alice.public_key, SID_A, newer.name, 5)))
    decoded, rejected = wire.decode_presence(keys, slot_pk, data_key,
                                             wire.encode_presence(keys, slot_pk, data_key, [signed]))
    assert rejected == 0 and decoded[0].name == newer.name
    for bad in ("ends with a space ", "line\nbreak", "x" * 49, "\u0007bell"):
        forged = wire.Member(alice.public_key, SID_B, bad, 6, alice.sign(
            wire._presence_signing_bytes(keys, alice.public_key, SID_B, bad, 6)))
        assert wire.decode_presence(keys, slot_pk, data_key,
                                    wire.encode_presence(keys, slot_pk, data_key, [forged]))[1] == 1, bad
    session_record = wire.Member(alice.public_key, SID_A + "\n", "alice", 7, b"\0" * 64)
    assert wire.decode_presence(keys, slot_pk, data_key,
                                wire.encode_presence(keys, slot_pk, data_key, [session_record]))[1] == 1


def test_oversized_blob_rejected(keys: RoomKeys, alice: Identity) -> None:
    with pytest.raises(wire.WireError, match="too large"):
        wire.decode_message(keys, alice.public_key, b"\0" * 32, b"SDP1" + bytes(wire.MAX_MESSAGE_BYTES))


@settings(max_examples=60, deadline=None)
@given(sdp=st.text(max_size=300), gen=st.integers(min_value=0, max_value=2**31))
def test_seal_sign_round_trip(keys: RoomKeys, alice: Identity, sdp: str, gen: int) -> None:
    data_key = keys.data_key("pair", SID_A, SID_B)
    body = {"v": 1, "type": "offer", "from": SID_A, "to": SID_B, "sdp": sdp, "gen": gen}
    assert wire.decode_message(keys, alice.public_key, data_key,
                               wire.encode_message(keys, alice, data_key, body)) == body


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_any_tampered_byte_is_rejected(keys: RoomKeys, alice: Identity, data: st.DataObject) -> None:
    data_key = keys.data_key("pair", SID_A, SID_B)
    body = {"v": 1, "type": "answer", "from": SID_A, "to": SID_B, "sdp": "v=0"}
    blob = bytearray(wire.encode_message(keys, alice, data_key, body))
    index = data.draw(st.integers(min_value=0, max_value=len(blob) - 1))
    flip = data.draw(st.integers(min_value=1, max_value=255))
    blob[index] ^= flip
    with pytest.raises(wire.WireError):
        wire.decode_message(keys, alice.public_key, data_key, bytes(blob))


ROOM_TURN = [wire.TurnServer("turn:203.0.113.1:3478?transport=udp", "sdparta", "secret")]


def test_room_settings_round_trip_and_author(keys: RoomKeys, alice: Identity) -> None:
    slot = bytes(32)
    data_key = keys.data_key("settings")
    blob = wire.encode_settings(keys, alice, slot, data_key, ROOM_TURN, 1700000000000)
    settings = wire.decode_settings(keys, slot, data_key, blob)
    assert settings.author == alice.public_key and settings.turn == tuple(ROOM_TURN)
    assert settings.ts_ms == 1700000000000
    with pytest.raises(wire.WireError):  # another room (or a wrong password) cannot open them
        wire.decode_settings(RoomKeys.derive("demo-room", "wrong"), slot, data_key, blob)
    with pytest.raises(wire.WireError):  # bound to its slot
        wire.decode_settings(keys, slot, keys.data_key("presence"), blob)


def test_room_settings_reject_forgery_and_bad_urls(keys: RoomKeys, alice: Identity) -> None:
    slot, data_key = bytes(32), keys.data_key("settings")
    mallory = Identity.from_seed(bytes(32))
    # a member re-signs alice's settings under alice's name: the signature does not verify
    blob = wire.encode_settings(keys, mallory, slot, data_key, ROOM_TURN, 1)
    plain = wire.open_sealed(keys, b"settings", slot, data_key, blob, wire.MAX_SETTINGS_BYTES)
    forged = plain[:64] + plain[64:].replace(mallory.public_key.hex().encode(), alice.public_key.hex().encode())
    with pytest.raises(wire.WireError, match="signature"):
        wire.decode_settings(keys, slot, data_key, wire.seal(keys, b"settings", slot, data_key, forged))
    for url in ("stun:203.0.113.1", "turn:evil host", "http://x", "turn:a?transport=sctp", "turn:a\n"):
        bad = wire.encode_settings(keys, alice, slot, data_key, [wire.TurnServer(url, "u", "p")], 1)
        with pytest.raises(wire.WireError, match="URL"):
            wire.decode_settings(keys, slot, data_key, bad)


def test_records_the_page_refuses_python_refuses_too(keys: RoomKeys, alice: Identity) -> None:
    """Validly signed records that the page (web/js) refuses, Python refuses as well, so the room never
    disagrees on them: ``"v": true`` (Python's ``True == 1``) and hex with spaces (``bytes.fromhex``
    takes them); ``"v": 1.0`` is the number 1 to both."""
    import json

    data_key = keys.data_key("pair")

    def message(version: object) -> bytes:
        raw = json.dumps({"v": version, "type": "bye", "from": SID_A, "to": SID_B}).encode()
        signature = alice.sign(wire._message_signing_bytes(keys, data_key, raw))
        return wire.seal(keys, b"msg", alice.public_key, data_key, signature + raw)

    assert wire.decode_message(keys, alice.public_key, data_key, message(1.0))["type"] == "bye"
    with pytest.raises(wire.WireError, match="version"):
        wire.decode_message(keys, alice.public_key, data_key, message(True))

    slot_pk, presence_key = b"\x01" * 32, keys.data_key("presence")
    good = wire.sign_member(keys, alice, SID_A, "alice", 1700000000000)
    record = {"pk": good.public_key.hex(), "sid": SID_A, "name": "alice", "ts": good.ts_ms, "sig": good.signature.hex()}
    spaced = dict(record, pk=" ".join(good.public_key.hex()[i:i + 2] for i in range(0, 64, 2)))

    def presence(*records: dict[str, object], version: object = 1) -> bytes:
        raw = json.dumps({"v": version, "members": list(records)}).encode()
        return wire.seal(keys, b"presence", slot_pk, presence_key, raw)

    assert wire.decode_presence(keys, slot_pk, presence_key, presence(record)) == ([good], 0)
    assert wire.decode_presence(keys, slot_pk, presence_key, presence(spaced)) == ([], 1)
    with pytest.raises(wire.WireError, match="shape"):
        wire.decode_presence(keys, slot_pk, presence_key, presence(record, version=True))
