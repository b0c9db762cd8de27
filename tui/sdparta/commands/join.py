"""``sdparta join``: settings (defaults < config file < flags) → a Call → the terminal app."""

from __future__ import annotations

import argparse
import sys

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
    from sdparta.engine.call import Call
    from sdparta.ui import run_join_app

    return run_join_app(Call(config), video_mode=settings["video_mode"], fps=settings["fps"])
