"""Fuzz every client-side decoder of network data in sdparta.store (issue 8).

What a portal sends is untrusted: each decoder must return cleanly or raise its documented error
(InvalidEntry / StoreError, ValueError for the JSON helper) — never RecursionError (``json.loads``
of 50,000 ``[``), OverflowError, TypeError or anything else. Bounded: a few hundred examples each.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sdparta.store.base import MAX_ENTRY_DATA, InvalidEntry, RegistryEntry
from sdparta.store.crypto import MAX_REVISION, KeyPair, hash_data_key, sign_entry
from sdparta.store.crypto import parse_revision as _parse_revision
from sdparta.store.portal_client import _message
from sdparta.store.portal_json import byte_candidates as _byte_candidates
from sdparta.store.portal_json import loads as _loads
from sdparta.store.portal_json import parse_entry
from sdparta.store.portal_json import slot_of_push as _slot_of_push
from sdparta.store.push import MAX_PUSH_MESSAGE, PortalSubscription

KEY = KeyPair.from_seed("fuzz")
DK = hash_data_key("fuzz-slot")
GOOD = sign_entry(KEY, DK, b"fuzzed", 7)
PUBKEY = "ed25519:" + KEY.public_key.hex()

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                database=None)

#: Hostile documents no random generator finds: nesting past the parser's recursion limit, numbers
#: too long to convert, special floats.
NASTY_TEXT = [
    "[" * 50_000, "[" * 5_000 + "]" * 5_000, '{"a":' * 20_000, "[" * 2_000 + "1" + "]" * 2_000,
    "1" * 5_000, "-" + "9" * 4_400, "1e999999", "NaN", "-Infinity", "[" * (MAX_PUSH_MESSAGE - 1),
    '{"pubkey":' + "[" * 10_000, "\ud800", "\x00", "", " ", "null",
]

json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
                | st.sampled_from([0, 1, 255, 256, -1, MAX_REVISION, MAX_REVISION + 1, 10**400])
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=80)
                | st.binary(max_size=80).map(bytes.hex))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=6)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=6), max_leaves=30)
byte_fields = (json_values | st.binary(max_size=140).map(list) | st.binary(max_size=140).map(bytes.hex)
               | st.lists(st.integers(min_value=-300, max_value=300), max_size=140)
               | st.sampled_from([GOOD.data.hex(), list(GOOD.signature), GOOD.signature.hex(),
                                  "0x" + GOOD.signature.hex(), GOOD.signature.hex().upper()]))
revisions = json_values | st.sampled_from(["7", "0007", "1" * 21, "-7", "7.0", 7.0, True]) | st.integers()


def deep(depth: int) -> Any:
    """A JSON value nested ``depth`` lists deep (built without recursion)."""
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@st.composite
def entry_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """Registry answers near the real shape: each field valid, garbage, missing or extra."""
    body: dict[str, Any] = {}
    for name, field in (("revision", revisions), ("data", byte_fields), ("signature", byte_fields),
                        ("type", json_values | st.sampled_from([1, 1.0, 2, None, True, "1"]))):
        if draw(st.booleans()):
            body[name] = draw(field)
    if draw(st.booleans()):
        body.update(draw(st.dictionaries(st.text(max_size=12), json_values, max_size=3)))
    return body


# ---------------------------------------------------------------------- field decoders
@FUZZ
@given(value=byte_fields | json_values, max_len=st.sampled_from([0, 1, 32, 64, MAX_ENTRY_DATA]))
@example(value="=" * 200, max_len=64)
@example(value="é" * 40, max_len=64)
def test_byte_candidates_returns_only_bounded_bytes(value: Any, max_len: int) -> None:
    found = _byte_candidates(value, max_len)
    assert isinstance(found, list)
    assert all(isinstance(b, bytes) and len(b) <= max_len for b in found)


@FUZZ
@given(value=revisions)
@example(value=2**64)
def test_parse_revision_is_a_uint64_or_invalid_entry(value: Any) -> None:
    try:
        revision = _parse_revision(value)
    except InvalidEntry:
        return
    assert type(revision) is int and 0 <= revision <= MAX_REVISION


@FUZZ
@given(body=entry_bodies() | json_values)
@example(body={"revision": 7, "data": list(GOOD.data), "signature": list(GOOD.signature), "type": 1})
def test_parse_entry_returns_a_verified_entry_or_raises_invalid_entry(body: Any) -> None:
    try:
        entry = parse_entry(KEY.public_key, DK, body)
    except InvalidEntry:
        return
    assert isinstance(entry, RegistryEntry) and entry == GOOD  # only the one truly signed entry


@FUZZ
@given(body=json_values | entry_bodies().map(lambda b: {**b, "pubkey": PUBKEY, "datakey": DK.hex()})
       | st.fixed_dictionaries({"pubkey": json_values | st.text(max_size=80).map("ed25519:".__add__),
                                "datakey": json_values}))
@example(body={"pubkey": "ed25519:" + "00" * 10_000, "datakey": "00" * 32})
@example(body={"pubkey": "ed25519:zz", "datakey": "00" * 32})
def test_slot_of_push_is_a_slot_or_none(body: Any) -> None:
    slot = _slot_of_push(body)
    assert slot is None or (len(slot[0]) == 32 and len(slot[1]) == 32)


# ---------------------------------------------------------------------- whole documents
raw_documents = (st.text(max_size=300) | st.sampled_from(NASTY_TEXT)
                 | json_values.map(json.dumps) | entry_bodies().map(json.dumps))


@FUZZ
@given(raw=raw_documents | st.binary(max_size=300))
def test_json_of_the_network_is_parsed_or_value_error(raw: str | bytes) -> None:
    with contextlib.suppress(ValueError):
        _loads(raw)


@FUZZ
@given(raw=raw_documents | st.binary(max_size=300), status=st.sampled_from([400, 404, 500, 503]))
@example(raw=b"[" * 50_000, status=500)
@example(raw=b'{"message":' + b"[" * 20_000, status=400)
@example(raw=b'{"message": "' + "\u202e\x1b[31m".encode() * 100 + b'"}', status=400)
def test_error_messages_are_short_printable_text(raw: str | bytes, status: int) -> None:
    body = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    text = _message(body, status)
    assert isinstance(text, str) and 0 < len(text) <= 300 and text.isprintable()


def _subscription() -> PortalSubscription:
    sub = PortalSubscription("http://127.0.0.1:1")
    sub._slots.add((KEY.public_key, DK))
    return sub


push_documents = (raw_documents
                  | entry_bodies().map(lambda b: json.dumps({**b, "pubkey": PUBKEY, "datakey": DK.hex()}))
                  | json_values.map(lambda v: json.dumps({"error": v})))


@FUZZ
@given(raw=push_documents)
@example(raw="x" * (MAX_PUSH_MESSAGE + 1))
def test_a_pushed_message_is_delivered_verified_or_dropped(raw: str) -> None:
    sub = _subscription()
    sub._handle(raw)  # must not raise, whatever the portal sent
    pending = list(sub._mailbox._pending.values())
    assert pending in ([], [GOOD])


def test_values_nested_to_the_parsers_limit_are_never_printed_or_walked() -> None:
    """Parsed JSON can be nested nearly as deep as the parser allows; a decoder that repr()s or
    recurses into such a value from a deeper stack overflows it (hypothesis cannot even print these,
    so they are checked here directly)."""
    nested = deep(900)
    assert _byte_candidates(nested, 64) == []
    for value in (nested, {"k": nested}):
        with contextlib.suppress(InvalidEntry):
            _parse_revision(value)
    for body in ({"revision": 7, "data": GOOD.data.hex(), "signature": GOOD.signature.hex(), "type": nested},
                 {"revision": 7, "data": nested, "signature": nested}, nested):
        with contextlib.suppress(InvalidEntry):
            parse_entry(KEY.public_key, DK, body)
    assert _slot_of_push({"pubkey": nested, "datakey": nested}) is None
    sub = _subscription()
    for raw in (json.dumps({"pubkey": PUBKEY, "datakey": DK.hex(), "revision": 7, "data": GOOD.data.hex(),
                            "signature": GOOD.signature.hex(), "type": nested}),
                json.dumps({"error": nested}), *NASTY_TEXT):
        sub._handle(raw)
    assert not sub._mailbox._pending


def test_a_genuine_push_still_gets_through() -> None:
    """The fuzz above would pass for a decoder that drops everything: a real entry is delivered."""
    sub = _subscription()
    sub._handle(json.dumps({"pubkey": PUBKEY, "datakey": DK.hex(), "revision": 7, "data": GOOD.data.hex(),
                            "signature": GOOD.signature.hex(), "type": 1}))
    assert list(sub._mailbox._pending.values()) == [GOOD] and sub.rejected == 0
