"""The bottom line: room, networks, own fingerprint, device states, unread chat and key hints.

The key hints are the only on-screen help, so they always stay: on a narrow terminal the other
parts go first, then the room name is shortened, then whatever is left is cut with an ellipsis.
"""

from __future__ import annotations

from rich.text import Text

from sdparta.engine.state import CallSnapshot, CallStatus
from sdparta.ui.networks import network_summary
from sdparta.ui.sanitize import safe

#: Key hints, longest first: the longest that fits is shown; the last one is always shown.
STATUS_HINTS = ("m mute · v cam · tab focus · i ICE · c chat · d dump · ? help · ^q quit",
                "m mute · v cam · i ICE · ? help · ^q quit", "? help · ^q quit")
AUDIO_OUT_LABELS = {"missing": "no output device", "none": "no audio out", "device": "speaker on",
                    "wav": "audio → file"}
ROOM_CELLS = 24  # a room name longer than this is shortened with an ellipsis (it is in the title too)
ROOM_MIN_CELLS = 6  # ... and down to this when the terminal is narrow
DROP_LEVELS = (5, 4, 3, 2, 1)  # parts with these levels go first, in this order (0 = always kept)
NETWORKS_LONG, NETWORKS_SHORT = 4, 2  # the networks named, then only counted (``push``, ``2/3 relays``)


def tone_label(source: str) -> str | None:
    """``tone:440`` → ``tone 440 Hz`` (None for anything that is not a tone)."""
    if not source.startswith("tone"):
        return None
    _, _, hz = source.partition(":")
    try:
        frequency = float(hz) if hz else 440.0
    except ValueError:
        return "tone"
    return f"tone {frequency:g} Hz"


def mic_label(snap: CallSnapshot) -> tuple[str, str]:
    """(text, style) of what others hear from us: ``mic on``, ``tone 440 Hz muted``, ``no mic``."""
    if snap.mic not in ("on", "muted"):
        return "no mic", "red"
    source = tone_label(snap.mic_source) or "mic"
    return (f"{source} on", "green") if snap.mic == "on" else (f"{source} muted", "red")


def shorten(text: str, cells: int) -> str:
    """``text`` in at most ``cells`` cells, an ellipsis marking the cut."""
    shortened = Text(text)
    shortened.truncate(max(1, cells), overflow="ellipsis")
    return shortened.plain


def media_route(snap: CallSnapshot) -> str | None:
    """"via SFU (janus @ host)" or "mesh" — None while the room names no SFU (it is a mesh, as always)."""
    sfu = snap.sfu
    if sfu is None:
        return None
    if sfu.active:
        return f"via SFU ({safe(sfu.label)})"
    return {"joining": f"mesh → SFU ({safe(sfu.label)})…", "failed": "mesh (SFU failed)"}.get(sfu.state, "mesh")


def status_text(snap: CallSnapshot, width: int, unread: int = 0) -> Text:
    """The status bar for a terminal ``width`` cells wide; ``unread`` chat messages arrived while
    the chat was out of sight. Drop order when space runs out: own fingerprint (also on the self
    view), the networks' names (their count stays), audio output, the count, camera; then the room
    name shrinks."""
    networks_long, networks_short, networks_style = network_summary(snap)
    audio_out = AUDIO_OUT_LABELS.get(snap.audio_out, f"out {snap.audio_out}")
    mic, mic_style = mic_label(snap)
    room = safe(snap.room)
    # (text, style, drop level: higher goes first when space runs out; 0 = always kept). The
    # networks' short form stands in for the long one once that is dropped (see shown()).
    parts: list[tuple[str, str, int]] = [
        ("ROOM", "bold reverse", 0),
        (f" {networks_long} ", networks_style, NETWORKS_LONG),
        (f" {networks_short} ", networks_style, NETWORKS_SHORT),
        (f" me {snap.fingerprint} ", "grey70", 5),
        (f" {mic} ", mic_style, 0),
        (f" cam {snap.camera} ", "green" if snap.camera in ("on", "pattern") else "yellow", 1),
        (f" {audio_out} ", "yellow" if snap.audio_out in ("missing", "none") else "green", 3),
    ]
    route = media_route(snap)
    if route is not None:  # the room names an SFU: say where our media goes (and who can read it)
        parts.append((f" {route} ", "bold magenta" if snap.sfu is not None and snap.sfu.active else "grey70", 1))
        if snap.sfu is not None and snap.sfu.active:
            parts.append((" media decrypted on the SFU ", "magenta", 3))
    if unread:
        parts.append((f" ✉ {unread} unread ", "bold yellow", 0))
    if snap.status != CallStatus.JOINED:
        parts.append((f" {snap.status} ", "bold red" if snap.status == CallStatus.ERROR else "yellow", 0))
    hint_min = len(STATUS_HINTS[-1]) + 1  # one cell between the parts and the hint, at least

    def shown(index: int, level: int, dropped: set[int]) -> bool:
        if level in dropped:
            return False
        return index != 2 or NETWORKS_LONG in dropped  # the short form only instead of the long one

    def used(room_cells: int, dropped: set[int]) -> int:
        return sum(room_cells + 2 if text == "ROOM" else Text(text).cell_len
                   for i, (text, _, level) in enumerate(parts) if shown(i, level, dropped))

    room_cells = min(Text(room).cell_len, ROOM_CELLS)
    dropped: set[int] = set()
    for level in DROP_LEVELS:
        if used(room_cells, dropped) + hint_min <= width:
            break
        dropped.add(level)
    overflow = used(room_cells, dropped) + hint_min - width
    if overflow > 0:
        room_cells = max(ROOM_MIN_CELLS, room_cells - overflow)
    hints = next((h for h in STATUS_HINTS if used(room_cells, dropped) + 1 + len(h) <= width), STATUS_HINTS[-1])
    status = Text(no_wrap=True, overflow="ellipsis")
    for i, (text, style, level) in enumerate(parts):
        if shown(i, level, dropped):
            status.append(f" {shorten(room, room_cells)} " if text == "ROOM" else text, style=style)
    room_left = max(0, width - len(hints) - 1)
    if status.cell_len > room_left:
        status.truncate(room_left, overflow="ellipsis")
    status.append(" " * max(1, width - status.cell_len - len(hints)))
    status.append(hints, style="grey50")
    status.truncate(max(width, 0))
    return status
