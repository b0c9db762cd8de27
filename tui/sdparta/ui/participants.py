"""Who is in the call and how each pair is doing, as text: the participant list and tile labels.

Pure functions of ``PeerSnapshot``s, so the list's rules (who is shown, in which colour, which
flags) are testable without an app.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.text import Text

from sdparta.engine.state import CallSnapshot, PeerSnapshot, PeerStatus
from sdparta.ui.sanitize import safe

STATE_COLOURS: dict[str, str] = {
    PeerStatus.DISCOVERED: "cyan", PeerStatus.CONNECTING: "yellow", PeerStatus.CONNECTED: "green",
    PeerStatus.RECONNECTING: "yellow", PeerStatus.FAILED: "red", PeerStatus.LEFT: "grey50",
    PeerStatus.GONE: "red",
}
#: Statuses that get a video tile (and stay in the list even when an older session of them left).
TILE_STATUSES: tuple[PeerStatus, ...] = (PeerStatus.DISCOVERED, PeerStatus.CONNECTING, PeerStatus.CONNECTED,
                                         PeerStatus.RECONNECTING, PeerStatus.FAILED)
PATH_LABELS = {"direct": "direct", "stun": "STUN", "turn": "TURN"}
LEVEL_GLYPHS = " ▁▂▃▄▅▆▇█"
#: Statuses whose failure reason is worth a line under the participant.
REASON_STATUSES = (PeerStatus.FAILED, PeerStatus.GONE, PeerStatus.RECONNECTING)


def roster(peers: Sequence[PeerSnapshot]) -> list[PeerSnapshot]:
    """The participant list: every live session, plus the last session of anyone who left (so a
    departure stays visible), but not the stale sessions of someone who rejoined."""
    live_fingerprints = {p.fingerprint for p in peers if p.status in TILE_STATUSES}
    last_gone: dict[str, PeerSnapshot] = {}
    for peer in peers:
        if peer.status not in TILE_STATUSES and peer.fingerprint not in live_fingerprints:
            last_gone[peer.fingerprint] = peer
    return [p for p in peers if p.status in TILE_STATUSES or last_gone.get(p.fingerprint) is p]


def level_glyph(level: float) -> str:
    """Audio level (RMS 0..1) as one bar glyph; square root so quiet speech still shows."""
    return LEVEL_GLYPHS[min(len(LEVEL_GLYPHS) - 1, int(math.sqrt(max(0.0, level)) * len(LEVEL_GLYPHS)))]


def peer_flags(peer: PeerSnapshot) -> list[str]:
    """What the peer told us about its own media (muted, no camera, audio only)."""
    flags = []
    if peer.remote_muted:
        flags.append("muted")
    if peer.remote_audio_only:
        flags.append("audio only")
    elif peer.remote_camera_off:
        flags.append("cam off")
    return flags


def peer_line(peer: PeerSnapshot, focused: bool, sfu_label: str | None = None) -> Text:
    """Two lines per participant: who, then state · path · RTT · flags; in a room that names an SFU
    (``sfu_label``), also how their media reaches us: "via SFU (janus @ host)" or "mesh"."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append("▶ " if focused else "  ", style="bold yellow")
    text.append("●" if peer.speaking else "○", style="bold green" if peer.speaking else "grey50")
    text.append(level_glyph(peer.audio_level), style="green")
    text.append(f" {safe(peer.name)[:16]}", style="bold" if peer.status != PeerStatus.LEFT else "grey50")
    text.append(f" {safe(peer.fingerprint)}\n", style="grey62")
    text.append("    ")
    text.append(peer.status, style=STATE_COLOURS.get(peer.status, "white"))
    if peer.path:
        text.append(f" {PATH_LABELS.get(peer.path, safe(peer.path))}", style="cyan")
    if peer.stats.rtt_ms is not None and peer.status == PeerStatus.CONNECTED:
        text.append(f" {peer.stats.rtt_ms:.0f} ms")
    if sfu_label is not None and peer.status == PeerStatus.CONNECTED:
        text.append(f" via SFU ({safe(sfu_label)})" if peer.via == "sfu" else " mesh",
                    style="magenta" if peer.via == "sfu" else "grey62")
    for flag in peer_flags(peer):
        text.append(f" {flag}", style="magenta")
    if peer.failure_reason and peer.status in REASON_STATUSES:
        text.append(f"\n    {safe(peer.failure_reason)}",
                    style="red" if peer.status != PeerStatus.RECONNECTING else "yellow")
    return text


def participants_text(peers: Sequence[PeerSnapshot], focused_sid: str | None,
                      empty_hint: str = "waiting for others to join…", sfu_label: str | None = None) -> Text:
    """The whole participant list, the focused one marked (or ``empty_hint`` while nobody is there)."""
    text = Text()
    for peer in peers:
        text.append_text(peer_line(peer, peer.session_id == focused_sid, sfu_label))
        text.append("\n")
    if not peers:
        text.append(empty_hint, style="grey50")
    return text


def tile_label(peer: PeerSnapshot) -> Text:
    """The one line above a participant's tile: level, name, state and flags."""
    label = Text(no_wrap=True, overflow="ellipsis")
    label.append(level_glyph(peer.audio_level), style="green")
    label.append(f" {safe(peer.name)} ", style="bold")
    label.append(peer.status, style=STATE_COLOURS.get(peer.status, ""))
    for flag in peer_flags(peer):
        label.append(f" {flag}", style="magenta")
    return label


def self_label(snap: CallSnapshot) -> Text:
    """The line above our own tile: name and key (what the others see next to our name)."""
    me = Text(no_wrap=True, overflow="ellipsis")
    me.append(f"{safe(snap.name)} ", style="bold")
    me.append(f"{safe(snap.fingerprint)} ", style="grey62")
    me.append("muted" if snap.mic == "muted" else "", style="magenta")
    return me


def you_title(snap: CallSnapshot, self_view: bool) -> Text:
    """The "you" heading; without a self view (small terminals) it carries our name and key, which
    the others compare out of band."""
    you = Text("you", no_wrap=True, overflow="ellipsis")
    if not self_view:
        you.append(f": {safe(snap.name)} ", style="bold")
        you.append(safe(snap.fingerprint), style="grey62")
    return you
