"""Decentralized storage for signalling: Skynet registry + skyfiles over HTTP, one or many portals.

SkyDB JSON on top of the registry is ``sdparta.store.skydb``.
"""

from __future__ import annotations

from sdparta.store.base import (
    MAX_ENTRY_DATA,
    InvalidEntry,
    RegistryEntry,
    RevisionConflict,
    Store,
    StoreError,
    StoreUnavailable,
    Subscription,
)
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
from sdparta.store.memory import MemoryStore
from sdparta.store.multi import MultiStore
from sdparta.store.portal_client import PortalClient, check_portal_url


def open_store(portal_urls: list[str]) -> Store:
    """One portal → a PortalClient; several → a MultiStore over all of them (duplicates dropped).

    Raises ValueError with a usable message for an empty list or a malformed URL.
    """
    if not portal_urls:
        raise ValueError("at least one portal URL is needed (e.g. --portal http://127.0.0.1:8787)")
    urls = list(dict.fromkeys(check_portal_url(url) for url in portal_urls))
    clients = [PortalClient(url) for url in urls]
    return clients[0] if len(clients) == 1 else MultiStore(clients)


__all__ = [
    "MAX_ENTRY_DATA", "InvalidEntry", "KeyPair", "MemoryStore", "MultiStore", "PortalClient", "RegistryEntry",
    "RevisionConflict", "Store", "StoreError", "StoreUnavailable", "Subscription",
    "decode_skylink", "encode_skylink", "hash_data_key", "hash_registry_entry",
    "open_store", "sign_entry", "skylink_for_content", "verify_entry",
]
