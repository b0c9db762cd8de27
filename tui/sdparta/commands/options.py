"""The options every command that joins a room shares: declared here, checked here (right after
parsing, before anything starts) and read here (into CallFlags)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sdparta.config import CHECKS, CallFlags, check_ice_url, check_room_name, positive_seconds


def add_call_options(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that joins a room."""
    p.add_argument("--portal", action="append", default=None, help="portal URL (repeatable)")
    p.add_argument("--relay", action="append", default=None, metavar="URL",
                   help="Nostr relay, wss://HOST[/PATH] (repeatable; with --portal too: both carry the room). "
                        "With neither, 3 built-in public relays are used")
    p.add_argument("--password", default="", help="room password (part of the room's key)")
    p.add_argument("--name", default=None, help="display name")
    p.add_argument("--identity", default=None, help="identity key file")
    add_network_options(p)
    p.add_argument("--share-turn", action="store_true",
                   help="share your TURN relay (with its credentials) with everyone who has the room password")
    p.add_argument("--share-sfu", default=None, metavar="URL",
                   help="name a Janus SFU (wss://HOST[:PORT]/PATH, with --sfu-room) in the room's sealed settings: "
                        "the room moves onto it once it reaches --sfu-at members (media is decrypted there)")
    p.add_argument("--sfu-room", type=int, default=None, metavar="N", help="the Janus room of --share-sfu")
    p.add_argument("--sfu-pin", default=None, metavar="PIN", help="that Janus room's PIN, if it has one")
    p.add_argument("--sfu-plugin", choices=("videoroom", "audiobridge"), default=None,
                   help="Janus plugin of --share-sfu: videoroom (default) or audiobridge (an audio-only room: "
                        "one stream up, one mix down)")
    p.add_argument("--sfu-at", type=int, default=None, metavar="N",
                   help="move onto the room's SFU at N members, us included (default 4; 0: never)")
    p.add_argument("--sfu-hold", type=float, default=None, metavar="S",
                   help="back to the mesh only after the room stayed small for S seconds (default 30)")
    p.add_argument("--opus-bitrate", type=int, default=None, help="Opus bitrate in bit/s")
    p.add_argument("--opus-channels", type=int, choices=(1, 2), default=None, help="Opus channels")
    p.add_argument("--opus-frame-ms", type=int, choices=(20, 40, 60), default=None,
                   help="Opus packet duration (default: 20, or 60 with more than 3 others: fewer packets)")
    p.add_argument("--audio-only", action="store_true", help="send no video at all")
    p.add_argument("--connect-timeout", type=float, default=None, help="seconds before a pair is failed")
    p.add_argument("--no-push", action="store_true", help="poll even if the portal offers push")


def add_network_options(p: argparse.ArgumentParser, relay_only_help: str = "use only TURN relay candidates") -> None:
    """STUN/TURN servers and --relay-only (``join``, ``bot`` and ``doctor``)."""
    p.add_argument("--stun", action="append", default=None, metavar="URL",
                   help="STUN server, stun:HOST[:PORT] (repeatable)")
    p.add_argument("--turn", action="append", default=None, metavar="URL",
                   help="TURN server, turn:HOST[:PORT][?transport=udp|tcp] or turns:HOST[:PORT] for TLS "
                        "(repeatable; needs --turn-user and --turn-password)")
    p.add_argument("--turn-user", default=None, help="TURN username (for the --turn servers)")
    p.add_argument("--turn-password", default=None, help="TURN password (for the --turn servers)")
    p.add_argument("--relay-only", action="store_true", help=relay_only_help)


def network_flags(args: argparse.Namespace) -> CallFlags:
    """``--portal``, STUN/TURN and ``--relay-only`` as CallFlags (``doctor``)."""
    return CallFlags(portals=args.portal, relays=getattr(args, "relay", None), stun=args.stun, turn=args.turn,
                     turn_user=args.turn_user, turn_password=args.turn_password, relay_only=args.relay_only)


def call_flags(args: argparse.Namespace, *, audio_out: str) -> CallFlags:
    """The shared call options plus ``--video``/``--audio`` of a ``join`` or ``bot`` command line."""
    return CallFlags(
        portals=args.portal, relays=args.relay, password=args.password, name=args.name, identity=args.identity,
        stun=args.stun,
        turn=args.turn, turn_user=args.turn_user, turn_password=args.turn_password, relay_only=args.relay_only,
        share_turn=args.share_turn, share_sfu=args.share_sfu, sfu_room=args.sfu_room, sfu_pin=args.sfu_pin,
        sfu_plugin=args.sfu_plugin, sfu_at=args.sfu_at, sfu_hold=args.sfu_hold,
        opus_bitrate=args.opus_bitrate, opus_channels=args.opus_channels,
        opus_frame_ms=args.opus_frame_ms, audio_only=args.audio_only, connect_timeout=args.connect_timeout,
        push=not args.no_push, video=args.video, audio=args.audio, audio_out=audio_out,
        video_mode=getattr(args, "video_mode", None), fps=getattr(args, "fps", None),
    )


# ------------------------------------------------------------------------------- checks
# Each raises ValueError with one line naming the flag and the fix; cli.main prints it as
# "sdparta COMMAND: …" and exits 2 before a command runs. The values are checked with the same
# functions the config file's are (config.CHECKS) and the media specs with the parsers that open them.
def _setting(flag: str, key: str, value: Any) -> None:
    """A flag that is also a setting: the setting's own check, the flag's name in the message."""
    if value is not None:
        CHECKS[key](flag, value)


def _spec(flag: str, value: str, parse: Any) -> Any:
    try:
        return parse(value)
    except ValueError as exc:
        raise ValueError(f"{flag} {value}: {exc}") from None


def check_portal_args(args: argparse.Namespace) -> None:
    """``--portal`` and ``--relay`` URLs (every command that has the flags)."""
    _setting("--portal", "portals", args.portal)
    _setting("--relay", "relays", getattr(args, "relay", None))


def check_network_args(args: argparse.Namespace) -> None:
    """``--portal``, ``--stun``, ``--turn`` with its credentials (``join``, ``bot``, ``doctor``)."""
    check_portal_args(args)
    _setting("--stun", "stun", args.stun)
    for url in args.turn or []:
        try:
            check_ice_url(url, "turn")
        except ValueError as exc:
            raise ValueError(f"--turn: {exc}") from None
    if args.turn and not (args.turn_user and args.turn_password):
        missing = " and ".join(flag for flag, value in (("--turn-user", args.turn_user),
                                                       ("--turn-password", args.turn_password)) if not value)
        raise ValueError(f"--turn needs the TURN server's credentials: add {missing}")
    if not args.turn and (args.turn_user or args.turn_password):
        raise ValueError("--turn-user/--turn-password apply to --turn URLs on the command line: add --turn URL "
                         "(TURN servers from the config file carry their own username and password)")


def check_sfu_args(args: argparse.Namespace) -> None:
    """``--share-sfu URL`` with ``--sfu-room N`` (and ``--sfu-pin``): checked as the room's readers
    will check the entry (sdparta.sfu.settings.parse_sfu_entry, through the setting's check)."""
    _setting("--sfu-at", "sfu_at", args.sfu_at)
    _setting("--sfu-hold", "sfu_hold", args.sfu_hold)
    if args.share_sfu is None:
        if args.sfu_room is not None or args.sfu_pin is not None or args.sfu_plugin is not None:
            raise ValueError("--sfu-room/--sfu-pin/--sfu-plugin describe the SFU of --share-sfu: "
                             "add --share-sfu wss://HOST/janus")
        return
    if args.sfu_room is None:
        raise ValueError(f"--share-sfu {args.share_sfu}: add --sfu-room N (the Janus room everyone joins)")
    entry = {"url": args.share_sfu, "room": args.sfu_room, "pin": args.sfu_pin}
    if args.sfu_plugin is not None:
        entry["plugin"] = args.sfu_plugin
    _setting("--share-sfu", "share_sfu", entry)


def check_call_args(args: argparse.Namespace) -> None:
    """Everything ``join`` and ``bot`` share: the room, the network, codec and source flags."""
    check_room_name(args.room)
    check_network_args(args)
    check_sfu_args(args)
    _setting("--name", "name", args.name)
    _setting("--opus-bitrate", "opus_bitrate", args.opus_bitrate)
    _setting("--connect-timeout", "connect_timeout", args.connect_timeout)
    from sdparta.media import sources  # av and aiortc: imported only for the commands that use them

    _spec("--video", args.video, sources.parse_video_source)
    _spec("--audio", args.audio, sources.parse_audio_source)


def check_app_args(args: argparse.Namespace) -> None:
    """``--fps`` of the app's tiles (``join``, ``demo``); ``--video-mode`` is a choice already."""
    _setting("--fps", "fps", args.fps)


def check_join_args(args: argparse.Namespace) -> None:
    check_call_args(args)
    check_app_args(args)
    from sdparta.media.audio_out import parse_audio_output

    _spec("--audio-out", args.audio_out, parse_audio_output)


def check_bot_args(args: argparse.Namespace) -> None:
    check_call_args(args)
    if args.duration is not None:
        positive_seconds("--duration", args.duration)
    if args.record_audio is not None:
        from sdparta.media.audio_out import parse_audio_output

        if _spec("--record-audio", args.record_audio, parse_audio_output).kind != "wav":
            raise ValueError(f"--record-audio {args.record_audio}: give a FILE.wav to record what the bot hears")
    if args.report is not None and not Path(args.report).expanduser().parent.is_dir():
        raise ValueError(f"--report {args.report}: the directory {Path(args.report).parent} does not exist")


def check_doctor_args(args: argparse.Namespace) -> None:
    check_network_args(args)
    positive_seconds("--timeout", args.timeout)


def check_portal_command_args(args: argparse.Namespace) -> Any:
    """``sdparta portal``'s TLS flags: both of --tls-cert/--tls-key or neither, readable, a
    certificate and its key; returns the TLS setup (or None). ``--tls self-signed`` is made at run."""
    cert, key, mode = getattr(args, "tls_cert", None), getattr(args, "tls_key", None), getattr(args, "tls", None)
    if (cert is None) != (key is None):
        raise ValueError("--tls-cert and --tls-key go together: give both (or --tls self-signed)")
    if cert is not None and mode is not None:
        raise ValueError("--tls self-signed and --tls-cert/--tls-key exclude each other: give one")
    if cert is None:
        return None
    from sdparta.portal.tls import load_pair

    return load_pair(cert, key)
