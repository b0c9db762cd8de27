"""NIP-01 events: known ids and signatures from the NIPs, BIP-340 vectors, every kind of tampering
rejected, bounds on size and nesting, addressable records, filters."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from coincurve import PrivateKey, PublicKeyXOnly

from sdparta.nostr import (
    APP_DATA_KIND,
    EventLimits,
    InvalidEvent,
    NostrKey,
    compute_id,
    filter_matches,
    kind_class,
    make_filter,
    parse_event,
    schnorr_verify,
    serialize,
    verify_event,
)

DATA = Path(__file__).parent / "data"
NIP_EVENTS = json.loads((DATA / "nip01-events.json").read_text())["events"]
VALID = [e["event"] for e in NIP_EVENTS if e["valid"]]


def _bip340_rows() -> list[dict[str, str]]:
    with (DATA / "bip340-test-vectors.csv").open(newline="") as f:
        return list(csv.DictReader(f))


BIP340 = _bip340_rows()


# ---------------------------------------------------------------- BIP-340 (coincurve)
def test_bip340_vector_file_is_complete() -> None:
    assert [int(r["index"]) for r in BIP340] == list(range(19))


@pytest.mark.parametrize("row", BIP340, ids=lambda r: f"bip340-{r['index']}")
def test_bip340_verification_vectors(row: dict[str, str]) -> None:
    pubkey, msg, sig = (bytes.fromhex(row[k]) for k in ("public key", "message", "signature"))
    assert schnorr_verify(pubkey, sig, msg) is (row["verification result"] == "TRUE"), row["comment"]


@pytest.mark.parametrize("row", [r for r in BIP340 if r["secret key"]], ids=lambda r: f"bip340-sign-{r['index']}")
def test_bip340_signing_vectors(row: dict[str, str]) -> None:
    secret, msg, aux = (bytes.fromhex(row[k]) for k in ("secret key", "message", "aux_rand"))
    assert PublicKeyXOnly.from_secret(secret).format().hex().upper() == row["public key"]
    if len(msg) != 32:
        # coincurve 21 signs 32-byte messages only (NIP-01 signs a 32-byte id); vectors 15-18 still verify above
        with pytest.raises(ValueError, match="32 bytes"):
            PrivateKey(secret).sign_schnorr(msg, aux)
        return
    assert PrivateKey(secret).sign_schnorr(msg, aux).hex().upper() == row["signature"]
    assert NostrKey(secret).sign(msg, aux).upper() == row["signature"]


# ---------------------------------------------------------------- NIP-01 known events
@pytest.mark.parametrize("entry", NIP_EVENTS, ids=lambda e: e["source"].split()[-1])
def test_events_from_the_nips(entry: dict[str, Any]) -> None:
    raw = entry["event"]
    if entry["valid"]:
        event = verify_event(raw)
        assert event.id == raw["id"] == compute_id(raw["pubkey"], raw["created_at"], raw["kind"], raw["tags"],
                                                   raw["content"])
        assert event.to_dict() == raw
    else:
        with pytest.raises(InvalidEvent) as exc:
            verify_event(raw)
        assert exc.value.reason == "id-mismatch"


def test_serialization_is_nip01_exactly() -> None:
    content = 'line\nquote" back\\ cr\r tab\t bs\b ff\f nul\x00 unit\x1f del\x7f é 😀 \u2028 /'
    expected = ('[0,"' + "ab" * 32 + '",1,30078,[["d","x"],["t","é"]],'
                '"line\\nquote\\" back\\\\ cr\\r tab\\t bs\\b ff\\f nul\\u0000 unit\\u001f del\x7f é 😀 \u2028 /"]')
    assert serialize("ab" * 32, 1, 30078, [("d", "x"), ("t", "é")], content) == expected.encode()
    # the id is the sha256 of exactly those bytes
    assert compute_id("ab" * 32, 1, 30078, [["d", "x"], ["t", "é"]], content) == \
        hashlib.sha256(expected.encode()).hexdigest()


def test_we_never_build_an_event_whose_id_relays_disagree_on() -> None:
    """Control characters without a short escape serialize as \\u001b in Python and JSON.stringify but
    \\u001B in rapidjson (the PyPI nostr-relay): no canonical id, so NostrKey refuses them."""
    key = NostrKey()
    for bad in ("\x00", "\x1b", "\x0b", "\x1f"):
        with pytest.raises(InvalidEvent, match="canonical"):
            key.event(1, f"a{bad}b")
        with pytest.raises(InvalidEvent, match="canonical"):
            key.event(1, "", [["t", bad]])
    assert key.event(1, "\b\t\n\f\r\x7f").content == "\b\t\n\f\r\x7f"


def test_signed_event_round_trips_through_json() -> None:
    key = NostrKey()
    event = key.event(1, "hello\n\"world\" 😀", [["t", "room"], ["x", "1", "2"]], created_at=1_700_000_000)
    assert parse_event(event.to_json()) == event
    assert verify_event(json.loads(event.to_json())) == event
    assert event.pubkey == key.pubkey and len(event.sig) == 128
    assert "secret" not in repr(key) and key.secret.hex() not in repr(key)


# ---------------------------------------------------------------- tampering
def _good() -> dict[str, Any]:
    return NostrKey().event(APP_DATA_KIND, "sealed", [["d", "abc"], ["t", "room"]], created_at=1_700_000_000).to_dict()


def _flip_hex(value: str) -> str:
    return ("1" if value[0] != "1" else "2") + value[1:]


TAMPERS = {
    "id": lambda e: e.update(id=_flip_hex(e["id"])),
    "sig": lambda e: e.update(sig=_flip_hex(e["sig"])),
    "sig-s-half": lambda e: e.update(sig=e["sig"][:64] + _flip_hex(e["sig"][64:])),
    "content": lambda e: e.update(content=e["content"] + "!"),
    "tag-value": lambda e: e["tags"][1].__setitem__(1, "other"),
    "tag-added": lambda e: e["tags"].append(["p", "x"]),
    "tags-reordered": lambda e: e["tags"].reverse(),
    "pubkey": lambda e: e.update(pubkey=NostrKey().pubkey),
    "created_at": lambda e: e.update(created_at=e["created_at"] + 1),
    "kind": lambda e: e.update(kind=30079),
}


@pytest.mark.parametrize("what", TAMPERS)
def test_any_tampering_is_rejected(what: str) -> None:
    event = _good()
    verify_event(event)
    TAMPERS[what](event)
    with pytest.raises(InvalidEvent) as exc:
        verify_event(event)
    assert exc.value.reason in ("id-mismatch", "bad-signature")


def test_a_recomputed_id_does_not_save_a_tampered_event() -> None:
    event = _good()
    event["content"] = "forged"
    event["id"] = compute_id(event["pubkey"], event["created_at"], event["kind"], event["tags"], event["content"])
    with pytest.raises(InvalidEvent) as exc:
        verify_event(event)
    assert exc.value.reason == "bad-signature"


def test_a_pubkey_off_the_curve_is_rejected() -> None:
    event = _good()
    event["pubkey"] = "ff" * 32  # beyond the field size (BIP-340 vector 14)
    event["id"] = compute_id(event["pubkey"], event["created_at"], event["kind"], event["tags"], event["content"])
    with pytest.raises(InvalidEvent) as exc:
        verify_event(event)
    assert exc.value.reason == "bad-pubkey"


MALFORMED = {
    "not-an-object": lambda e: ["EVENT"],
    "missing-sig": lambda e: {k: v for k, v in e.items() if k != "sig"},
    "uppercase-id": lambda e: {**e, "id": e["id"].upper()},
    "short-pubkey": lambda e: {**e, "pubkey": e["pubkey"][:62]},
    "sig-not-hex": lambda e: {**e, "sig": "z" * 128},
    "created_at-float": lambda e: {**e, "created_at": 1_700_000_000.0},
    "created_at-string": lambda e: {**e, "created_at": "1700000000"},
    "created_at-negative": lambda e: {**e, "created_at": -1},
    "kind-bool": lambda e: {**e, "kind": True},
    "kind-too-big": lambda e: {**e, "kind": 65536},
    "content-not-string": lambda e: {**e, "content": ["x"]},
    "tags-not-list": lambda e: {**e, "tags": {"d": "x"}},
    "tag-not-list": lambda e: {**e, "tags": ["d"]},
    "tag-empty": lambda e: {**e, "tags": [[]]},
    "tag-item-number": lambda e: {**e, "tags": [["d", 1]]},
    "tag-item-null": lambda e: {**e, "tags": [["d", None]]},
    "tag-nested": lambda e: {**e, "tags": [["d", ["x"]]]},
    "lone-surrogate": lambda e: {**e, "content": "\ud800"},
}


@pytest.mark.parametrize("what", MALFORMED)
def test_malformed_events_are_rejected(what: str) -> None:
    with pytest.raises(InvalidEvent) as exc:
        verify_event(MALFORMED[what](_good()))
    assert exc.value.reason == "malformed"


# ---------------------------------------------------------------- bounds
def test_size_bounds_on_content_and_tags() -> None:
    key = NostrKey()
    small = EventLimits(max_content_length=10, max_tags=2, max_tag_items=3, max_tag_item_length=5)
    big_content = key.event(1, "x" * 11).to_dict()
    many_tags = key.event(1, "", [["t", "1"]] * 3).to_dict()
    long_tag = key.event(1, "", [["t", "1", "2", "3"]]).to_dict()
    long_item = key.event(1, "", [["t", "123456"]]).to_dict()
    for raw in (big_content, many_tags, long_tag, long_item):
        with pytest.raises(InvalidEvent) as exc:
            verify_event(raw, small)
        assert exc.value.reason in ("too-large", "malformed")
    with pytest.raises(InvalidEvent, match="content"):
        key.event(1, "x" * 11, limits=small)  # we never build what we would refuse
    with pytest.raises(InvalidEvent, match="bytes"):
        verify_event(key.event(1, "é" * 100).to_dict(), EventLimits(max_event_bytes=200))


def test_json_nesting_and_size_are_bounded_before_parsing() -> None:
    with pytest.raises(InvalidEvent, match="nests deeper"):
        parse_event('{"tags": [[[[' + "[" * 50_000 + "]" * 50_000 + "]]]]}")
    with pytest.raises(InvalidEvent, match="too-large"):
        parse_event("x" * (EventLimits().max_event_bytes * 3), EventLimits())
    with pytest.raises(InvalidEvent, match="malformed"):
        parse_event(b"\xff\xfe not json")


# ---------------------------------------------------------------- addressable records and filters
def test_addressable_records_get_a_growing_created_at() -> None:
    key = NostrKey()
    first = key.addressable("presence", "v1", [["t", "room"]], created_at=1_700_000_000)
    second = key.addressable("presence", "v2", created_at=1_700_000_000)  # same second: must still be newer
    other = key.addressable("other", "v1", created_at=1_700_000_000)
    assert first.kind == APP_DATA_KIND and first.tag("d") == "presence" and first.tag_values("t") == ["room"]
    assert second.created_at == first.created_at + 1
    assert other.created_at == 1_700_000_000
    assert first.address == (APP_DATA_KIND, key.pubkey, "presence") and first.kind_class == "addressable"
    with pytest.raises(ValueError, match="addressable"):
        key.addressable("x", "", kind=1)


def test_kind_classes() -> None:
    assert [kind_class(k) for k in (1, 0, 3, 10002, 20001, 30078, 40000)] == [
        "regular", "replaceable", "replaceable", "replaceable", "ephemeral", "addressable", "regular"]


def test_filters() -> None:
    key = NostrKey()
    event = key.addressable("p", "x", [["t", "room-a"]], created_at=100)
    flt = make_filter(kinds=[APP_DATA_KIND], tags={"t": ["room-a", "room-b"]}, since=100)
    assert flt == {"kinds": [APP_DATA_KIND], "#t": ["room-a", "room-b"], "since": 100}
    assert filter_matches(flt, event)
    assert not filter_matches({**flt, "since": 101}, event)
    assert not filter_matches({**flt, "#t": ["room-c"]}, event)
    assert not filter_matches({"authors": [NostrKey().pubkey]}, event)
    assert filter_matches({"authors": [key.pubkey], "#d": ["p"], "until": 100}, event)
    with pytest.raises(ValueError):
        make_filter(tags={"room": ["x"]})
    with pytest.raises(InvalidEvent):
        make_filter(authors=["not-hex"])
