"""Screens pushed over the call (the call keeps running underneath)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Static

#: (keys, what they do); the app's BINDINGS are the source of truth, this is how they are explained.
KEYS_HELP = [
    ("m", "mute / unmute what you send (microphone or tone)"),
    ("v", "camera on / off"),
    ("tab, n", "focus the next participant"),
    ("shift+tab, p", "focus the previous participant"),
    ("i", "ICE panel of the focused one (whole screen when small)"),
    ("PgUp, PgDn", "scroll the ICE panel (also Up, Down, Home, End, wheel)"),
    ("c, /", "chat: Enter sends and gives the keys back, Esc leaves"),
    ("d", "dump the focused timeline (JSON, ~/.local/state/sdparta)"),
    ("r", "restart ICE with the focused participant (keeps the call)"),
    ("?", "this help (escape closes)"),
    ("ctrl+q", "leave the call (works everywhere)"),
    ("ctrl+c", "copies selected text; never leaves (reminds of ctrl+q)"),
]


class HelpScreen(ModalScreen[None]):
    """Lists every key; any of escape, ? or q closes it."""

    BINDINGS = [Binding("escape,question_mark,q", "app.pop_screen", "close")]

    def compose(self) -> ComposeResult:
        table = Table(title="sdparta keys", show_header=False, box=None, padding=(0, 2, 0, 0))
        table.add_column(no_wrap=True, min_width=max(len(key) for key, _ in KEYS_HELP) + 2)
        table.add_column()
        for key, what in KEYS_HELP:
            table.add_row(Text(key, style="bold"), what)
        yield Static(table, id="help")
