"""Known-answer vectors of the Nostr mapping (docs/protocol.md §8) and how a record is bound to its key."""

from __future__ import annotations

import pytest

from sdparta.nostr import NostrKey, verify_event
from sdparta.room.keys import Identity, RoomKeys
from sdparta.room.nostr_wire import APP_KIND, RoomTags, b64, decode_presence_record, encode_presence_record, unb64
from sdparta.room.wire import WireError

SID_A, SID_B = "0011223344556677", "8899aabbccddeeff"
BLOB = (
    "534450310000000000000000000000005e5645148837106de5c1d5db83d06c4ec8271eb8662e2e74568a268ba0a8780fb9d446ddcb"
    "2266ed8ab98333c38a84da439aef5283de8dd61e4b4c8a2ae94eb1fb5a391298554d2301ce23a94ee816470022291444467b265528"
    "022be4c94b5c0607193bef7f96eaa0fce45252c740fe29d1ccbaf7fd3e6be0c1be85fbd9c9e69b3df1326a2044406b65b5891aa4f7"
    "9fbb56c0d5a2ee268675fb325aab2040b1c29bd3ea31af1464cdf694de080d97924c58e707722b9b1eceef4159fa6c3355e01b0dee"
    "9f10f3ad23a75771cdeb1b31f4bdc37e78699c6185eb813b07b4bd6ee056f2f843f5d723e1934ff7fa91c599b96ff6e9f2e10ef7a7"
    "710774a4214a6bfadea5a07ed9605096a9d8edee3ec489aabd8602c19417b94e9a6e99d28ce1b95e2d50af505e3889cfcc75df6e53"
    "7209"
)


@pytest.fixture(scope="module")
def keys() -> RoomKeys:
    return RoomKeys.derive("demo-room", "hunter2")


def test_tags_and_presence_record_vectors(keys: RoomKeys) -> None:
    tags = RoomTags(keys)
    assert tags.room == "bd1da440e40ec365a41f36c9aed03ac2711fcd64a7beb1c693745bca89632ad2"
    assert tags.settings == "4073c9b6cf9480c701edbc93ba2cee25b3ea84a43ed98d1a62f9e9f722791adc"
    assert tags.to(SID_B) == "33c45b3d5df9544871fe99a4634d8c48cdfcf9370fa6500aba6fe6f5ff62c52c"
    assert tags.presence_d(SID_A) == "a136979229c063fbf12e581f997f514146b444c3334a97f0118a322a5e6be2f3"
    nostr_key = NostrKey(bytes(range(1, 33)))
    assert nostr_key.pubkey == "84bf7562262bbd6940085748f3be6afa52ae317155181ece31b66351ccffa4b0"
    blob = encode_presence_record(keys, Identity.from_seed(bytes(range(32))), SID_A, bytes.fromhex(nostr_key.pubkey),
                                  "alice", 1700000000000, nonce=bytes(12))
    assert blob.hex() == BLOB
    event = nostr_key.addressable(tags.presence_d(SID_A), b64(blob), [("x", tags.room)], created_at=1700000000)
    assert event.id == "af76deaa7e1aba720fc601ecbdc7d6faae0deba38fbf86f471798e76c6c5fdf4"
    assert event.kind == APP_KIND and verify_event(event.to_dict()) == event
    record = decode_presence_record(keys, bytes.fromhex(event.pubkey), tags.presence_d(SID_A),
                                    unb64(event.content, 4096))
    assert record.member is not None and record.member.name == "alice" and record.ts_ms == 1700000000000


def test_a_record_opens_only_under_its_own_key_and_d_tag(keys: RoomKeys) -> None:
    """Re-published under another Nostr key (a member replaying someone's record as its own) or under
    another session's d tag, the record does not open."""
    tags, identity = RoomTags(keys), Identity.generate()
    own, other = NostrKey(), NostrKey()
    blob = encode_presence_record(keys, identity, SID_A, bytes.fromhex(own.pubkey), "alice", 1)
    with pytest.raises(WireError):
        decode_presence_record(keys, bytes.fromhex(other.pubkey), tags.presence_d(SID_A), blob)
    with pytest.raises(WireError):
        decode_presence_record(keys, bytes.fromhex(own.pubkey), tags.presence_d(SID_B), blob)
    leaving = encode_presence_record(keys, identity, SID_A, bytes.fromhex(own.pubkey), "alice", 2, leaving=True)
    record = decode_presence_record(keys, bytes.fromhex(own.pubkey), tags.presence_d(SID_A), leaving)
    assert record.member is None and record.key == (identity.public_key, SID_A) and record.ts_ms == 2
    with pytest.raises(WireError):
        unb64("not base64!", 100)
    with pytest.raises(WireError):
        unb64("A" * 1000, 100)
