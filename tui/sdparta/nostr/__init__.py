"""Nostr relays as a rendezvous network: NIP-01 events, relay clients and a pool of relays.

Self-contained (it sits at the ``store`` level: it imports only the shared helpers at the bottom).
Trust: none in relays. Every event read is verified (:func:`verify_event`); what we send stays within
each relay's NIP-11 limits; refusals and rate limits are obeyed and visible in :class:`RelayStatus`.
"""

from __future__ import annotations

from sdparta.nostr.connection import RelayTimeouts
from sdparta.nostr.event import (
    APP_DATA_KIND,
    DEFAULT_LIMITS,
    Event,
    EventLimits,
    InvalidEvent,
    NostrKey,
    compute_id,
    filter_matches,
    filters_match,
    kind_class,
    make_filter,
    parse_event,
    schnorr_verify,
    serialize,
    verify_event,
)
from sdparta.nostr.info import RelayInfo, RelayLimits, fetch_info, relay_url
from sdparta.nostr.pool import PoolPublishResult, PoolSubscription, Received, RelayPool
from sdparta.nostr.relay import Relay
from sdparta.nostr.state import (
    EventTooLarge,
    PublishResult,
    PublishStatus,
    RelayError,
    RelayState,
    RelayStatus,
    SubscriptionLimit,
)

__all__ = [
    "APP_DATA_KIND", "DEFAULT_LIMITS", "Event", "EventLimits", "EventTooLarge", "InvalidEvent", "NostrKey",
    "PoolPublishResult", "PoolSubscription", "PublishResult", "PublishStatus", "Received", "Relay", "RelayError",
    "RelayInfo", "RelayLimits", "RelayPool", "RelayState", "RelayStatus", "RelayTimeouts", "SubscriptionLimit",
    "compute_id", "fetch_info", "filter_matches", "filters_match", "kind_class", "make_filter", "parse_event",
    "relay_url", "schnorr_verify", "serialize", "verify_event",
]
