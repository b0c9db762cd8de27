"""The ICE panel: webrtc-internals for the focused participant, in one column beside the tiles.

The text is built by pure functions of a ``PeerSnapshot`` (current figures, timelines, candidates,
check list) and of the call (the networks that carry the room, ui/networks.py); the
:class:`IcePanel` widget only puts it and three sparklines on screen, live figures first so they
are in sight without scrolling, then the networks. Every figure carries its unit.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Sparkline

from sdparta.engine.state import CallSnapshot, CandidateInfo, PeerSnapshot, StateChange
from sdparta.ui.networks import networks_text
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
        line.append(f"{change.t:.3f} s ", style="grey62")
        line.append(safe(change.state), style=STATE_COLOURS.get(change.state, ""))
    return line


def candidate_text(c: CandidateInfo, protocol: bool = True) -> str:
    """``host udp 192.0.2.1:5000`` (without the protocol inside a pair, where it is implied)."""
    kind = f"{safe(c.type)} {safe(c.protocol)}" if protocol else safe(c.type)
    return f"{kind} {safe(c.address)}:{c.port}"


def selected_index(peer: PeerSnapshot) -> int | None:
    """Which entry of the check list is the selected pair: exactly one, or none. The adapter marks
    it; an older snapshot without the mark is matched on its candidates."""
    for i, pair in enumerate(peer.check_list):
        if pair.selected:
            return i
    chosen = peer.selected_pair
    if chosen is not None:
        for i, pair in enumerate(peer.check_list):
            if (pair.local, pair.remote) == (chosen.local, chosen.remote):
                return i
    return None


def figures_line(peer: PeerSnapshot) -> Text:
    """The current figures, each with its unit."""
    s = peer.stats
    rtt = f"{s.rtt_ms:.1f} ms" if s.rtt_ms is not None else "– ms"
    return Text(f"now: rtt {rtt} · in {s.bitrate_in_kbps:.0f} kbit/s · out {s.bitrate_out_kbps:.0f} kbit/s · "
                f"loss {s.loss_fraction * 100:.1f}% ({s.packets_lost} of {s.packets_received} packets)")


def ice_head_text(peer: PeerSnapshot | None) -> Text:
    """Who, the pair's role and fate, the current figures and the keys: what fits above the fold."""
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
    text.append_text(figures_line(peer))
    text.append("\n↑↓ PgUp PgDn Home End, wheel: scroll · n/p: other participant · i: close", style="grey50")
    return text


def ice_panel_text(peer: PeerSnapshot | None) -> Text:
    """webrtc-internals in a column: four state timelines (plus sdparta's own peer state), the check
    list with the selected pair starred (exactly one: the pair media flows on), the candidates on
    both sides."""
    if peer is None:
        return Text("no participant focused", style="grey50")
    text = Text()
    text.append("state timelines (s since the call started)\n", style="underline")
    for kind, label in TIMELINE_KINDS:
        text.append_text(timeline_line(label, [c for c in peer.timeline if c.kind == kind]))
        text.append("\n")
    text.append("candidate pairs (★ selected: the pair media flows on)\n", style="underline")
    if not peer.check_list:
        text.append(" none yet\n", style="grey50")
    chosen = selected_index(peer)
    for i, pair in enumerate(peer.check_list[:SHOWN_PAIRS]):
        mark = "★" if i == chosen else " "
        text.append(f" {mark} {pair.state:<11} {candidate_text(pair.local, False)} → "
                    f"{candidate_text(pair.remote, False)}\n",
                    style="bold green" if i == chosen else ("red" if pair.state == "failed" else ""))
    if len(peer.check_list) > SHOWN_PAIRS:
        text.append(f"   … {len(peer.check_list) - SHOWN_PAIRS} more\n", style="grey50")
    for title, cands in (("local", peer.local_candidates), ("remote", peer.remote_candidates)):
        text.append(f"{title} candidates ({len(cands)})\n", style="underline")
        for cand in cands[:SHOWN_CANDIDATES]:
            text.append(f"  {candidate_text(cand)}  priority {cand.priority}\n", style="grey62")
        if len(cands) > SHOWN_CANDIDATES:
            text.append(f"  … {len(cands) - SHOWN_CANDIDATES} more\n", style="grey50")
    return text


def series_label(name: str, values: Sequence[float], unit: str, window: int, range_unit: str | None = None) -> str:
    """Last value with the window's range, each with its unit (``range_unit`` in the range, when
    shorter), or that there is nothing yet."""
    if not values:
        return f"{name}: no samples yet"
    short = range_unit or unit
    return (f"{name} {values[-1]:.1f} {unit}  (last {window} s: min {min(values):.1f} {short}, "
            f"max {max(values):.1f} {short})")


def stats_series(peer: PeerSnapshot | None, window: int = 60) -> list[tuple[str, str, list[float]]]:
    """(id, label, values) per ICE-panel sparkline; RTT gaps (no measurement yet) are left out of
    the label's min/max but drawn as 0 so the time axis stays true; the bitrate line is in + out
    (an audio-only or send-only peer still shows a curve)."""
    history = list(peer.stats_history)[-window:] if peer else []
    window = len(history)  # one sample a second (the engine's stats interval): the span shown
    rtts = [s.rtt_ms for s in history if s.rtt_ms is not None]
    bitrate_in = [s.bitrate_in_kbps for s in history]
    bitrate_out = [s.bitrate_out_kbps for s in history]
    loss = [s.loss_fraction * 100 for s in history]
    totals = [i + o for i, o in zip(bitrate_in, bitrate_out, strict=True)]
    bitrate_label = (f"bitrate in {bitrate_in[-1]:.0f} kbit/s + out {bitrate_out[-1]:.0f} kbit/s  "
                     f"(last {window} s: max {max(totals):.0f} kbit/s)" if history else "bitrate: no samples yet")
    return [("rtt", series_label("rtt", rtts, "ms", window), [s.rtt_ms or 0.0 for s in history]),
            ("bitrate", bitrate_label, totals),
            ("loss", series_label("loss", loss, "% of packets", window, "%"), loss)]


class IcePanel(VerticalScroll):
    """The panel itself (hidden until ``i``): who and the current figures, a label and a sparkline
    per series, the room's networks, then timelines, pairs and candidates. It scrolls (keys through the app's bindings,
    the mouse wheel by itself): at 120×40 the whole of it does not fit."""

    def compose(self) -> ComposeResult:
        yield TextLine(id="ice-more")  # docked at the bottom: where the view is, instead of a scrollbar
        yield TextLine(id="ice-head")
        for name in SERIES_NAMES:
            yield TextLine(classes="spark-label", id=f"label-{name}")
            yield Sparkline([], id=f"spark-{name}")
        yield TextLine(id="ice-networks")
        yield TextLine(id="ice-text")

    def show(self, peer: PeerSnapshot | None, snap: CallSnapshot | None = None) -> None:
        """Show this participant and the call's networks (labels repaint only when their text changed)."""
        self.query_one("#ice-head", TextLine).show(ice_head_text(peer), fixed_height=False)
        for name, label, values in stats_series(peer):
            self.query_one(f"#label-{name}", TextLine).show(Text(label))
            spark = self.query_one(f"#spark-{name}", Sparkline)
            spark.data = values
            spark.display = peer is not None
        networks = self.query_one("#ice-networks", TextLine)
        networks.display = snap is not None
        if snap is not None:
            networks.show(networks_text(snap, peer), fixed_height=False)
        self.query_one("#ice-text", TextLine).show(ice_panel_text(peer), fixed_height=False)
        self.call_after_refresh(self.show_position)

    def show_position(self) -> None:
        """The footer line: which lines are in view and which key shows more (hidden when all fit).
        A text line rather than a scrollbar: a thumb's partial-block glyph read as a stray ``▅▅``."""
        more = self.query_one("#ice-more", TextLine)
        total, shown = self.virtual_size.height, self.scrollable_content_region.height
        more.display = self.max_scroll_y > 0
        if more.display:
            top = round(self.scroll_y)
            where = "↓ PgDn for more" if top < self.max_scroll_y else "↑ PgUp / Home back up"
            more.show(Text(f" lines {top + 1}–{min(total, top + shown)} of {total} · {where} ", style="reverse"))

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self.show_position()

    def on_resize(self) -> None:
        self.call_after_refresh(self.show_position)

    def scroll_by_key(self, how: str) -> None:
        """One of up, down, page_up, page_down, home, end (the app binds the keys: the panel never
        has the focus, the call has)."""
        actions = {"up": self.scroll_up, "down": self.scroll_down, "page_up": self.scroll_page_up,
                   "page_down": self.scroll_page_down, "home": self.scroll_home, "end": self.scroll_end}
        actions[how](animate=False)
