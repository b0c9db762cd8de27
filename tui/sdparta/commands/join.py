"""``sdparta join``: settings (defaults < config file < flags) → a Call → the terminal app."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from sdparta.commands.options import call_flags
from sdparta.config import CallFlags, ConfigError, call_config


def run(args: argparse.Namespace) -> int:
    return join(args.room, call_flags(args, audio_out=args.audio_out))


def join(room: str, flags: CallFlags) -> int:
    """Open the app in ``room`` (also what ``sdparta demo`` runs); 2 = a bad setting."""
    try:
        config, settings = call_config(room, flags)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    # The user's own identity file: a second terminal running at the same time takes identity-2.key
    # (and so on) instead of showing the same fingerprint; a file named with --identity is used as is.
    config = replace(config, identity_profiles=not flags.identity)
    from sdparta.engine.call import Call
    from sdparta.ui import run_join_app

    return run_join_app(Call(config), video_mode=settings["video_mode"], fps=settings["fps"])
