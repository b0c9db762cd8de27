"""The terminal client: renders engine snapshots and sends commands; it never touches the network.

Data flow (DESIGN §2): the engine thread calls our listener with immutable ``CallSnapshot``s; the
listener coalesces them and wakes the UI with a thread-safe ``post_message``. Video never travels
in messages: a timer reads each peer's latest-frame slot at the tile frame rate. Leaving stops the
engine in a worker thread (bye sent, thread joined) so the event loop never blocks.

What is drawn lives beside this module: the participant list (``participants``), the ICE panel
(``ice_panel``), the status bar (``status_bar``), tiles and labels (``widgets``, ``video``,
``identicon``) and the help screen (``screens``).
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
from typing import TypeVar

from rich.text import Text
from textual import events, on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Input, RichLog, Static

from sdparta.config import over_ssh
from sdparta.engine.state import CallSnapshot, ChatMessage, Notice, PeerSnapshot, PeerStatus
from sdparta.ui.call_source import CallSource
from sdparta.ui.ice_panel import IcePanel
from sdparta.ui.participants import TILE_STATUSES, participants_text, roster, tile_label
from sdparta.ui.sanitize import safe
from sdparta.ui.screens import HelpScreen
from sdparta.ui.status_bar import status_text
from sdparta.ui.video import FpsGovernor
from sdparta.ui.widgets import PeerTile, TextLine

COMMAND_SETTLE_S = 1.0  # after a mute/camera key, trust the key over snapshots for this long
SSH_TILE_CELLS = (48, 18)  # largest picture per tile over SSH: ~35 KiB per truecolor frame at most
NOTICE_SEVERITIES = ("information", "warning", "error")  # what Textual's notify accepts
RESTARTABLE = (PeerStatus.CONNECTED, PeerStatus.RECONNECTING)  # pairs `r` may restart ICE on
T = TypeVar("T")


def new_items(items: Sequence[T], last_seen: T | None) -> list[T]:
    """Items appended after ``last_seen`` in an append-only list that the engine trims at the front
    (so neither indices nor counts are stable)."""
    if last_seen is None:
        return list(items)
    for index in range(len(items) - 1, -1, -1):
        if items[index] == last_seen:
            return list(items[index + 1:])
    return list(items)  # everything we saw was trimmed away: all of it is new


class SnapshotArrived(Message):
    """Wakes the UI: a new snapshot is waiting (the latest one is taken, older ones are skipped)."""


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
            yield IcePanel(id="ice")
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
        ice = self.query_one("#ice", IcePanel)
        if ice.display:
            ice.show(self.focused_peer())
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
            severity = notice.severity if notice.severity in NOTICE_SEVERITIES else "information"
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
            tile.label.show(tile_label(peer))
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
        panel = self.query_one("#ice", IcePanel)
        panel.display = not panel.display
        if panel.display:
            panel.show(self.focused_peer())

    def action_chat(self) -> None:
        self.query_one("#chat-input", Input).focus()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_restart_ice(self) -> None:
        peer = self.focused_peer()
        if peer is None or peer.status not in RESTARTABLE:
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
