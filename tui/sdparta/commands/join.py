"""``sdparta join``: settings (defaults < config file < flags) → a Call → the terminal app."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from sdparta.commands.options import call_flags
from sdparta.config import CallFlags, ConfigError, call_config

if TYPE_CHECKING:
    import httpx

WEB_PROBE_TIMEOUT_S = 2.0  # asking the room's portals whether they serve the page delays the app this long at most


def run(args: argparse.Namespace) -> int:
    return join(args.room, call_flags(args, audio_out=args.audio_out))


async def _serves_page(http: httpx.AsyncClient, portal: str) -> bool | None:
    """True when ``portal`` answers ``HEAD /web/`` with an HTML page, False when it answers otherwise,
    None when it does not answer. Only the status and the type are read."""
    import httpx

    from sdparta.ui.lobby import web_page

    try:
        response = await http.head(web_page(portal))
    except (httpx.HTTPError, ValueError):
        return None
    return response.status_code == 200 and response.headers.get("content-type", "").startswith("text/html")


async def _probe(portals: Sequence[str], timeout: float) -> list[bool | None]:
    import httpx

    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as http:
        try:
            return list(await asyncio.wait_for(asyncio.gather(*(_serves_page(http, p) for p in portals)),
                                               timeout + 0.5))
        except TimeoutError:
            return [None] * len(portals)


def page_portal(portals: Sequence[str], timeout: float = WEB_PROBE_TIMEOUT_S) -> tuple[str | None, bool]:
    """The first of ``portals`` that serves the browser page at ``/web/`` (all asked at once, at most
    ``timeout`` s), and whether any of them answered at all."""
    if not portals:
        return None, False
    answers = asyncio.run(_probe(portals, timeout))
    for portal, serves in zip(portals, answers, strict=True):
        if serves:
            return portal, True
    return None, any(a is not None for a in answers)


@dataclass(frozen=True)
class WebInvite:
    """The browser page for the room: the line ``sdparta join`` prints, and for the app's lobby the
    portal that serves the page or why none does."""

    line: str
    portal: str | None = None
    why_none: str | None = None


def web_invite(room: str, portals: Sequence[str], relays: Sequence[str], password: str | None,
               public_relays: bool, stun: Sequence[str] | None = None,
               timeout: float = WEB_PROBE_TIMEOUT_S) -> WebInvite:
    """What ``sdparta join`` prints before the app takes the screen (it is there again after the app
    leaves it): the browser page's link for the room, with its password, the room's named relays and
    the call's STUN servers, from the first portal that serves the page; or why there is none."""
    from sdparta.ui.lobby import web_link

    if not portals:
        return WebInvite("browser page: none for this room (the page needs a portal: `sdparta portal` serves it "
                         "at /web/; name one with --portal URL)")
    portal, answered = page_portal(portals, timeout)
    if portal is None:
        why = ("no portal of the room answered" if not answered else
               "its portal does not serve it" if len(portals) == 1 else "none of the room's portals serves it")
        why += "; `sdparta portal` serves it at /web/"
        return WebInvite(f"browser page: none for this room ({why})", why_none=f"no browser page: {why}")
    link = web_link(room, portal, password=password, relays=[] if public_relays else relays, stun=stun)
    note = " (the link holds the room's password: send it only to whom you invite)" if password else ""
    return WebInvite(f"browser page for this room: {link}{note}", portal=portal)


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
    from sdparta.engine.diagnosis import stun_urls_of
    from sdparta.ui import run_join_app

    page = web_invite(room, config.portals, config.relays, config.password, config.public_relays,
                      stun_urls_of(config.ice_servers))
    print(page.line, flush=True)
    return run_join_app(Call(config), video_mode=settings["video_mode"], fps=settings["fps"],
                        page_portal=page.portal, no_page=page.why_none)
