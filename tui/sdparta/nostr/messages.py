"""NIP-01 client↔relay messages: what we send, and what a relay sends decoded with bounds.

A relay's message is bounded in size (by the caller) and nesting (here) before it is parsed, and
anything that is not one of the five relay messages (EVENT, OK, EOSE, CLOSED, NOTICE, plus NIP-42's
AUTH) is a :class:`MalformedMessage` — counted, never a crash.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sdparta import safe_json
from sdparta.nostr.event import Event

#: ``["EVENT", sub, {…, "tags": [[…]]}]``: four levels; a deeper message is not a relay message.
MAX_MESSAGE_DEPTH = 4
#: How much of a relay's human-readable text (NOTICE, OK/CLOSED reasons) we keep.
MAX_TEXT = 300

#: ``OK false``/``CLOSED`` prefixes after which a relay will not serve us: stop using it.
REFUSING_PREFIXES = frozenset({"blocked", "restricted", "auth-required", "pow", "payment-required"})


class MalformedMessage(ValueError):
    """Not a NIP-01 relay message."""


@dataclass(frozen=True, slots=True)
class EventMessage:
    sub_id: str
    event: Any  # the raw event object: verified by the caller, never trusted as is


@dataclass(frozen=True, slots=True)
class OkMessage:
    event_id: str
    accepted: bool
    message: str

    @property
    def prefix(self) -> str:
        return prefix_of(self.message)


@dataclass(frozen=True, slots=True)
class EoseMessage:
    sub_id: str


@dataclass(frozen=True, slots=True)
class ClosedMessage:
    sub_id: str
    message: str

    @property
    def prefix(self) -> str:
        return prefix_of(self.message)


@dataclass(frozen=True, slots=True)
class NoticeMessage:
    message: str


@dataclass(frozen=True, slots=True)
class AuthMessage:
    challenge: str


RelayMessage = EventMessage | OkMessage | EoseMessage | ClosedMessage | NoticeMessage | AuthMessage


def clean_text(value: Any) -> str:
    """A relay's text, bounded and stripped of control characters (it ends up in logs and the UI)."""
    if not isinstance(value, str):
        return ""
    return "".join(ch if ch.isprintable() else " " for ch in value[:MAX_TEXT])


def prefix_of(message: str) -> str:
    """The machine-readable prefix of an OK/CLOSED reason ("rate-limited: slow down" → "rate-limited")."""
    head, sep, _ = message.partition(":")
    head = head.strip().lower()
    return head if sep and head and len(head) <= 32 and " " not in head else ""


def _string(value: Any, what: str, max_length: int = 1024) -> str:
    if not isinstance(value, str) or len(value) > max_length:
        raise MalformedMessage(f"{what} is not a string of at most {max_length} characters")
    return value


def parse_relay_message(raw: str | bytes) -> RelayMessage:
    """Decode one relay message (the caller has bounded its size); MalformedMessage otherwise."""
    try:
        msg = safe_json.loads(raw, max_depth=MAX_MESSAGE_DEPTH, what="relay message")
    except safe_json.JSONError as exc:
        raise MalformedMessage(str(exc)) from exc
    if not isinstance(msg, list) or not msg or not isinstance(msg[0], str):
        raise MalformedMessage("a relay message is a JSON array starting with its type")
    kind, args = msg[0], msg[1:]
    if kind == "EVENT" and len(args) == 2:
        return EventMessage(_string(args[0], "subscription id", 64), args[1])
    if kind == "OK" and len(args) >= 2 and isinstance(args[1], bool):
        return OkMessage(_string(args[0], "event id", 64), args[1], clean_text(args[2] if len(args) > 2 else ""))
    if kind == "EOSE" and len(args) >= 1:
        return EoseMessage(_string(args[0], "subscription id", 64))
    if kind == "CLOSED" and len(args) >= 1:
        return ClosedMessage(_string(args[0], "subscription id", 64), clean_text(args[1] if len(args) > 1 else ""))
    if kind == "NOTICE" and len(args) >= 1:
        return NoticeMessage(clean_text(args[0]))
    if kind == "AUTH" and len(args) >= 1:
        return AuthMessage(clean_text(args[0]))
    raise MalformedMessage(f"unknown or incomplete relay message {clean_text(kind)[:20]!r}")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def event_message(event: Event) -> str:
    return _dumps(["EVENT", event.to_dict()])


def req_message(sub_id: str, filters: Sequence[Mapping[str, Any]]) -> str:
    return _dumps(["REQ", sub_id, *filters])


def close_message(sub_id: str) -> str:
    return _dumps(["CLOSE", sub_id])
