"""SkyDB v1 JSON, as skynet-js ``db.getJSON`` / ``db.setJSON``: the value wrapped as
``{"_data": …, "_v": 2}`` in a skyfile, its raw 34-byte skylink as the registry entry's data."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from sdparta.store import open_store
from sdparta.store.base import InvalidEntry, Store, StoreError
from sdparta.store.crypto import KeyPair, decode_skylink, encode_skylink, hash_data_key, sign_entry

MAX_JSON_BYTES = 1024 * 1024


async def get_json(store: Store, public_key: bytes, data_key: str) -> tuple[Any, int] | None:
    """(value, revision), or None when the key was never set."""
    entry = await store.get_entry(public_key, hash_data_key(data_key))
    if entry is None:
        return None
    if len(entry.data) != 34:
        raise InvalidEntry("registry entry does not hold a skylink (not SkyDB data)")
    raw = await store.download_blob(encode_skylink(entry.data), max_size=MAX_JSON_BYTES)
    try:
        wrapped = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidEntry("SkyDB skyfile is not JSON") from exc
    if isinstance(wrapped, dict) and "_data" in wrapped and "_v" in wrapped:
        return wrapped["_data"], entry.revision
    return wrapped, entry.revision


async def set_json(store: Store, keypair: KeyPair, data_key: str, value: Any) -> int:
    """Store ``value``; returns the new revision (previous + 1, or 0)."""
    hashed = hash_data_key(data_key)
    current = await store.get_entry(keypair.public_key, hashed)
    revision = current.revision + 1 if current is not None else 0
    skylink = await store.upload_blob(json.dumps({"_data": value, "_v": 2}).encode())
    await store.set_entry(sign_entry(keypair, hashed, decode_skylink(skylink), revision))
    return revision


def cli_get(portals: list[str], seed: str, key: str) -> int:
    async def run() -> int:
        store = open_store(portals)
        try:
            result = await get_json(store, KeyPair.from_seed(seed).public_key, key)
        finally:
            await store.aclose()
        if result is None:
            print(f"no value for key {key!r} under this seed", file=sys.stderr)
            return 1
        print(json.dumps(result[0]))
        return 0

    try:
        return asyncio.run(run())
    except StoreError as exc:
        print(f"skydb get failed: {exc}", file=sys.stderr)
        return 1


def cli_set(portals: list[str], seed: str, key: str, json_text: str) -> int:
    try:
        value = json.loads(json_text)
    except json.JSONDecodeError as exc:
        print(f"not valid JSON: {exc}", file=sys.stderr)
        return 2

    async def run() -> int:
        store = open_store(portals)
        try:
            revision = await set_json(store, KeyPair.from_seed(seed), key, value)
        finally:
            await store.aclose()
        print(f"stored {key!r} at revision {revision}", file=sys.stderr)
        return 0

    try:
        return asyncio.run(run())
    except StoreError as exc:
        print(f"skydb set failed: {exc}", file=sys.stderr)
        return 1
