"""A RoomEvents that records what a room session told its owner, for the room-level tests."""

from __future__ import annotations

from typing import Any

from sdparta.room.events import RoomEvents
from sdparta.room.wire import Member, RoomSettings


class Recorder(RoomEvents):
    """Members seen and gone (by name), messages with the network that delivered each, settings."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.gone: list[tuple[str, str]] = []
        self.messages: list[dict[str, Any]] = []
        self.via: list[str] = []
        self.settings_seen: list[RoomSettings] = []

    def member_seen(self, member: Member) -> None:
        self.seen.append(member.name)

    def member_gone(self, member: Member, status: str, reason: str) -> None:
        self.gone.append((member.name, status))

    def message(self, member: Member, body: dict[str, Any], via: str = "") -> None:
        self.messages.append(body)
        self.via.append(via)

    def settings(self, settings: RoomSettings) -> None:
        self.settings_seen.append(settings)
