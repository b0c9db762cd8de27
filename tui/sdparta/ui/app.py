"""The terminal client: renders engine snapshots and sends commands; it never touches the network.

Data flow (DESIGN §2): the engine thread calls our listener with immutable ``CallSnapshot``s; the
listener coalesces them and wakes the UI with a thread-safe ``post_message``. Video never travels
in messages: a timer reads each peer's latest-frame slot at the tile frame rate. Leaving stops the
engine in a worker thread (bye sent, thread joined) so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from rich.table import Table
from rich.text import Text
from textual import events, on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.timer import Timer
from textual.widgets import Input, RichLog, Sparkline, Static

from sdparta.config import over_ssh
from sdparta.engine.state import CallSnapshot, ChatMessage, Notice, PeerSnapshot, StateChange
from sdparta.ui.call_source import CallSource
from sdparta.ui.identicon import Identicon
from sdparta.ui.video import FpsGovernor, VideoTile

STATE_COLOURS = {"discovered": "cyan", "connecting": "yellow", "connected": "green", "reconnecting": "yellow",
                 "failed": "red", "left": "grey50", "gone": "red"}
TILE_STATUSES = ("discovered", "connecting", "connected", "reconnecting", "failed")  # get a video tile
PATH_LABELS = {"direct": "direct", "stun": "STUN", "turn": "TURN"}
TIMELINE_KINDS = (("signaling", "signaling"), ("ice_gathering", "gathering"),
                  ("ice_connection", "ice"), ("connection", "connection"), ("peer", "peer"))
LEVEL_GLYPHS = " ▁▂▃▄▅▆▇█"
COMMAND_SETTLE_S = 1.0  # after a mute/camera key, trust the key over snapshots for this long
SSH_TILE_CELLS = (48, 18)  # largest picture per tile over SSH: ~35 KiB per truecolor frame at most
KEYS_HELP = [
    ("m", "mute / unmute the microphone"),
    ("v", "camera on / off"),
    ("tab, n", "focus the next participant"),
    ("shift+tab, p", "focus the previous participant"),
    ("i", "show / hide the ICE panel of the focused participant"),
    ("c, /", "type a chat message (enter sends, escape leaves the input)"),
    ("d", "dump the focused participant's timeline and stats as JSON"),
    ("r", "restart ICE with the focused participant (re-gathers candidates, keeps the call)"),
    ("?", "this help (escape closes)"),
    ("ctrl+q", "leave the call (works everywhere)"),
]
T = TypeVar("T")


def safe(text: str) -> str:
    """Drop control characters: names, chat and candidates come from other peers, and an escape
    sequence in them must never reach the terminal."""
    return text if text.isprintable() else "".join(ch for ch in text if ch.isprintable())


def new_items(items: Sequence[T], last_seen: T | None) -> list[T]:
    """Items appended after ``last_seen`` in an append-only list that the engine trims at the front
    (so neither indices nor counts are stable)."""
    if last_seen is None:
        return list(items)
    for index in range(len(items) - 1, -1, -1):
        if items[index] == last_seen:
            return list(items[index + 1:])
    return list(items)  # everything we saw was trimmed away: all of it is new


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
    flags = []
    if peer.remote_muted:
        flags.append("muted")
    if peer.remote_audio_only:
        flags.append("audio only")
    elif peer.remote_camera_off:
        flags.append("cam off")
    return flags


def peer_line(peer: PeerSnapshot, focused: bool) -> Text:
    """Two lines per participant: who, then state · path · RTT · flags."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append("▶ " if focused else "  ", style="bold yellow")
    text.append("●" if peer.speaking else "○", style="bold green" if peer.speaking else "grey50")
    text.append(level_glyph(peer.audio_level), style="green")
    text.append(f" {safe(peer.name)[:16]}", style="bold" if peer.status != "left" else "grey50")
    text.append(f" {safe(peer.fingerprint)}\n", style="grey62")
    text.append("    ")
    text.append(peer.status, style=STATE_COLOURS.get(peer.status, "white"))
    if peer.path:
        text.append(f" {PATH_LABELS.get(peer.path, safe(peer.path))}", style="cyan")
    if peer.stats.rtt_ms is not None and peer.status == "connected":
        text.append(f" {peer.stats.rtt_ms:.0f} ms")
    for flag in peer_flags(peer):
        text.append(f" {flag}", style="magenta")
    if peer.failure_reason and peer.status in ("failed", "gone", "reconnecting"):
        text.append(f"\n    {safe(peer.failure_reason)}", style="red" if peer.status != "reconnecting" else "yellow")
    return text


def participants_text(peers: Sequence[PeerSnapshot], focused_sid: str | None) -> Text:
    text = Text()
    for peer in peers:
        text.append_text(peer_line(peer, peer.session_id == focused_sid))
        text.append("\n")
    if not peers:
        text.append("waiting for others to join…", style="grey50")
    return text


def _timeline_line(label: str, changes: Sequence[StateChange], keep: int = 5) -> Text:
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


def _candidate(c: Any, protocol: bool = True) -> str:
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
        text.append_text(_timeline_line(label, [c for c in peer.timeline if c.kind == kind]))
        text.append("\n")
    text.append("candidate pairs\n", style="underline")
    if not peer.check_list:
        text.append(" none yet\n", style="grey50")
    selected = peer.selected_pair
    for pair in peer.check_list[:10]:
        chosen = selected is not None and pair.local == selected.local and pair.remote == selected.remote
        mark = "★" if pair.nominated else ("·" if chosen else " ")
        text.append(f" {mark} {pair.state:<11} {_candidate(pair.local, False)} → {_candidate(pair.remote, False)}\n",
                    style="green" if pair.nominated or chosen else ("red" if pair.state == "failed" else ""))
    if len(peer.check_list) > 10:
        text.append(f"   … {len(peer.check_list) - 10} more\n", style="grey50")
    for title, cands in (("local", peer.local_candidates), ("remote", peer.remote_candidates)):
        text.append(f"{title} candidates ({len(cands)})\n", style="underline")
        for cand in cands[:6]:
            text.append(f"  {_candidate(cand)}  prio {cand.priority}\n", style="grey62")
        if len(cands) > 6:
            text.append(f"  … {len(cands) - 6} more\n", style="grey50")
    s = peer.stats
    rtt = f"{s.rtt_ms:.1f} ms" if s.rtt_ms is not None else "–"
    text.append(f"rtt {rtt} · in {s.bitrate_in_kbps:.0f} kbit/s · out {s.bitrate_out_kbps:.0f} kbit/s · "
                f"loss {s.loss_fraction * 100:.1f}% ({s.packets_lost}/{s.packets_received})\n")
    return text


def _series_label(name: str, values: Sequence[float], unit: str) -> str:
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
    return [("rtt", _series_label("rtt", rtts, "ms"), [s.rtt_ms or 0.0 for s in history]),
            ("bitrate", bitrate_label, [i + o for i, o in zip(bitrate_in, bitrate_out, strict=True)]),
            ("loss", _series_label("loss", loss, "%"), loss)]


STATUS_HINTS = ("m mute · v cam · tab focus · i ICE · c chat · d dump · ? help · ^q quit",
                "m mute · v cam · i ICE · ? help · ^q quit", "? help · ^q quit")


def status_text(snap: CallSnapshot, width: int) -> Text:
    """Room, portals and transport, own fingerprint, device states and key hints; on a narrow
    terminal the least useful parts go first (own fingerprint — also shown on the self view —,
    then the portal, then longer hints)."""
    portals = re.sub(r"^https?://", "", snap.portals[0]) if snap.portals else "no portal"
    if len(snap.portals) > 1:
        portals += f" +{len(snap.portals) - 1}"
    audio_out = {"missing": "no output device", "none": "no audio out", "device": "speaker on",
                 "wav": "audio → file"}.get(snap.audio_out, f"out {snap.audio_out}")
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
    if snap.status != "joined":
        parts.append((f" {snap.status} ", "bold red" if snap.status == "error" else "yellow", 0))
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


class SnapshotArrived(Message):
    """Wakes the UI: a new snapshot is waiting (the latest one is taken, older ones are skipped)."""


class TextLine(Static):
    """A Static that repaints only when its text really changed, and re-lays out only when its
    height may have: snapshots arrive up to 10× a second, and a layout pass costs far more than
    drawing one line (it showed up as the app's largest cost with four video tiles)."""

    def show(self, text: Text, *, fixed_height: bool = True) -> None:
        previous: Text | None = getattr(self, "_shown", None)
        if previous is not None and previous == text:
            return
        relayout = not fixed_height and (previous is None or previous.plain.count("\n") != text.plain.count("\n"))
        self._shown = text
        self.update(text, layout=relayout)


class HelpScreen(ModalScreen[None]):
    """Lists every key; any of escape, ? or q closes it."""

    BINDINGS = [Binding("escape,question_mark,q", "app.pop_screen", "close")]

    def compose(self) -> ComposeResult:
        table = Table(title="sdparta keys", show_header=False, box=None, padding=(0, 2, 0, 0))
        for key, what in KEYS_HELP:
            table.add_row(Text(key, style="bold"), what)
        yield Static(table, id="help")


class PeerTile(Vertical):
    """One participant: a label line, then live video or the identicon of their key."""

    def __init__(self, session_id: str, fingerprint: str, mode: str, *,
                 max_cells: tuple[int, int] | None = None, tile_id: str | None = None) -> None:
        super().__init__(classes="tile", id=tile_id)
        self.session_id = session_id
        self.label = TextLine("", classes="tile-label")
        self.video = VideoTile(mode, max_cells=max_cells)
        self.icon = Identicon(fingerprint, mono=mode == "mono", classes="identicon")
        self.video.display = False

    def compose(self) -> ComposeResult:
        yield self.label
        yield self.video
        yield self.icon

    def show_video(self, on: bool) -> None:
        if self.video.display != on:
            self.video.display = on
            self.icon.display = not on
            if not on:
                self.video.clear()


class SdpartaApp(App[int]):
    """`sdparta join` / `sdparta demo`: one call, rendered from the engine's snapshots."""

    CSS_PATH = "app.tcss"
    TITLE = "sdparta"
    AUTO_FOCUS = None  # keys go to the call until the user asks for the chat input
    BINDINGS = [
        Binding("ctrl+q", "leave", "quit", priority=True),
        Binding("tab", "focus_peer(1)", "next", show=False, priority=True),
        Binding("shift+tab", "focus_peer(-1)", "previous", show=False, priority=True),
        Binding("n", "focus_peer(1)", "next", show=False),
        Binding("p", "focus_peer(-1)", "previous", show=False),
        Binding("m", "mute", "mute"),
        Binding("v", "camera", "camera"),
        Binding("i", "toggle_ice", "ICE"),
        Binding("c,slash", "chat", "chat"),
        Binding("d", "dump", "dump"),
        Binding("r", "restart_ice", "restart ICE", show=False),
        Binding("question_mark", "help", "help"),
    ]

    def __init__(self, call: CallSource, *, video_mode: str = "truecolor", fps: int = 15,
                 dump_dir: Path | None = None, start_call: bool = True, title: str | None = None,
                 small_tiles: bool | None = None,
                 local_time: Callable[[float], time.struct_time] = time.localtime) -> None:
        super().__init__()
        self.call = call
        self.video_mode = video_mode
        self.governor = FpsGovernor(fps)
        self.fps = self.governor.fps
        self.dump_dir = dump_dir or Path.cwd()
        self.start_call = start_call
        self.local_time = local_time
        small = over_ssh() if small_tiles is None else small_tiles
        self.tile_cells: tuple[int, int] | None = SSH_TILE_CELLS if small else None
        self.snapshot_state: CallSnapshot = call.snapshot()
        self.title = title or f"sdparta · {safe(self.snapshot_state.room)}"
        self.focused_sid: str | None = None
        self.muted = False  # what the user asked for; follows the engine's state between key presses
        self.camera_on = True
        self._commanded_at = float("-inf")
        self.stopped = False
        self._roster: list[PeerSnapshot] = []
        self._tiles: dict[str, PeerTile] = {}
        self._last_notice: Notice | None = None
        self._last_chat: ChatMessage | None = None
        self._last_error: str | None = None
        self._frame_timer: Timer | None = None
        self._snapshot_lock = threading.Lock()
        self._pending: CallSnapshot | None = None

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            with Vertical(id="side"):
                yield Static("participants", classes="title")
                yield TextLine(id="participants")
                yield Static("you", classes="title")
                self.self_tile = PeerTile("self", self.snapshot_state.fingerprint, self.video_mode,
                                          max_cells=self.tile_cells, tile_id="self-tile")
                yield self.self_tile
            yield Grid(id="grid")
            with VerticalScroll(id="ice"):
                yield TextLine(id="ice-text")
                yield TextLine(classes="spark-label", id="label-rtt")
                yield Sparkline([], id="spark-rtt")
                yield TextLine(classes="spark-label", id="label-bitrate")
                yield Sparkline([], id="spark-bitrate")
                yield TextLine(classes="spark-label", id="label-loss")
                yield Sparkline([], id="spark-loss")
        with Vertical(id="chat"):
            yield RichLog(id="chat-log", wrap=True, markup=False, max_lines=1000)
            yield Input(placeholder="chat: press c, type, enter sends (escape leaves)", id="chat-input",
                        max_length=2000)
        yield TextLine(id="status")

    def on_mount(self) -> None:
        self.query_one("#ice").display = False
        self.call.add_listener(self._on_engine_snapshot)
        if self.start_call:
            self.call.start()
        self._frame_timer = self.set_interval(1 / self.fps, self._pull_frames)
        # after the first refresh, so notices about the start (no microphone…) find the toast rack
        self.call_after_refresh(lambda: self._render_snapshot(self.call.snapshot()))

    # ------------------------------------------------------------------ snapshots
    def _on_engine_snapshot(self, snapshot: CallSnapshot) -> None:
        """Engine thread: keep only the newest snapshot and wake the UI once for it."""
        with self._snapshot_lock:
            wake = self._pending is None
            self._pending = snapshot
        if wake:
            self.post_message(SnapshotArrived())

    @on(SnapshotArrived)
    def _snapshot_arrived(self) -> None:
        with self._snapshot_lock:
            snapshot, self._pending = self._pending, None
        if snapshot is not None and self.is_running:  # not while shutting down (widgets go first)
            self._render_snapshot(snapshot)

    def focused_peer(self) -> PeerSnapshot | None:
        for peer in self._roster:
            if peer.session_id == self.focused_sid:
                return peer
        return None

    def _render_snapshot(self, snap: CallSnapshot) -> None:
        self.snapshot_state = snap
        if time.monotonic() - self._commanded_at > COMMAND_SETTLE_S:  # no command in flight
            if snap.mic in ("on", "muted"):
                self.muted = snap.mic == "muted"
            if snap.camera in ("on", "pattern", "off"):
                self.camera_on = snap.camera != "off"
        self._roster = roster(snap.peers)
        if self.focused_peer() is None:
            self.focused_sid = self._roster[0].session_id if self._roster else None
        self.query_one("#participants", TextLine).show(participants_text(self._roster, self.focused_sid),
                                                       fixed_height=False)
        self._sync_tiles()
        if self.query_one("#ice").display:
            self._render_ice(self.focused_peer())
        self._render_chat(snap)
        self._render_status()
        self._notify_news(snap)

    def _notify_news(self, snap: CallSnapshot) -> None:
        """Engine notices and errors, each shown once (errors already told as a notice are not
        repeated)."""
        fresh = new_items(snap.notices, self._last_notice)
        if snap.notices:
            self._last_notice = snap.notices[-1]
        for notice in fresh:
            severity = notice.severity if notice.severity in ("information", "warning", "error") else "information"
            self.notify(safe(notice.text), severity=severity, timeout=10 if severity == "error" else 6,
                        markup=False)
        if snap.error != self._last_error:
            self._last_error = snap.error
            if snap.error and not any(snap.error in n.text for n in fresh):
                self.notify(safe(snap.error), title="error", severity="error", timeout=10, markup=False)

    def _sync_tiles(self) -> None:
        grid = self.query_one("#grid", Grid)
        shown = [p for p in self._roster if p.status in TILE_STATUSES]
        wanted = {p.session_id for p in shown}
        for sid in list(self._tiles):
            if sid not in wanted:
                self._tiles.pop(sid).remove()
        for peer in shown:
            tile = self._tiles.get(peer.session_id)
            if tile is None:
                tile = PeerTile(peer.session_id, peer.fingerprint, self.video_mode, max_cells=self.tile_cells)
                self._tiles[peer.session_id] = tile
                grid.mount(tile)
            label = Text(no_wrap=True, overflow="ellipsis")
            label.append(level_glyph(peer.audio_level), style="green")
            label.append(f" {safe(peer.name)} ", style="bold")
            label.append(peer.status, style=STATE_COLOURS.get(peer.status, ""))
            for flag in peer_flags(peer):
                label.append(f" {flag}", style="magenta")
            tile.label.show(label)
            tile.set_class(peer.speaking, "-speaking")
            tile.set_class(peer.session_id == self.focused_sid, "-focused")
            tile.show_video(peer.video_frames > 0 and not peer.remote_camera_off and not peer.remote_audio_only)
        columns = 1 if len(shown) <= 1 else 2 if len(shown) <= 4 else 3
        grid.styles.grid_size_columns = columns
        grid.styles.grid_size_rows = max(1, math.ceil(len(shown) / columns))
        snap = self.snapshot_state
        me = Text(no_wrap=True, overflow="ellipsis")
        me.append(f"{safe(snap.name)} ", style="bold")
        me.append(f"{safe(snap.fingerprint)} ", style="grey62")  # what the others see next to our name
        me.append("muted" if snap.mic == "muted" else "", style="magenta")
        self.self_tile.label.show(me)
        self.self_tile.icon.set_fingerprint(snap.fingerprint)
        self.self_tile.show_video(snap.camera in ("on", "pattern") and not snap.audio_only)

    def _render_ice(self, peer: PeerSnapshot | None) -> None:
        self.query_one("#ice-text", TextLine).show(ice_panel_text(peer), fixed_height=False)
        for name, label, values in stats_series(peer):
            self.query_one(f"#label-{name}", TextLine).show(Text(label))
            self.query_one(f"#spark-{name}", Sparkline).data = values

    def _render_chat(self, snap: CallSnapshot) -> None:
        log = self.query_one("#chat-log", RichLog)
        for message in new_items(snap.chat, self._last_chat):
            line = Text(time.strftime("%H:%M ", self.local_time(message.t)), style="grey50")
            line.append(safe(message.from_name), style="bold cyan" if message.own else "bold")
            line.append(f": {safe(message.text)}")
            log.write(line)
        if snap.chat:
            self._last_chat = snap.chat[-1]

    def _render_status(self) -> None:
        self.query_one("#status", TextLine).show(status_text(self.snapshot_state, self.size.width))

    def on_resize(self, event: events.Resize) -> None:
        self._render_status()

    # ------------------------------------------------------------------ video
    def _pull_frames(self) -> None:
        """Read the latest-frame slots (frames never travel in messages) and adapt the frame rate
        to what the terminal can take."""
        busy = 0.0
        for sid, tile in self._tiles.items():
            if tile.video.display:
                latest = self.call.latest_frame(sid)
                if latest is not None:
                    tile.video.show_frame(*latest)
            busy += tile.video.take_busy()
        if self.self_tile.video.display:
            local = self.call.latest_local_frame()
            if local is not None:
                self.self_tile.video.show_frame(*local)
        busy += self.self_tile.video.take_busy()
        new_fps = self.governor.observe(time.monotonic(), busy)
        if new_fps is not None:
            self.fps = new_fps
            if self._frame_timer is not None:
                self._frame_timer.stop()
            self._frame_timer = self.set_interval(1 / new_fps, self._pull_frames)

    # ------------------------------------------------------------------ actions
    def action_mute(self) -> None:
        if self.snapshot_state.mic == "missing":
            self.notify("no microphone: there is nothing to mute", severity="warning", timeout=4)
            return
        self.muted = not self.muted
        self._commanded_at = time.monotonic()
        self.call.set_mic_muted(self.muted)
        self.notify("microphone muted" if self.muted else "microphone on", timeout=2)

    def action_camera(self) -> None:
        snap = self.snapshot_state
        if snap.audio_only:
            self.notify("audio-only call: no video is sent", severity="warning", timeout=4)
            return
        if snap.camera == "missing":
            self.notify("no camera: others see your identicon", severity="warning", timeout=4)
            return
        self.camera_on = not self.camera_on
        self._commanded_at = time.monotonic()
        self.call.set_camera(self.camera_on)
        self.notify("camera on" if self.camera_on else "camera off", timeout=2)

    def action_focus_peer(self, step: int) -> None:
        if not self._roster:
            return
        ids = [p.session_id for p in self._roster]
        current = ids.index(self.focused_sid) if self.focused_sid in ids else -step
        self.focused_sid = ids[(current + step) % len(ids)]
        self._render_snapshot(self.snapshot_state)

    def action_toggle_ice(self) -> None:
        panel = self.query_one("#ice")
        panel.display = not panel.display
        if panel.display:
            self._render_ice(self.focused_peer())

    def action_chat(self) -> None:
        self.query_one("#chat-input", Input).focus()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_restart_ice(self) -> None:
        peer = self.focused_peer()
        if peer is None or peer.status not in ("connected", "reconnecting"):
            self.notify("no connected participant to restart ICE with", severity="warning")
            return
        self.call.restart_ice(peer.session_id)
        self.notify(f"restarting ICE with {safe(peer.name)}…", timeout=4, markup=False)

    def action_dump(self) -> None:
        peer = self.focused_peer()
        if peer is None:
            self.notify("no participant to dump", severity="warning")
            return
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", peer.name)[:32] or "peer"
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime())
        path = self.dump_dir / f"sdparta-{name}-{peer.session_id[:8]}-{stamp}.json"
        snap = self.snapshot_state
        document = {"dumped_at": time.time(), "room": snap.room, "call_started_at": snap.started_at,
                    "me": {"name": snap.name, "fingerprint": snap.fingerprint, "session_id": snap.session_id},
                    "peer": asdict(peer)}
        try:
            path.write_text(json.dumps(document, indent=2))
        except OSError as exc:
            self.notify(f"could not write {path}: {exc}", severity="error", markup=False)
            return
        self.notify(f"timeline written to {path}", timeout=8, markup=False)

    @on(Input.Submitted, "#chat-input")
    def _send_chat(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if text:
            self.call.send_chat(text)
        event.input.value = ""

    def on_key(self, event: events.Key) -> None:
        if event.key == "escape" and isinstance(self.focused, Input):
            self.set_focus(None)

    async def action_leave(self) -> None:
        """Leave cleanly: the engine says bye and its thread is joined, off the event loop. A second
        ctrl+q while that runs exits at once (run_join_app still stops the engine)."""
        if self.stopped:
            self.exit(0)
            return
        self.stopped = True
        if self._frame_timer is not None:
            self._frame_timer.stop()
        self.notify("leaving…", timeout=5)
        await asyncio.to_thread(self.call.stop)
        self.exit(0)


def run_join_app(call: CallSource, *, video_mode: str = "truecolor", fps: int = 15, title: str | None = None,
                 small_tiles: bool | None = None, dump_dir: Path | None = None) -> int:
    """Run the app for `sdparta join` / `sdparta demo`; the engine is always stopped on the way out.

    The garbage collector is tuned while the app runs: video makes many short-lived objects and
    full collections tripled the per-frame cost (DESIGN §7)."""
    app = SdpartaApp(call, video_mode=video_mode, fps=fps, title=title, small_tiles=small_tiles, dump_dir=dump_dir)
    threshold = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    try:
        result = app.run()
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()
        call.stop()
    return result if isinstance(result, int) else int(app.return_code or 0)


__all__ = ["SdpartaApp", "run_join_app"]
