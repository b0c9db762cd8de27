"""NIP-01 events: canonical serialization, id, BIP-340 signatures (coincurve), strict verification.

Relays are not trusted: every event read from one goes through :func:`verify_event`, which checks
types, sizes, the id (sha256 of the canonical serialization — the PyPI ``nostr-relay`` never does) and
the Schnorr signature, and raises :class:`InvalidEvent` naming what was wrong. Nothing else in
sdparta builds or reads event JSON by hand.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from coincurve import PrivateKey, PublicKeyXOnly

from sdparta import safe_json

#: NIP-78 application data: an addressable kind (30000–39999), one record per (pubkey, ``d`` tag).
APP_DATA_KIND = 30078
#: ``["EVENT", sub, {"tags": [[…]]}]`` is 4 deep; nothing a relay legitimately sends nests more.
MAX_EVENT_DEPTH = 3
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX128 = re.compile(r"[0-9a-f]{128}")
_EVENT_KEYS = ("id", "pubkey", "created_at", "kind", "tags", "content", "sig")
#: C0 controls without a short JSON escape: NIP-01 does not fix their form, and implementations differ
#: (JSON.stringify and Python write \u001b, rapidjson — the PyPI nostr-relay — \u001B), so an event
#: holding one has no id every relay agrees on. We never build such an event.
_AMBIGUOUS = re.compile(r"[\x00-\x07\x0b\x0e-\x1f]")

Tags = tuple[tuple[str, ...], ...]


class InvalidEvent(ValueError):
    """An event failed verification; ``reason`` is a short machine-readable word (counted per relay)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class EventLimits:
    """Bounds on any event we build or accept (independent of what a relay advertises): a hostile relay
    or stranger cannot make us hash, verify or keep more than this per event."""

    max_content_length: int = 128 * 1024  # characters
    max_tags: int = 64
    max_tag_items: int = 16  # strings per tag
    max_tag_item_length: int = 1024  # characters
    max_event_bytes: int = 256 * 1024  # the canonical serialization, UTF-8

    def check(self, tags: Sequence[Sequence[str]], content: str) -> None:
        if len(content) > self.max_content_length:
            raise InvalidEvent("too-large", f"content of {len(content)} characters > {self.max_content_length}")
        if len(tags) > self.max_tags:
            raise InvalidEvent("too-large", f"{len(tags)} tags > {self.max_tags}")
        for tag in tags:
            if len(tag) > self.max_tag_items:
                raise InvalidEvent("too-large", f"a tag of {len(tag)} items > {self.max_tag_items}")
            if any(len(item) > self.max_tag_item_length for item in tag):
                raise InvalidEvent("too-large", f"a tag item longer than {self.max_tag_item_length}")


DEFAULT_LIMITS = EventLimits()


@dataclass(frozen=True, slots=True)
class Event:
    """A verified (or self-signed) NIP-01 event. Build with :class:`NostrKey`, read with :func:`verify_event`."""

    id: str
    pubkey: str
    created_at: int
    kind: int
    tags: Tags
    content: str
    sig: str = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The wire object (tags as lists), as sent in ``["EVENT", …]``."""
        return {"id": self.id, "pubkey": self.pubkey, "created_at": self.created_at, "kind": self.kind,
                "tags": [list(tag) for tag in self.tags], "content": self.content, "sig": self.sig}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)

    def tag(self, name: str) -> str | None:
        """The value of the first tag called ``name`` (``None`` when absent or valueless)."""
        for tag in self.tags:
            if tag and tag[0] == name:
                return tag[1] if len(tag) > 1 else None
        return None

    def tag_values(self, name: str) -> list[str]:
        """Every value of the tags called ``name`` (what a ``#name`` filter matches)."""
        return [tag[1] for tag in self.tags if len(tag) > 1 and tag[0] == name]

    @property
    def kind_class(self) -> str:
        return kind_class(self.kind)

    @property
    def address(self) -> tuple[int, str, str] | None:
        """(kind, pubkey, d) of an addressable event — what a relay replaces — else None."""
        if kind_class(self.kind) != "addressable":
            return None
        return self.kind, self.pubkey, self.tag("d") or ""


def kind_class(kind: int) -> str:
    """NIP-01's ranges: "regular", "replaceable", "ephemeral" or "addressable"."""
    if 20000 <= kind < 30000:
        return "ephemeral"
    if 30000 <= kind < 40000:
        return "addressable"
    if kind in (0, 3) or 10000 <= kind < 20000:
        return "replaceable"
    return "regular"


def serialize(pubkey: str, created_at: int, kind: int, tags: Sequence[Sequence[str]], content: str) -> bytes:
    """NIP-01's canonical form ``[0,pubkey,created_at,kind,tags,content]``: UTF-8, no whitespace, only
    ``\\n \\" \\\\ \\r \\t \\b \\f`` (and, as JSON requires and JSON.stringify does, other control
    characters as ``\\u00xx``) escaped, everything else verbatim. Lone surrogates cannot be UTF-8:
    UnicodeEncodeError."""
    data = [0, pubkey, created_at, kind, [list(tag) for tag in tags], content]
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def compute_id(pubkey: str, created_at: int, kind: int, tags: Sequence[Sequence[str]], content: str) -> str:
    return hashlib.sha256(serialize(pubkey, created_at, kind, tags, content)).hexdigest()


@lru_cache(maxsize=1024)
def _xonly(pubkey: bytes) -> PublicKeyXOnly:
    return PublicKeyXOnly(pubkey)  # ValueError when not a valid x coordinate


def schnorr_verify(pubkey: bytes, sig: bytes, message: bytes) -> bool:
    """BIP-340 verification; False (never an exception) for an invalid key or signature."""
    try:
        return bool(_xonly(bytes(pubkey)).verify(sig, message))
    except ValueError:
        return False


def _hex(value: Any, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidEvent("malformed", f"{what} is not lowercase hex of the right length")
    return value


def _int(value: Any, low: int, high: int, what: str) -> int:
    if type(value) is not int or not low <= value <= high:  # bool and float are not integers here
        raise InvalidEvent("malformed", f"{what} is not an integer in {low}..{high}")
    return value


def verify_event(raw: Any, limits: EventLimits = DEFAULT_LIMITS) -> Event:
    """Check a parsed event object completely and return it as an :class:`Event`, or raise
    :class:`InvalidEvent` (reasons: malformed, too-large, id-mismatch, bad-pubkey, bad-signature)."""
    if not isinstance(raw, Mapping) or any(key not in raw for key in _EVENT_KEYS):
        raise InvalidEvent("malformed", "not an object with id, pubkey, created_at, kind, tags, content, sig")
    event_id = _hex(raw["id"], _HEX64, "id")
    pubkey = _hex(raw["pubkey"], _HEX64, "pubkey")
    sig = _hex(raw["sig"], _HEX128, "sig")
    created_at = _int(raw["created_at"], 0, 2**53 - 1, "created_at")
    kind = _int(raw["kind"], 0, 65535, "kind")
    content, raw_tags = raw["content"], raw["tags"]
    if not isinstance(content, str):
        raise InvalidEvent("malformed", "content is not a string")
    if not isinstance(raw_tags, list) or len(raw_tags) > limits.max_tags:
        raise InvalidEvent("malformed" if not isinstance(raw_tags, list) else "too-large", "tags")
    tags: list[tuple[str, ...]] = []
    for tag in raw_tags:
        if not isinstance(tag, list) or not tag or len(tag) > limits.max_tag_items \
                or not all(isinstance(item, str) for item in tag):
            raise InvalidEvent("malformed", "a tag is not a non-empty array of strings")
        tags.append(tuple(tag))
    limits.check(tags, content)
    try:
        canonical = serialize(pubkey, created_at, kind, tags, content)
    except UnicodeEncodeError as exc:
        raise InvalidEvent("malformed", "a string is not valid Unicode (lone surrogate)") from exc
    if len(canonical) > limits.max_event_bytes:
        raise InvalidEvent("too-large", f"{len(canonical)} bytes > {limits.max_event_bytes}")
    digest = hashlib.sha256(canonical).digest()
    if digest.hex() != event_id:
        raise InvalidEvent("id-mismatch", "id is not the sha256 of the event's fields")
    try:
        key = _xonly(bytes.fromhex(pubkey))
    except ValueError as exc:
        raise InvalidEvent("bad-pubkey", "pubkey is not a point on secp256k1") from exc
    if not key.verify(bytes.fromhex(sig), digest):
        raise InvalidEvent("bad-signature", "BIP-340 signature does not verify")
    return Event(event_id, pubkey, created_at, kind, tuple(tags), content, sig)


def parse_event(raw: str | bytes, limits: EventLimits = DEFAULT_LIMITS) -> Event:
    """Verify an event given as JSON text: size bounded before parsing, nesting bounded while parsing."""
    if len(raw) > limits.max_event_bytes * 2 + 4096:  # escaped strings may double; generous slack
        raise InvalidEvent("too-large", f"{len(raw)} bytes of JSON")
    try:
        obj = safe_json.loads(raw, max_depth=MAX_EVENT_DEPTH, what="event")
    except safe_json.JSONError as exc:
        raise InvalidEvent("malformed", str(exc)) from exc
    return verify_event(obj, limits)


class NostrKey:
    """A secp256k1 key for one session (BIP-340 x-only public key). Its only authority is "this
    session wrote this event"; who the participant is comes from the identity-signed room records."""

    __slots__ = ("_key", "_last_created", "pubkey")

    def __init__(self, secret: bytes | None = None) -> None:
        self._key = PrivateKey(secret) if secret is not None else PrivateKey()  # random, valid scalar
        self.pubkey: str = PublicKeyXOnly.from_secret(self._key.secret).format().hex()
        self._last_created: dict[tuple[int, str], int] = {}

    @classmethod
    def generate(cls) -> NostrKey:
        return cls()

    @property
    def secret(self) -> bytes:
        return bytes(self._key.secret)

    def __repr__(self) -> str:
        return f"NostrKey(pubkey={self.pubkey[:16]}…)"  # never the secret

    def sign(self, message32: bytes, aux_rand: bytes | None = b"") -> str:
        """BIP-340 signature (hex) of a 32-byte message; fresh auxiliary randomness by default."""
        return bytes(self._key.sign_schnorr(message32, aux_rand)).hex()

    def event(self, kind: int, content: str, tags: Iterable[Sequence[str]] = (), *,
              created_at: int | None = None, limits: EventLimits = DEFAULT_LIMITS) -> Event:
        """A signed event; raises InvalidEvent when it exceeds ``limits`` (we never send what we'd refuse)."""
        _int(kind, 0, 65535, "kind")
        frozen: Tags = tuple(tuple(str(item) for item in tag) for tag in tags)
        if not isinstance(content, str) or any(not tag for tag in frozen):
            raise InvalidEvent("malformed", "content must be a string and every tag non-empty")
        if _AMBIGUOUS.search(content) or any(_AMBIGUOUS.search(item) for tag in frozen for item in tag):
            raise InvalidEvent("malformed", "a control character other than \\b \\t \\n \\f \\r has no "
                                            "canonical NIP-01 form (relays would compute another id)")
        limits.check(frozen, content)
        when = int(time.time()) if created_at is None else _int(created_at, 0, 2**53 - 1, "created_at")
        try:
            event_id = compute_id(self.pubkey, when, kind, frozen, content)
        except UnicodeEncodeError as exc:
            raise InvalidEvent("malformed", "a string is not valid Unicode (lone surrogate)") from exc
        return Event(event_id, self.pubkey, when, kind, frozen, content, self.sign(bytes.fromhex(event_id)))

    def addressable(self, d: str, content: str, tags: Iterable[Sequence[str]] = (), *,
                    kind: int = APP_DATA_KIND, created_at: int | None = None) -> Event:
        """The next version of this key's record ``d`` (kind 30000–39999). Its ``created_at`` is always
        above the previous version's: relays keep the *lowest id* of two versions in one second, so a
        newer record written within the same second as the last would otherwise lose at random."""
        if kind_class(kind) != "addressable":
            raise ValueError(f"kind {kind} is not addressable (30000-39999)")
        when = int(time.time()) if created_at is None else created_at
        when = max(when, self._last_created.get((kind, d), -1) + 1)
        self._last_created[(kind, d)] = when
        return self.event(kind, content, [("d", d), *tags], created_at=when)


def make_filter(*, ids: Iterable[str] | None = None, authors: Iterable[str] | None = None,
                kinds: Iterable[int] | None = None, tags: Mapping[str, Iterable[str]] | None = None,
                since: int | None = None, until: int | None = None, limit: int | None = None) -> dict[str, Any]:
    """A NIP-01 filter; ``tags={"d": [...]}`` becomes ``"#d"`` (single letters only, as relays index)."""
    flt: dict[str, Any] = {}
    for name, values, pattern in (("ids", ids, _HEX64), ("authors", authors, _HEX64)):
        if values is not None:
            flt[name] = [_hex(v, pattern, name) for v in values]
    if kinds is not None:
        flt["kinds"] = [_int(k, 0, 65535, "kind") for k in kinds]
    for letter, values in (tags or {}).items():
        if len(letter) != 1 or not letter.isascii() or not letter.isalpha():
            raise ValueError(f"tag filters take single letters a-zA-Z, not {letter!r}")
        flt["#" + letter] = [str(v) for v in values]
    for name, value in (("since", since), ("until", until), ("limit", limit)):
        if value is not None:
            flt[name] = _int(value, 0, 2**53 - 1, name)
    return flt


def filter_matches(flt: Mapping[str, Any], event: Event) -> bool:
    """Does ``event`` pass one filter (NIP-01 semantics)? ``limit`` only shapes the stored query."""
    if "ids" in flt and event.id not in flt["ids"]:
        return False
    if "authors" in flt and event.pubkey not in flt["authors"]:
        return False
    if "kinds" in flt and event.kind not in flt["kinds"]:
        return False
    if "since" in flt and event.created_at < flt["since"]:
        return False
    if "until" in flt and event.created_at > flt["until"]:
        return False
    for key, wanted in flt.items():
        if key.startswith("#") and not set(event.tag_values(key[1:])) & set(wanted):
            return False
    return True


def filters_match(filters: Iterable[Mapping[str, Any]], event: Event) -> bool:
    """Several filters in one REQ are OR'ed."""
    return any(filter_matches(flt, event) for flt in filters)
