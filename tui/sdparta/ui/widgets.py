"""The app's small building blocks: a label that repaints only on change, and one participant's tile."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from sdparta.ui.identicon import Identicon
from sdparta.ui.video import VideoTile


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
        """Video when there is a picture to show, else the identicon (a stale picture is dropped)."""
        if self.video.display != on:
            self.video.display = on
            self.icon.display = not on
            if not on:
                self.video.clear()
