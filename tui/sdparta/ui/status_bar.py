"""The bottom line: room, portals, transport, own fingerprint, device states and key hints."""

from __future__ import annotations

import re

from rich.text import Text

from sdparta.engine.state import CallSnapshot, CallStatus
from sdparta.ui.sanitize import safe

#: Key hints, longest first: the longest that fits is shown.
STATUS_HINTS = ("m mute · v cam · tab focus · i ICE · c chat · d dump · ? help · ^q quit",
                "m mute · v cam · i ICE · ? help · ^q quit", "? help · ^q quit")
AUDIO_OUT_LABELS = {"missing": "no output device", "none": "no audio out", "device": "speaker on",
                    "wav": "audio → file"}


def status_text(snap: CallSnapshot, width: int) -> Text:
    """Room, portals and transport, own fingerprint, device states and key hints; on a narrow
    terminal the least useful parts go first (own fingerprint — also shown on the self view —,
    then the portal, then longer hints)."""
    portals = re.sub(r"^https?://", "", snap.portals[0]) if snap.portals else "no portal"
    if len(snap.portals) > 1:
        portals += f" +{len(snap.portals) - 1}"
    audio_out = AUDIO_OUT_LABELS.get(snap.audio_out, f"out {snap.audio_out}")
    # (text, style, drop order: higher goes first when space runs out; 0 = always kept)
    parts: list[tuple[str, str, int]] = [
        (f" {safe(snap.room)} ", "bold reverse", 0),
        (f" {portals}", "", 2),
        (f" {'push' if snap.push else 'polling'} ", "", 0),
        (f" me {snap.fingerprint} ", "grey70", 3),
        (f" mic {snap.mic} ", "green" if snap.mic == "on" else "red", 0),
        (f" cam {snap.camera} ", "green" if snap.camera in ("on", "pattern") else "yellow", 0),
        (f" {audio_out} ", "yellow" if snap.audio_out in ("missing", "none") else "green", 0),
    ]
    if snap.status != CallStatus.JOINED:
        parts.append((f" {snap.status} ", "bold red" if snap.status == CallStatus.ERROR else "yellow", 0))
    dropped: set[int] = set()
    for level in (3, 2):  # keep everything while at least the shortest hint fits
        used = sum(len(text) for text, _, drop in parts if drop not in dropped)
        if used + 2 + len(STATUS_HINTS[-1]) <= width:
            break
        dropped.add(level)
    used = sum(len(text) for text, _, drop in parts if drop not in dropped)
    hints = next((h for h in STATUS_HINTS if used + 2 + len(h) <= width), "")
    status = Text(no_wrap=True, overflow="ellipsis")
    for text, style, drop in parts:
        if drop not in dropped:
            status.append(text, style=style)
    if hints:
        status.append(" " * (width - status.cell_len - len(hints)))
        status.append(hints, style="grey50")
    return status
