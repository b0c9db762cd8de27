"""Command-line entry point: argument parsing and checking only; each command is the module
sdparta.commands.<name>. Every mistake in the options is one line on stderr and exit code 2, before
anything starts."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from sdparta import __version__
from sdparta.commands import options
from sdparta.commands.options import add_call_options, add_network_options
from sdparta.config import VIDEO_MODES, CallFlags

DESCRIPTION = "sdparta: video calls in the terminal, peer to peer (WebRTC), no call server."
EPILOG = ("Try it: `sdparta demo` (a live call with two bots in seconds, nothing to set up), then "
          "`sdparta join ROOM` and have a friend join the same ROOM. `sdparta COMMAND --help` for each.")

#: every command; each is the module sdparta.commands.<name> with run(args) -> exit code
COMMANDS = ("portal", "skydb", "bot", "join", "demo", "doctor", "config")


class Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line (``sdparta join: argument --fps: …``), not usage + error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message.removeprefix('argument ')} (see {self.prog} --help)\n")


def _command(sub: argparse._SubParsersAction, name: str, summary: str) -> argparse.ArgumentParser:
    """A command's parser: ``summary`` in ``sdparta --help`` and atop ``sdparta NAME --help``."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=summary, description=summary)
    return parser


def _add_portal_parser(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "portal", "run a Skynet-API-compatible portal (registry + skyfiles)")
    # no defaults here: an option not given keeps the portal's own (run_portal, PortalOptions)
    p.add_argument("--host", default=None, help="address to listen on (0.0.0.0 for a LAN/VPS)")
    p.add_argument("--port", type=int, default=None, help="TCP port (0 picks a free one)")
    p.add_argument("--data", default=None, help="SQLite file (default: in the user data dir)")
    p.add_argument("--no-subscription", action="store_true",
                   help="offer only the plain API (no registry subscription websocket)")
    p.add_argument("--max-blob-mb", type=float, default=None, help="largest skyfile accepted")
    p.add_argument("--quota-mb", type=float, default=None, help="total skyfile storage")
    p.add_argument("--blob-ttl-hours", type=float, default=None, help="skyfiles older than this expire")
    from sdparta.portal import add_limit_arguments, add_web_arguments

    add_limit_arguments(p)
    add_web_arguments(p)


def _add_skydb_parser(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "skydb", "read/write SkyDB JSON like skynet-js db.getJSON/setJSON")
    ss = p.add_subparsers(dest="skydb_command", required=True, metavar="get|set", help="what to do")
    for name, summary in (("get", "print the JSON value stored under (seed, key)"),
                          ("set", "store a JSON value under (seed, key)")):
        q = _command(ss, name, summary)
        q.add_argument("--portal", action="append", default=None,
                       help="portal URL (repeatable; default: the portals of the config file)")
        q.add_argument("--seed", required=True, help="seed for genKeyPairFromSeed")
        q.add_argument("key", help="data key")
        if name == "set":
            q.add_argument("json", help="JSON value to store (quote it for the shell)")


def _add_bot_parser(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "bot", "join a room headless, play sources, write a JSON report")
    p.add_argument("room", help="the room's name (everyone in the call uses the same one)")
    add_call_options(p)
    p.add_argument("--video", default="pattern", help="pattern | camera | camera:/dev/videoN | none")
    p.add_argument("--audio", default="tone:440", help="tone:HZ (20–20000) | mic | none")
    p.add_argument("--record-audio", default=None, metavar="FILE.wav",
                   help="write what is heard to this WAV file (its directory must exist)")
    p.add_argument("--duration", type=float, default=None, help="leave after S seconds (> 0)")
    p.add_argument("--report", default=None, help="write the JSON report here (also updated live)")
    p.add_argument("--chat", default=None, help="send TEXT to each participant once it connects")
    p.add_argument("--echo-chat", action="store_true", help="answer chat with 'heard: TEXT' (rate-limited)")


def _add_join_parser(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "join", "open the terminal app in a room")
    p.add_argument("room", help="the room's name (everyone in the call uses the same one)")
    add_call_options(p)
    _add_app_options(p)
    p.add_argument("--video", default=CallFlags.video, help="camera | camera:/dev/videoN | pattern | none")
    p.add_argument("--audio", default=CallFlags.audio, help="mic | tone:HZ (20–20000) | none")
    p.add_argument("--audio-out", default=CallFlags.audio_out,
                   help="device | device:NAME | none | FILE.wav (record what you hear; its directory must exist)")


def _add_app_options(p: argparse.ArgumentParser) -> None:
    """How the app draws video tiles (``join`` and ``demo``)."""
    p.add_argument("--video-mode", choices=VIDEO_MODES, default=None,
                   help="how video tiles are drawn: truecolor, 256 colours or mono (fewer bytes for slow links)")
    p.add_argument("--fps", type=int, default=None, help="video tile frames per second (1–30)")


def _add_demo_parser(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "demo", "a local portal, two bots and the app: a live call in seconds")
    _add_app_options(p)


def _add_doctor_parser(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "doctor", "check portals, relays, STUN/TURN and the NAT: will calls connect, and the fix")
    p.add_argument("--portal", action="append", default=None, help="portal URL (repeatable)")
    p.add_argument("--relay", action="append", default=None, metavar="URL", help="Nostr relay wss://… (repeatable)")
    add_network_options(p, relay_only_help="check as a call with --relay-only would connect")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each server (> 0)")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")


def _add_config_parser(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "config", "show the effective settings and where each came from")
    p.add_argument("--show", action="store_true", default=True,
                   help="print the settings, each with its source (the default; the only action)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="sdparta", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"sdparta {__version__}",
                        help="print the version and exit")
    # not required: a bare `sdparta` prints the help (main), not just "required: command"
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands", help="one of:")
    _add_portal_parser(sub)
    _add_skydb_parser(sub)
    _add_bot_parser(sub)
    _add_join_parser(sub)
    _add_demo_parser(sub)
    _add_doctor_parser(sub)
    _add_config_parser(sub)
    return parser


#: The checks that run right after parsing, per command (commands.options): nothing starts on a mistake.
CHECKS: dict[str, Callable[[argparse.Namespace], None]] = {
    "join": options.check_join_args,
    "bot": options.check_bot_args,
    "demo": options.check_app_args,
    "doctor": options.check_doctor_args,
    "skydb": options.check_portal_args,
    "portal": options.check_portal_command_args,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the command's parser, so the hint is `sdparta COMMAND --help`
        _command_parser(parser, args.command).error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        parser.print_help(sys.stderr)
        print("\nno command given: start with `sdparta demo`", file=sys.stderr)
        return 2
    try:
        check = CHECKS.get(args.command)
        if check is not None:
            check(args)
    except ValueError as exc:
        print(f"sdparta {args.command}: {exc}", file=sys.stderr)
        return 2
    try:
        return _dispatch(args)
    except ValueError as exc:  # bad option values (a portal URL, a room name…): say what, no traceback
        print(f"sdparta {args.command}: {exc}", file=sys.stderr)
        return 2


def _command_parser(parser: argparse.ArgumentParser, command: str | None) -> argparse.ArgumentParser:
    """The parser of ``command`` (``parser`` itself when there is none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            found: argparse.ArgumentParser = action.choices[command]
            return found
    return parser


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
