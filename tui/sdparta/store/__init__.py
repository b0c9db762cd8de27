"""Decentralized storage for signalling: Skynet registry + skyfiles over HTTP, one or many portals."""

from __future__ import annotations

from sdparta.store.base import (
    InvalidEntry,
    RegistryEntry,
    RevisionConflict,
    Store,
    StoreError,
    StoreUnavailable,
    Subscription,
)
from sdparta.store.multi import MultiStore
from sdparta.store.portal_client import PortalClient


def open_store(portal_urls: list[str]) -> Store:
    """One portal → a PortalClient; several → a MultiStore over all of them."""
    if not portal_urls:
        raise ValueError("at least one portal URL is needed (e.g. --portal http://127.0.0.1:8787)")
    clients = [PortalClient(url) for url in portal_urls]
    return clients[0] if len(clients) == 1 else MultiStore(clients)


__all__ = ["InvalidEntry", "MultiStore", "PortalClient", "RegistryEntry", "RevisionConflict", "Store",
           "StoreError", "StoreUnavailable", "Subscription", "open_store"]
