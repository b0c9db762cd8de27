"""NIP-11 relay information: what a relay says about itself, read before we use it.

The document is fetched over http(s) of the relay's own URL with ``Accept: application/nostr+json``.
Its ``limitation`` bounds what we send (message and content size, subscriptions, tags); a relay that
says it needs auth or payment would refuse us, so it is not used. Many relays serve no document:
then conservative defaults apply (strfry, the most common relay, caps events at 64 KiB).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from sdparta import safe_json

#: A NIP-11 document larger than this is not read (they are a few hundred bytes).
MAX_INFO_BYTES = 64 * 1024
#: What we assume when a relay does not say: strfry's event cap, the limit of the most common relay.
ASSUMED_MAX_MESSAGE = 64 * 1024
#: Our own hard caps, whatever a relay advertises.
HARD_MAX_MESSAGE = 512 * 1024
DEFAULT_MAX_SUBSCRIPTIONS = 20
MAX_SUBID_LENGTH = 64  # NIP-01


def relay_url(url: str) -> str:
    """Check and normalize a relay URL (ws:// or wss://, a host, no fragment); ValueError otherwise."""
    if not isinstance(url, str) or len(url) > 2048:
        raise ValueError("a relay URL must be a string of at most 2048 characters")
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a relay URL (ws://… or wss://…): {url!r}")
    if parts.fragment or parts.username or parts.password:
        raise ValueError(f"a relay URL has no fragment or credentials: {url!r}")
    try:
        _ = parts.port  # ValueError for a bad port
    except ValueError as exc:
        raise ValueError(f"bad port in relay URL {url!r}") from exc
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", parts.query, ""))


def info_url(url: str) -> str:
    """The http(s) URL of a relay's NIP-11 document (same host, port and path)."""
    parts = urlsplit(url)
    return urlunsplit(("https" if parts.scheme == "wss" else "http", parts.netloc, parts.path, parts.query, ""))


def _positive(value: Any) -> int | None:
    return value if type(value) is int and value > 0 else None


@dataclass(frozen=True, slots=True)
class RelayLimits:
    """What we keep every message to on one relay (NIP-11 ``limitation``, else our assumptions)."""

    max_message_length: int = ASSUMED_MAX_MESSAGE  # bytes of one message we send
    max_content_length: int | None = None  # characters of an event's content
    max_subscriptions: int = DEFAULT_MAX_SUBSCRIPTIONS
    max_event_tags: int | None = None
    max_filters: int | None = None
    max_subid_length: int = MAX_SUBID_LENGTH
    advertised: bool = False  # did the relay's NIP-11 document give any of these?

    @classmethod
    def from_limitation(cls, limitation: Mapping[str, Any]) -> RelayLimits:
        limits, found = cls(), False
        message = _positive(limitation.get("max_message_length"))
        if message is not None:
            limits, found = replace(limits, max_message_length=min(message, HARD_MAX_MESSAGE)), True
        for key in ("max_content_length", "max_subscriptions", "max_event_tags", "max_filters"):
            value = _positive(limitation.get(key))
            if value is not None:
                limits, found = replace(limits, **{key: value}), True
        subid = _positive(limitation.get("max_subid_length"))
        if subid is not None:
            limits, found = replace(limits, max_subid_length=min(subid, MAX_SUBID_LENGTH)), True
        return replace(limits, advertised=found)


@dataclass(frozen=True, slots=True)
class RelayInfo:
    """A relay's NIP-11 document, reduced to what we use; ``error`` says why there is none."""

    name: str = ""
    software: str = ""
    version: str = ""
    supported_nips: tuple[int, ...] = ()
    limits: RelayLimits = field(default_factory=RelayLimits)
    auth_required: bool = False
    payment_required: bool = False
    restricted_writes: bool = False
    error: str | None = None

    @property
    def refusal(self) -> str | None:
        """Why this relay would refuse an anonymous, unpaid client like us (None: it would not)."""
        if self.auth_required:
            return "auth-required: NIP-11 says the relay requires authentication (NIP-42)"
        if self.payment_required:
            return "restricted: NIP-11 says the relay requires payment"
        return None

    @classmethod
    def parse(cls, doc: Any) -> RelayInfo:
        """Never raises: anything unusable is dropped field by field."""
        if not isinstance(doc, Mapping):
            return cls(error="NIP-11 document is not a JSON object")
        limitation = doc.get("limitation")
        limitation = limitation if isinstance(limitation, Mapping) else {}

        def text(key: str) -> str:
            value = doc.get(key)
            return value[:200] if isinstance(value, str) else ""

        nips = doc.get("supported_nips")
        nips_t = tuple(n for n in nips[:200] if type(n) is int) if isinstance(nips, list) else ()
        return cls(name=text("name"), software=text("software"), version=text("version"), supported_nips=nips_t,
                   limits=RelayLimits.from_limitation(limitation),
                   auth_required=limitation.get("auth_required") is True,
                   payment_required=limitation.get("payment_required") is True,
                   restricted_writes=limitation.get("restricted_writes") is True)


async def fetch_info(session: aiohttp.ClientSession, url: str, timeout: float = 5.0) -> RelayInfo:
    """GET the relay's NIP-11 document; a RelayInfo with ``error`` set (defaults) when there is none."""
    try:
        async with asyncio.timeout(timeout), session.get(
                info_url(url), headers={"Accept": "application/nostr+json"}, allow_redirects=False) as resp:
            if resp.status != 200:
                return RelayInfo(error=f"NIP-11: HTTP {resp.status}")
            body = await resp.content.read(MAX_INFO_BYTES + 1)
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        return RelayInfo(error=f"NIP-11: {type(exc).__name__}: {exc}"[:300])
    if len(body) > MAX_INFO_BYTES:
        return RelayInfo(error=f"NIP-11 document larger than {MAX_INFO_BYTES} bytes")
    try:
        doc = safe_json.loads(body, max_depth=8, what="NIP-11 document")
    except safe_json.JSONError as exc:
        return RelayInfo(error=str(exc))
    return RelayInfo.parse(doc)
