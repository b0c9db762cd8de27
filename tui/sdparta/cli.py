"""Command-line entry point: argument parsing only; every command lives in its own layer."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from sdparta import __version__


def _add_portal_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("portal", help="run a Skynet-API-compatible portal (registry + skyfiles)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for a LAN/VPS)")
    p.add_argument("--port", type=int, default=8787, help="TCP port (0 picks a free one)")
    p.add_argument("--data", default=None, help="SQLite file (default: in the user data dir)")
    p.add_argument("--no-subscription", action="store_true",
                   help="offer only the plain API (no registry subscription websocket)")
    p.add_argument("--max-blob-mb", type=float, default=4.0, help="largest skyfile accepted")
    p.add_argument("--quota-mb", type=float, default=1024.0, help="total skyfile storage")
    p.add_argument("--blob-ttl-hours", type=float, default=24.0, help="skyfiles older than this expire")
    from sdparta.portal import add_limit_arguments

    add_limit_arguments(p)


def _add_skydb_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("skydb", help="read/write SkyDB JSON like skynet-js db.getJSON/setJSON")
    ss = p.add_subparsers(dest="skydb_command", required=True)
    for name in ("get", "set"):
        q = ss.add_parser(name)
        q.add_argument("--portal", action="append", required=True, help="portal URL (repeatable)")
        q.add_argument("--seed", required=True, help="seed for genKeyPairFromSeed")
        q.add_argument("key", help="data key")
        if name == "set":
            q.add_argument("json", help="JSON value to store")


def _add_call_options(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that joins a room."""
    p.add_argument("--portal", action="append", default=None, help="portal URL (repeatable)")
    p.add_argument("--password", default="", help="room password (part of the room's key)")
    p.add_argument("--name", default=None, help="display name")
    p.add_argument("--identity", default=None, help="identity key file")
    p.add_argument("--stun", action="append", default=None, help="STUN server URL (repeatable)")
    p.add_argument("--turn", action="append", default=None, help="TURN server URL (repeatable)")
    p.add_argument("--turn-user", default=None, help="TURN username")
    p.add_argument("--turn-password", default=None, help="TURN password")
    p.add_argument("--relay-only", action="store_true", help="use only TURN relay candidates")
    p.add_argument("--share-turn", action="store_true",
                   help="share your TURN relay (with its credentials) with everyone who has the room password")
    p.add_argument("--opus-bitrate", type=int, default=None, help="Opus bitrate in bit/s")
    p.add_argument("--opus-channels", type=int, choices=(1, 2), default=None, help="Opus channels")
    p.add_argument("--opus-frame-ms", type=int, choices=(20, 40, 60), default=None,
                   help="Opus packet duration (default: 20, or 60 with more than 3 others: fewer packets)")
    p.add_argument("--audio-only", action="store_true", help="send no video at all")
    p.add_argument("--connect-timeout", type=float, default=None, help="seconds before a pair is failed")
    p.add_argument("--no-push", action="store_true", help="poll even if the portal offers push")


def _add_bot_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bot", help="join a room headless, play sources, write a JSON report")
    p.add_argument("room")
    _add_call_options(p)
    p.add_argument("--video", default="pattern", help="pattern | camera | none")
    p.add_argument("--audio", default="tone:440", help="tone:HZ | mic | none")
    p.add_argument("--record-audio", default=None, help="write what is heard to this WAV file")
    p.add_argument("--duration", type=float, default=None, help="leave after S seconds")
    p.add_argument("--report", default=None, help="write the JSON report here (also updated live)")
    p.add_argument("--chat", default=None, help="send TEXT to each participant once it connects")


def _add_join_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("join", help="open the terminal app in a room")
    p.add_argument("room")
    _add_call_options(p)
    p.add_argument("--video-mode", choices=("truecolor", "256", "mono"), default=None, help="video rendering")
    p.add_argument("--fps", type=int, default=None, help="video tile frames per second")
    p.add_argument("--video", default="camera", help="camera | pattern | none")
    p.add_argument("--audio", default="mic", help="mic | tone:HZ | none")
    p.add_argument("--audio-out", default="device", help="device | none | FILE.wav")


def _add_demo_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="a local portal, two bots and the app: a live call in seconds")
    p.add_argument("--video-mode", choices=("truecolor", "256", "mono"), default=None)
    p.add_argument("--fps", type=int, default=None)


def _add_doctor_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check portals, STUN/TURN and the NAT: will calls connect, and the fix")
    p.add_argument("--portal", action="append", default=None, help="portal URL (repeatable)")
    p.add_argument("--stun", action="append", default=None, help="STUN server URL (repeatable)")
    p.add_argument("--turn", action="append", default=None, help="TURN server URL (repeatable)")
    p.add_argument("--turn-user", default=None, help="TURN username")
    p.add_argument("--turn-password", default=None, help="TURN password")
    p.add_argument("--relay-only", action="store_true", help="check as a call with --relay-only would connect")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each server")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")


def _add_config_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="show the effective settings and where each came from")
    p.add_argument("--show", action="store_true", default=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sdparta", description=__doc__)
    parser.add_argument("--version", action="version", version=f"sdparta {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_portal_parser(sub)
    _add_skydb_parser(sub)
    _add_bot_parser(sub)
    _add_join_parser(sub)
    _add_demo_parser(sub)
    _add_doctor_parser(sub)
    _add_config_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ValueError as exc:  # bad option values (a portal URL, a room name…): say what, no traceback
        print(f"sdparta {args.command}: {exc}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "portal":
        from sdparta.portal import limits_from_args
        from sdparta.portal.server import run_portal

        return run_portal(
            host=args.host,
            port=args.port,
            data=args.data,
            subscription=not args.no_subscription,
            max_blob_bytes=int(args.max_blob_mb * 1024 * 1024),
            quota_bytes=int(args.quota_mb * 1024 * 1024),
            blob_ttl_s=args.blob_ttl_hours * 3600,
            limits=limits_from_args(args),
        )
    if args.command == "skydb":
        from sdparta.store import skydb

        if args.skydb_command == "get":
            return skydb.cli_get(args.portal, args.seed, args.key)
        return skydb.cli_set(args.portal, args.seed, args.key, args.json)
    if args.command == "bot":
        from sdparta.bot import run_bot

        return run_bot(args)
    if args.command == "join":
        return _join(args)
    if args.command == "demo":
        from sdparta.demo import run_demo

        extra = []
        if args.video_mode:
            extra += ["--video-mode", args.video_mode]
        if args.fps:
            extra += ["--fps", str(args.fps)]
        return run_demo(extra)
    if args.command == "doctor":
        return _doctor(args)
    if args.command == "config":
        from sdparta.config import ConfigError, format_settings, load_settings

        try:
            print(format_settings(load_settings()))
        except ConfigError as exc:
            print(f"config error: {exc}", file=sys.stderr)
            return 2
        return 0
    print(f"unknown command {args.command}", file=sys.stderr)
    return 2


def _network_overrides(args: argparse.Namespace) -> dict[str, object]:
    """Portals, STUN/TURN and --relay-only from the command line (None: keep the config's)."""
    overrides: dict[str, object] = {"portals": args.portal, "stun": args.stun,
                                    "relay_only": True if args.relay_only else None}
    if args.turn:
        overrides["turn"] = [{"url": url, "username": args.turn_user or "", "password": args.turn_password or ""}
                             for url in args.turn]
    return overrides


def _doctor(args: argparse.Namespace) -> int:
    from sdparta.config import ConfigError, load_settings
    from sdparta.doctor import TurnCredential, run_doctor

    try:
        settings = load_settings(_network_overrides(args))
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    turn = [TurnCredential(t["url"], t.get("username") or None, t.get("password") or None) for t in settings["turn"]]
    return run_doctor(list(settings["portals"]), list(settings["stun"]), turn, relay_only=settings["relay_only"],
                      as_json=args.json, timeout=args.timeout)


def _join(args: argparse.Namespace) -> int:
    """Settings (defaults < config file < flags) → a Call → the app."""
    from aiortc import RTCIceServer

    from sdparta.config import ConfigError, identity_path, load_settings
    from sdparta.engine.call import Call, CallConfig

    overrides = {**_network_overrides(args), "name": args.name, "video_mode": args.video_mode, "fps": args.fps,
                 "opus_bitrate": args.opus_bitrate, "opus_channels": args.opus_channels,
                 "connect_timeout": args.connect_timeout, "audio_only": True if args.audio_only else None}
    try:
        settings = load_settings(overrides)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    ice = [RTCIceServer(urls=url) for url in settings["stun"]]
    ice += [RTCIceServer(urls=t["url"], username=t.get("username"), credential=t.get("password"))
            for t in settings["turn"]]
    config = CallConfig(
        room=args.room, portals=list(settings["portals"]), password=args.password, name=settings["name"],
        identity_path=Path(args.identity) if args.identity else identity_path(),
        video="none" if settings["audio_only"] else args.video, audio=args.audio, audio_out=args.audio_out,
        audio_only=settings["audio_only"], opus_bitrate=settings["opus_bitrate"],
        opus_channels=settings["opus_channels"], ice_servers=ice, relay_only=settings["relay_only"],
        connect_timeout=settings["connect_timeout"], push=not args.no_push, share_turn=args.share_turn,
        opus_frame_ms=args.opus_frame_ms,
    )
    from sdparta.ui import run_join_app

    return run_join_app(Call(config), video_mode=settings["video_mode"], fps=settings["fps"])


if __name__ == "__main__":
    raise SystemExit(main())
