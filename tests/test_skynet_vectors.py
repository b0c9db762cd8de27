"""Known-answer vectors from skynet-js 4.3.0, skylink encoding, key files, signature properties."""

from __future__ import annotations

import stat
from pathlib import Path

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

# skynet-js 4.3.0: genKeyPairFromSeed("test-room"), hashDataKey("peers"), and the entry
# {data: 010203, revision: 5} under that key and data key.
VECTOR_PUBLIC_KEY = "a93b9e0c34b3792d8699648181629ae6ddc7dbf44face662ab880582ef860321"
VECTOR_DATA_KEY = "24c250780929bff01830ab2b43774a56f1f7c5697f10c815caa451756967f049"
VECTOR_ENTRY_HASH = "23f55ee56b7d4fe421eb2acb55e2008f2e61062322540bde7045637d2dd5f77e"
VECTOR_SIGNATURE = ("f6bdc798eb59dad00e62a7db72f9a46bb075a5cfb9d94ecf73b56f5818bed679"
                    "ee839546ca5a3bd8f3c5fd6089996b441157a09ebb0e61389ccb561c11f6760d")
FIELDS = ("public_key", "data_key", "data", "revision", "signature")


def test_gen_key_pair_from_seed() -> None:
    assert KeyPair.from_seed("test-room").public_key.hex() == VECTOR_PUBLIC_KEY


def test_hash_data_key() -> None:
    assert hash_data_key("peers").hex() == VECTOR_DATA_KEY


def test_entry_hash_and_signature() -> None:
    keypair = KeyPair.from_seed("test-room")
    data_key = hash_data_key("peers")
    assert hash_registry_entry(data_key, bytes([1, 2, 3]), 5).hex() == VECTOR_ENTRY_HASH
    entry = sign_entry(keypair, data_key, bytes([1, 2, 3]), 5)
    assert entry.signature.hex() == VECTOR_SIGNATURE
    assert verify_entry(entry)


def test_published_signature_verifies_without_our_signer() -> None:
    """The vector's bytes alone (as a skynet-js client would post them) verify."""
    entry = RegistryEntry(bytes.fromhex(VECTOR_PUBLIC_KEY), bytes.fromhex(VECTOR_DATA_KEY), bytes([1, 2, 3]), 5,
                          bytes.fromhex(VECTOR_SIGNATURE))
    assert verify_entry(entry)
    assert not verify_entry(RegistryEntry(entry.public_key, entry.data_key, entry.data, 6, entry.signature))


def test_skylink_round_trip_and_validation() -> None:
    link = skylink_for_content(b"hello")
    raw = decode_skylink(link)
    assert len(link) == 46 and len(raw) == 34 and raw[:2] == b"\x00\x00"
    assert encode_skylink(raw) == link
    # the last character carries 4 spare bits; a non-zero one is a second spelling of the link
    non_canonical = link[:-1] + {"A": "B", "Q": "R", "g": "h", "w": "x"}[link[-1]]
    for bad in ("short", "!" * 46, link + "A", non_canonical, "", "A" * 45 + "=", None):
        with pytest.raises(InvalidEntry):
            decode_skylink(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidEntry):
        encode_skylink(bytes(33))


@settings(max_examples=60, deadline=None)
@given(raw=st.binary(min_size=34, max_size=34))
def test_any_34_bytes_round_trip(raw: bytes) -> None:
    assert decode_skylink(encode_skylink(raw)) == raw


def test_oversized_entry_or_bad_revision_is_invalid() -> None:
    keypair = KeyPair.from_seed("x")
    assert not verify_entry(sign_entry(keypair, hash_data_key("k"), bytes(114), 0))
    good = sign_entry(keypair, hash_data_key("k"), b"d", 0)
    for revision in (-1, 2**64, True):
        assert not verify_entry(RegistryEntry(good.public_key, good.data_key, good.data, revision, good.signature))
    with pytest.raises(InvalidEntry):
        sign_entry(keypair, hash_data_key("k"), b"d", 2**64)


def test_key_file_round_trip_and_permissions(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "room.key"
    created = KeyPair.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert KeyPair.load(path).public_key == created.public_key
    assert KeyPair.load_or_create(path).public_key == created.public_key
    seeded = KeyPair.from_seed("test-room")
    seeded.save(path)  # overwrite keeps 0600 and leaves no temp file behind
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert KeyPair.load(path).public_key.hex() == VECTOR_PUBLIC_KEY
    assert [p.name for p in path.parent.iterdir()] == ["room.key"]
    path.write_text("not a key\n")
    with pytest.raises(ValueError, match="64 hex digits"):
        KeyPair.load(path)


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=113), revision=st.integers(min_value=0, max_value=2**64 - 1),
       seed=st.text(min_size=1, max_size=20))
def test_sign_verify_round_trip(data: bytes, revision: int, seed: str) -> None:
    assert verify_entry(sign_entry(KeyPair.from_seed(seed), hash_data_key("k"), data, revision))


@settings(max_examples=120, deadline=None)
@given(field=st.sampled_from(["public_key", "data_key", "data", "signature"]), index=st.integers(0, 200),
       flip=st.integers(1, 255), delta=st.integers(-7, 1000).filter(bool))
def test_any_tampered_byte_or_revision_is_rejected(field: str, index: int, flip: int, delta: int) -> None:
    entry = sign_entry(KeyPair.from_seed("tamper"), hash_data_key("k"), b"payload-bytes", 7)
    raw = bytearray(getattr(entry, field))
    raw[index % len(raw)] ^= flip
    values = {f: getattr(entry, f) for f in FIELDS}
    values[field] = bytes(raw)
    assert not verify_entry(RegistryEntry(**values))
    values = {f: getattr(entry, f) for f in FIELDS}
    values["revision"] = entry.revision + delta
    assert not verify_entry(RegistryEntry(**values))


@settings(max_examples=30, deadline=None)
@given(data=st.binary(max_size=113), extra=st.binary(min_size=1, max_size=8))
def test_appended_or_truncated_data_is_rejected(data: bytes, extra: bytes) -> None:
    """The length prefix binds the data: moving bytes between data and revision cannot verify."""
    entry = sign_entry(KeyPair.from_seed("len"), hash_data_key("k"), data, 1)
    longer = (data + extra)[:113]
    if longer != data:
        assert not verify_entry(RegistryEntry(entry.public_key, entry.data_key, longer, 1, entry.signature))
    if data:
        assert not verify_entry(RegistryEntry(entry.public_key, entry.data_key, data[:-1], 1, entry.signature))
