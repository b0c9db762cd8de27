"""What can go wrong talking to a Janus SFU, as exception types the engine can tell apart.

Every message says what happened in words a participant can act on ("wrong PIN for room 1234 on
janus @ sfu.example"); ``code`` keeps Janus' own error code where there was one.
"""

from __future__ import annotations

__all__ = [
    "JanusError",
    "JanusProtocolError",
    "JanusRequestError",
    "JanusTimeout",
    "NoSuchRoom",
    "RoomFull",
    "SessionLost",
    "SfuSettingsError",
    "SfuUnreachable",
    "WrongPin",
]


class JanusError(Exception):
    """Anything that went wrong with the SFU; ``code`` is Janus' error code when it sent one."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class SfuSettingsError(ValueError):
    """A room's SFU entry is malformed (wrong type, oversized, bad URL…)."""


class SfuUnreachable(JanusError):
    """No WebSocket to Janus could be opened (refused, no route, TLS failure, not a Janus)."""


class JanusTimeout(JanusError):
    """Janus did not answer a request in time (the session may still be alive)."""


class SessionLost(JanusError):
    """The Janus session is gone: the connection dropped, Janus restarted, or the session timed out."""


class JanusProtocolError(JanusError):
    """Janus sent something that is not the Janus API (malformed, oversized, wrong types)."""


class JanusRequestError(JanusError):
    """Janus or its plugin refused a request (``code`` and ``reason`` as Janus sent them)."""

    def __init__(self, message: str, code: int | None = None, reason: str = "") -> None:
        super().__init__(message, code)
        self.reason = reason


class NoSuchRoom(JanusRequestError):
    """The room named in the settings does not exist on that Janus."""


class WrongPin(JanusRequestError):
    """The room has a PIN and the one given is wrong (or missing)."""


class RoomFull(JanusRequestError):
    """The room has reached its maximum number of publishers."""
