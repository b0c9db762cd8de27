"""What the empty grid says: joining, the portal not answering, or being alone — and how to invite.

A wrong password, a wrong portal and an empty room look exactly alike from inside (nobody is
there), so after a while alone the user is told what to compare with the others and given the
exact command line to send them. Pure functions of a snapshot and the time.
"""

from __future__ import annotations

import shlex

from rich.text import Text

from sdparta.engine.state import CallSnapshot, CallStatus
from sdparta.ui.sanitize import safe

ALONE_HINT_AFTER_S = 20.0  # alone this long after joining: say what to check


def invite_command(snap: CallSnapshot) -> str:
    """The ``sdparta join`` line that puts someone else in this call: room and portals of this call,
    shell-quoted; the password only as a placeholder (it is never shown) and only if there is one."""
    words = ["sdparta", "join", shlex.quote(snap.room)]
    for portal in snap.portals:
        words += ["--portal", shlex.quote(portal)]
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
    words += [f"  --portal {shlex.quote(p)}" for p in snap.portals]
    if snap.password_set:
        words.append("  --password '…'")
    return [safe(w) + (" \\" if i < len(words) - 1 else "") for i, w in enumerate(words)]


def portal_down(snap: CallSnapshot) -> bool:
    """No portal answers (joining is retried, or a probe while alone got no answer)."""
    return snap.portal_reachable is False


def portals_named(snap: CallSnapshot) -> str:
    return safe(", ".join(snap.portals)) if snap.portals else "no portal"


def alone_for(snap: CallSnapshot, now: float) -> float | None:
    """Seconds alone since joining, or None while someone is here (or before joining)."""
    return None if snap.alone_since is None else max(0.0, now - snap.alone_since)


def roster_hint(snap: CallSnapshot, now: float) -> str:
    """The one line the participant list shows while it is empty."""
    if portal_down(snap):
        return "portal not answering — retrying"
    if snap.status == CallStatus.STARTING:
        return "joining…"
    alone = alone_for(snap, now)
    if alone is not None and alone >= ALONE_HINT_AFTER_S:
        return "nobody else here yet"
    return "waiting for others to join…"


def lobby_text(snap: CallSnapshot, now: float, width: int = 80) -> Text:
    """The text where the tiles would be while there are none, for ``width`` cells."""
    text = Text()
    if portal_down(snap):
        text.append(f"portal {portals_named(snap)} not answering — retrying\n", style="bold yellow")
        if snap.error:
            text.append(f"{safe(snap.error)}\n", style="grey62")
        text.append("\nCheck the address (--portal URL) and that the portal is running and reachable "
                    "from here; the call joins by itself as soon as it answers.\n")
        return text
    if snap.status == CallStatus.STARTING:
        text.append(f"joining {safe(snap.room)}…\n", style="bold")
        return text
    alone = alone_for(snap, now)
    if alone is not None and alone >= ALONE_HINT_AFTER_S:
        text.append(f"Nobody else has joined in {alone:.0f} s.\n", style="bold yellow")
        text.append("If you expected someone, check that you both use the same room name, the same "
                    "password and the same portal: a wrong one looks exactly like an empty room.\n")
    else:
        text.append("waiting for others to join…\n", style="bold")
    text.append("\nInvite someone with:\n")
    for line in invite_lines(snap, width - 2):
        text.append(f"  {line}\n", style="bold cyan")
    return text
