"""What a portal sends as JSON, decoded without trusting it: registry answers and pushes.

Shared by the HTTP client (``portal_client``) and the push websocket (``push``): a GET answer and a
pushed message carry the same entry fields, and both are checked against the slot that was asked
for, signature included, before anything above the store sees them.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from typing import Any

from sdparta import safe_json
from sdparta.store.base import MAX_ENTRY_DATA, InvalidEntry, RegistryEntry, Slot
from sdparta.store.crypto import SIGNATURE_LEN, is_slot, parse_revision, verify_entry


def loads(raw: str | bytes) -> Any:
    """Registry answers, upload answers and pushes are a few hundred bytes of flat JSON: bounded
    nesting (safe_json), ValueError for anything else. Callers bound the size before parsing."""
    return safe_json.loads(raw, max_depth=8)


def byte_candidates(value: Any, max_len: int) -> list[bytes]:
    """Every plausible decoding of a JSON byte field: skyd's GET uses hex, skynet-js sends arrays of
    numbers and Go encodes ``[]byte`` as base64. The signature check decides which one is right."""
    if isinstance(value, list):
        if len(value) <= max_len and all(type(b) is int and 0 <= b <= 255 for b in value):
            return [bytes(value)]
        return []
    if not isinstance(value, str) or len(value) > 4 * max_len + 4:
        return []
    found: list[bytes] = []
    with contextlib.suppress(ValueError):
        found.append(bytes.fromhex(value))
    std = value.replace("-", "+").replace("_", "/")
    with contextlib.suppress(binascii.Error, ValueError):
        raw = base64.b64decode(std + "=" * (-len(std) % 4), validate=True)
        if raw not in found:
            found.append(raw)
    return [raw for raw in found if len(raw) <= max_len]


def parse_entry(public_key: bytes, data_key: bytes, body: Any) -> RegistryEntry:
    """Validate a registry JSON answer (GET or push) for the slot we asked about, signature included."""
    if not isinstance(body, dict):
        raise InvalidEntry("registry answer is not a JSON object")
    revision = parse_revision(body.get("revision"))
    kind = body.get("type")
    if kind is not None and not (isinstance(kind, int | float) and kind == 1):
        # no repr of an untrusted value: it may be huge or nested deep enough to overflow the stack
        shown = kind if type(kind) is int and abs(kind) < 10**6 else type(kind).__name__
        raise InvalidEntry(f"unsupported registry entry type {shown}")
    datas = byte_candidates(body.get("data", ""), MAX_ENTRY_DATA)
    signatures = [s for s in byte_candidates(body.get("signature"), SIGNATURE_LEN) if len(s) == SIGNATURE_LEN]
    if not signatures:
        raise InvalidEntry("registry answer has no 64-byte signature")
    for data in datas:
        for signature in signatures:
            entry = RegistryEntry(public_key, data_key, data, revision, signature)
            if verify_entry(entry):
                return entry
    raise InvalidEntry("registry entry signature does not verify for the requested key "
                       "(the portal is broken or lying; entry ignored)")


def slot_of_push(body: Any) -> Slot | None:
    """(public key, data key) named by a pushed message (or a GET answer that names one), or None
    when it names none."""
    if not isinstance(body, dict):
        return None
    pubkey, datakey = body.get("pubkey"), body.get("datakey")
    if not isinstance(pubkey, str) or not pubkey.startswith("ed25519:") or not isinstance(datakey, str):
        return None
    try:
        public_key, data_key = bytes.fromhex(pubkey[8:]), bytes.fromhex(datakey)
    except ValueError:
        return None
    if not is_slot(public_key, data_key):
        return None
    return public_key, data_key
