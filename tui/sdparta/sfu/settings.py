"""The room settings' SFU entry: ``{"type": "janus", "url": "wss://…", "room": 1234, "pin": "…" | null}``,
and ``"plugin": "audiobridge"`` for an audio-only room (absent: ``"videoroom"``; written only when it
differs, so readers that predate the key still read a VideoRoom entry).

Pure parsing and validation, no network: the room layer carries the entry sealed, the engine turns
it into a :class:`~sdparta.sfu.janus.JanusSession`. The entry comes from other participants, so it is
untrusted: exact types (no bools as numbers), bounded sizes, printable text only, no unknown keys
(a newer writer's extra keys are refused rather than silently dropped, so nobody joins a different
room than the writer meant), and every error says which field is wrong and what would do.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sdparta import safe_json
from sdparta.sfu.errors import SfuSettingsError

__all__ = ["MAX_ENTRY_BYTES", "MAX_PIN_CHARS", "MAX_ROOM_ID", "MAX_URL_CHARS", "PLUGINS", "SfuEntry", "parse_sfu_entry",
           "parse_sfu_json"]

MAX_URL_CHARS = 512
MAX_PIN_CHARS = 128
#: Room ids stay within JavaScript's safe integers, so the browser page reads the same number.
MAX_ROOM_ID = 2**53 - 1
#: The serialized entry; a real one is under 700 bytes.
MAX_ENTRY_BYTES = 2048
_KEYS = {"type", "url", "room", "pin", "plugin"}
_TYPES = ("janus",)
#: VideoRoom: every member publishes audio and video, subscribes to the others (audio+video rooms).
#: AudioBridge: one Opus stream up, one mix down, whatever the size (audio-only rooms).
PLUGINS = ("videoroom", "audiobridge")


@dataclass(frozen=True)
class SfuEntry:
    """A validated SFU entry. ``host`` is what the UI shows ("via SFU (janus @ host)")."""

    url: str
    room: int
    pin: str | None = None
    type: str = "janus"
    plugin: str = "videoroom"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def secure(self) -> bool:
        return self.url.startswith("wss://")

    def label(self) -> str:
        return f"{self.type} @ {self.host}"

    def to_json(self) -> dict[str, Any]:
        """The wire form (what :func:`parse_sfu_entry` reads back)."""
        entry: dict[str, Any] = {"type": self.type, "url": self.url, "room": self.room, "pin": self.pin}
        if self.plugin != "videoroom":
            entry["plugin"] = self.plugin
        return entry

    def __repr__(self) -> str:  # never print the PIN into logs
        pin = "None" if self.pin is None else "'…'"
        return f"SfuEntry(type={self.type!r}, url={self.url!r}, room={self.room}, pin={pin}, plugin={self.plugin!r})"


def _printable(text: str) -> bool:
    return all(ch.isprintable() for ch in text)


def check_url(url: object) -> str:
    """A ``ws://`` or ``wss://`` URL with a host, no credentials or fragment; SfuSettingsError if not."""
    if not isinstance(url, str):
        raise SfuSettingsError(f"the SFU url must be a string, not {type(url).__name__}")
    if not url or len(url) > MAX_URL_CHARS:
        raise SfuSettingsError(f"the SFU url must be 1–{MAX_URL_CHARS} characters long (got {len(url)})")
    if not url.isascii() or not _printable(url) or " " in url:
        raise SfuSettingsError("the SFU url may hold only printable ASCII without spaces")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise SfuSettingsError(f"the SFU url is not a valid URL: {exc}") from None
    if parts.scheme not in ("ws", "wss"):
        raise SfuSettingsError(f"the SFU url must start with wss:// or ws:// (got {parts.scheme or 'no'} scheme)")
    if not parts.hostname:
        raise SfuSettingsError("the SFU url names no host (e.g. wss://sfu.example.org/janus)")
    if parts.username is not None or parts.password is not None:
        raise SfuSettingsError("the SFU url must not carry a user name or password")
    if parts.fragment:
        raise SfuSettingsError("the SFU url must not have a #fragment")
    if port == 0:
        raise SfuSettingsError("the SFU url's port must be 1–65535")
    host = parts.hostname
    try:
        ipaddress.ip_address(host)
    except ValueError:
        labels = host.rstrip(".").split(".")
        if not all(label and len(label) <= 63 and all(c.isalnum() or c in "-_" for c in label) for label in labels):
            raise SfuSettingsError(f"the SFU url's host {host!r} is not a valid host name") from None
    return url


def parse_sfu_entry(value: object) -> SfuEntry:
    """Validate a decoded entry (a dict from JSON); SfuSettingsError names what is wrong."""
    if not isinstance(value, dict):
        raise SfuSettingsError(f"the SFU entry must be an object, not {type(value).__name__}")
    unknown = set(value) - _KEYS
    if unknown:
        names = ", ".join(sorted(repr(k)[:40] for k in unknown)[:5])
        raise SfuSettingsError(f"the SFU entry has unknown keys: {names} (expected type, url, room, pin, plugin)")
    missing = [key for key in ("type", "url", "room") if key not in value]
    if missing:
        raise SfuSettingsError(f"the SFU entry lacks {', '.join(missing)}")
    kind = value["type"]
    if not isinstance(kind, str):
        raise SfuSettingsError(f"the SFU type must be a string, not {type(kind).__name__}")
    if kind not in _TYPES:
        raise SfuSettingsError(f"unsupported SFU type {kind[:40]!r} (only 'janus' is supported)")
    url = check_url(value["url"])
    room = value["room"]
    if isinstance(room, bool) or not isinstance(room, int):
        raise SfuSettingsError(f"the SFU room must be an integer, not {type(room).__name__}")
    if not 1 <= room <= MAX_ROOM_ID:
        raise SfuSettingsError(f"the SFU room must be between 1 and {MAX_ROOM_ID}")
    pin = value.get("pin")
    if pin is not None:
        if not isinstance(pin, str):
            raise SfuSettingsError(f"the SFU pin must be a string or null, not {type(pin).__name__}")
        if not pin or len(pin) > MAX_PIN_CHARS or not _printable(pin):
            raise SfuSettingsError(f"the SFU pin must be 1–{MAX_PIN_CHARS} printable characters")
    plugin = value.get("plugin", "videoroom")
    if not isinstance(plugin, str) or plugin not in PLUGINS:
        shown = repr(plugin[:40]) if isinstance(plugin, str) else type(plugin).__name__
        raise SfuSettingsError(f"unsupported SFU plugin {shown} (videoroom or audiobridge)")
    return SfuEntry(url=url, room=room, pin=pin, type=kind, plugin=plugin)


def parse_sfu_json(raw: str | bytes) -> SfuEntry:
    """Parse and validate the serialized entry (bounded before parsing)."""
    # a str is measured in UTF-8 bytes (a character can take four), encoded only once short enough
    if isinstance(raw, str) and len(raw) > MAX_ENTRY_BYTES:
        raise SfuSettingsError(f"the SFU entry is at least {len(raw)} bytes, more than {MAX_ENTRY_BYTES}")
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "replace"))
    if size > MAX_ENTRY_BYTES:
        raise SfuSettingsError(f"the SFU entry is {size} bytes, more than {MAX_ENTRY_BYTES}")
    try:
        value = safe_json.loads(raw, max_depth=2, what="the SFU entry")
    except safe_json.JSONError as exc:
        raise SfuSettingsError(str(exc)) from None
    return parse_sfu_entry(value)
