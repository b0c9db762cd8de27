"""The terminal client: renders engine snapshots, sends commands; never touches the network."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Input, RichLog, Sparkline, Static

from sdparta.engine.state import CallSnapshot, PeerSnapshot
from sdparta.ui.call_source import CallSource
from sdparta.ui.video import Identicon, VideoTile

STATE_COLOURS = {"connected": "green", "connecting": "yellow", "discovered": "cyan", "reconnecting": "yellow",
                 "failed": "red", "left": "grey50", "gone": "red"}
LIVE = ("discovered", "connecting", "connected", "reconnecting")
KEYS_HELP = [
    ("m", "mute / unmute microphone"),
    ("v", "camera on / off"),
    ("n / p", "focus next / previous participant"),
    ("i", "show / hide the ICE panel"),
    ("c", "type a chat message (escape leaves)"),
    ("d", "dump the focused participant's timeline as JSON"),
    ("?", "this help"),
    ("ctrl+q", "leave the call"),
]


class SnapshotArrived(Message):
    """Posted from the engine thread (post_message is thread-safe)."""

    def __init__(self, snapshot: CallSnapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "app.pop_screen", "close")]

    def compose(self) -> ComposeResult:
        table = Table(title="sdparta keys", show_header=False, box=None)
        for key, what in KEYS_HELP:
            table.add_row(Text(key, style="bold"), what)
        yield Static(table, id="help")


class PeerTile(Vertical):
    """One participant in the grid: name line + live video or identicon."""

    def __init__(self, session_id: str, fingerprint: str, mode: str) -> None:
        super().__init__(classes="tile")
        self.session_id = session_id
        self.label = Static("", classes="tile-label")
        self.video = VideoTile(mode)
        self.icon = Identicon(fingerprint, classes="identicon")

    def compose(self) -> ComposeResult:
        yield self.label
        yield self.video
        yield self.icon

    def show_video(self, on: bool) -> None:
        self.video.display = on
        self.icon.display = not on


def peer_line(peer: PeerSnapshot) -> Text:
    colour = STATE_COLOURS.get(peer.status, "white")
    text = Text()
    text.append("● " if peer.speaking else "○ ", style="bold green" if peer.speaking else "grey50")
    text.append(peer.name[:18], style="bold")
    text.append(f" {peer.fingerprint}\n  ", style="grey62")
    text.append(peer.status, style=colour)
    if peer.path:
        text.append(f" {ICE_PATH[peer.path]}", style="cyan")
    if peer.stats.rtt_ms is not None:
        text.append(f" {peer.stats.rtt_ms:.0f} ms")
    if peer.remote_muted:
        text.append(" muted", style="magenta")
    if peer.remote_camera_off or peer.remote_audio_only:
        text.append(" cam off", style="magenta")
    if peer.failure_reason:
        text.append(f"\n  {peer.failure_reason}", style="red")
    return text


ICE_PATH = {"direct": "direct", "stun": "STUN", "turn": "TURN relay"}


def ice_panel_text(peer: PeerSnapshot | None) -> Text:
    if peer is None:
        return Text("no participant focused", style="grey50")
    text = Text()
    text.append(f"{peer.name}  {peer.fingerprint}\n", style="bold")
    text.append(f"signaling {peer.signaling_state} · gathering {peer.ice_gathering_state} · "
                f"ice {peer.ice_connection_state} · connection {peer.connection_state}\n")
    text.append("timeline\n", style="underline")
    for change in peer.timeline[-14:]:
        text.append(f"  {change.t:8.3f}s {change.kind:<14} {change.state}\n")
    text.append("candidate pairs\n", style="underline")
    for pair in peer.check_list[:8]:
        mark = "★" if pair.nominated else " "
        text.append(f" {mark}{pair.state:<11} {pair.local.type} {pair.local.address}:{pair.local.port} → "
                    f"{pair.remote.type} {pair.remote.address}:{pair.remote.port}\n",
                    style="green" if pair.nominated else "")
    text.append(f"local candidates {len(peer.local_candidates)}, remote {len(peer.remote_candidates)}\n")
    for cand in peer.remote_candidates[:4]:
        text.append(f"  remote {cand.type} {cand.protocol} {cand.address}:{cand.port}\n", style="grey62")
    s = peer.stats
    rtt = f"{s.rtt_ms:.1f} ms" if s.rtt_ms is not None else "–"
    text.append(f"rtt {rtt} · in {s.bitrate_in_kbps:.0f} kbit/s · out {s.bitrate_out_kbps:.0f} kbit/s · "
                f"loss {s.loss_fraction * 100:.1f}%\n")
    return text


class SdpartaApp(App[int]):
    """`sdparta join` / `sdparta demo`."""

    CSS_PATH = "app.tcss"
    TITLE = "sdparta"
    BINDINGS = [
        Binding("ctrl+q", "leave", "quit", priority=True),
        Binding("m", "mute", "mute"),
        Binding("v", "camera", "camera"),
        Binding("n,tab", "focus_peer(1)", "next", show=False),
        Binding("p,shift+tab", "focus_peer(-1)", "previous", show=False),
        Binding("i", "toggle_ice", "ICE"),
        Binding("c,slash", "chat", "chat"),
        Binding("d", "dump", "dump"),
        Binding("question_mark", "help", "help"),
    ]

    def __init__(self, call: CallSource, *, video_mode: str = "truecolor", fps: int = 15,
                 dump_dir: Path | None = None, start_call: bool = True) -> None:
        super().__init__()
        self.call = call
        self.video_mode = video_mode
        self.fps = max(1, fps)
        self.min_fps = 2
        self.dump_dir = dump_dir or Path.cwd()
        self.start_call = start_call
        self.snapshot_state: CallSnapshot = call.snapshot()
        self.focused_index = 0
        self.muted = False
        self.camera_on = True
        self._tiles: dict[str, PeerTile] = {}
        self._notices_seen = 0
        self._chat_seen = 0
        self._frame_timer: Any = None
        self.stopped = False

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            with Vertical(id="side"):
                yield Static("participants", classes="title")
                yield Static(id="participants")
                yield Static("self", classes="title")
                self.self_tile = PeerTile("self", self.snapshot_state.fingerprint, self.video_mode)
                self.self_tile.id = "self-tile"
                yield self.self_tile
            yield Grid(id="grid")
            with VerticalScroll(id="ice"):
                yield Static(id="ice-text")
                yield Static("rtt (ms)", classes="spark-label")
                yield Sparkline([], id="spark-rtt")
                yield Static("bitrate in (kbit/s)", classes="spark-label")
                yield Sparkline([], id="spark-bitrate")
                yield Static("loss (%)", classes="spark-label")
                yield Sparkline([], id="spark-loss")
        with Vertical(id="chat"):
            yield RichLog(id="chat-log", wrap=True, markup=False, max_lines=1000)
            yield Input(placeholder="chat: press c, type, enter (escape leaves)", id="chat-input")
        yield Static(id="status")

    def on_mount(self) -> None:
        self.query_one("#ice").display = False
        self.call.add_listener(lambda snap: self.post_message(SnapshotArrived(snap)))
        if self.start_call:
            self.call.start()
        self._frame_timer = self.set_interval(1 / self.fps, self._pull_frames)
        self._render_snapshot(self.call.snapshot())

    # ------------------------------------------------------------------ snapshots
    @on(SnapshotArrived)
    def _on_snapshot(self, message: SnapshotArrived) -> None:
        self._render_snapshot(message.snapshot)

    def visible_peers(self) -> list[PeerSnapshot]:
        return [p for p in self.snapshot_state.peers if p.status in LIVE or p.status == "failed"]

    def focused_peer(self) -> PeerSnapshot | None:
        peers = self.visible_peers()
        return peers[self.focused_index % len(peers)] if peers else None

    def _render_snapshot(self, snap: CallSnapshot) -> None:
        self.snapshot_state = snap
        peers = self.visible_peers()
        focused = self.focused_peer()
        lines = Text()
        for peer in peers:
            if focused is not None and peer.session_id == focused.session_id:
                lines.append("▶ ", style="bold yellow")
            lines.append_text(peer_line(peer))
            lines.append("\n")
        if not peers:
            lines.append("waiting for others to join…", style="grey50")
        self.query_one("#participants", Static).update(lines)
        self._sync_tiles(peers)
        if self.query_one("#ice").display:
            self._render_ice(focused)
        self._render_chat(snap)
        self._render_status(snap)
        for notice in snap.notices:
            if notice.seq > self._notices_seen:
                self._notices_seen = notice.seq
                self.notify(notice.text, severity=notice.severity if notice.severity != "information"
                            else "information", timeout=8)

    def _sync_tiles(self, peers: list[PeerSnapshot]) -> None:
        grid = self.query_one("#grid", Grid)
        wanted = {p.session_id: p for p in peers}
        for sid in list(self._tiles):
            if sid not in wanted:
                self._tiles.pop(sid).remove()
        for peer in peers:
            tile = self._tiles.get(peer.session_id)
            if tile is None:
                tile = PeerTile(peer.session_id, peer.fingerprint, self.video_mode)
                self._tiles[peer.session_id] = tile
                grid.mount(tile)
            colour = STATE_COLOURS.get(peer.status, "")
            tile.label.update(Text.assemble((peer.name, "bold"), " ", (peer.status, colour)))
            has_video = peer.video_frames > 0 and not peer.remote_camera_off and not peer.remote_audio_only
            tile.show_video(has_video)
        count = max(1, len(peers))
        grid.styles.grid_size_columns = 1 if count == 1 else 2
        self.self_tile.label.update(Text(f"you ({self.snapshot_state.name})", style="bold"))
        self.self_tile.show_video(self.snapshot_state.camera in ("on", "pattern"))

    def _render_ice(self, peer: PeerSnapshot | None) -> None:
        self.query_one("#ice-text", Static).update(ice_panel_text(peer))
        history = list(peer.stats_history) if peer else []
        self.query_one("#spark-rtt", Sparkline).data = [s.rtt_ms or 0.0 for s in history][-60:]
        self.query_one("#spark-bitrate", Sparkline).data = [s.bitrate_in_kbps for s in history][-60:]
        self.query_one("#spark-loss", Sparkline).data = [s.loss_fraction * 100 for s in history][-60:]

    def _render_chat(self, snap: CallSnapshot) -> None:
        log = self.query_one("#chat-log", RichLog)
        for message in snap.chat[self._chat_seen:]:
            stamp = time.strftime("%H:%M", time.localtime(message.t))
            line = Text(f"{stamp} ", style="grey50")
            line.append(message.from_name, style="bold cyan" if message.own else "bold")
            line.append(f": {message.text}")
            log.write(line)
        self._chat_seen = len(snap.chat)

    def _render_status(self, snap: CallSnapshot) -> None:
        transport = "push" if snap.push else "polling"
        audio_out = {"missing": "no output device", "none": "no output"}.get(snap.audio_out, snap.audio_out)
        status = Text()
        status.append(f" {snap.room} ", style="bold reverse")
        status.append(f" {', '.join(snap.portals)} ({transport}) ")
        status.append(f" me {snap.fingerprint} ", style="grey70")
        status.append(f" mic {snap.mic} ", style="red" if snap.mic != "on" else "green")
        status.append(f" cam {snap.camera} ")
        status.append(f" out {audio_out} ", style="yellow" if snap.audio_out == "missing" else "")
        if snap.status != "joined":
            status.append(f" {snap.status} ", style="bold red" if snap.status == "error" else "yellow")
        status.append("  m mute · v cam · n/p focus · i ICE · c chat · d dump · ? help · ^q quit", style="grey50")
        self.query_one("#status", Static).update(status)

    # ------------------------------------------------------------------ video
    def _pull_frames(self) -> None:
        """Latest-frame slots, read at the tile fps; frames never travel in messages."""
        slow = False
        for sid, tile in self._tiles.items():
            if tile.video.display:
                latest = self.call.latest_frame(sid)
                if latest is not None:
                    tile.video.show_frame(*latest)
                    slow = slow or tile.video.render_seconds > 0.5 / self.fps
        if self.self_tile.video.display:
            local = self.call.latest_local_frame()
            if local is not None:
                self.self_tile.video.show_frame(*local)
        if slow and self.fps > self.min_fps:  # frames cannot be written in time: lower the fps
            self.fps = max(self.min_fps, self.fps // 2)
            self._frame_timer.stop()
            self._frame_timer = self.set_interval(1 / self.fps, self._pull_frames)

    # ------------------------------------------------------------------ actions
    def action_mute(self) -> None:
        self.muted = not self.muted
        self.call.set_mic_muted(self.muted)
        self.notify("microphone muted" if self.muted else "microphone on", timeout=2)

    def action_camera(self) -> None:
        self.camera_on = not self.camera_on
        self.call.set_camera(self.camera_on)

    def action_focus_peer(self, step: int) -> None:
        self.focused_index += step
        self._render_snapshot(self.snapshot_state)

    def action_toggle_ice(self) -> None:
        panel = self.query_one("#ice")
        panel.display = not panel.display
        self._render_ice(self.focused_peer())

    def action_chat(self) -> None:
        self.query_one("#chat-input", Input).focus()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_dump(self) -> None:
        peer = self.focused_peer()
        if peer is None:
            self.notify("no participant to dump", severity="warning")
            return
        path = self.dump_dir / f"sdparta-{peer.name}-{int(time.time())}.json"
        path.write_text(json.dumps(_peer_dump(peer), indent=2))
        self.notify(f"timeline written to {path}", timeout=6)

    @on(Input.Submitted, "#chat-input")
    def _send_chat(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if text:
            self.call.send_chat(text)
        event.input.value = ""

    def on_key(self, event: Any) -> None:
        if event.key == "escape" and isinstance(self.focused, Input):
            self.set_focus(None)

    async def action_leave(self) -> None:
        """Leave cleanly: bye sent and the engine thread joined (off the UI loop), then exit."""
        if not self.stopped:
            self.stopped = True
            self.notify("leaving…", timeout=2)
            await asyncio.to_thread(self.call.stop)
        self.exit(0)


def _peer_dump(peer: PeerSnapshot) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(peer)


def run_join_app(call: CallSource, *, video_mode: str = "truecolor", fps: int = 15) -> int:
    """Run the app; always stop the engine, whatever way the app ends."""
    app = SdpartaApp(call, video_mode=video_mode, fps=fps)
    try:
        result = app.run()
    finally:
        call.stop()
    return int(result or 0)


__all__ = ["SdpartaApp", "run_join_app"]
