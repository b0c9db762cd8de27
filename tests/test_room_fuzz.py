"""Fuzz every decoder of room data from the network (presence list, pair messages, room settings).

Whatever a portal or a room member puts into a slot, a decoder returns a valid value or raises
WireError — never another exception (RecursionError, KeyError, OverflowError …), which would kill
the task that read it. Inputs are sealed with the room's key so the fuzz reaches the JSON layer.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdparta.room import wire
from sdparta.room.keys import Identity, RoomKeys

KEYS = RoomKeys.derive("fuzz-room", "pw", iterations=1000)
AUTHOR = Identity.from_seed(b"\x07" * 32)
SLOT_PK = b"\x01" * 32
PAIR_KEY = KEYS.data_key("pair", "00" * 8, "11" * 8)
PRESENCE_KEY = KEYS.data_key("presence")
SETTINGS_KEY = KEYS.data_key("settings")
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80) | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)
field_names = st.sampled_from(["v", "type", "from", "to", "gen", "sdp", "name", "ts", "members", "pk", "sid",
                               "sig", "author", "turn", "url", "username", "credential"])
shaped = st.dictionaries(field_names, json_values, max_size=10)
nesting = st.builds(lambda n, ch: ch * n, st.integers(1, 20_000), st.sampled_from([b"[", b"{\"a\":", b"[{\"x\":"]))


def _plain(value: Any) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value).encode()


def _message_blob(raw: bytes) -> bytes:
    signature = AUTHOR.sign(b"sdparta/v1/msg\x00" + KEYS.room_id + PAIR_KEY + raw)
    return wire.seal(KEYS, b"msg", AUTHOR.public_key, PAIR_KEY, signature + raw)


def _settings_blob(raw: bytes) -> bytes:
    signature = AUTHOR.sign(b"sdparta/v1/settings\x00" + KEYS.room_id + SETTINGS_KEY + raw)
    return wire.seal(KEYS, b"settings", SLOT_PK, SETTINGS_KEY, signature + raw)


def _presence_blob(raw: bytes) -> bytes:
    return wire.seal(KEYS, b"presence", SLOT_PK, PRESENCE_KEY, raw)


def _decoders(raw: bytes) -> list[tuple[str, Any]]:
    return [
        ("message", lambda: wire.decode_message(KEYS, AUTHOR.public_key, PAIR_KEY, _message_blob(raw))),
        ("presence", lambda: wire.decode_presence(KEYS, SLOT_PK, PRESENCE_KEY, _presence_blob(raw))),
        ("settings", lambda: wire.decode_settings(KEYS, SLOT_PK, SETTINGS_KEY, _settings_blob(raw))),
    ]


def _only_wire_errors(raw: bytes) -> None:
    for _name, decode in _decoders(raw):
        with contextlib.suppress(wire.WireError):
            decode()


@FUZZ
@given(st.binary(max_size=2048))
def test_random_blobs_are_wire_errors(blob: bytes) -> None:
    for decode in (lambda: wire.decode_message(KEYS, AUTHOR.public_key, PAIR_KEY, blob),
                   lambda: wire.decode_presence(KEYS, SLOT_PK, PRESENCE_KEY, blob),
                   lambda: wire.decode_settings(KEYS, SLOT_PK, SETTINGS_KEY, blob)):
        with contextlib.suppress(wire.WireError):
            decode()


@FUZZ
@given(st.one_of(json_values, shaped, st.binary(max_size=512)))
def test_sealed_arbitrary_json_is_valid_or_a_wire_error(value: Any) -> None:
    _only_wire_errors(_plain(value))


@FUZZ
@given(st.lists(st.one_of(shaped, json_values), max_size=8), st.integers(0, 3))
def test_presence_lists_of_odd_records_drop_only_the_bad_ones(records: list[Any], version: int) -> None:
    raw = json.dumps({"v": version, "members": records}).encode()
    try:
        members, rejected = wire.decode_presence(KEYS, SLOT_PK, PRESENCE_KEY, _presence_blob(raw))
    except wire.WireError:
        assert version != 1
        return
    assert len(members) + rejected == len(records[: wire.MAX_MEMBERS * 2]) and members == []


@settings(max_examples=40, deadline=None)
@given(nesting)
def test_deep_nesting_is_a_wire_error(raw: bytes) -> None:
    _only_wire_errors(raw)


@FUZZ
@given(st.integers(1, 30), shaped)
def test_messages_with_valid_frame_and_fuzzed_fields(gen: int, extra: dict[str, Any]) -> None:
    body = {"v": 1, "type": "offer", "from": "00" * 8, "to": "11" * 8, "gen": gen, "sdp": "v=0", **extra}
    raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    try:
        decoded = wire.decode_message(KEYS, AUTHOR.public_key, PAIR_KEY, _message_blob(raw))
    except wire.WireError:
        return
    assert decoded["type"] in wire.MESSAGE_TYPES and isinstance(decoded["from"], str)
