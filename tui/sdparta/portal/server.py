"""Start and run a portal: ``start_portal`` serves in the running loop (tests, the demo),
``run_portal`` is ``sdparta portal`` (its own loop, until SIGINT/SIGTERM).

The package's modules, by concern: ``app`` (routes and handlers), ``push`` (the subscription
websocket), ``parsing`` / ``responses`` (what clients send and get), ``clients`` (who a client is,
token buckets), ``logs`` (rate-limited log lines), ``options`` (every limit and its default),
``db`` (SQLite).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import sqlite3
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
from aiohttp import web

from sdparta import __version__
from sdparta.portal.app import Portal
from sdparta.portal.app_build import BuildError
from sdparta.portal.db import PortalDB
from sdparta.portal.interfaces import ALL_INTERFACES, lan_addresses, url_host
from sdparta.portal.logs import ServerLog
from sdparta.portal.options import PortalOptions
from sdparta.portal.webapp import WebDirError

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
#: The port ``sdparta portal`` listens on unless told otherwise.
DEFAULT_PORT = 8787


class PortalDataError(Exception):
    """The portal's SQLite file cannot be opened or created."""


@dataclass
class RunningPortal:
    """A portal serving in this process's loop."""

    url: str
    portal: Portal
    runner: web.AppRunner
    sweeper: asyncio.Task[None]

    async def stop(self) -> None:
        self.sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.sweeper
        await self.runner.cleanup()
        self.portal.db.close()


def default_data_path() -> Path:
    """Where the portal keeps its SQLite file unless ``--data`` says otherwise."""
    return Path(platformdirs.user_data_dir("sdparta")) / "portal.sqlite3"


async def start_portal(host: str = DEFAULT_HOST, port: int = 0, data: str | Path | None = None,
                       options: PortalOptions | None = None, ssl_context: Any = None,
                       **overrides: Any) -> RunningPortal:
    """Start serving in the running loop; ``port=0`` picks a free port (see ``.url``).

    ``overrides`` are PortalOptions fields, e.g. ``start_portal(data=p, subscription=False)``.
    """
    opts = dataclasses.replace(options or PortalOptions(), **overrides)
    opts.check()
    path = Path(data) if data else default_data_path()
    try:
        db = PortalDB(path, opts.blob_policy())
    except (OSError, sqlite3.Error) as exc:
        raise PortalDataError(f"cannot open the database {path}: {exc} (choose another --data)") from exc
    portal = Portal(db, opts)
    # lingering_time bounds how long the body of a refused (413) upload is drained and discarded
    # before the connection is closed; the client still gets to read the 413 first. aiohttp's
    # keep-alive timer runs from the connection's start (and each response) until a complete request
    # head, so it is both the header timeout and the idle keep-alive limit. Its connection log goes
    # through ServerLog: one rate-limited line per malformed request, no traceback.
    runner = web.AppRunner(portal.app(), access_log=None, handle_signals=False, shutdown_timeout=2.0,
                           lingering_time=2.0, keepalive_timeout=opts.header_timeout_s,
                           logger=ServerLog(log, portal.log_limit))
    try:
        await runner.setup()
        assert runner.server is not None
        portal.guard_connections(runner.server)
        await web.TCPSite(runner, host, port, backlog=1024, ssl_context=ssl_context).start()
    except BaseException:
        await runner.cleanup()
        db.close()
        raise
    bound_port = runner.addresses[0][1] if runner.addresses else port
    shown_host = f"[{host}]" if ":" in host else host
    portal.url = f"{'https' if ssl_context else 'http'}://{shown_host}:{bound_port}"
    return RunningPortal(portal.url, portal, runner, asyncio.create_task(portal.sweep()))


def page_lines(running: RunningPortal, host: str = DEFAULT_HOST) -> list[str]:
    """What ``sdparta portal`` says about the browser page at start; listening on every interface
    (0.0.0.0, ``::``), also the page's URL at each of this machine's LAN addresses (what a phone
    opens), or the portal's there when no page is shipped."""
    portal = running.portal
    scheme, port = running.url.split("://", 1)[0], running.url.rsplit(":", 1)[1]
    lan = [f"{scheme}://{url_host(address)}:{port}" for address in lan_addresses(host)]
    if not portal.web.present:
        lines = [f"web page: not shipped ({portal.web.source} has no index.html)"]
        lines += [f"portal on the LAN: {url}" for url in lan]
    else:
        lines = [f"web page: {running.url}/web/"]
        lines += [f"web page, pinned (the skylink is its content hash): {running.url}/{link}"
                  for link in portal.app_builds]
        lines += [f"web page on the LAN: {url}/web/" for url in lan]
    if lan and scheme == "http":
        lines.append("note: browsers on other devices get camera, microphone and WebCrypto only over https: "
                     "add --tls self-signed (or put a TLS reverse proxy in front, see docs/portal.md)")
    return lines


def raise_fd_limit() -> None:
    """Lift the soft descriptor limit to the hard one: the connection caps, not the default 1024,
    should decide how many clients a portal serves."""
    with contextlib.suppress(ImportError, OSError, ValueError):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = hard if hard != resource.RLIM_INFINITY else 65536
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def run_portal(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, data: str | None = None,
               limits: dict[str, Any] | None = None, tls: Any = None, **fields: Any) -> int:
    """Serve until SIGINT/SIGTERM. The first stdout line is the URL (flushed), then a summary.

    ``fields`` and ``limits`` are PortalOptions fields (``sdparta portal``'s flags); one not given
    keeps its PortalOptions default."""
    try:
        options = PortalOptions(**fields, **(limits or {}))
        options.check()
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} is not between 0 and 65535")
    except (ValueError, TypeError) as exc:
        print(f"sdparta portal: {exc}", file=sys.stderr)
        return 2
    data_path = Path(data) if data else default_data_path()
    raise_fd_limit()

    async def main() -> int:
        try:
            running = await start_portal(host, port, data_path, options,
                                         ssl_context=tls.context() if tls is not None else None)
        except ssl.SSLError as exc:  # the files changed since they were checked
            print(f"sdparta portal: TLS: {exc}", file=sys.stderr)
            return 1
        except (PortalDataError, BuildError, WebDirError) as exc:
            print(f"sdparta portal: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"sdparta portal: cannot listen on {host}:{port}: {exc} (try another --port)", file=sys.stderr)
            return 1
        print(running.url, flush=True)
        anywhere = " (all interfaces: share this machine's address)" if host in ALL_INTERFACES else ""
        print(f"sdparta portal {__version__}: serving {running.url}{anywhere}; data {data_path}; "
              f"push {'on' if options.subscription else 'off'}; skyfiles up to {options.max_blob_bytes} bytes, "
              f"quota {options.quota_bytes} bytes, kept {options.blob_ttl_s:g} s; Ctrl-C stops", flush=True)
        if tls is not None:
            print(f"TLS certificate SHA-256 {tls.fingerprint} ({'; '.join(filter(None, (tls.note, str(tls.cert))))}): "
                  "compare it with what the browser shows", flush=True)
        for line in page_lines(running, host):
            print(line, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await running.stop()
        return 0

    return asyncio.run(main())
