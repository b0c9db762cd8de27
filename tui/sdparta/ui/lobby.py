"""What the empty grid says: joining, no portal or relay answering, or being alone — and how to invite.

A wrong password, a wrong portal or relay and an empty room look exactly alike from inside (nobody
is there), so after a while alone the user is told what to compare with the others and given the
exact command line to send them, with the room's networks, and the browser page's link for the room
(``PORTAL/web/#room=…``: the page a portal serves, the same networks). Pure functions of a snapshot
and the time.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from urllib.parse import quote, urlencode

from rich.text import Text

from sdparta.engine.defaults import PUBLIC_STUN
from sdparta.engine.state import CallSnapshot, CallStatus
from sdparta.ui.networks import host, is_down, room_networks
from sdparta.ui.sanitize import safe

ALONE_HINT_AFTER_S = 20.0  # alone this long after joining: say what to check
_RELAY_HINT = ("Check the relay addresses (--relay URL) and that this machine can reach them (a firewall or "
               "proxy may block WebSocket connections); public relays come and go — name others with "
               "--relay URL or relays = [...] in the config.")
SAME = {"portal": "portal", "relay": "relays", "portal or relay": "portal and relays"}
CHECK_HINTS = {  # what to check while nothing answers, per what the room meets on
    "portal": "Check the address (--portal URL) and that the portal is running and reachable from here.",
    "relay": _RELAY_HINT,
    "portal or relay": "Check the portal (--portal URL: running and reachable from here) and the relays. "
                       + _RELAY_HINT,
}


def network_options(snap: CallSnapshot) -> list[tuple[str, str]]:
    """(flag, URL) for each network an invitee must name: every portal and every configured relay, and
    the call's STUN servers. Public relays are not named: the same defaults pick the same ones for the
    room; nor is the public STUN server they come with (a call that names a network has no STUN server
    unless it names one, so the invitee must name the same)."""
    options = [("--portal", portal) for portal in snap.portals]
    if not snap.public_relays:
        options += [("--relay", relay) for relay in snap.relays]
    if not (snap.public_relays and snap.stun == PUBLIC_STUN):
        options += [("--stun", url) for url in snap.stun]
    return options


def invite_command(snap: CallSnapshot) -> str:
    """The ``sdparta join`` line that puts someone else in this call: room and networks of this
    call, shell-quoted; the password only as a placeholder (it is never shown) and only if there is one."""
    words = ["sdparta", "join", shlex.quote(snap.room)]
    for flag, url in network_options(snap):
        words += [flag, shlex.quote(url)]
    if snap.password_set:
        words += ["--password", "'…'"]
    return safe(" ".join(words))


def invite_lines(snap: CallSnapshot, width: int) -> list[str]:
    """The invite command as lines of at most ``width`` cells where it can be: one line when it
    fits, else one option per line joined by shell line continuations (a command wrapped by the
    terminal would run half-way when pasted; a backslash-continued one runs whole)."""
    line = invite_command(snap)
    if len(line) <= width:
        return [line]
    words = ["sdparta join " + shlex.quote(snap.room)]
    words += [f"  {flag} {shlex.quote(url)}" for flag, url in network_options(snap)]
    if snap.password_set:
        words.append("  --password '…'")
    return [safe(w) + (" \\" if i < len(words) - 1 else "") for i, w in enumerate(words)]


def web_page(portal: str) -> str:
    """Where a portal serves the browser page (``sdparta portal`` serves it at ``/web/``)."""
    return portal.rstrip("/") + "/web/"


def web_link(room: str, portal: str, *, password: str | None = None, relays: Sequence[str] = (),
             stun: Sequence[str] | None = None) -> str:
    """The page's shareable link for ``room``: ``PORTAL/web/#room=ROOM&pw=PASSWORD&relay=URL…&ice=URL…``.

    The fields are in the fragment (never sent to the server), each percent-encoded whole (a space is
    ``%20``, never ``+``, which the page's URLSearchParams would read as a space too, and a ``+`` is
    ``%2B``), as the page's join form reads them (web/js/main.js ``fromFragment``: ``room``, ``pw``,
    one ``relay`` per Nostr relay, one ``ice`` per STUN server). The page uses the portal it is served
    by as its network, plus the relays: the same networks as the call's. No password (None or empty):
    no ``pw`` field. ``stun``, the call's STUN servers, makes the page use the same ones: none at all
    is one empty ``ice=`` (a call on its own portal names none unless asked, and the page must not
    then ask a public one); the page's own default (the public one, as the terminal's) or None: no
    ``ice`` field."""
    fields = [("room", room)]
    if password:
        fields.append(("pw", password))
    fields += [("relay", url) for url in relays]
    if stun is not None and tuple(stun) != PUBLIC_STUN:
        fields += [("ice", url) for url in stun] or [("ice", "")]
    return web_page(portal) + "#" + urlencode(fields, quote_via=quote, safe="")


def named_relays(snap: CallSnapshot) -> list[str]:
    """The relays an invitee must name (none for the public relays: see network_options)."""
    return [url for flag, url in network_options(snap) if flag == "--relay"]


def web_invite_lines(snap: CallSnapshot, page_portal: str | None = None, no_page: str | None = None) -> list[str]:
    """The browser page's link for this room, without the password, which the app never shows: the link
    ``sdparta join`` printed before the app started has it. From ``page_portal`` (the portal ``sdparta
    join`` found serving the page) or, not asked, the room's first portal; ``no_page`` is why none
    serves it (what ``sdparta join`` printed); with only relays, that the page needs a portal."""
    if not snap.portals:
        return ["(a browser needs a portal: `sdparta portal` serves the page at /web/)"]
    if no_page is not None:
        return [f"({safe(no_page)})"]
    link = safe(web_link(snap.room, page_portal or snap.portals[0], relays=named_relays(snap), stun=snap.stun))
    lines = [link]
    if snap.password_set:
        lines.append("(the password is not in this link: type it in the page, or send the link "
                     "`sdparta join` printed before the call, which has it)")
    return lines


def public_relays_note(snap: CallSnapshot) -> str | None:
    """Why an invite over the public relays names none, and what the invitee must not have."""
    if not snap.public_relays:
        return None
    hosts = ", ".join(host(url) for url in snap.relays)
    return (f"(public relays{': ' + hosts if hosts else ''} — theirs picks the same ones for this room "
            "as long as they have no portal or relay of their own configured)")


def portal_down(snap: CallSnapshot) -> bool:
    """No portal or relay answers (joining is retried, or a probe while alone got no answer)."""
    return snap.portal_reachable is False


def portals_named(snap: CallSnapshot) -> str:
    """The room's networks, each down one with its state (``wss://a/ (refused: blocked: …)``)."""
    networks = room_networks(snap)
    if not networks:
        return "no portal"
    return safe(", ".join(n.url + (f" ({n.state})" if is_down(n) else "") for n in networks))


def kinds(snap: CallSnapshot) -> str:
    """``portal``, ``relay`` or ``portal or relay``: what the room meets on, for the hints."""
    has_portal, has_relay = bool(snap.portals), bool(snap.relays) or any(n.kind == "relay" for n in snap.networks)
    return "portal or relay" if has_portal and has_relay else "relay" if has_relay else "portal"


def not_answering(snap: CallSnapshot) -> str:
    """``portal URL not answering`` (as ever, for a portal-only room) or ``no relay answers: URLs``."""
    if kinds(snap) == "portal":
        return f"portal {portals_named(snap)} not answering"
    return f"no {kinds(snap)} answers: {portals_named(snap)}"


def alone_for(snap: CallSnapshot, now: float) -> float | None:
    """Seconds alone since joining, or None while someone is here (or before joining)."""
    return None if snap.alone_since is None else max(0.0, now - snap.alone_since)


def roster_hint(snap: CallSnapshot, now: float) -> str:
    """The one line the participant list shows while it is empty."""
    if portal_down(snap):
        what = kinds(snap)
        return "portal not answering — retrying" if what == "portal" else f"no {what} answering — retrying"
    if snap.status == CallStatus.STARTING:
        return "joining…"
    alone = alone_for(snap, now)
    if alone is not None and alone >= ALONE_HINT_AFTER_S:
        return "nobody else here yet"
    return "waiting for others to join…"


def lobby_text(snap: CallSnapshot, now: float, width: int = 80, page_portal: str | None = None,
               no_page: str | None = None) -> Text:
    """The text where the tiles would be while there are none, for ``width`` cells (``page_portal``,
    ``no_page``: see web_invite_lines)."""
    text = Text()
    if portal_down(snap):
        text.append(f"{not_answering(snap)} — retrying\n", style="bold yellow")
        if snap.error:
            text.append(f"{safe(snap.error)}\n", style="grey62")
        text.append(f"\n{CHECK_HINTS[kinds(snap)]} The call joins by itself as soon as one answers.\n")
        return text
    if snap.status == CallStatus.STARTING:
        text.append(f"joining {safe(snap.room)}…\n", style="bold")
        return text
    alone = alone_for(snap, now)
    if alone is not None and alone >= ALONE_HINT_AFTER_S:
        text.append(f"Nobody else has joined in {alone:.0f} s.\n", style="bold yellow")
        same = "no portal or relay of your own (then both pick the same public relays)" if snap.public_relays \
            else f"the same {SAME[kinds(snap)]}"
        text.append("If you expected someone, check that you both use the same room name, the same "
                    f"password and {same}: a wrong one looks exactly like an empty room.\n")
    else:
        text.append("waiting for others to join…\n", style="bold")
    text.append("\nInvite someone with:\n")
    for line in invite_lines(snap, width - 2):
        text.append(f"  {line}\n", style="bold cyan")
    note = public_relays_note(snap)
    if note:
        text.append(f"  {note}\n", style="grey62")
    text.append("or in a browser (a phone too):\n")
    for line in web_invite_lines(snap, page_portal, no_page):
        text.append(f"  {line}\n", style="grey62" if line.startswith("(") else "bold cyan")
    return text
