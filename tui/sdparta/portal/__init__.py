"""The embedded Skynet-API-compatible portal (``sdparta portal``).

This module stays import-light (no aiohttp): the CLI uses it to declare the portal's limit flags.
"""

from __future__ import annotations

import argparse
from typing import Any

#: ``sdparta portal`` limit flags: (flag, PortalOptions field, type, scale to the field's unit, help).
#: Defaults come from PortalOptions (None here = not given, the option's default applies).
LIMIT_FLAGS: tuple[tuple[str, str, type, float, str], ...] = (
    ("--max-connections", "max_connections", int, 1, "open TCP connections in all (default: fd limit - 64)"),
    ("--max-connections-per-client", "max_connections_per_client", int, 1,
     "open TCP connections per client IP (IPv6: per /64) (default 256)"),
    ("--header-timeout-s", "header_timeout_s", float, 1,
     "seconds for a request head to arrive; also the idle keep-alive limit (default 30)"),
    ("--body-timeout-s", "body_timeout_s", float, 1, "seconds for a request body to arrive (default 60)"),
    ("--max-sockets-per-client", "max_sockets_per_client", int, 1, "push websockets per client (default 128)"),
    ("--max-subscriptions-per-socket", "max_subscriptions_per_socket", int, 1,
     "registry slots one push websocket may watch (default 256)"),
    ("--upload-rate-kb", "upload_rate_bytes_s", float, 1024, "skyfile upload KiB/s per client (default 2048)"),
    ("--upload-burst-mb", "upload_burst_bytes", float, 1024 * 1024,
     "skyfile upload burst in MiB per client (default 32)"),
    ("--client-quota-mb", "client_quota_bytes", float, 1024 * 1024,
     "one client's share of the skyfile quota in MiB (default 64)"),
    ("--registry-inserts-per-s", "registry_insert_rate", float, 1,
     "new registry entries per second per client (default 2; updates are not limited)"),
    ("--registry-insert-burst", "registry_insert_burst", float, 1,
     "new registry entries one client may create at once (default 1000)"),
    ("--registry-ttl-days", "registry_ttl_s", float, 86400,
     "registry entries not written for this many days expire (default 30)"),
)


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """The limit flags of ``sdparta portal`` (docs/portal.md explains each)."""
    group = parser.add_argument_group("limits per client (see docs/portal.md)")
    for flag, field, kind, _scale, help_text in LIMIT_FLAGS:
        group.add_argument(flag, dest=f"limit_{field}", type=kind, default=None, metavar="N", help=help_text)


def limits_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """PortalOptions overrides for the limit flags that were given."""
    limits: dict[str, Any] = {}
    for _flag, field, kind, scale, _help in LIMIT_FLAGS:
        value = getattr(args, f"limit_{field}", None)
        if value is not None:
            limits[field] = kind(value * scale) if kind is int else value * scale
    return limits
