"""The terminal client: renders engine snapshots and sends commands; it never touches the network.

Data flow (DESIGN §2): the engine thread calls our listener with immutable ``CallSnapshot``s; the
listener coalesces them and wakes the UI with a thread-safe ``post_message``. Video never travels
in messages: a timer reads each peer's latest-frame slot at the tile frame rate. Leaving stops the
engine in a worker thread (bye sent, thread joined) so the event loop never blocks.

What is drawn lives beside this module: the participant list (``participants``), the ICE panel
(``ice_panel``), the status bar (``status_bar``), the chat box (``chat``), what the empty grid says
(``lobby``), how the screen is split per terminal size (``layout``), tiles and labels (``widgets``,
``video``, ``identicon``), timeline dumps (``dump``) and the help screen (``screens``).
"""

from __future__ import annotations

import asyncio
import gc
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from rich.text import Text
from textual import events, on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Input, Static

from sdparta.config import over_ssh
from sdparta.engine.leaving import LEAVE_DEADLINE_S, LEAVE_SIGNALS, HangupSafeStream, SignalLeave
from sdparta.engine.state import CallSnapshot, Notice, PeerSnapshot, PeerStatus
from sdparta.ui.call_source import CallSource
from sdparta.ui.chat import ChatBox, new_items, toast_text
from sdparta.ui.dump import default_dump_dir, shown_path, write_dump
from sdparta.ui.ice_panel import IcePanel
from sdparta.ui.layout import Layout, choose_layout
from sdparta.ui.lobby import lobby_text, roster_hint
from sdparta.ui.networks import NetworkNews
from sdparta.ui.participants import TILE_STATUSES, participants_text, roster, self_label, tile_label, you_title
from sdparta.ui.sanitize import safe
from sdparta.ui.screens import HelpScreen
from sdparta.ui.status_bar import status_text, tone_label
from sdparta.ui.video import FpsGovernor
from sdparta.ui.widgets import PeerTile, TextLine

COMMAND_SETTLE_S = 1.0  # after a mute/camera key, trust the key over snapshots for this long
SSH_TILE_CELLS = (48, 18)  # largest picture per tile over SSH: ~35 KiB per truecolor frame at most
NOTICE_SEVERITIES = ("information", "warning", "error")  # what Textual's notify accepts
RESTARTABLE = (PeerStatus.CONNECTED, PeerStatus.RECONNECTING)  # pairs `r` may restart ICE on


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
        # the ICE panel never has the focus (the call has): its scroll keys are the app's
        Binding("up", "ice_scroll('up')", show=False),
        Binding("down", "ice_scroll('down')", show=False),
        Binding("pageup", "ice_scroll('page_up')", show=False),
        Binding("pagedown", "ice_scroll('page_down')", show=False),
        Binding("home", "ice_scroll('home')", show=False),
        Binding("end", "ice_scroll('end')", show=False),
    ]

    def __init__(self, call: CallSource, *, video_mode: str = "truecolor", fps: int = 15,
                 dump_dir: Path | None = None, start_call: bool = True, title: str | None = None,
                 small_tiles: bool | None = None, page_portal: str | None = None, no_page: str | None = None,
                 local_time: Callable[[float], time.struct_time] = time.localtime) -> None:
        super().__init__()
        self.call = call
        self.video_mode = video_mode
        self.governor = FpsGovernor(fps)
        self.fps = self.governor.fps
        self.dump_dir = dump_dir or default_dump_dir()
        self.start_call = start_call
        self.page_portal, self.no_page = page_portal, no_page  # where the browser page is (lobby.py)
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
        self._last_error: str | None = None
        self._network_news = NetworkNews()
        self._frame_timer: Timer | None = None
        self._snapshot_lock = threading.Lock()
        self._pending: CallSnapshot | None = None
        self._ice_open = False
        self._layout: Layout = choose_layout(120, 40)  # until the first resize says otherwise
        self._main_screen: Screen[object] | None = None

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            with Vertical(id="side"):
                yield Static("participants", classes="title")
                yield TextLine(id="participants")
                yield TextLine(Text("you"), classes="title", id="you")
                self.self_tile = PeerTile("self", self.snapshot_state.fingerprint, self.video_mode,
                                          max_cells=self.tile_cells, tile_id="self-tile")
                yield self.self_tile
            yield Grid(id="grid")
            yield TextLine(id="lobby")
            yield IcePanel(id="ice")
        yield ChatBox(self.local_time, id="chat")
        yield TextLine(id="status")

    def on_mount(self) -> None:
        self._main_screen = self.screen
        self._apply_layout()
        self.call.add_listener(self._on_engine_snapshot)
        if self.start_call:
            self.call.start()
        self._frame_timer = self.set_interval(1 / self.fps, self._pull_frames)
        self.set_interval(1.0, self._tick)  # the lobby's "alone for N s" advances without snapshots
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

    def _focusable(self) -> list[PeerSnapshot]:
        """The participants, then the SFU's connections (the ICE panel shows those too)."""
        sfu = self.snapshot_state.sfu if self.snapshot_state is not None else None
        return [*self._roster, *(sfu.connections if sfu is not None else ())]

    def focused_peer(self) -> PeerSnapshot | None:
        for peer in self._focusable():
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
        self._sync_tiles()
        self._render_lobby()
        if self._ice_open:
            self.query_one("#ice", IcePanel).show(self.focused_peer(), snap)
        self._render_chat(snap)
        self._render_status()
        self._notify_news(snap)

    def _render_lobby(self) -> None:
        """The participant list (or what its emptiness means) and, while there are no tiles, the
        lobby where they would be: joining, portal not answering, alone — and the invite line."""
        snap, now = self.snapshot_state, time.time()
        self.query_one("#participants", TextLine).show(
            participants_text(self._roster, self.focused_sid, roster_hint(snap, now),
                              snap.sfu.label if snap.sfu is not None else None), fixed_height=False)
        if not self._tiles:
            lobby = self.query_one("#lobby", TextLine)
            lobby.show(lobby_text(snap, now, lobby.content_size.width or 40, self.page_portal, self.no_page),
                       fixed_height=False)

    def _tick(self) -> None:
        """Once a second: time-based text (alone for N s) and unread chat that came into sight."""
        if self.is_running and not self.stopped:
            self._render_lobby()
            self._chat_maybe_seen()

    def _notify_news(self, snap: CallSnapshot) -> None:
        """Engine notices and errors, each shown once (errors already told as a notice are not
        repeated), and what changed in the networks (a relay refusing us, all of them down)."""
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
        for severity, text in self._network_news.news(snap):
            self.notify(text, title="networks", severity=severity,
                        timeout=10 if severity == "error" else 8, markup=False)

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
        if (not self._tiles) != self._main_screen_has("-empty"):
            self._apply_layout()
        columns = 1 if len(shown) <= 1 else 2 if len(shown) <= 4 else 3
        grid.styles.grid_size_columns = columns
        grid.styles.grid_size_rows = max(1, math.ceil(len(shown) / columns))
        snap = self.snapshot_state
        self.self_tile.label.show(self_label(snap))
        self.query_one("#you", TextLine).show(you_title(snap, self._layout.self_view))
        self.self_tile.icon.set_fingerprint(snap.fingerprint)
        self.self_tile.show_video(snap.camera in ("on", "pattern") and not snap.audio_only)

    def _render_chat(self, snap: CallSnapshot) -> None:
        """New lines into the log; those from others that the user cannot see now are also a toast
        and counted as unread in the status bar."""
        unseen = self.query_one("#chat", ChatBox).show(snap.chat, self.chat_visible())
        if unseen:
            self.notify(toast_text(unseen), title="chat (c to read and answer)", timeout=8, markup=False)

    def chat_visible(self) -> bool:
        """Can the user see the chat log now (not under the help screen or a full-screen ICE panel)?"""
        return self.screen is self._main_screen and not (self._ice_open and self._layout.ice_full)

    def _chat_maybe_seen(self) -> None:
        if self.chat_visible() and self.query_one("#chat", ChatBox).unread.seen():
            self._render_status()

    def _render_status(self) -> None:
        self.query_one("#status", TextLine).show(status_text(self.snapshot_state, self.size.width,
                                                             self.query_one("#chat", ChatBox).unread.count))

    # ------------------------------------------------------------------ layout
    def _main_screen_has(self, cls: str) -> bool:
        return self._main_screen is not None and self._main_screen.has_class(cls)

    def _apply_layout(self) -> None:
        """Split the screen for the terminal's size (see layout.py and app.tcss)."""
        if self._main_screen is None:
            return
        self._layout = choose_layout(self.size.width, self.size.height)
        for cls, wanted in self._layout.classes(ice_open=self._ice_open, empty=not self._tiles).items():
            self._main_screen.set_class(wanted, cls)

    def on_resize(self, event: events.Resize) -> None:
        was_self_view = self._layout.self_view
        self._apply_layout()
        if self._layout.self_view != was_self_view:
            self._sync_tiles()
        self.call_after_refresh(self._render_lobby)  # the invite line is laid out for the new width
        self._chat_maybe_seen()
        self._render_status()

    # ------------------------------------------------------------------ video
    def _pull_frames(self) -> None:
        """Read the latest-frame slots (frames never travel in messages) and adapt the frame rate
        to what the terminal can take."""
        busy = 0.0
        grid_shown = not (self._ice_open and self._layout.ice_full)  # hidden tiles are not drawn
        for sid, tile in self._tiles.items():
            if grid_shown and tile.video.display:
                latest = self.call.latest_frame(sid)
                if latest is not None:
                    tile.video.show_frame(*latest)
            busy += tile.video.take_busy()
        if grid_shown and self._layout.self_view and self.self_tile.video.display:
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
        snap = self.snapshot_state
        if snap.mic in ("missing", "off"):
            what = "no microphone" if snap.mic == "missing" else "no audio source (--audio none)"
            self.notify(f"{what}: there is nothing to mute", severity="warning", timeout=4)
            return
        self.muted = not self.muted
        self._commanded_at = time.monotonic()
        self.call.set_mic_muted(self.muted)
        tone = tone_label(snap.mic_source)
        source = f" (source: {tone})" if tone else ""
        self.notify(f"microphone muted{source}" if self.muted else f"microphone on{source}", timeout=2)

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
        focusable = self._focusable()
        if not focusable:
            return
        ids = [p.session_id for p in focusable]
        current = ids.index(self.focused_sid) if self.focused_sid in ids else -step
        self.focused_sid = ids[(current + step) % len(ids)]
        self._render_snapshot(self.snapshot_state)

    def action_toggle_ice(self) -> None:
        """Show or hide the ICE panel: beside the tiles on a big terminal, else on the whole screen."""
        self._ice_open = not self._ice_open
        self._apply_layout()
        if self._ice_open:
            panel = self.query_one("#ice", IcePanel)
            panel.show(self.focused_peer(), self.snapshot_state)
            panel.scroll_home(animate=False)
        self._chat_maybe_seen()

    def action_ice_scroll(self, how: str) -> None:
        if self._ice_open:
            self.query_one("#ice", IcePanel).scroll_by_key(how)

    def action_chat(self) -> None:
        """Into the chat input; a full-screen ICE panel closes first (the chat must be in sight)."""
        if self._ice_open and self._layout.ice_full:
            self.action_toggle_ice()
        self.query_one("#chat-input", Input).focus()
        self._chat_maybe_seen()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(), lambda _: self._chat_maybe_seen())

    def action_help_quit(self) -> None:
        """ctrl+c (when no text is selected to copy): it does not leave a call — say what does."""
        self.notify("ctrl+c does not leave the call: press ctrl+q to leave", title="leave?", timeout=6)

    def action_restart_ice(self) -> None:
        peer = self.focused_peer()
        if peer is not None and peer.session_id.startswith("sfu-"):
            self.notify("the SFU's connections are renegotiated with the SFU, not restarted from here",
                        severity="warning")
            return
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
        try:
            path = write_dump(self.dump_dir, self.snapshot_state, peer)
        except OSError as exc:
            self.notify(f"could not write a dump into {shown_path(self.dump_dir)}: {exc}", severity="error",
                        markup=False)
            return
        # the path on a line of its own: the toast is as wide as it (app.tcss), so it is never broken
        self.notify(shown_path(path), title=f"timeline of {safe(peer.name)} written to", timeout=10, markup=False)

    @on(Input.Submitted, "#chat-input")
    def _send_chat(self, event: Input.Submitted) -> None:
        """Send, and hand the keys back to the call: the next ``c`` opens the chat, not types a c."""
        text = event.value.strip()
        if text:
            self.call.send_chat(text)
        event.input.value = ""
        self.set_focus(None)

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
                 small_tiles: bool | None = None, dump_dir: Path | None = None, page_portal: str | None = None,
                 no_page: str | None = None) -> int:
    """Run the app for `sdparta join` / `sdparta demo`; the engine is always stopped on the way out.

    SIGTERM and SIGHUP (the terminal closed) leave as ctrl+q does: the engine says bye on a thread
    of its own (engine/leaving.py: bounded, and complete even when the UI is stuck on a dead
    terminal) while the app runs its leave action. The garbage collector is tuned while the app
    runs: video makes many short-lived objects and full collections tripled the per-frame cost
    (DESIGN §7)."""
    app = SdpartaApp(call, video_mode=video_mode, fps=fps, title=title, small_tiles=small_tiles, dump_dir=dump_dir,
                     page_portal=page_portal, no_page=no_page)
    leave = SignalLeave(call.stop)

    def on_signal(signum: int) -> None:
        if leave.trigger(signum):
            app.call_later(app.action_leave)

    previous = {sig: signal.getsignal(sig) for sig in LEAVE_SIGNALS}
    threshold = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    terminal = sys.__stderr__  # what Textual draws on: its writes must survive a hangup
    sys.__stderr__ = HangupSafeStream(terminal) if terminal is not None else None  # type: ignore[assignment,misc]
    try:
        with asyncio.Runner() as runner:  # what App.run does, with the signal handlers on its loop
            for sig in LEAVE_SIGNALS:
                runner.get_loop().add_signal_handler(sig, on_signal, sig)
            try:
                result = runner.run(app.run_async())
            except OSError:  # the terminal went away (EIO) while leaving on its signal: the leave goes on
                if leave.signum is None:
                    raise
                result = 0
    finally:
        sys.__stderr__ = terminal  # type: ignore[misc]
        gc.set_threshold(*threshold)
        gc.unfreeze()
        call.stop(LEAVE_DEADLINE_S if leave.signum is not None else 10.0)
        leave.done()
        for sig, handler in previous.items():  # the loop's close reset them to the default
            signal.signal(sig, handler)
    return result if isinstance(result, int) else int(app.return_code or 0)


__all__ = ["SdpartaApp", "run_join_app"]
