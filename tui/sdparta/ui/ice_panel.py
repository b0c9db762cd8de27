"""The ICE panel: webrtc-internals for the focused participant, in one column beside the tiles.

The text is built by pure functions of a ``PeerSnapshot`` (timelines, candidates, check list,
stats); the :class:`IcePanel` widget only puts it and three sparklines on screen.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Sparkline

from sdparta.engine.state import CandidateInfo, PeerSnapshot, StateChange
from sdparta.ui.participants import STATE_COLOURS
from sdparta.ui.sanitize import safe
from sdparta.ui.widgets import TextLine

TIMELINE_KINDS = (("signaling", "signaling"), ("ice_gathering", "gathering"),
                  ("ice_connection", "ice"), ("connection", "connection"), ("peer", "peer"))
SERIES_NAMES = ("rtt", "bitrate", "loss")  # one label + sparkline each, in this order
SHOWN_PAIRS = 10
SHOWN_CANDIDATES = 6


def timeline_line(label: str, changes: Sequence[StateChange], keep: int = 5) -> Text:
    """One state machine's last few changes, with their times."""
    line = Text(f" {label:<11}", style="bold")
    if not changes:
        line.append("–", style="grey50")
    if len(changes) > keep:
        line.append("… ", style="grey50")
    for i, change in enumerate(changes[-keep:]):
        if i:
            line.append(" → ", style="grey50")
        line.append(f"{change.t:.3f} ", style="grey62")
        line.append(safe(change.state), style=STATE_COLOURS.get(change.state, ""))
    return line


def candidate_text(c: CandidateInfo, protocol: bool = True) -> str:
    """``host udp 192.0.2.1:5000`` (without the protocol inside a pair, where it is implied)."""
    kind = f"{safe(c.type)} {safe(c.protocol)}" if protocol else safe(c.type)
    return f"{kind} {safe(c.address)}:{c.port}"


def ice_panel_text(peer: PeerSnapshot | None) -> Text:
    """webrtc-internals in a column: four state timelines (plus sdparta's own peer state), the
    candidates on both sides, the check list with the nominated pair, and current stats."""
    if peer is None:
        return Text("no participant focused", style="grey50")
    text = Text()
    text.append(f"{safe(peer.name)}  {safe(peer.fingerprint)}\n", style="bold")
    role = "we offer" if peer.we_offer else "they offer"
    text.append(f"session {safe(peer.session_id)} · {role}", style="grey62")
    if peer.connected_after_s is not None:
        text.append(f" · connected after {peer.connected_after_s:.2f} s", style="grey62")
    if peer.restarts:
        text.append(f" · {peer.restarts} ICE restart{'s' if peer.restarts > 1 else ''}", style="grey62")
    text.append("\n")
    if peer.failure_reason:
        text.append(f"{safe(peer.failure_reason)}\n", style="red")
    text.append("state timelines (s since the call started)\n", style="underline")
    for kind, label in TIMELINE_KINDS:
        text.append_text(timeline_line(label, [c for c in peer.timeline if c.kind == kind]))
        text.append("\n")
    text.append("candidate pairs\n", style="underline")
    if not peer.check_list:
        text.append(" none yet\n", style="grey50")
    selected = peer.selected_pair
    for pair in peer.check_list[:SHOWN_PAIRS]:
        chosen = selected is not None and pair.local == selected.local and pair.remote == selected.remote
        mark = "★" if pair.nominated else ("·" if chosen else " ")
        text.append(f" {mark} {pair.state:<11} {candidate_text(pair.local, False)} → "
                    f"{candidate_text(pair.remote, False)}\n",
                    style="green" if pair.nominated or chosen else ("red" if pair.state == "failed" else ""))
    if len(peer.check_list) > SHOWN_PAIRS:
        text.append(f"   … {len(peer.check_list) - SHOWN_PAIRS} more\n", style="grey50")
    for title, cands in (("local", peer.local_candidates), ("remote", peer.remote_candidates)):
        text.append(f"{title} candidates ({len(cands)})\n", style="underline")
        for cand in cands[:SHOWN_CANDIDATES]:
            text.append(f"  {candidate_text(cand)}  prio {cand.priority}\n", style="grey62")
        if len(cands) > SHOWN_CANDIDATES:
            text.append(f"  … {len(cands) - SHOWN_CANDIDATES} more\n", style="grey50")
    s = peer.stats
    rtt = f"{s.rtt_ms:.1f} ms" if s.rtt_ms is not None else "–"
    text.append(f"rtt {rtt} · in {s.bitrate_in_kbps:.0f} kbit/s · out {s.bitrate_out_kbps:.0f} kbit/s · "
                f"loss {s.loss_fraction * 100:.1f}% ({s.packets_lost}/{s.packets_received})\n")
    return text


def series_label(name: str, values: Sequence[float], unit: str) -> str:
    """Last value with the window's range, or that there is nothing yet."""
    if not values:
        return f"{name}: no samples yet"
    return f"{name} {values[-1]:.1f} {unit}  (min {min(values):.1f}, max {max(values):.1f})"


def stats_series(peer: PeerSnapshot | None, window: int = 60) -> list[tuple[str, str, list[float]]]:
    """(id, label, values) per ICE-panel sparkline; RTT gaps (no measurement yet) are left out of
    the label's min/max but drawn as 0 so the time axis stays true; the bitrate line is in + out
    (an audio-only or send-only peer still shows a curve)."""
    history = list(peer.stats_history)[-window:] if peer else []
    rtts = [s.rtt_ms for s in history if s.rtt_ms is not None]
    bitrate_in = [s.bitrate_in_kbps for s in history]
    bitrate_out = [s.bitrate_out_kbps for s in history]
    loss = [s.loss_fraction * 100 for s in history]
    bitrate_label = (f"bitrate in {bitrate_in[-1]:.0f} + out {bitrate_out[-1]:.0f} kbit/s"
                     if history else "bitrate: no samples yet")
    return [("rtt", series_label("rtt", rtts, "ms"), [s.rtt_ms or 0.0 for s in history]),
            ("bitrate", bitrate_label, [i + o for i, o in zip(bitrate_in, bitrate_out, strict=True)]),
            ("loss", series_label("loss", loss, "%"), loss)]


class IcePanel(VerticalScroll):
    """The panel itself (hidden until ``i``): the text, then a label and a sparkline per series."""

    def compose(self) -> ComposeResult:
        yield TextLine(id="ice-text")
        for name in SERIES_NAMES:
            yield TextLine(classes="spark-label", id=f"label-{name}")
            yield Sparkline([], id=f"spark-{name}")

    def show(self, peer: PeerSnapshot | None) -> None:
        """Show this participant (labels repaint only when their text changed)."""
        self.query_one("#ice-text", TextLine).show(ice_panel_text(peer), fixed_height=False)
        for name, label, values in stats_series(peer):
            self.query_one(f"#label-{name}", TextLine).show(Text(label))
            self.query_one(f"#spark-{name}", Sparkline).data = values
