"""Command-line entry point: argument parsing only; every command lives in its own layer."""

# (the docstring above is `sdparta --help`'s description; the commands are sdparta.commands.<name>)

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from sdparta import __version__
from sdparta.commands.options import add_call_options, add_network_options
from sdparta.config import VIDEO_MODES, CallFlags

#: every command; each is the module sdparta.commands.<name> with run(args) -> exit code
COMMANDS = ("portal", "skydb", "bot", "join", "demo", "doctor", "config")


def _add_portal_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("portal", help="run a Skynet-API-compatible portal (registry + skyfiles)")
    # no defaults here: an option not given keeps the portal's own (run_portal, PortalOptions)
    p.add_argument("--host", default=None, help="address to listen on (0.0.0.0 for a LAN/VPS)")
    p.add_argument("--port", type=int, default=None, help="TCP port (0 picks a free one)")
    p.add_argument("--data", default=None, help="SQLite file (default: in the user data dir)")
    p.add_argument("--no-subscription", action="store_true",
                   help="offer only the plain API (no registry subscription websocket)")
    p.add_argument("--max-blob-mb", type=float, default=None, help="largest skyfile accepted")
    p.add_argument("--quota-mb", type=float, default=None, help="total skyfile storage")
    p.add_argument("--blob-ttl-hours", type=float, default=None, help="skyfiles older than this expire")
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


def _add_bot_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bot", help="join a room headless, play sources, write a JSON report")
    p.add_argument("room")
    add_call_options(p)
    p.add_argument("--video", default="pattern", help="pattern | camera | none")
    p.add_argument("--audio", default="tone:440", help="tone:HZ | mic | none")
    p.add_argument("--record-audio", default=None, help="write what is heard to this WAV file")
    p.add_argument("--duration", type=float, default=None, help="leave after S seconds")
    p.add_argument("--report", default=None, help="write the JSON report here (also updated live)")
    p.add_argument("--chat", default=None, help="send TEXT to each participant once it connects")


def _add_join_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("join", help="open the terminal app in a room")
    p.add_argument("room")
    add_call_options(p)
    p.add_argument("--video-mode", choices=VIDEO_MODES, default=None, help="video rendering")
    p.add_argument("--fps", type=int, default=None, help="video tile frames per second")
    p.add_argument("--video", default=CallFlags.video, help="camera | pattern | none")
    p.add_argument("--audio", default=CallFlags.audio, help="mic | tone:HZ | none")
    p.add_argument("--audio-out", default=CallFlags.audio_out, help="device | none | FILE.wav")


def _add_demo_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="a local portal, two bots and the app: a live call in seconds")
    p.add_argument("--video-mode", choices=VIDEO_MODES, default=None)
    p.add_argument("--fps", type=int, default=None)


def _add_doctor_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check portals, STUN/TURN and the NAT: will calls connect, and the fix")
    p.add_argument("--portal", action="append", default=None, help="portal URL (repeatable)")
    add_network_options(p, relay_only_help="check as a call with --relay-only would connect")
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
    """Run ``sdparta.commands.<command>.run(args)`` (imported only when it runs: startup stays fast)."""
    if args.command not in COMMANDS:
        print(f"unknown command {args.command}", file=sys.stderr)
        return 2
    command = importlib.import_module(f"sdparta.commands.{args.command}")
    result: int = command.run(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
