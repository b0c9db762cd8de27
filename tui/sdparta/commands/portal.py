"""``sdparta portal``: serve the Skynet-API-compatible portal until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
from typing import Any

from sdparta.portal import limits_from_args

MIB = 1024 * 1024


def run(args: argparse.Namespace) -> int:
    """Options not given keep the portal's own defaults (``run_portal``, ``PortalOptions``)."""
    import sys

    from sdparta.commands.options import check_portal_command_args
    from sdparta.portal.server import DEFAULT_HOST, run_portal

    try:  # also belongs in cli.CHECKS (it runs before anything starts either way)
        tls = check_portal_command_args(args)
        if getattr(args, "tls", None) == "self-signed":
            from sdparta.portal.tls import self_signed

            tls = self_signed(args.host if args.host is not None else DEFAULT_HOST)
    except ValueError as exc:
        print(f"sdparta portal: {exc}", file=sys.stderr)
        return 2

    given: dict[str, Any] = {}
    if args.host is not None:
        given["host"] = args.host
    if args.port is not None:
        given["port"] = args.port
    if args.max_blob_mb is not None:
        given["max_blob_bytes"] = int(args.max_blob_mb * MIB)
    if args.quota_mb is not None:
        given["quota_bytes"] = int(args.quota_mb * MIB)
    if args.blob_ttl_hours is not None:
        given["blob_ttl_s"] = args.blob_ttl_hours * 3600
    if getattr(args, "web_dir", None) is not None:
        given["web_dir"] = args.web_dir
    return run_portal(data=args.data, subscription=not args.no_subscription, limits=limits_from_args(args),
                      tls=tls, **given)
