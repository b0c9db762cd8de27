"""The embedded Skynet-API-compatible portal (``sdparta portal``).

This module stays import-light (no aiohttp): the CLI uses it to declare the portal's limit flags.
The server itself is ``sdparta.portal.server`` (start and run; it lists the other modules).
"""

from __future__ import annotations

import argparse
from typing import Any

from sdparta.portal.options import FD_HEADROOM, PortalOptions

#: ``sdparta portal`` limit flags: (flag, PortalOptions field, type, scale to the field's unit, help).
#: Defaults come from PortalOptions (None here = not given, the option's default applies); a help
#: text's ``{default}`` is that default in the flag's unit.
LIMIT_FLAGS: tuple[tuple[str, str, type, float, str], ...] = (
    ("--max-connections", "max_connections", int, 1,
     f"open TCP connections in all (default: fd limit - {FD_HEADROOM})"),
    ("--max-connections-per-client", "max_connections_per_client", int, 1,
     "open TCP connections per client IP (IPv6: per /64) (default {default})"),
    ("--header-timeout-s", "header_timeout_s", float, 1,
     "seconds for a request head to arrive; also the idle keep-alive limit (default {default})"),
    ("--body-timeout-s", "body_timeout_s", float, 1, "seconds for a request body to arrive (default {default})"),
    ("--max-sockets-per-client", "max_sockets_per_client", int, 1, "push websockets per client (default {default})"),
    ("--max-subscriptions-per-socket", "max_subscriptions_per_socket", int, 1,
     "registry slots one push websocket may watch (default {default})"),
    ("--upload-rate-kb", "upload_rate_bytes_s", float, 1024, "skyfile upload KiB/s per client (default {default})"),
    ("--upload-burst-mb", "upload_burst_bytes", float, 1024 * 1024,
     "skyfile upload burst in MiB per client (default {default})"),
    ("--client-quota-mb", "client_quota_bytes", float, 1024 * 1024,
     "one client's share of the skyfile quota in MiB (default {default})"),
    ("--registry-inserts-per-s", "registry_insert_rate", float, 1,
     "new registry entries per second per client (default {default}; updates are not limited)"),
    ("--registry-insert-burst", "registry_insert_burst", float, 1,
     "new registry entries one client may create at once (default {default})"),
    ("--registry-ttl-days", "registry_ttl_s", float, 86400,
     "registry entries not written for this many days expire (default {default})"),
)


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """The limit flags of ``sdparta portal`` (docs/portal.md explains each)."""
    group = parser.add_argument_group("limits per client (see docs/portal.md)")
    for flag, field, kind, scale, help_text in LIMIT_FLAGS:
        default = f"{getattr(PortalOptions, field) / scale:g}"
        group.add_argument(flag, dest=f"limit_{field}", type=kind, default=None, metavar="N",
                           help=help_text.format(default=default))
    group.add_argument("--trusted-proxy", dest="limit_trusted_proxies", action="append", default=None,
                       metavar="ADDR", help="a reverse proxy in front of the portal (repeatable): limits then "
                       "apply to the address it appends to X-Forwarded-For, not to the proxy")


def web_dir_arg(value: str) -> str:
    """``--web-dir DIR``, checked while parsing (a mistake is one line and exit 2, nothing starts):
    a readable directory with an index.html that the portal can serve and build into its single-file
    page (the same loading and build the start does)."""
    from pathlib import Path

    path = Path(value).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{value} is not a directory")
    if not (path / "index.html").is_file():
        raise argparse.ArgumentTypeError(f"{value} has no index.html (the page /web/ serves)")
    from sdparta.portal.app_build import BuildError, build
    from sdparta.portal.webapp import WebDirError, load_web_dir

    try:
        build(load_web_dir(path).raw)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"{value}: cannot read {exc.filename or ''} "
                                         f"({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise argparse.ArgumentTypeError(f"{value}: index.html or a module is not UTF-8") from None
    except (WebDirError, BuildError) as exc:
        raise argparse.ArgumentTypeError(f"{value}: {exc}") from None
    return str(path)


def add_web_arguments(parser: argparse.ArgumentParser) -> None:
    """The browser page's flags (``sdparta portal``; docs/portal.md): --web-dir is checked here
    (web_dir_arg), the TLS flags by ``commands.options.check_portal_command_args`` (cli.CHECKS)."""
    group = parser.add_argument_group("browser page and TLS")
    group.add_argument("--web-dir", default=None, metavar="DIR", type=web_dir_arg,
                       help="serve this directory at /web/ instead of the packaged page (development)")
    group.add_argument("--tls-cert", default=None, metavar="FILE", help="serve https with this PEM certificate (chain)")
    group.add_argument("--tls-key", default=None, metavar="FILE", help="the PEM private key of --tls-cert")
    group.add_argument("--tls", default=None, choices=("self-signed",),
                       help="self-signed: make (once) and keep a certificate in the user state dir; prints "
                            "its SHA-256 fingerprint")


def limits_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """PortalOptions overrides for the limit flags that were given."""
    limits: dict[str, Any] = {}
    for _flag, field, kind, scale, _help in LIMIT_FLAGS:
        value = getattr(args, f"limit_{field}", None)
        if value is not None:
            limits[field] = kind(value * scale) if kind is int else value * scale
    proxies = getattr(args, "limit_trusted_proxies", None)
    if proxies:
        limits["trusted_proxies"] = tuple(proxies)
    return limits
