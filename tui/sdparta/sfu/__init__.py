"""Clients for an existing SFU (Janus Gateway): the API session, VideoRoom, AudioBridge, and the
room settings' SFU entry. No engine, no UI: the engine builds on this (docs/janus.md)."""

from sdparta.sfu.errors import (
    JanusError,
    JanusProtocolError,
    JanusRequestError,
    JanusTimeout,
    NoSuchRoom,
    RoomFull,
    SessionLost,
    SfuSettingsError,
    SfuUnreachable,
    WrongPin,
)
from sdparta.sfu.settings import SfuEntry, parse_sfu_entry, parse_sfu_json

__all__ = ["JanusError", "JanusProtocolError", "JanusRequestError", "JanusTimeout", "NoSuchRoom", "RoomFull",
           "SessionLost", "SfuEntry", "SfuSettingsError", "SfuUnreachable", "WrongPin", "parse_sfu_entry",
           "parse_sfu_json"]
