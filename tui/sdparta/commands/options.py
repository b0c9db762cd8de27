"""The options every command that joins a room shares: declared here, read here (into CallFlags)."""

from __future__ import annotations

import argparse

from sdparta.config import CallFlags


def add_call_options(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that joins a room."""
    p.add_argument("--portal", action="append", default=None, help="portal URL (repeatable)")
    p.add_argument("--password", default="", help="room password (part of the room's key)")
    p.add_argument("--name", default=None, help="display name")
    p.add_argument("--identity", default=None, help="identity key file")
    add_network_options(p)
    p.add_argument("--share-turn", action="store_true",
                   help="share your TURN relay (with its credentials) with everyone who has the room password")
    p.add_argument("--opus-bitrate", type=int, default=None, help="Opus bitrate in bit/s")
    p.add_argument("--opus-channels", type=int, choices=(1, 2), default=None, help="Opus channels")
    p.add_argument("--opus-frame-ms", type=int, choices=(20, 40, 60), default=None,
                   help="Opus packet duration (default: 20, or 60 with more than 3 others: fewer packets)")
    p.add_argument("--audio-only", action="store_true", help="send no video at all")
    p.add_argument("--connect-timeout", type=float, default=None, help="seconds before a pair is failed")
    p.add_argument("--no-push", action="store_true", help="poll even if the portal offers push")


def add_network_options(p: argparse.ArgumentParser, relay_only_help: str = "use only TURN relay candidates") -> None:
    """STUN/TURN servers and --relay-only (``join``, ``bot`` and ``doctor``)."""
    p.add_argument("--stun", action="append", default=None, help="STUN server URL (repeatable)")
    p.add_argument("--turn", action="append", default=None, help="TURN server URL (repeatable)")
    p.add_argument("--turn-user", default=None, help="TURN username")
    p.add_argument("--turn-password", default=None, help="TURN password")
    p.add_argument("--relay-only", action="store_true", help=relay_only_help)


def network_flags(args: argparse.Namespace) -> CallFlags:
    """``--portal``, STUN/TURN and ``--relay-only`` as CallFlags (``doctor``)."""
    return CallFlags(portals=args.portal, stun=args.stun, turn=args.turn, turn_user=args.turn_user,
                     turn_password=args.turn_password, relay_only=args.relay_only)


def call_flags(args: argparse.Namespace, *, audio_out: str) -> CallFlags:
    """The shared call options plus ``--video``/``--audio`` of a ``join`` or ``bot`` command line."""
    return CallFlags(
        portals=args.portal, password=args.password, name=args.name, identity=args.identity, stun=args.stun,
        turn=args.turn, turn_user=args.turn_user, turn_password=args.turn_password, relay_only=args.relay_only,
        share_turn=args.share_turn, opus_bitrate=args.opus_bitrate, opus_channels=args.opus_channels,
        opus_frame_ms=args.opus_frame_ms, audio_only=args.audio_only, connect_timeout=args.connect_timeout,
        push=not args.no_push, video=args.video, audio=args.audio, audio_out=audio_out,
        video_mode=getattr(args, "video_mode", None), fps=getattr(args, "fps", None),
    )
