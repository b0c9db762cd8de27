"""``sdparta config --show``: the effective settings and where each came from."""

from __future__ import annotations

import argparse
import sys

from sdparta.config import ConfigError, format_settings, load_settings


def run(args: argparse.Namespace) -> int:
    try:
        print(format_settings(load_settings()))
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    return 0
