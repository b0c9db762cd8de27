"""Known-answer vectors from skynet-js 4.3.0 and signature property tests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdparta.store.base import InvalidEntry, RegistryEntry
from sdparta.store.crypto import (
    KeyPair,
    decode_skylink,
    encode_skylink,
    hash_data_key,
    hash_registry_entry,
    sign_entry,
    skylink_for_content,
    verify_entry,
)


def test_gen_key_pair_from_seed() -> None:
    assert KeyPair.from_seed("test-room").public_key.hex() == (
        "a93b9e0c34b3792d8699648181629ae6ddc7dbf44face662ab880582ef860321")


def test_hash_data_key() -> None:
    assert hash_data_key("peers").hex() == "24c250780929bff01830ab2b43774a56f1f7c5697f10c815caa451756967f049"


def test_entry_hash_and_signature() -> None:
    keypair = KeyPair.from_seed("test-room")
    data_key = hash_data_key("peers")
    assert hash_registry_entry(data_key, bytes([1, 2, 3]), 5).hex() == (
        "23f55ee56b7d4fe421eb2acb55e2008f2e61062322540bde7045637d2dd5f77e")
    entry = sign_entry(keypair, data_key, bytes([1, 2, 3]), 5)
    assert entry.signature.hex() == (
        "f6bdc798eb59dad00e62a7db72f9a46bb075a5cfb9d94ecf73b56f5818bed679"
        "ee839546ca5a3bd8f3c5fd6089996b441157a09ebb0e61389ccb561c11f6760d")
    assert verify_entry(entry)


def test_skylink_round_trip_and_validation() -> None:
    link = skylink_for_content(b"hello")
    assert len(link) == 46 and decode_skylink(link)[2:] != bytes(32)
    assert encode_skylink(decode_skylink(link)) == link
    for bad in ("short", "!" * 46, link + "A"):
        with pytest.raises(InvalidEntry):
            decode_skylink(bad)


def test_oversized_entry_is_invalid() -> None:
    entry = sign_entry(KeyPair.from_seed("x"), hash_data_key("k"), bytes(114), 0)
    assert not verify_entry(entry)


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=113), revision=st.integers(min_value=0, max_value=2**64 - 1),
       seed=st.text(min_size=1, max_size=20))
def test_sign_verify_round_trip(data: bytes, revision: int, seed: str) -> None:
    assert verify_entry(sign_entry(KeyPair.from_seed(seed), hash_data_key("k"), data, revision))


@settings(max_examples=80, deadline=None)
@given(field=st.sampled_from(["public_key", "data_key", "data", "signature"]), index=st.integers(0, 200),
       flip=st.integers(1, 255), bump=st.integers(1, 1000))
def test_any_tampered_byte_or_revision_is_rejected(field: str, index: int, flip: int, bump: int) -> None:
    entry = sign_entry(KeyPair.from_seed("tamper"), hash_data_key("k"), b"payload-bytes", 7)
    raw = bytearray(getattr(entry, field))
    raw[index % len(raw)] ^= flip
    values = {f: getattr(entry, f) for f in ("public_key", "data_key", "data", "revision", "signature")}
    values[field] = bytes(raw)
    assert not verify_entry(RegistryEntry(**values))
    values = {f: getattr(entry, f) for f in ("public_key", "data_key", "data", "revision", "signature")}
    values["revision"] = entry.revision + bump
    assert not verify_entry(RegistryEntry(**values))
